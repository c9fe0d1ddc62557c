"""A Wiener post-filter that the encoder fits to each image and sends with it (VVC's adaptive loop
filter, without its classes): the decoder's pixels, filtered by a small diamond of taps across the
colour channels, come closer to the original than the synthesis alone brings them.

A learned synthesis is one function for every image; the filter is the least-squares correction for
this one (or for one GOP of a video: one filter for its frames), so it gains most where the network
is weakest: with image/hvae's shipped weights, 0.5-2 dB on held-out photos for 60-260 bytes
(measured by hand on three photos; `bench/results/image.md` has the benchmark). The encoder fits it
in closed form from the pixels' second moments and keeps it only where it pays for its bytes
(`choose`).

The filter, for decoded pixels P (uint8, height x width x C) and output channel c:

    Q_c(y, x) = clip(P_c(y, x) + floor((sum_k sum_t w[c, k, t] f_k,t(y, x) + w[c, bias]
                                        + 2^(S-1)) / 2^S), 0, 255)

over the input channels k and the taps t = (dy, dx) of the diamond |dy| + |dx| <= radius in raster
order, where f_k,t = P_k(y + dy, x + dx) - P_k(y, x) for t != (0, 0) and f_k,(0,0) = P_k(y, x) - 128;
pixels beyond the image repeat its edge. The arithmetic is integer, so every machine gives the same
pixels. Serialized (`pack`; docs/FORMAT.md):

    offset  size  field
    0       1     radius (0-3)
    1       1     shift S (1-14)
    2       1     scale index of the coefficients (nc/bitstream/entropy.SCALES)
    3       4     coefficient bytes: u32 LE
    7       ...   ScaleTableCoder("gaussian") payload of the C x (C x taps + 1) coefficients, mean 0,
                  C order (output channel, input channel, tap; the bias last in each output channel)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from nc.errors import CorruptChunkError

FLAG = 1 << 15  # the top bit of a codec's u16 step field: a post-filter follows (image/hvae, video/wfvae)
MAX_RADIUS = 3
SHIFTS = (6, 7, 8, 9, 10)  # the precisions the encoder tries; any of 1-14 decodes
MAX_COEFFICIENT = 2**16  # |w| below this: the formula's sums fit int32 (76 terms x 255 x 2^16 < 2^31)
STRIP_PIXELS = 2**16  # pixels per strip of the statistics and the filtering: bounded memory
SAMPLE_PIXELS = 2**20  # pixels the encoder fits a filter on at most (a 768x512 photo: all of them)
_HEADER = struct.Struct("<BBBI")


def taps(radius: int) -> list[tuple[int, int]]:
    """The diamond's offsets (dy, dx) in raster order."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if abs(dy) + abs(dx) <= radius]


@dataclass(frozen=True)
class PostFilter:
    radius: int
    shift: int
    weights: np.ndarray  # int32 (C, C x taps + 1)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The filtered image or frames, uint8 like `pixels` ([frames,] height, width, C), each frame
        filtered on its own, strip by strip."""
        if pixels.ndim == 4:
            return np.stack([self.apply(frame) for frame in pixels]) if len(pixels) else pixels.copy()
        out = np.empty_like(pixels)
        for top, bottom in _strips(pixels.shape[:2]):
            out[top:bottom] = self.rows(pixels, top, bottom)
        return out

    def rows(self, pixels: np.ndarray, top: int, bottom: int) -> np.ndarray:
        """The filtered rows top:bottom of an image (height, width, C). Each neighbour's difference
        from the centre is summed as w P(neighbour) here, and the centre's share, -w P(centre), once
        per channel: the same integers as the formula, without a plane per tap. int64: the partial
        sums may pass 2^31 where the formula's do not."""
        r, (_, width, channels) = self.radius, pixels.shape
        n, offsets = bottom - top, taps(self.radius)
        planes = np.ascontiguousarray(_halo(pixels, top, bottom, r).transpose(2, 0, 1)).astype(np.int32)
        centre = planes[:, r:r + n, r:r + width]
        out = np.empty((n, width, channels), np.uint8)
        for c in range(channels):
            w = self.weights[c].astype(np.int64)
            acc = np.full((n, width), (1 << (self.shift - 1)) + w[-1], np.int64)
            for k in range(channels):
                own, others = 0, 0
                for (dy, dx), weight in zip(offsets, w[k * len(offsets):(k + 1) * len(offsets)]):
                    if (dy, dx) == (0, 0):
                        own = weight
                    elif weight:
                        acc += weight * planes[k, r + dy:r + dy + n, r + dx:r + dx + width]
                        others += weight
                acc += (own - others) * centre[k] - 128 * own
            out[..., c] = np.clip(centre[c] + (acc >> self.shift), 0, 255)
        return out

    def as_convolution(self):
        """The filter as a float function of torch images (batch, C, height, width) in [0, 1]: the same
        linear map without the integer rounding and clamping, for an encoder's gradients (`--effort 1`
        refines latents for the pixels after the filter)."""
        import torch
        from torch.nn import functional as F

        r, channels = self.radius, self.weights.shape[0]
        offsets = taps(r)
        kernel = np.zeros((channels, channels, 2 * r + 1, 2 * r + 1))
        bias = self.weights[:, -1].astype(np.float64) / 255  # in units of the [0, 1] pixels
        for c in range(channels):
            kernel[c, c, r, r] = 2.0**self.shift  # the residual form's P itself
            for k in range(channels):
                for (dy, dx), weight in zip(offsets, self.weights[c, k * len(offsets):(k + 1) * len(offsets)]):
                    kernel[c, k, r + dy, r + dx] += weight
                    kernel[c, k, r, r] -= weight  # a neighbour's difference from the centre ...
                    if (dy, dx) == (0, 0):  # ... and the centre minus 128
                        kernel[c, k, r, r] += weight
                        bias[c] -= 128 * weight / 255
        kernel, bias = (torch.from_numpy(a / 2.0**self.shift).float() for a in (kernel, bias))
        return lambda x: F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), kernel, bias)

    def pack(self) -> bytes:
        index = _best_scale(self.weights)
        data = _coder().encode(self.weights, np.zeros(self.weights.shape), np.full(
            self.weights.shape, index, np.int32))
        return _HEADER.pack(self.radius, self.shift, index, len(data)) + data


def attach(payload: bytes, header: int, fitted: PostFilter | None) -> bytes:
    """`payload`, whose `header` bytes of header start with its codec's u16 step field, with `fitted`
    right after that header and bit 15 of the field set (what `split_step` and `unpack` read);
    `payload` itself for None."""
    if fitted is None:
        return payload
    field = int.from_bytes(payload[:2], "little") | FLAG
    return field.to_bytes(2, "little") + payload[2:header] + fitted.pack() + payload[header:]


def split_step(field: int) -> tuple[int, bool]:
    """A codec's u16 step field -> (step, whether a post-filter follows)."""
    return field & (FLAG - 1), bool(field & FLAG)


def unpack(data: bytes, pos: int, channels: int) -> tuple[PostFilter, int]:
    """The filter serialized at `pos` of a payload for an image of `channels` channels, and the
    position after it; CorruptChunkError for a filter no encoder writes."""
    from nc.bitstream.entropy import SCALES
    from nc.errors import FormatError

    if pos + _HEADER.size > len(data):
        raise CorruptChunkError("payload ends inside its post-filter header")
    radius, shift, index, n = _HEADER.unpack_from(data, pos)
    pos += _HEADER.size
    if radius > MAX_RADIUS or not 1 <= shift <= 14 or index >= len(SCALES) or pos + n > len(data):
        raise CorruptChunkError("post-filter header out of range (radius, shift, scale or length)")
    shape = (channels, channels * len(taps(radius)) + 1)
    try:
        weights = _coder().decode(data[pos:pos + n], np.zeros(shape), np.full(shape, index, np.int32))
    except FormatError as e:
        raise CorruptChunkError(f"post-filter coefficients: {e}") from None
    weights = weights.astype(np.int64)  # np.abs of int32's -2^31 is -2^31
    if np.abs(weights).max(initial=0) >= MAX_COEFFICIENT:
        raise CorruptChunkError("post-filter coefficient out of range (|w| >= 2^16)")
    return PostFilter(radius, shift, weights.astype(np.int32)), pos + n


def choose(decoded: np.ndarray, original: np.ndarray, lmbda: float) -> PostFilter | None:
    """The filter (radius, precision) that most lowers bits + lmbda x squared error (8-bit levels,
    the mean over the channels) of `decoded` against `original`, both uint8 ([frames,] height, width,
    C): one filter for all the frames; None where no filter pays for its bytes. The errors are
    predicted from second moments, then the chosen filter's is measured; both on SAMPLE_PIXELS of
    the pixels at most (`_sample`), scaled to all of them."""
    decoded, original = _frames(decoded), _frames(original)
    channels, strips = decoded.shape[-1], _sample(decoded.shape)
    moments, cross, energy = _moments(decoded, original, strips)
    scale = decoded[..., 0].size / sum((b - t) * decoded.shape[2] for _, t, b in strips)
    unfiltered = lmbda * scale * energy.sum() / channels
    full = taps(MAX_RADIUS)
    best, best_bits, best_cost = None, 0, unfiltered
    for radius in range(MAX_RADIUS + 1):
        pick = _feature_index([full.index(t) for t in taps(radius)], len(full), channels)
        a, b = moments[np.ix_(pick, pick)], cross[pick]
        exact = np.linalg.lstsq(a + 1e-6 * np.eye(len(pick)) * np.trace(a) / len(pick), b, rcond=None)[0]
        for shift in SHIFTS:
            w = np.clip(np.rint(exact * 2**shift), 1 - MAX_COEFFICIENT, MAX_COEFFICIENT - 1)
            f = PostFilter(radius, shift, np.ascontiguousarray(w.T).astype(np.int32))
            wf = w / 2**shift  # predicted error: |r - F w|^2 per channel, plus the output's rounding (1/12)
            error = energy - 2 * np.einsum("fc,fc->c", wf, b) + np.einsum("fc,fg,gc->c", wf, a, wf)
            bits = 8 * len(f.pack())
            cost = bits + lmbda * (scale * error.sum() / channels + decoded[..., 0].size / 12)
            if cost < best_cost:
                best, best_bits, best_cost = f, bits, cost
    if best is None:
        return None
    measured = sum(np.sum((best.rows(decoded[i], t, b).astype(np.float64) - original[i, t:b]) ** 2)
                   for i, t, b in strips)
    return best if best_bits + lmbda * scale * measured / channels < unfiltered else None


def _frames(pixels: np.ndarray) -> np.ndarray:
    """(frames, height, width, C) from one image or several frames."""
    return pixels.reshape(-1, *pixels.shape[-3:])


def _sample(shape) -> list[tuple[int, int, int]]:
    """(frame, top, bottom) of the strips the encoder fits on, about SAMPLE_PIXELS at most of the
    frames (frames, height, width, C), spread over them: every k-th frame, and in a frame larger
    than that, every k-th strip. A filter of 76 taps fits a million pixels as well as all of them."""
    frames, height, width, _ = shape
    k = -(-frames * height * width // SAMPLE_PIXELS)
    # frame j k + j mod k, not j k: a video codec's frames differ by their place in a group of k
    # (video/wfvae codes 4 frames per latent frame), and every phase of the group should count
    chosen = [j * k + j % k for j in range(-(-frames // k)) if j * k + j % k < frames]
    every_strip = -(-height * width // SAMPLE_PIXELS)
    return [(i, top, bottom) for i in chosen for top, bottom in _strips((height, width))[::every_strip]]


def _moments(decoded: np.ndarray, original: np.ndarray, strips):
    """F^T F, F^T r and r^T r (per channel) over the strips (frame, top, bottom) of the frames
    (frames, height, width, C), for the largest diamond's features F and the residual r =
    original - decoded."""
    moments = cross = 0.0
    _, _, width, channels = decoded.shape
    energy = np.zeros(channels)
    for i, top, bottom in strips:
        f = _features(decoded[i], top, bottom, MAX_RADIUS).reshape(-1, (bottom - top) * width).T
        r = (original[i, top:bottom].astype(np.float64) - decoded[i, top:bottom]).reshape(-1, channels)
        moments, cross, energy = moments + f.T @ f, cross + f.T @ r, energy + (r * r).sum(0)
    return moments, cross, energy


def _features(pixels: np.ndarray, top: int, bottom: int, radius: int) -> np.ndarray:
    """(C x taps + 1, rows, width), float64: every tap's f of every channel for the rows top:bottom
    (the module docstring's formula), then ones (the bias)."""
    _, width, channels = pixels.shape
    halo = _halo(pixels, top, bottom, radius).astype(np.float64)
    centre = halo[radius:radius + bottom - top, radius:radius + width]
    out = np.empty((channels * len(taps(radius)) + 1, bottom - top, width))
    i = 0
    for k in range(channels):
        for dy, dx in taps(radius):
            shifted = halo[radius + dy:radius + dy + bottom - top, radius + dx:radius + dx + width, k]
            out[i] = shifted - 128 if (dy, dx) == (0, 0) else shifted - centre[..., k]
            i += 1
    out[i] = 1
    return out


def _halo(pixels: np.ndarray, top: int, bottom: int, radius: int) -> np.ndarray:
    """Rows top:bottom of an image (height, width, C) with `radius` pixels around them, the image's
    edge repeated beyond it (rows and columns clamped apart)."""
    height, width, _ = pixels.shape
    rows = np.clip(np.arange(top - radius, bottom + radius), 0, height - 1)
    return pixels[rows][:, np.clip(np.arange(-radius, width + radius), 0, width - 1)]


def _feature_index(tap_index: list[int], n_taps: int, channels: int) -> list[int]:
    """Rows of the largest diamond's features that a smaller diamond's taps use, and the bias."""
    return [k * n_taps + t for k in range(channels) for t in tap_index] + [channels * n_taps]


def _strips(shape) -> list[tuple[int, int]]:
    height, width = shape
    rows = max(1, STRIP_PIXELS // max(1, width))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def _best_scale(weights: np.ndarray) -> int:
    """The scale index that codes the coefficients in the fewest bits."""
    from nc.bitstream.entropy import SCALES

    coder, zeros = _coder(), np.zeros(weights.shape)
    return min(range(len(SCALES)), key=lambda i: coder.cross_entropy_bits(weights, zeros, np.full(
        weights.shape, i, np.int32)))


@lru_cache(maxsize=1)
def _coder():
    from nc.bitstream.entropy import ScaleTableCoder

    return ScaleTableCoder("gaussian")
