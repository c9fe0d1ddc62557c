"""nc.metrics for images: PSNR of a known error, MS-SSIM against pytorch_msssim and its ordering,
and BD-rate on curves whose answer is known by hand. Generated data only."""
import math

import numpy as np
import pytest

from nc.metrics import bd_rate, ms_ssim, psnr


def _pattern(h: int = 192, w: int = 256, rng: np.random.Generator | None = None) -> np.ndarray:
    """A smooth colour pattern with texture, uint8 RGB."""
    rng = rng or np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 60 * np.sin(xx / 9.0 + c) * np.cos(yy / 13.0) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _noisy(x: np.ndarray, sigma: float, rng: np.random.Generator | None = None) -> np.ndarray:
    rng = rng or np.random.default_rng(1)
    return np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8)


def test_psnr_of_a_known_error():
    x = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(x, x + 1) == pytest.approx(20 * math.log10(255))  # MSE 1
    y = x.copy()
    y[:4] += 10  # half the pixels off by 10: MSE 50, over all three channels
    assert psnr(x, y) == pytest.approx(10 * math.log10(255**2 / 50))
    assert psnr(x, x) == math.inf


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    x = _pattern()
    assert ms_ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    scores = [ms_ssim(x, _noisy(x, s)) for s in (2, 8, 20, 50)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert 0 < scores[-1] < 0.9
    assert ms_ssim(x[:, :, 0], x[:, :, 0]) == pytest.approx(1.0)  # one channel, 2-D


def test_ms_ssim_matches_pytorch_msssim():
    """Reference value from pytorch_msssim 1.0 (`ms_ssim(X, Y, data_range=255)` on float64 NCHW tensors),
    which computes the standard Wang 2003 MS-SSIM per channel and averages R, G and B."""
    rng = np.random.default_rng(0)
    x = _pattern(rng=rng)
    y = _noisy(x, 12, rng)
    assert ms_ssim(x, y) == pytest.approx(0.9526983683, abs=1e-5)


def test_ms_ssim_refuses_images_too_small_for_five_scales():
    x = _pattern(160, 256)
    with pytest.raises(ValueError, match="160"):
        ms_ssim(x, x)


RATES = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
QUALITY = np.array([26.0, 29.0, 32.0, 35.0, 37.5])


@pytest.mark.parametrize("factor", [0.8, 1.25, 0.5])
def test_bd_rate_of_a_curve_scaled_in_rate_is_that_scale(factor):
    """Same qualities at `factor` times the bits: exactly (factor - 1) x 100 %, whatever the curve's shape."""
    assert bd_rate(RATES, QUALITY, RATES * factor, QUALITY) == pytest.approx((factor - 1) * 100, abs=1e-9)


def test_bd_rate_uses_only_the_shared_quality_range():
    # Log-rate straight in quality (each 3 dB doubles the bits), so any subset of the points
    # interpolates the same line: b, 20 % cheaper but only over the top of a's range, is -20 %.
    quality = np.array([26.0, 29.0, 32.0, 35.0, 38.0])
    rates = 0.1 * 2 ** ((quality - 26) / 3)
    assert bd_rate(rates, quality, rates[2:] * 0.8, quality[2:]) == pytest.approx(-20.0, abs=1e-9)
    assert math.isnan(bd_rate(RATES, QUALITY, RATES, QUALITY + 20))  # no overlap
    assert math.isnan(bd_rate(RATES[:1], QUALITY[:1], RATES, QUALITY))  # one point is no curve


def test_bd_rate_drops_points_where_quality_does_not_rise():
    dented_rates = np.append(RATES, 3.2)
    dented_quality = np.append(QUALITY, 30.0)  # more bits, worse quality: dropped
    assert bd_rate(RATES, QUALITY, dented_rates * 0.8, dented_quality) == pytest.approx(-20.0, abs=1e-9)
