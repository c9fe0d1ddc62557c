"""A Wiener post-filter that the encoder fits to each image and sends with it (VVC's adaptive loop
filter, with up to 6 classes of local activity): the decoder's pixels, filtered by a small diamond of
taps across the colour channels, come closer to the original than the synthesis alone brings them.

A learned synthesis is one function for every image; the filter is the least-squares correction for
this one (or for one GOP of a video: one filter for its frames), so it gains most where the network
is weakest: with image/hvae's shipped weights, 0.5-2 dB on held-out photos for 60-260 bytes
(measured by hand on three photos; `bench/results/image.md` has the benchmark). The encoder fits it
in closed form from the pixels' second moments and keeps it only where it pays for its bytes
(`choose`). A flat sky and a textured lawn want different corrections, so a filter may hold one set
of weights per class of local activity (`classify`): video/wfvae's GOPs choose 1-6 classes by the
bits they save; image/hvae keeps one.

The filter, for decoded pixels P (uint8, height x width x C) and output channel c:

    Q_c(y, x) = clip(P_c(y, x) + floor((sum_k sum_t w[j, c, k, t] f_k,t(y, x) + w[j, c, bias]
                                        + 2^(S-1)) / 2^S), 0, 255)

over the input channels k and the taps t = (dy, dx) of the diamond |dy| + |dx| <= radius in raster
order, where f_k,t = P_k(y + dy, x + dx) - P_k(y, x) for t != (0, 0) and f_k,(0,0) = P_k(y, x) - 128,
and j = min(class(y, x), J - 1) for a filter of J classes (j = 0 for one class):

    s(y, x)     = sum_k P_k(y, x), times 3 for one channel        (the channels' sum, on one scale)
    a(y, x)     = |2 s(y, x) - s(y, x - 1) - s(y, x + 1)| + |2 s(y, x) - s(y - 1, x) - s(y + 1, x)|
    class(y, x) = how many of CLASS_THRESHOLDS (150, 375, 750, 1500, 3000) the sum of a over the
                  5 x 5 pixels around (y, x) reaches

Pixels beyond the image repeat its edge, and s and a are computed there from those repeated pixels as
anywhere else. The arithmetic is integer, so every machine gives the same pixels. Serialized
(`pack`; docs/FORMAT.md):

    offset  size  field
    0       1     radius (0-3) + 16 x (classes - 1) (classes 1-6; one class: the radius alone)
    1       1     shift S (1-14)
    2       1     scale index of the coefficients (nc/bitstream/entropy.SCALES)
    3       4     coefficient bytes: u32 LE
    7       ...   ScaleTableCoder("gaussian") payload of the J x C x (C x taps + 1) coefficients, mean 0,
                  C order (class, output channel, input channel, tap; the bias last in each output channel)
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
CLASS_THRESHOLDS = (150, 375, 750, 1500, 3000)  # activity (5 x 5 sums of a) where each class begins
MAX_CLASSES = len(CLASS_THRESHOLDS) + 1
ACTIVITY_RADIUS = 3  # rows of context the class of a row needs: 1 for a, 2 for the 5 x 5 sum
_HEADER = struct.Struct("<BBBI")


def taps(radius: int) -> list[tuple[int, int]]:
    """The diamond's offsets (dy, dx) in raster order."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if abs(dy) + abs(dx) <= radius]


@dataclass(frozen=True)
class PostFilter:
    radius: int
    shift: int
    weights: np.ndarray  # int32 (classes, C, C x taps + 1); (C, C x taps + 1) is one class

    def __post_init__(self):
        if self.weights.ndim == 2:
            object.__setattr__(self, "weights", self.weights[None])

    @property
    def classes(self) -> int:
        return self.weights.shape[0]

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
        if self.classes > 1:
            return self._rows_of_classes(pixels, top, bottom)
        r, (_, width, channels) = self.radius, pixels.shape
        n, offsets = bottom - top, taps(self.radius)
        planes = np.ascontiguousarray(_halo(pixels, top, bottom, r).transpose(2, 0, 1)).astype(np.int32)
        centre = planes[:, r:r + n, r:r + width]
        out = np.empty((n, width, channels), np.uint8)
        for c in range(channels):
            w = self.weights[0, c].astype(np.int64)
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

    def _rows_of_classes(self, pixels: np.ndarray, top: int, bottom: int) -> np.ndarray:
        """`rows` for a filter of classes: every class's sums by one product of the features with the
        weights, then each pixel's class's. float64 is exact here: every product and sum is an integer
        below 2^31 (the module's MAX_COEFFICIENT bound)."""
        (_, width, channels), n = pixels.shape, bottom - top
        features = _features(pixels, top, bottom, self.radius).reshape(-1, n * width)
        sums = (self.weights.reshape(-1, features.shape[0]).astype(np.float64) @ features)
        sums = sums.reshape(self.classes, channels, -1)
        of_class = np.minimum(classify(pixels, top, bottom), self.classes - 1).reshape(1, 1, -1)
        acc = np.take_along_axis(sums, of_class, 0)[0].astype(np.int64) + (1 << (self.shift - 1))
        centre = pixels[top:bottom].reshape(-1, channels).T.astype(np.int64)
        return np.clip(centre + (acc >> self.shift), 0, 255).astype(np.uint8).T.reshape(n, width, channels)

    def as_convolution(self):
        """The filter as a float function of torch images (batch, C, height, width) in [0, 1]: the same
        linear map without the integer rounding and clamping, for an encoder's gradients (`--effort 1`
        refines latents for the pixels after the filter). Classes are taken from the input's pixels
        rounded to 8 bits; the gradient flows through each pixel's class's weights."""
        import torch
        from torch.nn import functional as F

        r, pairs = self.radius, [self._float_kernel(w) for w in self.weights]
        kernels, biases = ([torch.from_numpy(a / 2.0**self.shift).float() for a in group] for group in zip(*pairs))

        def filtered(x):
            padded = F.pad(x, (r, r, r, r), mode="replicate")
            outs = [F.conv2d(padded, k.to(x.device), b.to(x.device)) for k, b in zip(kernels, biases)]
            if len(outs) == 1:
                return outs[0]
            pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            of_class = torch.from_numpy(np.stack([classify(p, 0, p.shape[0]) for p in pixels]))[:, None]
            of_class = of_class.clamp(max=len(outs) - 1).to(x.device)
            out = outs[0]
            for j in range(1, len(outs)):
                out = torch.where(of_class == j, outs[j], out)
            return out

        return filtered

    def _float_kernel(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One class's integer weights (C, C x taps + 1) -> (kernel (C, C, 2r + 1, 2r + 1), bias (C,)) of
        the same linear map on [0, 1] pixels, both still x 2^S."""
        r, channels = self.radius, weights.shape[0]
        offsets = taps(r)
        kernel = np.zeros((channels, channels, 2 * r + 1, 2 * r + 1))
        bias = weights[:, -1].astype(np.float64) / 255  # in units of the [0, 1] pixels
        for c in range(channels):
            kernel[c, c, r, r] = 2.0**self.shift  # the residual form's P itself
            for k in range(channels):
                for (dy, dx), weight in zip(offsets, weights[c, k * len(offsets):(k + 1) * len(offsets)]):
                    kernel[c, k, r + dy, r + dx] += weight
                    kernel[c, k, r, r] -= weight  # a neighbour's difference from the centre ...
                    if (dy, dx) == (0, 0):  # ... and the centre minus 128
                        kernel[c, k, r, r] += weight
                        bias[c] -= 128 * weight / 255
        return kernel, bias

    def pack(self) -> bytes:
        index = _best_scale(self.weights)
        data = _coder().encode(self.weights, np.zeros(self.weights.shape), np.full(
            self.weights.shape, index, np.int32))
        return _HEADER.pack(self.radius + 16 * (self.classes - 1), self.shift, index, len(data)) + data


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
    shape_byte, shift, index, n = _HEADER.unpack_from(data, pos)
    radius, classes = shape_byte % 16, shape_byte // 16 + 1
    pos += _HEADER.size
    if radius > MAX_RADIUS or classes > MAX_CLASSES or not 1 <= shift <= 14 or index >= len(SCALES) \
            or pos + n > len(data):
        raise CorruptChunkError("post-filter header out of range (radius, classes, shift, scale or length)")
    shape = (classes, channels, channels * len(taps(radius)) + 1)
    try:
        weights = _coder().decode(data[pos:pos + n], np.zeros(shape), np.full(shape, index, np.int32))
    except FormatError as e:
        raise CorruptChunkError(f"post-filter coefficients: {e}") from None
    weights = weights.astype(np.int64)  # np.abs of int32's -2^31 is -2^31
    if np.abs(weights).max(initial=0) >= MAX_COEFFICIENT:
        raise CorruptChunkError("post-filter coefficient out of range (|w| >= 2^16)")
    return PostFilter(radius, shift, weights.astype(np.int32)), pos + n


def choose(decoded: np.ndarray, original: np.ndarray, lmbda: float, max_classes: int = 1) -> PostFilter | None:
    """The filter (classes up to `max_classes`, radius, precision) that most lowers bits + lmbda x
    squared error (8-bit levels, the mean over the channels) of `decoded` against `original`, both uint8
    ([frames,] height, width, C): one filter for all the frames; None where no filter pays for its bytes.
    The errors are predicted from second moments, then the chosen filter's is measured; both on
    SAMPLE_PIXELS of the pixels at most (`_sample`), scaled to all of them."""
    decoded, original = _frames(decoded), _frames(original)
    channels, strips = decoded.shape[-1], _sample(decoded.shape)
    moments, cross, energy = _moments(decoded, original, strips, max_classes)
    scale = decoded[..., 0].size / sum((b - t) * decoded.shape[2] for _, t, b in strips)
    unfiltered = lmbda * scale * energy.sum() / channels
    full = taps(MAX_RADIUS)
    best, best_bits, best_cost = None, 0, unfiltered
    for classes in range(1, max_classes + 1):
        # the top classes merged into the last: a filter of J classes reads j = min(class, J - 1)
        a_all = np.concatenate([moments[:classes - 1], moments[classes - 1:].sum(0, keepdims=True)])
        b_all = np.concatenate([cross[:classes - 1], cross[classes - 1:].sum(0, keepdims=True)])
        for radius in range(MAX_RADIUS + 1):
            pick = _feature_index([full.index(t) for t in taps(radius)], len(full), channels)
            a, b = a_all[:, pick][:, :, pick], b_all[:, pick]
            exact = np.stack([np.linalg.lstsq(aj + 1e-6 * np.eye(len(pick)) * max(np.trace(aj), 1) / len(pick), bj,
                                              rcond=None)[0] for aj, bj in zip(a, b)])
            for shift in SHIFTS:
                w = np.clip(np.rint(exact * 2**shift), 1 - MAX_COEFFICIENT, MAX_COEFFICIENT - 1)
                f = PostFilter(radius, shift, np.ascontiguousarray(w.transpose(0, 2, 1)).astype(np.int32))
                wf = w / 2**shift  # predicted error: |r - F w|^2 per channel, plus the output's rounding (1/12)
                error = energy - 2 * np.einsum("jfc,jfc->c", wf, b) + np.einsum("jfc,jfg,jgc->c", wf, a, wf)
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


def _moments(decoded: np.ndarray, original: np.ndarray, strips, max_classes: int = 1):
    """F^T F and F^T r per class (classes, ...), and r^T r per channel, over the strips (frame, top,
    bottom) of the frames (frames, height, width, C), for the largest diamond's features F and the
    residual r = original - decoded; classes up to max_classes (the top ones merged into the last)."""
    _, _, width, channels = decoded.shape
    n_features = channels * len(taps(MAX_RADIUS)) + 1
    moments, cross = np.zeros((max_classes, n_features, n_features)), np.zeros((max_classes, n_features, channels))
    energy = np.zeros(channels)
    for i, top, bottom in strips:
        f = _features(decoded[i], top, bottom, MAX_RADIUS).reshape(-1, (bottom - top) * width).T
        r = (original[i, top:bottom].astype(np.float64) - decoded[i, top:bottom]).reshape(-1, channels)
        energy += (r * r).sum(0)
        if max_classes == 1:
            moments[0] += f.T @ f
            cross[0] += f.T @ r
            continue
        of_class = np.minimum(classify(decoded[i], top, bottom), max_classes - 1).ravel()
        for j in range(max_classes):
            chosen = of_class == j
            fj = f[chosen]
            moments[j] += fj.T @ fj
            cross[j] += fj.T @ r[chosen]
    return moments, cross, energy


def classify(pixels: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """The class (0 to MAX_CLASSES - 1, int64) of each pixel of the rows top:bottom of an image (height,
    width, C): how many CLASS_THRESHOLDS the 5 x 5 sum of its neighbourhood's activity a reaches (the
    module docstring's formula)."""
    width, channels = pixels.shape[1], pixels.shape[2]
    halo = _halo(pixels, top, bottom, ACTIVITY_RADIUS).astype(np.int64)
    s = halo.sum(2) * (3 if channels == 1 else 1)
    a = np.abs(2 * s[1:-1, 1:-1] - s[1:-1, :-2] - s[1:-1, 2:]) + np.abs(2 * s[1:-1, 1:-1] - s[:-2, 1:-1] - s[2:, 1:-1])
    n = bottom - top
    rows = sum(a[d:d + n] for d in range(5))  # (n, width + 4): a is known from 2 rows and columns out
    box = sum(rows[:, d:d + width] for d in range(5))
    return np.searchsorted(np.array(CLASS_THRESHOLDS), box, side="right")


def _features(pixels: np.ndarray, top: int, bottom: int, radius: int) -> np.ndarray:
    """(C x taps + 1, rows, width), float64: every tap's f of every channel for the rows top:bottom
    (the module docstring's formula), then ones (the bias)."""
    _, width, channels = pixels.shape
    halo = np.ascontiguousarray(_halo(pixels, top, bottom, radius).transpose(2, 0, 1)).astype(np.float64)
    centre = halo[:, radius:radius + bottom - top, radius:radius + width]
    out = np.empty((channels * len(taps(radius)) + 1, bottom - top, width))
    i = 0
    for k in range(channels):
        for dy, dx in taps(radius):
            shifted = halo[k, radius + dy:radius + dy + bottom - top, radius + dx:radius + dx + width]
            np.subtract(shifted, 128 if (dy, dx) == (0, 0) else centre[k], out=out[i])
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
