"""audio/fsq's codes on held-out audio: bits written vs raw, and how many levels of each grid are used.

    .venv/bin/python bench/fsq_codes.py --data /work/data/audio16k

Writes bench/results/fsq_codes.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from nc.codecs.fsq import STAGES_FOR, FsqCodec
from nc.media.facts import AudioFacts

RESULTS = Path(__file__).resolve().parent / "results"


def entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--max-clips", type=int, default=40)
    args = p.parse_args()
    codec = FsqCodec()
    model, levels = codec.model, codec.model.cfg.fsq_levels
    raw_bits = float(np.log2(np.prod(levels)))
    paths = sorted((args.data / "eval_speech").glob("*.wav"))[: args.max_clips]
    lines = ["# audio/fsq codes on held-out speech", "",
             f"Weights `{codec.weights.name}` (sha256 {codec.descriptor.weights_sha256[:12]}); grid {levels}, raw "
             f"{raw_bits:.2f} bits per stage code. 'bits/code' counts every payload byte.", "",
             "| rate | stages | bits/code written | saving vs raw |", "|---|---|---|---|"]
    top = max(STAGES_FOR.values())
    histograms = np.zeros((top, len(levels), max(levels)), np.int64)
    for name, stages in STAGES_FOR.items():
        bits = codes = 0
        for path in paths:
            x, sr = sf.read(path, dtype="float32", always_2d=True)
            facts, point = AudioFacts(sr, x.shape[1]), codec.descriptor.resolve(name)
            enc = codec.encoder(facts, point)
            bits += 8 * sum(len(pk.payload) for pk in list(enc.encode(x)) + list(enc.flush()))
            c = codec.tokenize([x], facts, point)
            codes += c.size
            if stages == top:
                digits = model.digits(c)  # (channels, stages, dims, frames)
                for s in range(stages):
                    for d in range(len(levels)):
                        histograms[s, d] += np.bincount(digits[:, s, d].ravel(), minlength=max(levels))
        per = bits / max(codes, 1)
        lines.append(f"| {name} | {stages} | {per:.2f} | {1 - per / raw_bits:.1%} |")
    lines += ["", f"Level use at {top} stages: per stage, for each dimension, levels used / levels in the grid and "
              "the histogram's entropy in bits (log2 of the level count is the most it can be).", "",
              "| stage | " + " | ".join(f"dim {d} ({n} levels)" for d, n in enumerate(levels)) + " |",
              "|---|" + "---|" * len(levels)]
    for s in range(top):
        cells = [f"{int((histograms[s, d, :n] > 0).sum())}/{n}, {entropy_bits(histograms[s, d, :n]):.2f}"
                 for d, n in enumerate(levels)]
        lines.append(f"| {s + 1} | " + " | ".join(cells) + " |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fsq_codes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
