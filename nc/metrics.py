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
