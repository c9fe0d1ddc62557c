"""video/bsqvit: learned video coding with a block-causal ViT and binary spherical quantization
(nc/models/bsqvit.py); also an image and video tokenizer (`nc tokens`).

Every token (a 4-frame x 8 x 8 tubelet) is `bits` (64) signs, nested: the first bits carry the coarse
picture. Rates: `--quality 1..16` keeps the first 4 x quality bits of every token (16 is all 64), or
`--bitrate 300k`, a target for each packet's payload: per packet, the largest number of kept groups
whose payload fits (1 group when none does); the tokens are computed once.

Entropy coding: a token's kept bits are cut into sub-codes of GROUP (4) bits, and sub-code g of a token
is coded with a static frequency table chosen by its context: the same token's sub-code g one tubelet
back (what stays still repeats) and its sub-code g - 1 (bits are not independent). The tables are
counted on the training clips after training and shipped as integers in the weights file, so encoder
and decoder agree on every machine. The bits themselves come from the encoder alone, and the decoder
reads them exactly; the float synthesis shapes pixels only and runs on one thread per GOP (several
GOPs at once, learned_video.GopDecoder).

Frames are edge-padded to multiples of 32 (cropped back on decode), so any size codes; frame rates are
the track's. Packets: one per GOP of GOP frames (the last one shorter), each decodable alone, so every
packet is a seek point: the network's attention caches and the contexts start afresh at a GOP's first
frame. A short last GOP repeats its last frame up to a multiple of 4, and those frames are dropped on
decode. The network runs one tubelet at a time with its caches, so memory is bounded by a GOP's frames.

Packet payload:

    offset  size  field
    0       1     groups: u8, sub-codes kept per token, 1..bits / 4 (quality)
    1       1     n: u8, tubelets in this packet, ceil(frames / 4), 1..GOP / 4
    2       ...   nc/bitstream/entropy.encode_categorical_pieces payload (ANS u32 words) of the sub-codes:
                  pieces in order tubelet 0..n-1, then group 0..groups-1 within a tubelet; a piece
                  is that group's sub-code of every token in raster order (rows of H32/8 tokens, W32/8
                  each), its contexts `context_rows`, its table `prior.counts` + 1 of the weights

Track params: {}.
"""
from __future__ import annotations

import os
import struct
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from nc.bitstream.entropy import CategoricalReader, FrequencyTable, encode_categorical_pieces
from nc.codecs.base import RatePoint, RateRange, checked_image
from nc.codecs.learned_image import as_rgb, load_network, one_thread, pad_to
from nc.codecs.learned_video import GopEncoder, GopModel, LearnedVideoCodec, largest_that_fits
from nc.errors import CorruptChunkError, FormatError, PluginError, UsageError
from nc.media.facts import ImageFacts, VideoFacts
from nc.models.bsqvit import ALIGN, GROUP, PATCH, TUBELET, BsqVitConfig, VideoBsqVit

ALPHABET = 2**GROUP  # a sub-code: GROUP bits, the first most significant
NONE = ALPHABET  # the context value where there is no neighbour
PER_GROUP = (ALPHABET + 1) ** 2  # contexts of one group: (previous tubelet's sub-code, previous group's)


def subcodes(bits: np.ndarray) -> np.ndarray:
    """Bits (..., groups * GROUP) 0/1 -> sub-codes (..., groups) in [0, ALPHABET)."""
    b = bits.reshape(*bits.shape[:-1], -1, GROUP).astype(np.int64)
    return (b << np.arange(GROUP - 1, -1, -1)).sum(-1)


def context_rows(codes: np.ndarray, n: int, g: int) -> np.ndarray:
    """Table rows for group g of tubelet n of sub-codes (tubelets, rows, columns, groups): the same
    token's sub-code of group g one tubelet back and its sub-code of group g - 1 (NONE for none)."""
    shape = codes.shape[1:3]
    past = codes[n - 1, :, :, g] if n > 0 else np.full(shape, NONE)
    before = codes[n, :, :, g - 1] if g > 0 else np.full(shape, NONE)
    return (g * PER_GROUP + past * (ALPHABET + 1) + before).reshape(-1)


def count_subcodes(bits: np.ndarray) -> np.ndarray:
    """Bits (tubelets, rows, columns, bits) of one clip -> counts (groups * PER_GROUP, ALPHABET)."""
    codes = subcodes(bits)
    n, _, _, groups = codes.shape
    counts = np.zeros(groups * PER_GROUP * ALPHABET, np.int64)
    for t in range(n):
        for g in range(groups):
            np.add.at(counts, context_rows(codes, t, g) * ALPHABET + codes[t, :, :, g].reshape(-1), 1)
    return counts.reshape(groups * PER_GROUP, ALPHABET)


SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "video_bsqvit.safetensors"
#: NC_BSQVIT_WEIGHTS points nc at weights you trained yourself (files record the weights' hash)
WEIGHTS = Path(os.environ.get("NC_BSQVIT_WEIGHTS", SHIPPED_WEIGHTS))
GOP = 32  # frames per packet: about a second at 25-30 fps, a seek point each
HEADER = struct.Struct("<BB")  # groups kept, tubelets
QUALITY = RateRange("quality", 1, 16)  # sub-codes kept per token


class BsqVitModel(GopModel):
    """The loaded network and frequency tables shared by every encoder, decoder and tokenizer."""

    def __init__(self, path: Path):
        net, cfg, extra = load_network(path, BsqVitConfig, VideoBsqVit, "video/bsqvit")
        super().__init__(net)
        counts = extra.get("prior.counts")
        if counts is None or tuple(counts.shape) != (cfg.groups * PER_GROUP, ALPHABET) or counts.min() < 0:
            raise PluginError(f"{path}: video/bsqvit weights without a prior table of {cfg.groups * PER_GROUP} "
                              f"x {ALPHABET} counts")
        if cfg.groups != QUALITY.high:
            raise PluginError(f"{path}: video/bsqvit weights must have {QUALITY.high:g} sub-codes per token, "
                              f"not {cfg.groups}")
        self.table = FrequencyTable.from_counts(np.minimum(counts.numpy(), 2**31))
        self.cfg = cfg

    def bits(self, frames: np.ndarray) -> np.ndarray:
        """One GOP, uint8 (n, h, w, 3), n a multiple of 4 -> bits uint8 (n / 4, H32 / 8, W32 / 8, bits)."""
        torch, out = self.torch, []
        with self.fresh_network() as net:
            for start in range(0, len(frames), TUBELET):
                tubelet = np.stack([pad_to(f, ALIGN) for f in frames[start:start + TUBELET]])
                x = torch.from_numpy(tubelet).permute(3, 0, 1, 2)[None].float() / 255
                out.append(net.encode(x)[0].numpy())
        return np.concatenate(out)

    def code(self, bits: np.ndarray, groups: int) -> bytes:
        """A GOP's payload keeping the first `groups` sub-codes of every token."""
        codes = subcodes(bits)
        pieces = [(codes[t, :, :, g].reshape(-1), context_rows(codes, t, g))
                  for t in range(len(codes)) for g in range(groups)]
        return HEADER.pack(groups, len(codes)) + encode_categorical_pieces(pieces, self.table)

    def read(self, payload: bytes, height: int, width: int, duration: int) -> tuple[np.ndarray, int]:
        """A GOP's payload -> (sub-codes (n, H32 / 8, W32 / 8, groups) with zeros past the kept ones,
        groups kept)."""
        if len(payload) < HEADER.size:
            raise CorruptChunkError("video/bsqvit payload shorter than its header")
        groups, n = HEADER.unpack_from(payload)
        if not 1 <= groups <= self.cfg.groups or not 1 <= n <= GOP // TUBELET or n != -(-duration // TUBELET):
            raise CorruptChunkError(f"video/bsqvit packet header out of range ({groups} groups, {n} tubelets "
                                    f"for {duration} frames)")
        rows, columns = -(-height // ALIGN) * ALIGN // PATCH, -(-width // ALIGN) * ALIGN // PATCH
        codes = np.zeros((n, rows, columns, self.cfg.groups), np.int64)
        try:
            reader = CategoricalReader(payload[HEADER.size:], self.table, n * rows * columns * groups)
            for t in range(n):
                for g in range(groups):
                    codes[t, :, :, g] = reader.read(context_rows(codes, t, g)).reshape(rows, columns)
            reader.close()
        except FormatError as e:
            raise CorruptChunkError(f"video/bsqvit packet: {e}") from None
        return codes, groups

    def pixels(self, latents: tuple[np.ndarray, int], height: int, width: int) -> np.ndarray:
        """`read`'s (sub-codes (n, rows, columns, groups), groups to use) -> uint8 frames (4 n, height,
        width, 3)."""
        (codes, groups), torch, frames = latents, self.torch, []
        bits = (codes[..., None] >> np.arange(GROUP - 1, -1, -1)) & 1
        bits = bits.reshape(*codes.shape[:3], -1).astype(np.uint8)
        with self.fresh_network() as net, one_thread(torch):
            for t in range(len(bits)):
                x = net.decode(torch.from_numpy(bits[t:t + 1]), groups * GROUP)[0].clamp(0, 1)
                frames.append((x * 255).round().to(torch.uint8).permute(1, 2, 3, 0)[:, :height, :width].numpy())
        return np.concatenate(frames)


def _groups(rate: RatePoint) -> int:
    """Sub-codes kept per token at a quality rate point."""
    return int(round(min(max(rate.value, QUALITY.low), QUALITY.high)))


class BsqVitEncoder(GopEncoder):
    def __init__(self, model: BsqVitModel, facts: VideoFacts, rate: RatePoint):
        super().__init__(facts, GOP, TUBELET, model)
        self.m, self.rate = model, rate

    def code_gop(self, frames: np.ndarray, duration: int) -> bytes:
        bits = self.m.bits(frames)
        if self.rate.unit == "quality":
            return self.m.code(bits, _groups(self.rate))
        budget = self.rate.value * duration / float(self.facts.fps) / 8
        return largest_that_fits(lambda step: self.m.code(bits, step + 1), self.m.cfg.groups, budget)


class TokenGops(GopEncoder):
    """Cuts frames into GOPs as the encoder does, and keeps each GOP's first `groups` sub-codes as uint8."""

    def __init__(self, model: BsqVitModel, facts: VideoFacts, groups: int):
        super().__init__(facts, GOP, TUBELET)
        self.m, self.groups, self.tokens = model, groups, []

    def code_gop(self, frames: np.ndarray, duration: int) -> bytes:
        # one torch thread where the encoder codes GOPs on one thread each: a file's tokens exactly
        with one_thread(self.m.torch) if self.m.encode_workers(self.facts) > 1 else nullcontext():
            bits = self.m.bits(frames)
        self.tokens.append(subcodes(bits)[..., :self.groups].astype(np.uint8))
        return b""


class BsqVitCodec(LearnedVideoCodec):
    codec_id, quality = "video/bsqvit", QUALITY
    model_class, encoder_class = BsqVitModel, BsqVitEncoder
    token_modalities = ("video", "image")

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(weights, summary="neural, block-causal ViT with binary spherical quantization (64 nested "
                                          "bits per 4x8x8 tubelet); quality 1-16 (4 bits each) or a bitrate; "
                                          "32-frame GOPs; video and image tokens",
                         default=RatePoint("q8", 8.0, "quality"),
                         # below video/h264 (10): the shipped weights are far below x264 (nc/codecs/weights/video_bsqvit.md)
                         rank=5)

    # ---- tokens

    def tokenize(self, blocks, facts: VideoFacts | ImageFacts, rate: RatePoint) -> np.ndarray:
        """The sub-codes a file at quality `rate` holds, uint8 (tubelets, ceil(H/32) 4, ceil(W/32) 4,
        groups), each GROUP bits of a token, the first most significant. A video is cut into GOPs as
        the codec cuts it; an image is one tubelet of four copies of itself (one tubelet of tokens)."""
        if rate.unit != "quality":
            raise UsageError(f"video/bsqvit tokens take a quality (1-16 sub-codes per token), not {rate.unit}")
        groups = _groups(rate)
        if isinstance(facts, ImageFacts):
            if facts.mode not in ("L", "RGB"):
                raise UsageError(f"video/bsqvit makes tokens of L and RGB images, not {facts.mode}")
            frame = as_rgb(checked_image(next(iter(blocks)), facts))
            return subcodes(self.model.bits(np.stack([frame] * TUBELET)))[..., :groups].astype(np.uint8)
        self.check(facts)
        gops = TokenGops(self.model, facts, groups)
        for block in blocks:
            gops.encode(block)
        gops.flush()
        if not gops.tokens:
            raise UsageError("video/bsqvit: no frames to make tokens of")
        return np.concatenate(gops.tokens)

    def detokenize(self, codes: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """uint8 frames (4 tubelets, 8 rows, 8 columns, 3) from sub-codes made by `tokenize`, decoded
        in GOPs of 8 tubelets as a file's are (each GOP starts with fresh caches)."""
        codes = np.asarray(codes)
        if codes.ndim != 4 or not 1 <= codes.shape[3] <= QUALITY.high or 0 in codes.shape:
            raise UsageError(f"video/bsqvit tokens must have shape (tubelets, rows, columns, 1-16 sub-codes), "
                             f"not {codes.shape}")
        if codes.dtype.kind not in "iu" or codes.min() < 0 or codes.max() >= ALPHABET:
            raise UsageError(f"video/bsqvit tokens must be integers in [0, {ALPHABET})")
        height, width = codes.shape[1] * PATCH, codes.shape[2] * PATCH
        if height % ALIGN or width % ALIGN:
            raise UsageError(f"video/bsqvit tokens must have rows and columns in multiples of {ALIGN // PATCH}")
        VideoFacts(width, height, 25, 1).validate()
        full = np.zeros((*codes.shape[:3], QUALITY.high), np.int64)
        full[..., :codes.shape[3]] = codes
        per_gop = GOP // TUBELET
        return np.concatenate([self.model.pixels((full[k:k + per_gop], codes.shape[3]), height, width)
                               for k in range(0, len(full), per_gop)])
