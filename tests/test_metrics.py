"""nc.metrics.harmonic_match: 1 for identical audio, near 0 when the pitch harmonics are gone or moved."""
import numpy as np

from nc.metrics import harmonic_match

RATE = 16000


def _voice(f0: float, seconds: float = 2.0) -> np.ndarray:
    """A buzzy vowel-like tone: 30 harmonics of f0 with a falling envelope, gently vibrating pitch."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / RATE
    x = sum(np.cos(k * phase) / k for k in range(1, 31) if k * f0 < 7500)
    return (0.1 * x / np.abs(x).max()).astype(np.float32)[:, None]


def test_identical_audio_matches_fully():
    x = _voice(120.0)
    assert harmonic_match(x, x, RATE) > 0.999


def test_noise_with_the_same_envelope_does_not_match():
    x = _voice(120.0)
    spectrum = np.fft.rfft(x[:, 0])
    rng = np.random.default_rng(0)
    noise = np.fft.irfft(np.abs(np.convolve(np.abs(spectrum), np.ones(400) / 400, "same"))
                         * np.exp(2j * np.pi * rng.random(spectrum.size)), n=len(x))
    assert harmonic_match(x, noise.astype(np.float32)[:, None], RATE) < 0.2


def test_wrong_pitch_scores_below_right_pitch_with_noise():
    x = _voice(120.0)
    rng = np.random.default_rng(1)
    noisy = x + 0.002 * rng.standard_normal(x.shape).astype(np.float32)
    assert harmonic_match(x, _voice(137.0), RATE) < 0.3 < harmonic_match(x, noisy, RATE)
