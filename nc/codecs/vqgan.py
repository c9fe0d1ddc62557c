"""image/vqgan: extreme-rate image coding and discrete image tokens with a VQ autoencoder
(nc/models/vqgan.py): a 1/16 grid of residual codes, 1-4 codebooks of 1024.

Rates: `--quality 1..4` is the number of codebooks (stages) each grid position
keeps, about 0.04 bpp per stage before entropy coding; `--bitrate 0.08bpp` is a
size target for the payload: the most stages whose payload fits (one stage when
none does). The codes are computed once; only their coding is repeated.

Modes L (coded as grey RGB) and RGB; RGBA is refused (its alpha would be lost).
Any size: the image is cut into the fewest tiles of at most TILE x TILE pixels,
as equal as the 16-pixel grid allows (`learned_image.even_tiles`), each padded
(edge pixels repeated) to a multiple of 16 and coded alone, so memory is bounded
by one tile; the padding is cropped away on decode. Tiles are coded independently,
so their seams show at low rates (a 512-pixel TILE split 768-pixel photos down
the middle, with a visible seam at q1); at 1024 the usual photo is one tile. The
network was trained on 128-pixel crops and does a little better on smaller tiles
(512: +0.35 dB PSNR at q1 on the benchmark photos, seams included).

Deterministic bitstream: the codes are entropy-coded with static per-stage
code frequencies shipped in the weights (`prior.counts` + 1), so a file parses
the same everywhere; the decoder runs on one thread so that its pixels do not
depend on the thread count. The encoder's nearest-code search runs in float on
any number of threads, so a near tie may pick another code on another machine:
files and tokens of one image can differ, each decoding the same everywhere.

Tokens (`nc tokens photo.png --codec image/vqgan`): int16 (stages, ceil(H/16),
ceil(W/16)), the codes a file holds, stage 1 first; `nc detokenize` draws
(16 rows, 16 columns) per token.

Packet payload (one packet per image):

    offset  size  field
    0       1     stages: u8, 1 .. the model's stages
    then, per tile in raster order (learned_image.even_tiles(H, W, TILE, 16)):
            4     bytes: u32 LE
            ...   nc/bitstream/entropy categorical ANS payload of the tile's codes,
                  (stages, ceil(h/16), ceil(w/16)) in C order, symbol i coded with row
                  (stage of i) of FrequencyTable(prior.counts + 1)

Track params: {}.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from nc.codecs.base import Decoder, Encoder, Packet, RatePoint, RateRange, checked_image
from nc.codecs.learned_image import (LearnedImageCodec, as_mode, as_rgb, even_tiles, load_network, one_thread,
                                     pad_to, take_block)
from nc.errors import CorruptChunkError, PluginError, UsageError
from nc.media.facts import ImageFacts

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "image_vqgan.safetensors"
#: NC_VQGAN_WEIGHTS points nc at weights you trained yourself (files record the weights' hash)
WEIGHTS = Path(os.environ.get("NC_VQGAN_WEIGHTS", SHIPPED_WEIGHTS))
TILE = 1024  # the most pixels per tile side: a multiple of 16
GRID = 16  # pixels per token side
STAGES = 4  # the shipped model's codebooks: --quality 1..4
QUALITY = RateRange("quality", 1, STAGES)
U32 = struct.Struct("<I")


class VqganModel:
    """The loaded network and code priors shared by every encoder and decoder."""

    def __init__(self, path: Path):
        import torch

        from nc.bitstream.entropy import FrequencyTable
        from nc.models.vqgan import ImageVQGAN, VqganConfig

        self.net, cfg, extra = load_network(path, VqganConfig, ImageVQGAN, "image/vqgan")
        if "prior.counts" not in extra:
            raise PluginError(f"{path}: not image/vqgan weights (no prior.counts)")
        counts = extra["prior.counts"].numpy().astype(np.int64)
        if cfg.stages != STAGES or counts.shape != (cfg.stages, cfg.codebook_size) or counts.min() < 0 \
                or cfg.codebook_size > 2**15:  # tokens are int16
            raise PluginError(f"{path}: image/vqgan needs {STAGES} stages with a prior per stage; these weights "
                              f"have {cfg.stages} stages and priors of shape {tuple(counts.shape)}")
        self.cfg, self.torch = cfg, torch
        self.prior = FrequencyTable.from_counts(counts, floor=1)

    def codes(self, tile: np.ndarray) -> np.ndarray:
        """uint8 (h, w, 3) -> int64 codes (stages, ceil(h/16), ceil(w/16)), every stage."""
        torch = self.torch
        x = torch.from_numpy(pad_to(tile, GRID)).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            return self.net.encode(x, self.cfg.stages)[0].numpy()

    def image_codes(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> int64 codes (stages, ceil(H/16), ceil(W/16)), tile by tile."""
        height, width = rgb.shape[:2]
        out = np.empty((self.cfg.stages, *_grid(height, width)), np.int64)
        for top, left, h, w in even_tiles(height, width, TILE, GRID):
            out[_block(top, left, h, w)] = self.codes(rgb[top:top + h, left:left + w])
        return out

    def pixels(self, codes: np.ndarray) -> np.ndarray:
        """int codes (stages, gh, gw) -> uint8 (16 gh, 16 gw, 3)."""
        torch = self.torch
        with torch.inference_mode(), one_thread(torch):
            x = self.net.decode(torch.from_numpy(codes.astype(np.int64))[None])[0]
        return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def pack(self, codes: np.ndarray) -> bytes:
        from nc.bitstream.entropy import encode_categorical

        return encode_categorical(codes.ravel(), self.prior, _stage_of(codes.shape))

    def unpack(self, data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        from nc.bitstream.entropy import decode_categorical
        from nc.errors import FormatError

        try:
            flat = decode_categorical(data, self.prior, int(np.prod(shape)), _stage_of(shape))
        except (FormatError, ValueError) as e:
            raise CorruptChunkError(f"image/vqgan tile: {e}") from None
        return flat.reshape(shape)


def _stage_of(shape: tuple[int, int, int]) -> np.ndarray:
    """The prior row of each code of a (stages, gh, gw) block in C order: its stage."""
    return np.repeat(np.arange(shape[0]), shape[1] * shape[2])


def _grid(h: int, w: int) -> tuple[int, int]:
    return -(-h // GRID), -(-w // GRID)


def _block(top: int, left: int, h: int, w: int) -> tuple[slice, slice, slice]:
    """Where a tile's codes sit in the image's (stages, rows, columns) code grid."""
    th, tw = _grid(h, w)
    return slice(None), slice(top // GRID, top // GRID + th), slice(left // GRID, left // GRID + tw)


class _Payloads:
    """Payloads of one image's codes at each stage count, packed once each."""

    def __init__(self, model: VqganModel, facts: ImageFacts, codes: np.ndarray):
        self.m, self.facts, self.codes = model, facts, codes
        self._cache: dict[int, bytes] = {}

    def at(self, stages: int) -> bytes:
        if stages not in self._cache:
            parts = [bytes([stages])]
            for top, left, h, w in even_tiles(self.facts.height, self.facts.width, TILE, GRID):
                data = self.m.pack(self.codes[_block(top, left, h, w)][:stages])
                parts += [U32.pack(len(data)), data]
            self._cache[stages] = b"".join(parts)
        return self._cache[stages]

    def stages_for(self, rate: RatePoint) -> int:
        """A quality's stage count (rounded), or the most stages whose payload fits a bpp target (1 if none does)."""
        if rate.unit == "quality":
            return int(np.clip(np.floor(rate.value + 0.5), 1, self.codes.shape[0]))  # 2.5 -> 3, not to even
        budget = rate.value * self.facts.width * self.facts.height / 8
        return max((s for s in range(1, self.codes.shape[0] + 1) if len(self.at(s)) <= budget), default=1)


class VqganEncoder(Encoder):
    def __init__(self, model: VqganModel, facts: ImageFacts, rate: RatePoint):
        self.m, self.facts, self.rate = model, facts, rate
        self.params: dict = {}
        self.done = False

    def encode(self, block: np.ndarray) -> list[Packet]:
        f = self.facts
        if self.done:
            raise UsageError("image/vqgan encodes one image per track; it was already given")
        rgb = as_rgb(checked_image(block, f))
        self.done = True
        payloads = _Payloads(self.m, f, self.m.image_codes(rgb))
        return [Packet(payloads.at(payloads.stages_for(self.rate)), 0, 1)]

    def flush(self) -> list[Packet]:
        return []


class VqganDecoder(Decoder):
    def __init__(self, model: VqganModel, facts: ImageFacts):
        self.m, self.facts = model, facts

    def decode(self, packet: Packet) -> np.ndarray:
        f, data = self.facts, packet.payload
        if len(data) < 1:
            raise CorruptChunkError("image/vqgan payload shorter than its header")
        stages = data[0]
        if not 1 <= stages <= self.m.cfg.stages:
            raise CorruptChunkError(f"image/vqgan payload declares {stages} stages (the model has {self.m.cfg.stages})")
        out = np.empty((f.height, f.width, 3), np.uint8)
        pos = 1
        for top, left, h, w in even_tiles(f.height, f.width, TILE, GRID):
            block, pos = take_block(data, pos, "image/vqgan")
            codes = self.m.unpack(block, (stages, *_grid(h, w)))
            out[top:top + h, left:left + w] = self.m.pixels(codes)[:h, :w]
        if pos != len(data):
            raise CorruptChunkError("image/vqgan payload has bytes after its last tile")
        return as_mode(out, f.channels)


class VqganCodec(LearnedImageCodec):
    codec_id, quality = "image/vqgan", QUALITY
    model_class, encoder_class, decoder_class = VqganModel, VqganEncoder, VqganDecoder

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(weights, summary="neural, VQ autoencoder on a 1/16 grid, 1-4 codebooks of 1024 "
                                          "(about 0.04-0.16 bpp raw); image tokens; modes L and RGB",
                         default=RatePoint("q2", 2.0, "quality"),
                         # an extreme-rate codec, below the classical ones: nc never picks it unless asked to
                         rank=4)

    # ---- tokens

    def tokenize(self, blocks, facts: ImageFacts, rate: RatePoint) -> np.ndarray:
        """The codes a file at `rate` holds, int16 (stages, ceil(H/16), ceil(W/16))."""
        self.check(facts)
        codes = self.model.image_codes(as_rgb(checked_image(next(iter(blocks)), facts)))
        return codes[:_Payloads(self.model, facts, codes).stages_for(rate)].astype(np.int16)

    def detokenize(self, codes: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """uint8 RGB (16 gh, 16 gw, 3) from codes (stages, gh, gw) made by `tokenize`."""
        codes = np.asarray(codes)
        cfg = self.model.cfg
        if codes.ndim != 3 or not 1 <= codes.shape[0] <= cfg.stages or 0 in codes.shape:
            raise UsageError(f"image/vqgan tokens must have shape (1-{cfg.stages} stages, rows, columns), "
                             f"not {codes.shape}")
        if codes.dtype.kind not in "iu":
            raise UsageError(f"image/vqgan tokens must be integers, not {codes.dtype}")
        if codes.min() < 0 or codes.max() >= cfg.codebook_size:
            raise UsageError(f"image/vqgan tokens must lie in [0, {cfg.codebook_size})")
        height, width = codes.shape[1] * GRID, codes.shape[2] * GRID
        ImageFacts(width, height, "RGB").validate()
        out = np.empty((height, width, 3), np.uint8)
        for top, left, h, w in even_tiles(height, width, TILE, GRID):
            out[top:top + h, left:left + w] = self.model.pixels(codes[_block(top, left, h, w)])
        return out
