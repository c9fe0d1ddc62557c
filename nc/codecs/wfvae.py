"""video/wfvae: learned video compression with a wavelet-driven causal video VAE (nc/models/wfvae.py).

Rates: `--quality 1..8` (continuous; 1 is the smallest file) or `--bitrate 300k`, a target for
each packet's payload (bits per second of its frames): per packet, the largest quality step whose
payload fits is binary-searched (quality 1's when none does); the latents are computed once.

Frames are edge-padded to multiples of 64 (cropped back on decode), so any size codes; frame
rates are the track's, restored exactly by the container.

Packets: one per GOP of GOP frames (the last one shorter), each decodable alone, so every packet
is a seek point: the network's causal caches and the context prior start afresh at a GOP's first
frame. Inside a GOP the network runs WINDOW frames at a time, windows aligned to the GOP's start,
carrying its per-layer caches from window to window; a short last GOP repeats its last frame up to
a multiple of 4 (the latent frame rate), and those frames are dropped on decode. So memory is
bounded by a GOP (the encoder holds its frames, a copy of each) and a window of the network, and
feeding frames in any pieces gives the same bytes as feeding the whole clip.

`--effort 1` refines each GOP's y for that GOP before coding it (nc/models/refine.py, as image/hvae
does per image): gradient descent through the synthesis and the post-filter fitted to the unrefined
payload, on tiles of REFINE_TILE latent cells with REFINE_MARGIN cells of context, so memory does not
grow with the frame size. Where the unrefined payload costs less (bits + lambda x squared error; for a
bitrate, squared error), the GOP keeps it: refinement never leaves a GOP worse. The decoder and
the format do not change.

Deterministic as image/hvae is: everything that shapes the bitstream (the integer hyper-synthesis,
its context input, the gain tables) is integer or correctly rounded IEEE arithmetic. The float
synthesis shapes pixels only, and runs on one thread so that they do not depend on the thread
count. A decoder synthesizes as many GOPs at once as torch has threads (fewer for large frames:
learned_video.GopModel.decode_workers), each on one thread and its own copy of the network, so the
pixels are the same whatever the thread count. An encoder of small frames codes GOPs the same way
(GopModel.encode_workers; its bytes then do not depend on the thread count either).

Packet payload (docs/FORMAT.md, video/wfvae, is the exact spec):

    offset  size  field
    0       2     u16 LE: bit 15 set when a post-filter follows the header; bit 14 set when copy modes
                  and scale offsets are used; bit 13 when z modes are; bits 0-12 the step, the row of the weights' gain tables
                  (quality = 1 - levels_below + step / 16; the shipped weights: levels_below 0), < their rows
    2       1     n: u8, latent frames in this packet, ceil(frames / 4), 1..GOP / 4
    (3      7+    the post-filter, when bit 15 is set: nc/codecs/postfilter.py's layout, 3 channels, 1-6
                  classes; one filter for the GOP's frames, each filtered on its own after the synthesis)
    (3 or after the post-filter: when bit 14 is set: u32 LE length, then the scale offsets
                  (nc/codecs/scale_offsets.py) of 3 x latent channels: the first latent frame's, the
                  later ones' around the prior, and in copy mode)
    (       hyper when bit 13 is set: the z modes, a byte per channel of z (nc/codecs/hyper_deltas.py))
    then, per latent frame in time order:
    (       ...   when bit 14 is set and this is not the first: its copy-mode map, a bit per 2 x 2 cells
                  (nc/codecs/copy_modes.py))
            4     z bytes: u32 LE
            ...   z: nc/bitstream/entropy.ScaleTableCoder("gaussian") payload of the hyper latent,
                  (hyper, H64/64, W64/64), as image/hvae's; with bit 13, a later latent frame's
                  channels in change mode around the previous latent frame's z at their own scales
            4     y bytes: u32 LE
            ...   y: ScaleTableCoder("gaussian") payload of s, (latent, H64/16, W64/16), scale
                  indices and means from the integer hyper-synthesis of z and of the previous latent
                  frame's y_hat in fixed point (zeros for the GOP's first); with bit 14, scale indices
                  moved by their offsets, and in copy mode the means are the previous latent frame's y_hat g

Track params: {}. Bitstream version 6: the post-filter may hold up to 6 classes of local activity,
each with its own weights. Version 5: z modes, the later latent frames' z coded as changes where
that saves bits. Version 4: copy modes and scale offsets (the encoder sends them where
the GOP's payload is then shorter). Version 3: the post-filter (the encoder fits it to each GOP,
with one more synthesis of the GOP, and sends it where it pays for its bytes). Version 2: escapes in
the scale-table payloads are Elias-gamma coded (nc/bitstream/entropy.py); version 1 files (raw i32
escapes). All six decode.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nc.codecs import copy_modes, hyper_deltas, postfilter, scale_offsets
from nc.codecs.base import RatePoint, RateRange
from nc.codecs.hyperprior import LatentCoder
from nc.codecs.learned_image import load_network, one_thread, pad_to, take_block
from nc.codecs.learned_video import (GopEncoder, GopModel, LearnedVideoCodec, filtered_within, largest_that_fits,
                                     refined_filtered_within)
from nc.errors import CorruptChunkError, PluginError
from nc.media.facts import VideoFacts

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "video_wfvae.safetensors"
#: NC_WFVAE_WEIGHTS points nc at weights you trained yourself (files record the weights' hash)
WEIGHTS = Path(os.environ.get("NC_WFVAE_WEIGHTS", SHIPPED_WEIGHTS))
GOP = 32  # frames per packet: about a second at 25-30 fps, a seek point each
WINDOW = 8  # frames per network call: two latent frames
QUALITY = RateRange("quality", 1, 8)
#: --effort 0, 1: iterations of encoder-side refinement of each GOP's y (nc/models/refine.py); the
#: decoder and the format are the same at every effort; at effort 1 the bytes depend on the
#: encoder's torch thread count (the refinement's float sums)
REFINEMENT_ITERATIONS = (0, 30)
#: refinement works on tiles of REFINE_TILE latent cells (16 pixels each) a side, the synthesis
#: seeing REFINE_MARGIN cells around them: backpropagating through a 32-frame GOP holds about 1.5 GB
#: per 448x256 pixels (measured; 4.5 GB peak for an 854x480 GOP), so a 512x512 tile and its margins
#: about 5.5 GB (estimated), whatever the frame size
REFINE_TILE, REFINE_MARGIN = 32, 4
HEADER = struct.Struct("<HB")  # step, latent frames
U32 = struct.Struct("<I")


def step_of(payload: bytes) -> int:
    """The quality step of a GOP's payload, without its flags."""
    return split_field(HEADER.unpack_from(payload)[0])[0]


def split_field(field: int) -> tuple[int, bool, bool, bool]:
    """A GOP's u16 step field -> (step, whether a post-filter follows (bit 15), whether copy modes and
    scale offsets do (bit 14), whether a map of z modes does (bit 13))."""
    step, has_filter, has_modes = scale_offsets.split_flags(field)
    return step & (hyper_deltas.FLAG - 1), has_filter, has_modes, bool(step & hyper_deltas.FLAG)


class Gop(NamedTuple):
    """A GOP's payload as read: its latent frames, its post-filter (None without one) and its frames."""

    y_hats: list
    filter: postfilter.PostFilter | None
    duration: int


class WfvaeModel(GopModel):
    """The loaded network and integer tables shared by every encoder and decoder."""

    def __init__(self, path: Path):
        from nc.models.wfvae import TIME, VideoWFVAE, WfvaeConfig

        net, cfg, extra = load_network(path, WfvaeConfig, VideoWFVAE, "video/wfvae")
        super().__init__(net)
        if cfg.qualities != QUALITY.high:
            raise PluginError(f"{path}: video/wfvae weights must have {QUALITY.high:g} qualities, not {cfg.qualities}")
        self.coder = LatentCoder(extra, cfg, path, "video/wfvae", context=True)
        self.cfg, self.steps, self.time = cfg, self.coder.steps, TIME

    def analyse(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, bytes]]:
        """One GOP, uint8 (n, h, w, 3), n a multiple of 4 -> per latent frame (y float32 (latent, h64/16,
        w64/16), z integers, z's payload)."""
        torch, out = self.torch, []
        with self.fresh_network() as net:
            for start in range(0, len(frames), WINDOW):
                window = np.stack([pad_to(f, 64) for f in frames[start:start + WINDOW]])
                x = torch.from_numpy(window).permute(3, 0, 1, 2)[None].float() / 255
                y = net.analysis(x)[0]  # (latent, t, h, w)
                for t in range(y.shape[1]):
                    z = torch.round(net.h_a(y[None, :, t]))[0].numpy().astype(np.int64)
                    out.append((y[:, t].numpy(), z, self.coder.code_z(z)))
        return out

    def code(self, latents, step: int) -> bytes:
        """A GOP's payload at quality `step`: each latent frame's prior sees the one before."""
        return self.coded(latents, step)[0]

    def coded(self, latents, step: int) -> tuple[bytes, list]:
        """`code`'s payload and each latent frame's (mean of y g, scale indices, cells in copy mode or
        None) in it: the shorter of the payloads with and without copy modes, scale offsets and z modes."""
        z_modes = hyper_deltas.choose([z for _, z, _ in latents], self.coder.z_index, self.coder.coder)
        return min(self._coded(latents, step, None, z_modes),
                   self._coded(latents, step, self._choose_offsets(latents, step), z_modes), key=lambda c: len(c[0]))

    def _coded(self, latents, step: int, offsets: np.ndarray | None, z_modes: np.ndarray | None) -> tuple[bytes, list]:
        """`coded` without copy modes (offsets None), or with them and these scale offsets (3, latent):
        the first latent frame's, then the later ones' around the prior and in copy mode; with the later
        latent frames' z coded by `z_modes` (nc/codecs/hyper_deltas.py) where given."""
        coder = self.coder
        flags = (0 if offsets is None else scale_offsets.FLAG) | (0 if z_modes is None else hyper_deltas.FLAG)
        parts = [HEADER.pack(step | flags, len(latents))]
        if offsets is not None:
            block = scale_offsets.pack(offsets.ravel())
            parts += [U32.pack(len(block)), block]
        if z_modes is not None:
            parts.append(hyper_deltas.pack(z_modes))
        context, y_hat, priors = np.zeros(latents[0][0].shape, np.int64), None, []  # the GOP starts with no past
        for t, (y, z, z_data) in enumerate(latents):
            if z_modes is not None and t:
                z_data = coder.code_z_at(z, *hyper_deltas.prior(latents[t - 1][1], z_modes, coder.z_index))
            mean_g, index = coder.side_info(coder.hyper_side(z, context), step)
            copy = self._copy_blocks(y, mean_g, index, y_hat, step, offsets) if offsets is not None and t else None
            if copy is not None:
                parts.append(copy_modes.pack(copy))
            if offsets is not None:
                mean_g, index = self._with_modes(mean_g, index, y_hat, step, offsets, copy)
            y_data, y_hat = coder.quantize_at(y, mean_g, index, step)
            context = coder.fixed_point(y_hat)
            parts += [U32.pack(len(z_data)), z_data, U32.pack(len(y_data)), y_data]
            priors.append((mean_g, index, None if copy is None else copy_modes.cells(copy)))
        return b"".join(parts), priors

    def _copy_blocks(self, y, mean_g, index, previous, step: int, offsets: np.ndarray) -> np.ndarray:
        """The blocks of a later latent frame that code in fewer bits in copy mode (nc/codecs/copy_modes.py)."""
        coder = self.coder
        return copy_modes.choose(coder.symbols(y, mean_g, step), scale_offsets.shifted(index, offsets[1]),
                                 coder.symbols(y, previous * coder.gain(step), step),
                                 scale_offsets.shifted(index, offsets[2]), coder.coder)

    def _with_modes(self, mean_g, index, previous, step: int, offsets: np.ndarray, copy: np.ndarray | None):
        """A latent frame's (mean of y g, scale indices) per cell with copy modes and offsets: the first
        latent frame's (copy None) the prior's with offsets[0]; a later one's by its blocks' modes, the
        prior's or the previous latent frame's y_hat g, with offsets[1] or [2] on the prior's indices."""
        if copy is None:
            return mean_g, scale_offsets.shifted(index, offsets[0])
        cells = copy_modes.cells(copy)
        return (np.where(cells, previous * self.coder.gain(step), mean_g),
                np.where(cells, scale_offsets.shifted(index, offsets[2]), scale_offsets.shifted(index, offsets[1])))

    def _choose_offsets(self, latents, step: int) -> np.ndarray:
        """The scale offsets (3, latent) of a GOP: each channel's best over the first latent frame,
        over the later ones' cells coded around the prior, and over those in copy mode. The modes
        are those each latent frame would take with offsets chosen for it alone."""
        coder = self.coder
        groups = ([], [], [])  # (symbols, scale indices) per cell of each kind, (latent, cells)
        context, y_hat = np.zeros(latents[0][0].shape, np.int64), None
        for t, (y, z, _) in enumerate(latents):
            mean_g, index = coder.side_info(coder.hyper_side(z, context), step)
            prior = coder.symbols(y, mean_g, step)
            if t:
                copy_mean = y_hat * coder.gain(step)
                copy = coder.symbols(y, copy_mean, step)
                prior_index, copy_index = (scale_offsets.shifted(index, scale_offsets.choose(s, index, coder.coder)[0])
                                           for s in (prior, copy))
                cells = copy_modes.cells(copy_modes.choose(prior, prior_index, copy, copy_index, coder.coder))
                groups[1].append((prior[:, ~cells], index[:, ~cells]))
                groups[2].append((copy[:, cells], index[:, cells]))
                prior, mean_g = np.where(cells, copy, prior), np.where(cells, copy_mean, mean_g)
            else:
                groups[0].append((prior.reshape(len(prior), -1), index.reshape(len(index), -1)))
            y_hat = coder.dequantize(prior, mean_g, step)
            context = coder.fixed_point(y_hat)
        offsets = np.zeros((3, self.cfg.latent), np.int64)
        for k, group in enumerate(groups):
            if group and sum(s.shape[1] for s, _ in group):
                symbols, indices = (np.concatenate(a, 1) for a in zip(*group))
                offsets[k] = scale_offsets.choose(symbols, indices, coder.coder)[0]
        return offsets

    def read(self, payload: bytes, height: int, width: int, duration: int) -> Gop:
        """A GOP's payload -> its latent frames' y_hat, float64 (latent, H64/16, W64/16) each, and its
        post-filter; checks it."""
        coder = self.coder
        if len(payload) < HEADER.size:
            raise CorruptChunkError("video/wfvae payload shorter than its header")
        field, n = HEADER.unpack_from(payload)
        step, has_filter, has_modes, has_z_modes = split_field(field)
        fitted, pos = postfilter.unpack(payload, HEADER.size, 3) if has_filter else (None, HEADER.size)
        if step >= self.steps or not 1 <= n <= GOP // self.time or n != -(-duration // self.time):
            raise CorruptChunkError(f"video/wfvae packet header out of range (step {step}, {n} latent frames "
                                    f"for {duration} frames)")
        offsets = None
        if has_modes:
            block, pos = take_block(payload, pos, "video/wfvae")
            offsets = scale_offsets.unpack(block, 3 * self.cfg.latent, "video/wfvae").reshape(3, -1)
        z_modes, z = None, None
        if has_z_modes:
            z_modes, pos = hyper_deltas.unpack(payload, pos, self.cfg.hyper, "video/wfvae")
        h16, w16 = -(-height // 64) * 4, -(-width // 64) * 4
        context, y_hats = np.zeros((self.cfg.latent, h16, w16), np.int64), []
        for t in range(n):
            copy = None
            if has_modes and t:
                copy, pos = copy_modes.unpack(payload, pos, (h16 // copy_modes.BLOCK, w16 // copy_modes.BLOCK),
                                              "video/wfvae")
            z_data, pos = take_block(payload, pos, "video/wfvae")
            y_data, pos = take_block(payload, pos, "video/wfvae")
            if z_modes is not None and t:
                z = coder.decode_z_at(z_data, *hyper_deltas.prior(z, z_modes, coder.z_index))
            else:
                z = coder.decode_z(z_data, (self.cfg.hyper, h16 // 4, w16 // 4))
            mean_g, index = coder.side_info(coder.hyper_side(z, context), step)
            if has_modes:
                mean_g, index = self._with_modes(mean_g, index, y_hats[-1] if t else None, step, offsets, copy)
            y_hats.append(coder.decode_at(y_data, mean_g, index, step))
            context = coder.fixed_point(y_hats[-1])
        if pos != len(payload):
            raise CorruptChunkError("video/wfvae payload has bytes after its last latent frame")
        return Gop(y_hats, fitted, duration)

    def pixels(self, gop: Gop, height: int, width: int) -> np.ndarray:
        """A GOP read by `read` -> its frames, uint8 (duration, height, width, 3), post-filtered."""
        frames = self.synthesis(gop.y_hats, height, width)[:gop.duration]
        return frames if gop.filter is None else gop.filter.apply(frames)

    def synthesis(self, y_hats: list[np.ndarray], height: int, width: int) -> np.ndarray:
        """Latent frames -> uint8 (4 per latent frame, height, width, 3), before any post-filter."""
        torch, frames, per_window = self.torch, [], WINDOW // self.time
        with self.fresh_network() as net, one_thread(torch):
            for k in range(0, len(y_hats), per_window):
                y = torch.from_numpy(np.stack(y_hats[k:k + per_window], 1))[None].float()
                x = net.synthesis(y)[0].clamp(0, 1)  # (3, t, h64, w64)
                frames.append((x * 255).round().to(torch.uint8).permute(1, 2, 3, 0)[:, :height, :width].numpy())
        return np.concatenate(frames)

    def refine(self, frames: np.ndarray, duration: int, latents, priors, step: int, iterations: int,
               post: postfilter.PostFilter | None) -> list:
        """`latents` (from `analyse`) with y refined for quality `step` (`nc.models.refine`), tile by
        tile, each tile's y over the whole GOP at once against its pixels in the first `duration`
        frames (edges and the GOP's repeated last frames do not count), after the post-filter
        `post` (its float twin is differentiated). The priors (means, scales and copy modes) are
        those `coded` gave the analysis y; a cell in copy mode keeps following the previous latent
        frame's refined value. The refined y, coded again, moves the priors a little."""
        from nc.bitstream.entropy import SCALES

        mean_g = np.stack([mean for mean, _, _ in priors], 1)  # (latent, t, h, w)
        scale = SCALES[np.stack([index for _, index, _ in priors], 1)]
        copy = np.stack([np.zeros(mean_g.shape[2:], bool) if c is None else c for _, _, c in priors])  # (t, h, w)
        gain = self.coder.gain(step)[:, None]
        y = np.stack([y for y, _, _ in latents], 1)
        canvas = np.stack([pad_to(f, 64) for f in frames])
        height, width = frames.shape[1:3]
        with self.gradient_network() as net:
            for r0 in range(0, y.shape[2], REFINE_TILE):
                for c0 in range(0, y.shape[3], REFINE_TILE):
                    cells = np.s_[:, :, r0:r0 + REFINE_TILE, c0:c0 + REFINE_TILE]
                    prior = (mean_g[cells], scale[cells], copy[cells[1:]])
                    u = self._refine_tile(net, canvas, (duration, height, width), y, cells, prior, gain, step,
                                          iterations, post)
                    # y as decoded from the symbols the coder will send, so that copies follow exactly
                    # (with the continuous u each copy would add the fraction before it: 27 % more bits
                    # on samples/clip.mp4 at quality 4; +0.07 dB for 0.6 % more on a pan; by hand)
                    y[cells] = _chained(*(self.torch.from_numpy(np.ascontiguousarray(a))
                                          for a in (np.rint(u), mean_g[cells], copy[cells[1:]], gain))).numpy()
        return [(y[:, t].astype(np.float32), z, z_data) for t, (_, z, z_data) in enumerate(latents)]

    def _refine_tile(self, net, canvas, real, y, cells, prior, gain, step, iterations, post) -> np.ndarray:
        """One tile's refined symbols (`nc.models.refine.refine`): the synthesis sees the tile's y and
        REFINE_MARGIN cells of its neighbours' around it, and every real pixel of that window counts
        (the tile's y shapes its neighbours' margins too). real: (duration, height, width); prior: the
        tile's (mean of y g, scale, copy-mode cells)."""
        from nc.models.refine import refine

        torch, (duration, height, width) = self.torch, real
        rows, cols = cells[2], cells[3]
        r0, c0 = max(0, rows.start - REFINE_MARGIN), max(0, cols.start - REFINE_MARGIN)
        r1, c1 = rows.start + REFINE_TILE + REFINE_MARGIN, cols.start + REFINE_TILE + REFINE_MARGIN
        window = torch.from_numpy(np.ascontiguousarray(y[:, :, r0:r1, c0:c1]))[None]
        pixels = np.ascontiguousarray(canvas[:, 16 * r0:16 * r1, 16 * c0:16 * c1])
        target = torch.from_numpy(pixels).permute(3, 0, 1, 2)[None].float() / 255  # (1, 3, frames, h, w)
        weight = torch.zeros(1, 1, *target.shape[2:])
        weight[:, :, :duration, :height - 16 * r0, :width - 16 * c0] = 1
        inner = np.s_[:, :, :, rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0]
        mean_g, scale, copy = prior
        mean_t, gain_t = (torch.from_numpy(a.astype(np.float32))[None] for a in (mean_g, gain))
        copy_t = torch.from_numpy(copy)
        filtered = None if post is None else post.as_convolution()

        def decode(u):  # the tile's symbols among its neighbours' y; each frame filtered (its window's edges aside) as the decoder does
            window_y = window.clone()
            window_y[inner] = _chained(u[0], mean_t[0], copy_t, gain_t[0])[None]
            x = net.synthesis(window_y)
            return x if filtered is None else filtered(x.clamp(0, 1)[0].transpose(0, 1)).transpose(0, 1)[None]

        u0 = y[cells] * gain - mean_g
        return refine(decode, target, weight, u0, scale, self.coder.lmbda(step), iterations)


def _chained(u, mean_g, copy, gain):
    """y (latent, t, h, w) from symbols u around the means mean_g (of y g), except that a cell in copy
    mode (copy: bool (t, h, w)) is around the previous latent frame's y g: a refinement moving one
    latent frame moves the copies that follow. Torch tensors, float32 or 64."""
    import torch

    frames = []
    for t in range(u.shape[1]):
        mean = mean_g[:, t] if t == 0 else torch.where(copy[t], frames[-1], mean_g[:, t])
        frames.append(u[:, t] + mean)
    return torch.stack(frames, 1) / gain


class WfvaeEncoder(GopEncoder):
    def __init__(self, model: WfvaeModel, facts: VideoFacts, rate: RatePoint, effort: int = 0):
        self.iterations = REFINEMENT_ITERATIONS[effort]
        # refinement holds GBs per GOP and uses every thread: one GOP at a time
        super().__init__(facts, GOP, model.time, model, parallel=not self.iterations)
        self.m, self.rate = model, rate

    def code_gop(self, frames: np.ndarray, duration: int) -> bytes:
        latents = self.m.analyse(frames)
        code = lambda step: self.m.code(latents, step)  # noqa: E731
        filtered = lambda payload: self._filtered(payload, frames, duration)  # noqa: E731
        refined = lambda step: self._refined(frames, duration, latents, step)[1]  # noqa: E731
        if self.rate.unit == "quality":
            step = self.m.coder.step_of(self.rate.value)
            if not self.iterations:
                return filtered(code(step))
            plain, refined_payload = self._refined(frames, duration, latents, step)
            return self._better(plain, filtered(refined_payload), frames, duration, self.m.coder.lmbda(step))
        budget = self.rate.value * duration / float(self.facts.fps) / 8
        search = lambda b: largest_that_fits(code, self.m.steps, b)  # noqa: E731
        plain = filtered_within(search, budget, filtered)
        if not self.iterations:
            return plain
        refined_payload = refined_filtered_within(search, budget, filtered, code, refined, self.m.steps, step_of)
        if max(len(plain), len(refined_payload)) > budget:  # below the smallest step's size: the smaller
            return min(plain, refined_payload, key=len)
        return self._better(plain, refined_payload, frames, duration, None)

    def _better(self, plain: bytes, refined: bytes, frames: np.ndarray, duration: int, lmbda: float | None) -> bytes:
        """Refinement never leaves a GOP worse: the refined payload unless the plain one costs less,
        in bits + lmbda x squared error (the training's; 8-bit levels summed over the pixels, the mean
        over the channels), or, for a bitrate (lmbda None: both fit), in squared error alone. Refinement
        optimises a relaxed rounding through a float filter fitted to the plain payload, so it can lose.
        Both payloads are decoded for this: a few seconds of a GOP's minute."""
        f = self.facts

        def cost(payload: bytes) -> float:
            decoded = self.m.pixels(self.m.read(payload, f.height, f.width, duration), f.height, f.width)
            error = np.sum((decoded.astype(np.float64) - frames[:duration]) ** 2) / 3
            return error if lmbda is None else 8 * len(payload) + lmbda * error

        return refined if cost(refined) <= cost(plain) else plain

    def _refined(self, frames: np.ndarray, duration: int, latents, step: int) -> tuple[bytes, bytes]:
        """The plain payload at `step` with its post-filter, and the payload, without a post-filter, of
        y refined (`WfvaeModel.refine`) for the pixels after that filter (the refined payload gets its
        own, fitted again, which can only do better on the pixels it is fitted to)."""
        payload, priors = self.m.coded(latents, step)
        post = self._fit(payload, frames, duration)
        refined_y = self.m.refine(frames, duration, latents, priors, step, self.iterations, post)
        return postfilter.attach(payload, HEADER.size, post), self.m.code(refined_y, step)

    def _filtered(self, payload: bytes, frames: np.ndarray, duration: int) -> bytes:
        """`payload` with its post-filter (`_fit`), if any."""
        return postfilter.attach(payload, HEADER.size, self._fit(payload, frames, duration))

    def _fit(self, payload: bytes, frames: np.ndarray, duration: int) -> postfilter.PostFilter | None:
        """The post-filter (nc/codecs/postfilter.py) fitted to the GOP's frames as a payload without one
        decodes them, where it pays for its bytes (bits + lambda x squared error); None where none does."""
        f, step = self.facts, step_of(payload)
        decoded = self.m.synthesis(self.m.read(payload, f.height, f.width, duration).y_hats, f.height, f.width)
        return postfilter.choose(decoded[:duration], frames[:duration], self.m.coder.lmbda(step),
                                 max_classes=postfilter.MAX_CLASSES)


class WfvaeCodec(LearnedVideoCodec):
    codec_id, quality = "video/wfvae", QUALITY
    # 6: post-filters of classes; 5: z modes (nc/codecs/hyper_deltas.py); 4: copy modes and scale offsets (nc/codecs/copy_modes.py,
    # scale_offsets.py); 3: a post-filter per
    # GOP (nc/codecs/postfilter.py); 2: escapes Elias-gamma coded (nc/bitstream/entropy.py); every
    # version decodes
    bitstream_version = 6
    model_class, encoder_class = WfvaeModel, WfvaeEncoder
    efforts = len(REFINEMENT_ITERATIONS) - 1

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(weights, summary="neural, wavelet-driven causal video VAE with a conditional hyperprior; "
                                          "quality 1-8 or a bitrate; 32-frame GOPs, each a seek point",
                         default=RatePoint("q4", 4.0, "quality"),
                         # below video/h264 (10): the shipped weights are far below x264 (nc/codecs/weights/video_wfvae.md)
                         rank=5)
