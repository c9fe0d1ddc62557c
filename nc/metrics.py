"""Quality measures used by the demo and the benchmarks."""
from __future__ import annotations

import numpy as np

from nc.media.resample import resample


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for uint8 images or frames."""
    mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def pesq_wb(reference: np.ndarray, decoded: np.ndarray, sample_rate: int) -> float:
    """Wideband PESQ (ITU-T P.862.2) on the first channel, at 16 kHz."""
    from pesq import pesq

    ref, deg = (resample(x[:, :1].astype(np.float32), sample_rate, 16000)[:, 0] for x in (reference, decoded))
    return float(pesq(16000, ref.astype(np.float64), deg.astype(np.float64), "wb"))


def si_sdr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (all channels together)."""
    ref, deg = reference.astype(np.float64).ravel(), decoded.astype(np.float64).ravel()
    target = ref * (deg @ ref) / max(ref @ ref, 1e-12)
    return float(10 * np.log10(max(target @ target, 1e-12) / max((deg - target) @ (deg - target), 1e-12)))


def harmonic_match(reference: np.ndarray, decoded: np.ndarray, sample_rate: int) -> float:
    """How well the decoded pitch harmonics line up with the reference's, from 1 (all in place) to ~0.

    Per 40 ms frame (16 kHz, 20 ms hop) of the loudest 40 %, the log magnitude
    spectrum below 4 kHz minus its 9-bin moving average (the envelope) leaves
    the harmonic ripple; this is the mean correlation of the two ripples. A
    decoder that gets the spectral envelope right but smears the harmonics
    scores near 0 here while its mel distance looks good, and its PESQ is low
    (bench/results/audio_oracles.md)."""
    ref, deg = (resample(x[:, :1].astype(np.float32), sample_rate, 16000)[:, 0] for x in (reference, decoded))
    n = min(len(ref), len(deg))
    if n < 640:
        return float("nan")
    window = np.sqrt(np.hanning(642)[1:-1])
    frames = [np.lib.stride_tricks.sliding_window_view(x[:n], 640)[::320] * window for x in (ref, deg)]
    logs = [np.log(np.abs(np.fft.rfft(f))[:, :160] + 1e-5) for f in frames]
    kernel = np.ones(9) / 9
    ripples = [lg - np.apply_along_axis(np.convolve, 1, lg, kernel, "same") for lg in logs]
    energy = (frames[0] ** 2).sum(1)
    loud = energy >= np.quantile(energy, 0.6)
    a, b = (r[loud][:, 4:-4] for r in ripples)  # the moving average is biased at the edges
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    corr = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(corr.mean())


# MS-SSIM (Wang, Simoncelli & Bovik 2003): the standard 11x11 Gaussian window (sigma 1.5),
# K1 = 0.01, K2 = 0.03, five scales with these weights, 2x2 average pooling between scales.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_blur_valid(x: np.ndarray, sigma: float = 1.5, size: int = 11) -> np.ndarray:
    """Separable Gaussian filtering of a 2-D array, keeping only windows wholly inside it ('valid')."""
    from scipy.ndimage import correlate1d

    t = np.arange(size) - size // 2
    g = np.exp(-t**2 / (2 * sigma**2))
    g /= g.sum()
    r = size // 2
    return correlate1d(correlate1d(x, g, axis=0), g, axis=1)[r:-r, r:-r]


def _ssim_terms(a: np.ndarray, b: np.ndarray, peak: float) -> tuple[float, float]:
    """Mean luminance-contrast-structure SSIM and mean contrast-structure term of two 2-D arrays."""
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _gaussian_blur_valid(a), _gaussian_blur_valid(b)
    var_a = _gaussian_blur_valid(a * a) - mu_a**2
    var_b = _gaussian_blur_valid(b * b) - mu_b**2
    cov = _gaussian_blur_valid(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return float(np.mean(luminance * cs)), float(np.mean(cs))


def _pool2(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def ms_ssim(reference: np.ndarray, decoded: np.ndarray, peak: float = 255.0) -> float:
    """Multi-scale SSIM of two images (H, W) or (H, W, C), 1 for identical images.

    Computed per channel and averaged over the channels (for RGB: the mean of R, G and B), as
    CompressAI's published MS-SSIM figures are (pytorch_msssim on RGB). Contrast-structure terms are
    clipped at 0 before the weighted product, as there, so a badly broken image scores 0, not NaN.
    The short side must exceed 160 px (the window still fits at the coarsest of the five scales)."""
    ref, deg = (np.asarray(x, np.float64) for x in (reference, decoded))
    if ref.shape != deg.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {deg.shape}")
    if min(ref.shape[:2]) <= 160:
        raise ValueError(f"MS-SSIM needs images over 160 px on the short side, not {ref.shape[:2]}")
    ref, deg = (x[:, :, None] if x.ndim == 2 else x for x in (ref, deg))
    scores = []
    for c in range(ref.shape[2]):
        a, b, value = ref[:, :, c], deg[:, :, c], 1.0
        for i, weight in enumerate(MS_SSIM_WEIGHTS):
            ssim, cs = _ssim_terms(a, b, peak)
            value *= max(ssim if i == len(MS_SSIM_WEIGHTS) - 1 else cs, 0.0) ** weight
            a, b = _pool2(a), _pool2(b)
        scores.append(value)
    return float(np.mean(scores))


def bd_rate(rate_a, dist_a, rate_b, dist_b) -> float:
    """Bjontegaard delta rate: the average bitrate change, in percent, of curve b against anchor a at
    equal quality (negative: b needs fewer bits), over the quality range both curves cover.

    `dist` is a quality where higher is better (PSNR in dB, MS-SSIM in dB). Log-rate is interpolated
    as a function of quality with piecewise-cubic Hermite splines (PCHIP, as in the current VCEG/JVET
    tools, instead of the original single cubic fit: it passes through every point and does not
    overshoot with many points) and integrated exactly. Points where quality does not rise with rate
    are dropped first. NaN if the curves share no quality range or either has under two points."""
    from scipy.interpolate import PchipInterpolator

    curves = []
    for rate, dist in ((rate_a, dist_a), (rate_b, dist_b)):
        q, log_r = _monotone(np.asarray(dist, np.float64), np.log(np.asarray(rate, np.float64)))
        if len(q) < 2:
            return float("nan")
        curves.append((q, log_r))
    lo = max(curves[0][0][0], curves[1][0][0])
    hi = min(curves[0][0][-1], curves[1][0][-1])
    if not hi > lo:
        return float("nan")
    area_a, area_b = (PchipInterpolator(q, log_r).integrate(lo, hi) for q, log_r in curves)
    return float((np.exp((area_b - area_a) / (hi - lo)) - 1) * 100)


def _monotone(quality: np.ndarray, log_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points sorted by rate, keeping each only if its quality beats every cheaper point's."""
    order = np.argsort(log_rate, kind="stable")
    keep_q, keep_r = [], []
    for q, r in zip(quality[order], log_rate[order]):
        if np.isfinite(q) and (not keep_q or q > keep_q[-1]):
            keep_q.append(q)
            keep_r.append(r)
    return np.array(keep_q), np.array(keep_r)
