"""image/hvae: learned image compression with a hierarchical VAE (nc/models/hvae.py), one model for every rate.

Rates: `--quality 0..8` (continuous; 0 is the smallest file) or `--bitrate
0.4bpp`, a size target for the payload (the container adds a few hundred bytes,
as for image/jpeg's targets): the quality step is binary-searched for the largest
step whose payload fits (quality 0's payload, without a post-filter, when none does);
the latents are computed once, only their coding is repeated, and the post-filter's
bytes are set aside first (`learned_video.filtered_within`). Qualities 1-8 are the trained
levels; 0-1 extrapolates their gains one level down (`nc.models.hyperprior.extend_below`),
which the shipped weights' tables hold. Modes L (coded as grey RGB) and RGB; RGBA
is refused (its alpha would be lost). Any size: the image is cut into tiles of TILE x TILE pixels, each
padded (edge pixels repeated) to a multiple of 64 and coded with its own hyper
latent, so the networks' memory is bounded by one tile plus its margins. The
encoder keeps every tile's y (float32, 2.5 bytes per pixel with the shipped
network) and side information (int32, 5 bytes per pixel) for the bpp search; the
decoder keeps the image's y for the neighbours' synthesis. Padding is cropped away on decode.
The analysis and the synthesis of a tile see MARGIN pixels of its neighbours,
so tiles meet without seams; an image of one tile is coded as before.

`--effort 1` refines each tile's y for this image before coding it (nc/models/refine.py): gradient
descent on bits + lambda x squared error through the fixed synthesis and the post-filter that the
unrefined file gets (its float twin; the refined file's filter is fitted again), the hyper latent kept. It
takes ~45 s per 768x512 photo on one core (bench/results/image.md) instead of ~1.7 s; the file is an
ordinary one, decoded as fast as any. With a bpp target, the step is searched without refinement,
then refined; that saves bits, so the step is raised by the saving and refined once more: the best
refined payload within the target is kept (a target below quality 0's size gets the smaller file).

Scale offsets (nc/codecs/scale_offsets.py): a hyperprior predicts the latents' spreads well on
average, but in one image some channels are wider or narrower than predicted (some are all zeros).
The encoder estimates, per channel, the shift of its scale indices that codes it in the fewest bits,
and sends the shifts (~3 bits a channel); the values coded, hence the pixels, are unchanged.

The post-filter (nc/codecs/postfilter.py): the encoder decodes its own payload, fits a Wiener
filter of the decoded pixels to the image by least squares and sends it where it lowers bits +
lambda x squared error. That costs one synthesis and a fit at the encoder (about 1 s per 768x512
photo on one core), and a filtering at the decoder (under 0.1 s).

Deterministic decoding: everything the decoder computes that shapes the bitstream is integer
arithmetic (the integer hyper-synthesis, integer gain tables, integer scale thresholds), so a file
decodes on any machine, thread count or device; the float synthesis only shapes pixels, and runs on
one thread so that they do not depend on the thread count (other CPUs or a GPU may still differ by a
level here and there). The encoder's float analysis (and, at effort 1, the refinement) chooses y, so
the same image may be coded to other bytes on another machine or thread count; each file still
decodes identically everywhere.

Packet payload (one packet per image):

    offset  size  field
    0       2     u16 LE: bit 15 set when a post-filter follows; bit 14 set when every tile starts
                  with scale offsets; bits 0-13 the step, the row of the weights' gain tables, <
                  their rows (quality = 1 - levels_below + step / 16; the shipped weights:
                  quality = step / 16, step <= 128)
    (2      7+    the post-filter, when bit 15 is set: nc/codecs/postfilter.py's layout, the image's
                  channels (3 for RGB, 1 for L); it filters the decoded image, after mode L's mean)
    then, per tile in raster order (tiles of TILE pixels, the last row/column smaller):
           (4     offsets bytes: u32 LE, when bit 14 is set
            ...   the scale offsets of z's channels then y's: nc/codecs/scale_offsets.py's payload;
                  each channel's scale indices below are moved by its offset)
            4     z bytes: u32 LE
            ...   z: nc/bitstream/entropy.ScaleTableCoder("gaussian") payload of the hyper latent,
                  (hyper, ceil(h/64), ceil(w/64)) in C order, mean 0, scale index per channel
                  from the weights' `z.scale_index`
            4     y bytes: u32 LE
            ...   y: ScaleTableCoder("gaussian") payload of s, (latent, h64/16, w64/16) in C order, mean 0,
                  scale indices from the integer side information of the image's z within
                  Z_MARGIN cells of the tile (docs/FORMAT.md; the encoder chooses
                  s = rint(y G / 2^16 - M / 2^8), but any integers decode)

Track params: {}. Bitstream version 4: scale offsets (the encoder moves each latent channel's
scale indices to the spread that codes this image's symbols in the fewest bits, and sends the moves
where they save more than they cost). Version 3: the post-filter (the encoder fits it to each image
and sends it where it pays for its bytes: 0.5-2 dB for 60-260 bytes on the held-out photos). Version
2: escapes in the scale-table payloads are Elias-gamma coded (nc/bitstream/entropy.py); version 1
files (raw i32 escapes). All four decode.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nc.codecs import postfilter, scale_offsets
from nc.codecs.base import Decoder, Encoder, Packet, RatePoint, RateRange, checked_image
from nc.codecs.hyperprior import LatentCoder
from nc.codecs.learned_video import filtered_within, largest_that_fits, refined_filtered_within
from nc.codecs.learned_image import (LearnedImageCodec, as_mode, as_rgb, load_network, one_thread, pad_to,
                                     take_block, tiles)
from nc.errors import CorruptChunkError, PluginError, UsageError
from nc.media.facts import ImageFacts

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "image_hvae.safetensors"
#: NC_HVAE_WEIGHTS points nc at weights you trained yourself (files record the weights' hash)
WEIGHTS = Path(os.environ.get("NC_HVAE_WEIGHTS", SHIPPED_WEIGHTS))
TILE = 1024  # pixels per tile side: a multiple of 64
MARGIN = 64  # pixels of the neighbouring tiles a tile's analysis and synthesis see: a multiple of 64,
# wider than either network's reach, so tiles show no seams (tests/test_hvae.py checks the reach)
Z_MARGIN = 2  # hyper-latent cells (64 pixels each) of the neighbours the integer hyper-synthesis sees
# 1-8 trained, 0-1 extrapolated: 0 is 1 - nc.models.hvae.LEVELS_BELOW (not imported: it would load torch)
QUALITY = RateRange("quality", 0, 8)
#: --effort 0, 1: iterations of encoder-side refinement of y (nc/models/refine.py); 0 codes the
#: analysis network's y as it comes. Decoding is the same at every effort; at effort 1 the bytes
#: depend on the encoder's torch thread count (the refinement's float sums), as x264's do on its
#: threads. (100 iterations, measured on one photo, spent 0-2 % fewer bits than 30 in 3.2 times as
#: long: not offered)
REFINEMENT_ITERATIONS = (0, 30)
U16, U32 = struct.Struct("<H"), struct.Struct("<I")


class HvaeModel:
    """The loaded networks and integer tables shared by every encoder and decoder."""

    def __init__(self, path: Path):
        import torch

        from nc.models.hvae import HvaeConfig, ImageHVAE

        self.net, cfg, extra = load_network(path, HvaeConfig, ImageHVAE, "image/hvae")
        if cfg.qualities != QUALITY.high:
            raise PluginError(f"{path}: image/hvae weights must have {QUALITY.high:g} qualities, not {cfg.qualities}")
        self.net.requires_grad_(False)  # refinement differentiates with respect to y only
        self.coder = LatentCoder(extra, cfg, path, "image/hvae")
        self.cfg, self.steps, self.torch = cfg, self.coder.steps, torch

    # ---- one tile, seen with a margin of its neighbours

    def analyse(self, rgb: np.ndarray, top: int, left: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The tile (top, left, h, w) of the whole image `rgb` -> (y float32 (latent, h64/16, w64/16),
        z integers (hyper, h64/64, w64/64)). The analysis sees MARGIN pixels of the neighbouring tiles,
        so y is what a whole-image analysis would give (h_a reaches further than MARGIN / 16 cells, so
        z at the tile's edges only nearly is); at the image's own edges they see what a lone tile sees
        (edge padding)."""
        torch = self.torch
        t0, l0 = max(0, top - MARGIN), max(0, left - MARGIN)
        window = rgb[t0:min(len(rgb), top + h + MARGIN), l0:min(rgb.shape[1], left + w + MARGIN)]
        x = torch.from_numpy(pad_to(window, 64)).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            y = self.net.analysis(x)
            z = torch.round(self.net.h_a(y))
        # copies, not views: a view would keep the whole window alive for every tile
        y = _crop(y[0].numpy(), (top - t0) // 16, (left - l0) // 16, _up64(h) // 16, _up64(w) // 16).copy()
        z = _crop(z[0].numpy(), (top - t0) // 64, (left - l0) // 64, _up64(h) // 64, _up64(w) // 64)
        return y, z.astype(np.int64)

    def hyper_side(self, z: np.ndarray, top: int, left: int, h: int, w: int):
        """The side information (`LatentCoder.hyper_side`) of the tile's y from the whole image's z
        (the tiles' z side by side): the integer hyper-synthesis sees Z_MARGIN cells of the
        neighbouring tiles' z, so the means and scales at the tile's edges are a whole image's."""
        r0, c0 = max(0, top // 64 - Z_MARGIN), max(0, left // 64 - Z_MARGIN)
        window = z[:, r0:(top + _up64(h)) // 64 + Z_MARGIN, c0:(left + _up64(w)) // 64 + Z_MARGIN]
        side = self.coder.hyper_side(np.ascontiguousarray(window))
        # int32 copies (the values lie within +-2^22): the encoder keeps one per tile for the bpp search
        return tuple(_crop(a, top // 16 - 4 * r0, left // 16 - 4 * c0, _up64(h) // 16, _up64(w) // 16).astype(np.int32)
                     for a in side)

    def synthesise(self, y_hat: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
        """The pixels, uint8 (h, w, 3), of the tile (top, left, h, w) from the whole image's y (the
        tiles' y side by side): its synthesis sees MARGIN / 16 latent cells of the neighbouring
        tiles, so the tiles' pixels meet without a seam."""
        r0, _, c0, _ = _window(top, left, h, w)
        dt, dl = top - 16 * r0, left - 16 * c0
        return self._synthesise_window(y_hat, top, left, h, w)[dt:dt + h, dl:dl + w]

    def _synthesise_window(self, y_hat: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
        """The pixels, uint8, of the whole window the tile's synthesis sees (`_window`), on one thread."""
        torch = self.torch
        r0, r1, c0, c1 = _window(top, left, h, w)
        with torch.inference_mode(), one_thread(torch):
            x = self.net.synthesis(torch.from_numpy(np.ascontiguousarray(y_hat[:, r0:r1, c0:c1]))[None])[0]
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def window_error(self, y_hat: np.ndarray, canvas: np.ndarray, height: int, width: int, tile,
                     channels: int = 3, post: postfilter.PostFilter | None = None) -> float:
        """Squared error (8-bit levels, the mean over the channels), summed over the image's pixels in
        the tile's window: all that the tile's y shapes, its neighbours' margins included. `canvas`: the
        image padded to multiples of 64 (its padding does not count); channels 1: grey, decoded as
        the mean of the synthesis's R, G and B (`as_mode`); `post`: the pixels' post-filter, if any
        (the window's edges stand in for the image's pixels beyond them)."""
        r0, r1, c0, c1 = _window(*tile)
        pixels = as_mode(self._synthesise_window(y_hat, *tile), channels)[:height - 16 * r0, :width - 16 * c0]
        pixels = pixels if post is None else post.apply(pixels)
        target = canvas[16 * r0:16 * r1, 16 * c0:16 * c1, :channels][:height - 16 * r0, :width - 16 * c0]
        return float(np.sum((pixels.astype(np.float64) - target) ** 2)) / channels

    def refine(self, canvas: np.ndarray, y_all: np.ndarray, side, step: int, iterations: int,
               height: int, width: int, tile, channels: int = 3,
               post: postfilter.PostFilter | None = None) -> np.ndarray:
        """The tile's y refined for quality `step` (`nc.models.refine`), its neighbours' y fixed: the
        synthesis sees the same window of y_all as `synthesise`, and every image pixel in it counts
        (the tile's y shapes its neighbours' margins too). `canvas`: the image padded to multiples of
        64, `height` x `width` of it real; channels 1: grey, which the decoder gives as the mean of R, G
        and B; `post`: a post-filter the pixels will go through (its float twin is differentiated).
        y float32 (latent, h64/16, w64/16)."""
        from nc.bitstream.entropy import SCALES
        from nc.models.refine import refine

        torch = self.torch
        top, left, h, w = tile
        r0, r1, c0, c1 = _window(*tile)
        window = torch.from_numpy(np.ascontiguousarray(y_all[:, r0:r1, c0:c1]))[None]
        pixels = canvas[16 * r0:16 * r1, 16 * c0:16 * c1]
        target = torch.from_numpy(np.ascontiguousarray(pixels[:, :, :channels])).permute(2, 0, 1)[None] / 255
        synthesis = lambda y: as_mode_torch(self.net.synthesis(y), channels)  # noqa: E731
        if post is not None:  # as the decoder does: clamp the synthesis's R, G and B, take mode L's mean, filter
            filtered = post.as_convolution()
            synthesis = lambda y: filtered(as_mode_torch(self.net.synthesis(y).clamp(0, 1), channels))  # noqa: E731
        weight = torch.zeros(1, 1, *target.shape[2:])
        weight[:, :, :height - 16 * r0, :width - 16 * c0] = 1
        cells = _cells(tile)
        rows, cols = slice(cells[1].start - r0, cells[1].stop - r0), slice(cells[2].start - c0, cells[2].stop - c0)
        mean_g, index = self.coder.side_info(side, step)
        gain = self.coder.gain(step)
        mean_t, gain_t = (torch.from_numpy(a.astype(np.float32))[None] for a in (mean_g, gain))

        def decode(u):  # the tile's symbols among its neighbours' fixed y
            y = window.clone()
            y[:, :, rows, cols] = (u + mean_t) / gain_t
            return synthesis(y)

        u = refine(decode, target, weight, y_all[cells] * gain - mean_g, SCALES[index], self.coder.lmbda(step),
                   iterations)
        return ((u + mean_g) / gain).astype(np.float32)

    def decode_tiles(self, data: bytes, pos: int, step: int, facts: ImageFacts,
                     has_offsets: bool = False) -> np.ndarray:
        """The image (uint8, height x width x channels of `facts`' mode), before any post-filter, from
        the tiles of a payload that start at `pos`, coded at quality `step`; `has_offsets`: each tile's
        scale offsets (nc/codecs/scale_offsets.py) precede its z."""
        # the z of every tile first, then every y, then the pixels: each step of a tile sees its
        # neighbours' (the latents take 2.5 bytes per pixel with the shipped network)
        grid, blocks = list(tiles(facts.height, facts.width, TILE)), []
        hyper, latent = self.cfg.hyper, self.cfg.latent
        for _ in grid:
            shifts = (None, None)
            if has_offsets:
                offsets_data, pos = take_block(data, pos, "image/hvae")
                both = scale_offsets.unpack(offsets_data, hyper + latent, "image/hvae")
                shifts = (both[:hyper], both[hyper:])
            z_data, pos = take_block(data, pos, "image/hvae")
            y_data, pos = take_block(data, pos, "image/hvae")
            blocks.append((z_data, y_data, shifts))
        if pos != len(data):
            raise CorruptChunkError("image/hvae payload has bytes after its last tile")
        z_all = _canvas((self.coder.decode_z(z_data, (hyper, _up64(h) // 64, _up64(w) // 64), z_shift)
                         for (z_data, _, (z_shift, _)), (_, _, h, w) in zip(blocks, grid)),
                        hyper, 64, facts.height, facts.width, np.int64)
        y_all = _canvas((self.coder.decode_s(y_data, self.hyper_side(z_all, *tile), step, y_shift)
                         for (_, y_data, (_, y_shift)), tile in zip(blocks, grid)),
                        latent, 16, facts.height, facts.width, np.float32)
        out = np.empty((facts.height, facts.width, 3), np.uint8)
        for tile in grid:
            top, left, h, w = tile
            out[top:top + h, left:left + w] = self.synthesise(y_all, *tile)
        return as_mode(out, facts.channels)


def _window(top: int, left: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Latent rows r0:r1 and columns c0:c1 that a tile's synthesis sees: its own and MARGIN / 16 of
    its neighbours' on each side (fewer at the image's edges)."""
    return (max(0, (top - MARGIN) // 16), (top + _up64(h) + MARGIN) // 16,
            max(0, (left - MARGIN) // 16), (left + _up64(w) + MARGIN) // 16)


def _cells(tile) -> tuple[slice, slice, slice]:
    """The tile's own cells of the image's latent map (channels, rows, columns)."""
    top, left, h, w = tile
    return np.s_[:, top // 16:top // 16 + _up64(h) // 16, left // 16:left // 16 + _up64(w) // 16]


def _crop(a: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    """a[:, top:top + h, left:left + w] of a (channels, rows, columns) array."""
    return a[:, top:top + h, left:left + w]


def _canvas(parts, channels: int, cells: int, height: int, width: int, dtype) -> np.ndarray:
    """The tiles' maps (an iterable, one per tile in `tiles` order; `cells` pixels per cell) side
    by side, each written in as it comes (so a generator never holds more than one)."""
    out = np.empty((channels, _up64(height) // cells, _up64(width) // cells), dtype)
    for (top, left, _, _), part in zip(tiles(height, width, TILE), parts):
        out[:, top // cells:top // cells + part.shape[1], left // cells:left // cells + part.shape[2]] = part
    return out


def _up64(n: int) -> int:
    return -(-n // 64) * 64


def as_mode_torch(rgb, channels: int):
    """`as_mode` on torch images (batch, 3, height, width): channels 1 is the mean of R, G and B."""
    return rgb if channels == 3 else rgb.mean(1, keepdim=True)


def _header(payload: bytes) -> tuple[int, bool, bool]:
    """A payload's u16 step field -> (step, whether a post-filter follows, whether tiles send scale offsets)."""
    return scale_offsets.split_flags(U16.unpack_from(payload)[0])


@dataclass(frozen=True)
class CodedZ:
    """A tile's hyper latent coded both ways, with and without its scale offsets (z does not depend
    on the quality, so the bpp search codes it once)."""
    offsets: np.ndarray
    saved: float  # bits the offsets save, estimated
    plain: bytes
    shifted: bytes

    @classmethod
    def of(cls, coder: LatentCoder, z: np.ndarray) -> "CodedZ":
        offsets, saved = coder.choose_z_offsets(z)
        return cls(offsets, saved, coder.code_z(z), coder.code_z(z, offsets))


class HvaeEncoder(Encoder):
    def __init__(self, model: HvaeModel, facts: ImageFacts, rate: RatePoint, effort: int = 0):
        self.m, self.facts, self.rate = model, facts, rate
        self.iterations = REFINEMENT_ITERATIONS[effort]
        self.params: dict = {}
        self.done = False

    def encode(self, block: np.ndarray) -> list[Packet]:
        f = self.facts
        if self.done:
            raise UsageError("image/hvae encodes one image per track; it was already given")
        block = checked_image(block, f)
        self.done = True
        rgb = as_rgb(block)
        grid = list(tiles(f.height, f.width, TILE))
        ys, zs = zip(*(self.m.analyse(rgb, *tile) for tile in grid))
        z_all = _canvas(zs, self.m.cfg.hyper, 64, f.height, f.width, np.int64)
        latents = [(y, self.m.hyper_side(z_all, *tile)) for y, tile in zip(ys, grid)]
        z_parts = [CodedZ.of(self.m.coder, z) for z in zs]
        code = lambda step, lat=latents: self._payload(step, lat, z_parts)  # noqa: E731
        # refinement aims at the pixels after the post-filter that the unrefined file gets at that step
        refined = lambda step: code(step, self._refined(rgb, latents, step, grid, self._fit(code(step), block)))  # noqa: E731
        if self.rate.unit == "quality":
            step = self.m.coder.step_of(self.rate.value)
            return [Packet(self._filtered(refined(step) if self.iterations else code(step), block), 0, 1)]
        budget = self.rate.value * f.width * f.height / 8  # the payload's, as image/jpeg's bpp targets
        search = lambda b: largest_that_fits(code, self.m.steps, b)  # noqa: E731
        filtered = lambda payload: self._filtered(payload, block)  # noqa: E731
        if not self.iterations:
            return [Packet(filtered_within(search, budget, filtered), 0, 1)]
        return [Packet(refined_filtered_within(search, budget, filtered, code, refined, self.m.steps,
                                               lambda payload: _header(payload)[0]), 0, 1)]

    def _filtered(self, payload: bytes, image: np.ndarray) -> bytes:
        """`payload` with its post-filter (`_fit`), if any."""
        return postfilter.attach(payload, U16.size, self._fit(payload, image))

    def _fit(self, payload: bytes, image: np.ndarray) -> postfilter.PostFilter | None:
        """The post-filter (nc/codecs/postfilter.py) fitted to what a payload without one decodes to,
        where it pays for its bytes (bits + lambda x squared error); None where none does."""
        step, _, has_offsets = _header(payload)
        decoded = self.m.decode_tiles(payload, 2, step, self.facts, has_offsets)
        return postfilter.choose(decoded, image, self.m.coder.lmbda(step))

    def _refined(self, rgb: np.ndarray, latents, step: int, grid, post: postfilter.PostFilter | None) -> list:
        """`latents` with each tile's y refined (`HvaeModel.refine`) in raster order. Each tile sees its
        neighbours as the decoder will (earlier tiles' y as coded, later ones' as analysed, for now),
        and keeps its analysis y where that codes better: fewer bits + lambda x squared error over all
        the pixels its y shapes, after `post` (the post-filter of the unrefined file; the refined one
        gets its own, fitted again, which can only do better on the pixels it is fitted to)."""
        f, m = self.facts, self.m
        canvas = pad_to(rgb, 64)
        y_all = _canvas((y for y, _ in latents), m.cfg.latent, 16, f.height, f.width, np.float32)
        out = []
        for (y, side), tile in zip(latents, grid):
            cells = _cells(tile)
            options = []
            refined_y = m.refine(canvas, y_all, side, step, self.iterations, f.height, f.width, tile, f.channels,
                                 post)
            for candidate in (y, refined_y):
                data, y_hat = m.coder.quantize(candidate, side, step)
                y_all[cells] = y_hat
                error = m.window_error(y_all, canvas, f.height, f.width, tile, f.channels, post)
                options.append((8 * len(data) + m.coder.lmbda(step) * error, candidate, y_hat))
            _, chosen, y_hat = min(options, key=lambda o: o[0])
            y_all[cells] = y_hat
            out.append((chosen, side))
        return out

    def _payload(self, step: int, latents, z_parts) -> bytes:
        """The payload at `step`, without a post-filter; with scale offsets where they save more than
        their blocks' framing (a length field and a last ANS word per tile)."""
        coder = self.m.coder
        y_offsets = [coder.choose_y_offsets(y, side, step) for y, side in latents]
        saved = sum(bits for _, bits in y_offsets) + sum(z.saved for z in z_parts)
        shift = saved > 8 * 8 * len(latents)
        parts = [U16.pack(step | scale_offsets.FLAG if shift else step)]
        for (y, side), z, (y_shift, _) in zip(latents, z_parts, y_offsets):
            if shift:
                offsets = scale_offsets.pack(np.concatenate([z.offsets, y_shift]))
                y_data = coder.code_y(y, side, step, y_shift)
                parts += [U32.pack(len(offsets)), offsets, U32.pack(len(z.shifted)), z.shifted]
            else:
                y_data = coder.code_y(y, side, step)
                parts += [U32.pack(len(z.plain)), z.plain]
            parts += [U32.pack(len(y_data)), y_data]
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
        step, has_filter, has_offsets = _header(data)
        fitted, pos = postfilter.unpack(data, 2, f.channels) if has_filter else (None, 2)
        if step >= self.m.steps:
            raise CorruptChunkError(f"image/hvae quality step {step} beyond the model's {self.m.steps - 1}")
        pixels = self.m.decode_tiles(data, pos, step, f, has_offsets)
        return pixels if fitted is None else fitted.apply(pixels)


class HvaeCodec(LearnedImageCodec):
    codec_id, quality = "image/hvae", QUALITY
    # 4: scale offsets (nc/codecs/scale_offsets.py); 3: a post-filter (nc/codecs/postfilter.py); 2: escapes
    # Elias-gamma coded (nc/bitstream/entropy.py); every version decodes
    bitstream_version = 4
    model_class, encoder_class, decoder_class = HvaeModel, HvaeEncoder, HvaeDecoder
    efforts = len(REFINEMENT_ITERATIONS) - 1

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(weights, summary="neural, hierarchical VAE (mean-scale hyperprior), one model for "
                                          "qualities 0-8 (0-1 extrapolated) or a bpp target; modes L and RGB",
                         default=RatePoint("q4", 4.0, "quality"),
                         # below the classical image codecs (JPEG 10): the shipped weights beat JPEG but
                         # trail WebP and AVIF (nc/codecs/weights/image_hvae.md), so nc never picks it unless asked to
                         rank=5)
