"""Throughput and coding efficiency of nc.bitstream.entropy on 10**6 symbols.

    python bench/entropy.py            # prints a markdown table, writes bench/results/entropy.md

Symbols are drawn from each model's own distribution, so "ideal" is the model's
cross-entropy and "overhead" is what the coder adds (ANS precision, final state,
headers, escapes' raw bits are counted in the ideal). Speeds are the best of
REPEATS runs after one warm-up (which builds and caches the constriction models).
"""
from __future__ import annotations

import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nc.bitstream.entropy import (  # noqa: E402
    SCALES,
    FrequencyTable,
    ScaleTableCoder,
    decode_categorical,
    encode_categorical,
    pack_bits,
    unpack_bits,
)

N = 10**6
REPEATS = 3


def best_time(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def draw(freqs: np.ndarray, n: int, rng) -> np.ndarray:
    return rng.choice(freqs.size, size=n, p=freqs / freqs.sum())


def categorical_case(rng, contexts: int):
    # Skewed rows (squared counts), alphabet 256, like a quantised residual histogram.
    table = FrequencyTable.from_counts(rng.integers(0, 64, (contexts, 256)) ** 2)
    ctx = None if contexts == 1 else rng.integers(0, contexts, N)
    keys = np.zeros(N, np.int64) if ctx is None else ctx
    symbols = np.empty(N, np.int64)
    for c in range(contexts):
        symbols[keys == c] = draw(table.freqs[c].astype(float), int((keys == c).sum()), rng)
    data = encode_categorical(symbols, table, ctx)
    assert np.array_equal(decode_categorical(data, table, N, ctx), symbols)
    return (lambda: encode_categorical(symbols, table, ctx),
            lambda: decode_categorical(data, table, N, ctx),
            len(data), table.cross_entropy_bits(symbols, ctx))


def scale_case(rng, family: str):
    # Scale indices uniform over the table; residuals drawn from each scale's own table.
    coder = ScaleTableCoder(family)
    idx = rng.integers(0, len(SCALES), N).astype(np.int32)
    means = rng.normal(0, 20, N).astype(np.float32)
    sym = np.empty(N, np.int64)
    for k in range(len(SCALES)):
        sym[idx == k] = draw(coder.tables[k].freqs[0].astype(float), int((idx == k).sum()), rng)
    radius = coder.radii[idx]
    residual = np.where(sym == 2 * radius + 1, radius + 1 + rng.integers(0, 100, N), sym - radius)
    values = (residual + np.rint(means)).astype(np.int32)
    data = coder.encode(values, means, idx)
    assert np.array_equal(coder.decode(data, means, idx), values)
    return (lambda: coder.encode(values, means, idx),
            lambda: coder.decode(data, means, idx),
            len(data), coder.cross_entropy_bits(values, means, idx))


def pack_case(rng, bits: int):
    symbols = rng.integers(0, 2**bits, N)
    data = pack_bits(symbols, bits)
    assert np.array_equal(unpack_bits(data, bits, N), symbols)
    return (lambda: pack_bits(symbols, bits), lambda: unpack_bits(data, bits, N),
            len(data), float(bits * N))


def main() -> str:
    rng = np.random.default_rng(2024)
    cases = {
        "categorical, 1 context (alphabet 256)": categorical_case(rng, 1),
        "categorical, 16 contexts (alphabet 256)": categorical_case(rng, 16),
        "scale table, Gaussian (64 scales)": scale_case(rng, "gaussian"),
        "scale table, Laplace (64 scales)": scale_case(rng, "laplace"),
        "bit-packing, 5 bits": pack_case(rng, 5),
        "bit-packing, 12 bits": pack_case(rng, 12),
    }
    lines = [
        f"# nc.bitstream.entropy, {N:,} symbols",
        "",
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, constriction {version('constriction')}; best of {REPEATS}.",
        "",
        "| case | encode Msym/s | decode Msym/s | coded bits/sym | ideal bits/sym | overhead |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (enc, dec, nbytes, ideal_bits) in cases.items():
        coded, ideal = 8 * nbytes / N, ideal_bits / N
        lines.append(f"| {name} | {N / best_time(enc) / 1e6:.1f} | {N / best_time(dec) / 1e6:.1f} "
                     f"| {coded:.4f} | {ideal:.4f} | {100 * (coded - ideal) / ideal:+.3f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    report = main()
    print(report)
    out = ROOT / "bench" / "results" / "entropy.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
