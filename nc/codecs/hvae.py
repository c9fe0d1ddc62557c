"""image/hvae: learned image compression with a hierarchical VAE (nc/models/hvae.py), one model for every rate.

Rates: `--quality 1..8` (continuous; 1 is the smallest file) or `--bitrate
0.4bpp`, a size target for the payload (the container adds a few hundred bytes,
as for image/jpeg's targets): the quality step is binary-searched for the largest
step whose payload fits (quality 1's payload when none does) (the latents are computed once; only their coding is
repeated). Modes L (coded as grey RGB) and RGB; RGBA is refused (its alpha would
be lost). Any size: the image is cut into tiles of TILE x TILE pixels, each
padded (edge pixels repeated) to a multiple of 64 and coded alone, so the
networks' memory is bounded by one tile (the encoder keeps every tile's latent,
float32, 1.5 bytes per pixel, for the bpp search); padding is cropped away on decode.

Deterministic: everything that shapes the bitstream is integer arithmetic (the
integer hyper-synthesis, integer gain tables, integer scale thresholds), so a file
decodes on any machine, thread count or device; the float synthesis only shapes
pixels, and runs on one thread so that they do not depend on the thread count
(other CPUs or a GPU may still differ by a level here and there).

Packet payload (one packet per image):

    offset  size  field
    0       2     step: u16 LE, the quality step (quality = 1 + step / 16), <= 16 (Q - 1)
    then, per tile in raster order (tiles of TILE pixels, the last row/column smaller):
            4     z bytes: u32 LE
            ...   z: nc/bitstream/entropy.ScaleTableCoder("gaussian") payload of the hyper latent,
                  (hyper, ceil(h/64), ceil(w/64)) in C order, mean 0, scale index per channel
                  from the weights' `z.scale_index`
            4     y bytes: u32 LE
            ...   y: ScaleTableCoder("gaussian") payload of s, (latent, h64/16, w64/16) in C order, mean 0,
                  scale indices from the integer side information (docs/FORMAT.md; the encoder chooses
                  s = rint(y G / 2^16 - M / 2^8), but any integers decode)

Track params: {}.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from nc.codecs.base import Decoder, Encoder, Packet, RatePoint, RateRange, checked_image
from nc.codecs.hyperprior import LatentCoder
from nc.codecs.learned_video import largest_that_fits
from nc.codecs.learned_image import (LearnedImageCodec, as_mode, as_rgb, load_network, one_thread, pad_to,
                                     take_block, tiles)
from nc.errors import CorruptChunkError, PluginError, UsageError
from nc.media.facts import ImageFacts

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "image_hvae.safetensors"
#: NC_HVAE_WEIGHTS points nc at weights you trained yourself (files record the weights' hash)
WEIGHTS = Path(os.environ.get("NC_HVAE_WEIGHTS", SHIPPED_WEIGHTS))
TILE = 1024  # pixels per tile side: a multiple of 64
QUALITY = RateRange("quality", 1, 8)
U16, U32 = struct.Struct("<H"), struct.Struct("<I")


class HvaeModel:
    """The loaded networks and integer tables shared by every encoder and decoder."""

    def __init__(self, path: Path):
        import torch

        from nc.models.hvae import HvaeConfig, ImageHVAE

        self.net, cfg, extra = load_network(path, HvaeConfig, ImageHVAE, "image/hvae")
        if cfg.qualities != QUALITY.high:
            raise PluginError(f"{path}: image/hvae weights must have {QUALITY.high:g} qualities, not {cfg.qualities}")
        self.coder = LatentCoder(extra, cfg, path, "image/hvae")
        self.cfg, self.steps, self.torch = cfg, self.coder.steps, torch

    # ---- one tile

    def analyse(self, tile: np.ndarray):
        """uint8 (h, w, 3) -> (y float32 (latent, h64/16, w64/16), z integers (hyper, h64/64, w64/64),
        the hyper side information of z (`hyper_side`))."""
        torch = self.torch
        x = torch.from_numpy(pad_to(tile, 64)).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            y = self.net.analysis(x)
            z = torch.round(self.net.h_a(y))
        z = z[0].numpy().astype(np.int64)
        return y[0].numpy(), z, self.coder.hyper_side(z)

    def decode_tile(self, z_data: bytes, y_data: bytes, h: int, w: int, step: int) -> np.ndarray:
        """A tile's payloads -> uint8 (h, w, 3)."""
        torch = self.torch
        h64, w64 = -(-h // 64) * 64, -(-w // 64) * 64
        y_hat = self.coder.decode_y(z_data, y_data, h64 // 16, w64 // 16, step)
        with torch.inference_mode(), one_thread(torch):
            x = self.net.synthesis(torch.from_numpy(y_hat)[None].float())[0]
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return pixels[:h, :w]


class HvaeEncoder(Encoder):
    def __init__(self, model: HvaeModel, facts: ImageFacts, rate: RatePoint):
        self.m, self.facts, self.rate = model, facts, rate
        self.params: dict = {}
        self.done = False

    def encode(self, block: np.ndarray) -> list[Packet]:
        f = self.facts
        if self.done:
            raise UsageError("image/hvae encodes one image per track; it was already given")
        block = checked_image(block, f)
        self.done = True
        rgb = as_rgb(block)
        latents = [(self.m.analyse(rgb[t:t + h, l:l + w])) for t, l, h, w in tiles(f.height, f.width, TILE)]
        z_parts = [self.m.coder.code_z(z) for _, z, _ in latents]
        if self.rate.unit == "quality":
            step = round((self.rate.value - 1) * 16)  # 1..8 -> 0..112
            return [Packet(self._payload(step, latents, z_parts), 0, 1)]
        budget = self.rate.value * f.width * f.height / 8  # the payload's, as image/jpeg's bpp targets
        payload = largest_that_fits(lambda step: self._payload(step, latents, z_parts), self.m.steps, budget)
        return [Packet(payload, 0, 1)]

    def _payload(self, step: int, latents, z_parts) -> bytes:
        parts = [U16.pack(step)]
        for (y, _, side), z_data in zip(latents, z_parts):
            y_data = self.m.coder.code_y(y, side, step)
            parts += [U32.pack(len(z_data)), z_data, U32.pack(len(y_data)), y_data]
        return b"".join(parts)

    def flush(self) -> list[Packet]:
        return []


class HvaeDecoder(Decoder):
    def __init__(self, model: HvaeModel, facts: ImageFacts):
        self.m, self.facts = model, facts

    def decode(self, packet: Packet) -> np.ndarray:
        f, data = self.facts, packet.payload
        if len(data) < 2:
            raise CorruptChunkError("image/hvae payload shorter than its header")
        step = U16.unpack_from(data)[0]
        if step >= self.m.steps:
            raise CorruptChunkError(f"image/hvae quality step {step} beyond the model's {self.m.steps - 1}")
        out = np.empty((f.height, f.width, 3), np.uint8)
        pos = 2
        for top, left, h, w in tiles(f.height, f.width, TILE):
            z_data, pos = take_block(data, pos, "image/hvae")
            y_data, pos = take_block(data, pos, "image/hvae")
            out[top:top + h, left:left + w] = self.m.decode_tile(z_data, y_data, h, w, step)
        if pos != len(data):
            raise CorruptChunkError("image/hvae payload has bytes after its last tile")
        return as_mode(out, f.channels)


class HvaeCodec(LearnedImageCodec):
    codec_id, quality = "image/hvae", QUALITY
    model_class, encoder_class, decoder_class = HvaeModel, HvaeEncoder, HvaeDecoder

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(weights, summary="neural, hierarchical VAE (mean-scale hyperprior), one model for "
                                          "qualities 1-8 or a bpp target; modes L and RGB",
                         default=RatePoint("q4", 4.0, "quality"),
                         # below the classical image codecs (JPEG 10): the shipped weights do not beat JPEG
                         # yet (nc/codecs/weights/image_hvae.md), so nc never picks it unless asked to
                         rank=5)
