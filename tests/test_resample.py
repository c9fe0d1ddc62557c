"""StreamResampler: exact lengths, split invariance, zero delay, fidelity, bounded state."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nc.media.resample import StreamResampler, resample

PAIRS = [(44100, 48000), (48000, 44100), (16000, 48000), (48000, 16000), (8000, 48000),
         (48000, 8000), (22050, 16000), (44101, 48000)]  # the last has 48000 phases: filters built per block


def _stream(r: StreamResampler, pieces) -> np.ndarray:
    outs = [r.process(p) for p in pieces] + [r.flush()]
    for o in outs:
        assert o.dtype == np.float32 and o.ndim == 2 and o.shape[1] == r.channels
    return np.concatenate(outs)


def _random_pieces(x: np.ndarray, count: int, rng) -> list[np.ndarray]:
    cuts = np.sort(rng.integers(0, len(x) + 1, count - 1))  # repeats give empty pieces
    return np.split(x, cuts)


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
@pytest.mark.parametrize("n", [0, 1, 2, 147, 4801])
def test_total_length_is_ceil(rate_in, rate_out, n):
    y = resample(np.ones((n, 2), np.float32), rate_in, rate_out)
    assert y.shape == (-(-n * rate_out // rate_in), 2)


@pytest.mark.parametrize("rate_in,rate_out", PAIRS + [(48000, 48000)])
def test_one_block_or_100_pieces_is_bit_identical(rate_in, rate_out):
    rng = np.random.default_rng(rate_in + rate_out)
    x = rng.standard_normal((12345, 2)).astype(np.float32)
    whole = _stream(StreamResampler(rate_in, rate_out, 2), [x])
    pieces = _stream(StreamResampler(rate_in, rate_out, 2), _random_pieces(x, 100, rng))
    assert whole.tobytes() == pieces.tobytes()


@settings(max_examples=25, deadline=None)
@given(rates=st.sampled_from(PAIRS[:6] + [(7, 5), (3, 11)]), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1),
       count=st.integers(1, 60))
def test_split_invariance_property(rates, n, seed, count):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1)).astype(np.float32)
    whole = _stream(StreamResampler(*rates, 1), [x])
    assert whole.tobytes() == _stream(StreamResampler(*rates, 1), _random_pieces(x, count, rng)).tobytes()
    assert len(whole) == -(-n * rates[1] // rates[0])


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
@pytest.mark.parametrize("fraction", [0.05, 0.4])  # of the lower sample rate: low and near the passband edge
def test_sine_survives_above_40db(rate_in, rate_out, fraction):
    freq = fraction * min(rate_in, rate_out)
    x = np.sin(2 * np.pi * freq * np.arange(rate_in // 2) / rate_in).astype(np.float32)
    y = resample(x, rate_in, rate_out)
    ref = np.sin(2 * np.pi * freq * np.arange(len(y)) / rate_out)
    mid = slice(len(y) // 8, -len(y) // 8)  # away from the zero-padded ends
    snr = 10 * np.log10(np.sum(ref[mid] ** 2) / np.sum((y[mid] - ref[mid]) ** 2))
    assert snr > 40


@pytest.mark.parametrize("rate_in,rate_out", [(48000, 16000), (44100, 8000)])
def test_tone_above_output_nyquist_is_removed(rate_in, rate_out):
    freq = 0.56 * rate_out
    x = np.sin(2 * np.pi * freq * np.arange(rate_in // 2) / rate_in)
    y = resample(x, rate_in, rate_out)
    assert np.std(y[len(y) // 8:-len(y) // 8]) < 1e-3  # -60 dB


@pytest.mark.parametrize("rate_in,rate_out", [(44100, 48000), (48000, 16000), (16000, 44100)])
def test_zero_delay_impulse_lands_at_its_time(rate_in, rate_out):
    x = np.zeros(4000, np.float32)
    x[1000] = 1.0
    y = resample(x, rate_in, rate_out)
    assert abs(int(np.argmax(y)) - 1000 * rate_out / rate_in) <= 1
    # symmetric kernel: the peak neighbourhood is centred on the input time
    t = np.arange(len(y)) * rate_in / rate_out
    centre = np.sum(t * y ** 2) / np.sum(y ** 2)
    assert abs(centre - 1000) < 0.05 * max(1, rate_in / rate_out)


def test_identity_when_rates_are_equal():
    x = np.random.default_rng(0).standard_normal((999, 3)).astype(np.float32)
    r = StreamResampler(32000, 32000, 3)
    y = _stream(r, np.array_split(x, 7))
    assert np.array_equal(y, x)


def test_dc_gain_is_one():
    y = resample(np.full((5000, 1), 0.5, np.float32), 44100, 48000)
    assert np.allclose(y[200:-200], 0.5, atol=1e-6)


def test_state_is_bounded_by_the_filter_span():
    r = StreamResampler(44100, 48000, 2)
    rng = np.random.default_rng(1)
    for _ in range(200):
        r.process(rng.standard_normal((int(rng.integers(1, 700)), 2)).astype(np.float32))
        assert len(r.buf) <= 2 * r.half + 700 + 2


def test_lag_is_bounded_by_the_lookahead():
    r = StreamResampler(16000, 48000, 1)
    got = len(r.process(np.zeros((16000, 1), np.float32)))
    assert 48000 - 3 * (r.half + 1) <= got <= 48000


def test_flush_ends_the_stream():
    r = StreamResampler(8000, 16000, 1)
    r.process(np.zeros((10, 1), np.float32))
    assert len(r.flush()) == 20
    assert len(r.flush()) == 0
    with pytest.raises(RuntimeError):
        r.process(np.zeros((1, 1), np.float32))


def test_one_shot_keeps_1d_shape():
    y = resample(np.zeros(441, np.float32), 44100, 48000)
    assert y.shape == (480,) and y.dtype == np.float32
