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
