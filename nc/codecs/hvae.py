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


def log_scale_thresholds(act_bits: int) -> np.ndarray:
    """Fixed-point log scale l (integers, act_bits fractional bits) maps to scale index
    searchsorted(T, l, "left"): std exp(l / 2^act_bits) <= SCALES[i] iff l <= floor(log(SCALES[i]) 2^act_bits).
    Refuses a libm whose log puts an entry within 1e-9 of a rounding edge (never seen)."""
    from nc.bitstream.entropy import SCALES

    exact = np.log(SCALES) * 2.0**act_bits
    if np.any(np.abs(exact - np.round(exact)) < 1e-9):
        raise RuntimeError("a scale threshold lies on a fixed-point edge; the tables would not be portable")
    return np.floor(exact).astype(np.int64)


class HvaeModel:
    """The loaded networks and integer tables shared by every encoder and decoder."""

    def __init__(self, path: Path):
        import torch

        from nc.bitstream.entropy import ScaleTableCoder
        from nc.models.hvae import ACT_BITS, HvaeConfig, ImageHVAE, IntegerHyperSynthesis

        self.net, cfg, extra = load_network(path, HvaeConfig, ImageHVAE, "image/hvae")
        try:
            self.int_h_s = IntegerHyperSynthesis.from_tensors(extra)
            self.gain_log = extra["gain.log"].numpy().astype(np.int64)  # (steps, latent)
            self.gain_value = extra["gain.value"].numpy().astype(np.int64)
            self.z_index = extra["z.scale_index"].numpy().astype(np.int64)  # (hyper,)
            mean, log_scale = self.int_h_s(torch.zeros(1, cfg.hyper, 1, 1, dtype=torch.float64))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise PluginError(f"{path}: not image/hvae weights ({str(e).splitlines()[0]})") from None
        steps = self.gain_log.shape[0]
        if (cfg.qualities != QUALITY.high or mean.shape != (1, cfg.latent, 4, 4) or log_scale.shape != mean.shape
                or self.gain_log.shape != (steps, cfg.latent) or self.gain_value.shape != (steps, cfg.latent)
                or steps != 16 * (cfg.qualities - 1) + 1 or self.z_index.shape != (cfg.hyper,)
                or (self.gain_value <= 0).any() or self.z_index.min() < 0 or self.z_index.max() >= 64):
            raise PluginError(f"{path}: image/hvae tables do not match the network's config "
                              f"(or it has other than {QUALITY.high:g} qualities)")
        self.cfg, self.steps, self.torch = cfg, steps, torch
        self.act_bits = ACT_BITS
        self.thresholds = log_scale_thresholds(ACT_BITS)
        self.coder = ScaleTableCoder("gaussian")

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
        return y[0].numpy(), z, self.hyper_side(z)

    def hyper_side(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer hyper-synthesis of z: fixed-point (mean, log scale) of y, int64, act_bits fractional bits."""
        mean, log_scale = self.int_h_s(self.torch.from_numpy(z)[None].double())
        return mean[0].numpy().astype(np.int64), log_scale[0].numpy().astype(np.int64)

    def _side_info(self, side: tuple[np.ndarray, np.ndarray], step: int):
        """(mean of y g as float64, scale indices) of the tile's y at quality `step`, from integers only."""
        from nc.models.hvae import GAIN_BITS

        mean, log_scale = side
        gain_value = self.gain_value[step][:, None, None]
        mean_g = (mean * gain_value + (1 << (GAIN_BITS - 1))) >> GAIN_BITS  # fixed point, act_bits
        index = np.searchsorted(self.thresholds, log_scale + self.gain_log[step][:, None, None], side="left")
        return mean_g / 2.0**self.act_bits, np.minimum(index, len(self.thresholds) - 1).astype(np.int32)

    def gain(self, step: int) -> np.ndarray:
        from nc.models.hvae import GAIN_BITS

        return (self.gain_value[step] / 2.0**GAIN_BITS)[:, None, None]

    def code_y(self, y: np.ndarray, side, step: int) -> bytes:
        mean_g, index = self._side_info(side, step)
        symbols = np.rint(y * self.gain(step) - mean_g).astype(np.int64)
        return self.coder.encode(symbols, np.zeros_like(mean_g), index)

    def code_z(self, z: np.ndarray) -> bytes:
        index = np.broadcast_to(self.z_index[:, None, None], z.shape)
        return self.coder.encode(z, np.zeros(z.shape), index)

    def decode_tile(self, z_data: bytes, y_data: bytes, h: int, w: int, step: int) -> np.ndarray:
        """A tile's payloads -> uint8 (h, w, 3)."""
        from nc.errors import FormatError

        torch, cfg = self.torch, self.cfg
        h64, w64 = -(-h // 64) * 64, -(-w // 64) * 64
        z_shape = (cfg.hyper, h64 // 64, w64 // 64)
        try:
            z = self.coder.decode(z_data, np.zeros(z_shape), np.broadcast_to(self.z_index[:, None, None], z_shape))
            mean_g, index = self._side_info(self.hyper_side(z.astype(np.int64)), step)
            s = self.coder.decode(y_data, np.zeros(mean_g.shape), index)
        except (FormatError, ValueError) as e:
            raise CorruptChunkError(f"image/hvae tile: {e}") from None
        # a damaged file can escape to any int32: keep the synthesis finite (trained latents are far smaller)
        y_hat = np.clip((s + mean_g) / self.gain(step), -2.0**15, 2.0**15)
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
        z_parts = [self.m.code_z(z) for _, z, _ in latents]
        if self.rate.unit == "quality":
            step = round((self.rate.value - 1) * 16)  # 1..8 -> 0..112
            return [Packet(self._payload(step, latents, z_parts), 0, 1)]
        budget = self.rate.value * f.width * f.height / 8  # the payload's, as image/jpeg's bpp targets
        lo, hi = 0, self.m.steps - 1
        best = self._payload(0, latents, z_parts)
        if len(best) > budget:
            return [Packet(best, 0, 1)]  # the smallest file this model makes
        while lo < hi:  # invariant: step lo fits
            mid = (lo + hi + 1) // 2
            data = self._payload(mid, latents, z_parts)
            if len(data) <= budget:
                lo, best = mid, data
            else:
                hi = mid - 1
        return [Packet(best, 0, 1)]

    def _payload(self, step: int, latents, z_parts) -> bytes:
        parts = [U16.pack(step)]
        for (y, _, side), z_data in zip(latents, z_parts):
            y_data = self.m.code_y(y, side, step)
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
