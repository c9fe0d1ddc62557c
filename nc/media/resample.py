"""Streaming polyphase resampler with zero delay.

The ratio is reduced by the gcd: rate_out / rate_in == L / M (44100 -> 48000 is
160 / 147). Output sample k sits at input time t_k = k * M / L. With
n = floor(t_k) and phase p = (k * M) mod L it is

    y[k] = sum_{j=-K+1..K} x[n + j] * h_p[j],   h_p[j] = w(p / L - j)

where w is a Kaiser-windowed sinc of half-width K input samples, cut off just
below the lower of the two Nyquist frequencies. Each phase's filter is
normalised to unit DC gain. Input before the stream start and after its end is
zero. Output k therefore needs input up to n + K: `process` holds outputs back
until that lookahead has arrived, `flush` zero-pads the end. Over a stream the
output has exactly ceil(n_in * L / M) samples, and the samples do not depend on
how the input was split into blocks (each output is a pure function of the
same K-sample windows and the same phase filter).
"""
from __future__ import annotations

import math

import numpy as np

ZERO_CROSSINGS = 32  # sinc lobes per side at the passband edge
ROLLOFF = 0.95  # cutoff as a fraction of the lower Nyquist frequency
BETA = 8.6  # Kaiser beta: ~80 dB stop band
MAX_TABLE = 1 << 18  # phase-filter table entries; above this filters are built per block
CHUNK = 8192  # outputs per einsum, bounds the gathered window memory


class StreamResampler:
    def __init__(self, rate_in: int, rate_out: int, channels: int):
        if rate_in <= 0 or rate_out <= 0 or channels <= 0:
            raise ValueError("rates and channel count must be positive")
        g = math.gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        self.channels = channels
        scale = min(1.0, self.up / self.down)  # downsampling lowers the cutoff and widens the filter
        self.cutoff = ROLLOFF * scale
        self.half = math.ceil(ZERO_CROSSINGS / scale)
        self.offsets = np.arange(-self.half + 1, self.half + 1)  # taps j relative to floor(t_k)
        self.table = self._filters(np.arange(self.up)) if self.up * 2 * self.half <= MAX_TABLE else None
        # buf holds input from absolute index `base` on; K zeros stand for the time before the start.
        self.base = -self.half
        self.buf = np.zeros((self.half, channels), np.float64)
        self.n_in = 0  # real input samples received
        self.k = 0  # next output index
        self.done = False

    def _filters(self, phases: np.ndarray) -> np.ndarray:
        """(len(phases), 2K) float64 filters, each summing to 1."""
        tau = phases[:, None] / self.up - self.offsets[None, :]
        u = np.clip(tau / self.half, -1.0, 1.0)
        h = np.sinc(self.cutoff * tau) * np.i0(BETA * np.sqrt(1.0 - u * u))
        return h / h.sum(axis=1, keepdims=True)

    def _outputs(self, k_end: int) -> np.ndarray:
        """Compute outputs self.k .. k_end-1 from the buffer and drop input no longer needed."""
        out = []
        for k0 in range(self.k, k_end, CHUNK):
            ks = np.arange(k0, min(k0 + CHUNK, k_end), dtype=np.int64)
            n, phase = np.divmod(ks * self.down, self.up)
            filt = self.table[phase] if self.table is not None else self._filters(phase)
            windows = self.buf[n[:, None] + self.offsets[None, :] - self.base]  # (m, 2K, ch)
            out.append(np.einsum("mtc,mt->mc", windows, filt))
        self.k = max(self.k, k_end)
        first_needed = (self.k * self.down) // self.up - self.half + 1
        if first_needed > self.base:  # keep only the span the next output reads: bounded state
            self.buf = self.buf[first_needed - self.base:]
            self.base = first_needed
        if not out:
            return np.zeros((0, self.channels), np.float32)
        return np.concatenate(out).astype(np.float32)

    def _push(self, block: np.ndarray) -> None:
        block = np.asarray(block, np.float64).reshape(-1, self.channels)
        self.buf = np.concatenate([self.buf, block])
        self.n_in += len(block)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Consume (n, ch) input; return every output whose lookahead is now available."""
        if self.done:
            raise RuntimeError("resampler already flushed")
        if self.up == self.down:
            self.n_in += len(block)
            return np.asarray(block, np.float32).reshape(-1, self.channels).copy()
        self._push(block)
        last_full = self.n_in - 1 - self.half  # largest floor(t_k) whose window is complete
        k_end = -(-(last_full + 1) * self.up // self.down) if last_full >= 0 else 0  # ceil
        return self._outputs(k_end)

    def flush(self) -> np.ndarray:
        """Zero-pad the end of the input and return the remaining outputs."""
        if self.done:
            return np.zeros((0, self.channels), np.float32)
        self.done = True
        if self.up == self.down:
            return np.zeros((0, self.channels), np.float32)
        total = -(-self.n_in * self.up // self.down)
        n_real = self.n_in
        self._push(np.zeros((self.half, self.channels)))  # the last output reads up to n_in - 1 + K
        self.n_in = n_real
        return self._outputs(total)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """One-shot: (n,) or (n, ch) -> float32 of length ceil(n * rate_out / rate_in)."""
    x = np.asarray(x, np.float32)
    mono = x.ndim == 1
    x2 = x[:, None] if mono else x
    r = StreamResampler(rate_in, rate_out, x2.shape[1])
    y = np.concatenate([r.process(x2), r.flush()])
    return y[:, 0] if mono else y
