"""video/bsqvit's entropy coding: bits written against raw bits, and what each context contributes.

    .venv/bin/python bench/bsqvit_entropy.py --data /work/data/video

For every evaluation clip (bench/video.py's, never used in training) and each quality G (sub-codes
kept per token), the clip is cut into the codec's GOPs and coded as the codec codes it. Reported:
raw bits (4 G per token), the payload's real bits (the ANS words and the 2-byte header) and the
ideal code lengths under the shipped counts with fewer contexts, the counts summed over the context
left out: no context (one table per sub-code position), the previous tubelet's sub-code only, the
previous sub-code of the same token only, and both (what the codec uses). Writes
bench/results/bsqvit_entropy.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video import clips  # noqa: E402

from nc.codecs.bsqvit import ALPHABET, GOP, NONE, BsqVitCodec, subcodes  # noqa: E402
from nc.models.bsqvit import TUBELET  # noqa: E402

QUALITIES = (1, 2, 4, 8, 12, 16)
MODELS = ("none", "past", "before", "both")  # the contexts each ideal code length uses


def ideal_bits(codes: np.ndarray, counts: np.ndarray, groups: int) -> dict[str, float]:
    """Ideal code lengths in bits of sub-codes (n, rows, columns, >= groups) of one GOP under the counts
    (groups, past, before, symbol) summed over the contexts each model leaves out."""
    past = np.concatenate([np.full((1, *codes.shape[1:]), NONE), codes[:-1]])
    before = np.concatenate([np.full((*codes.shape[:3], 1), NONE), codes[..., :-1]], -1)
    out = {}
    for name in MODELS:
        c = counts.astype(np.float64)
        if name in ("none", "before"):
            c = c.sum(1, keepdims=True)
        if name in ("none", "past"):
            c = c.sum(2, keepdims=True)
        p = (c + 1) / (c + 1).sum(-1, keepdims=True)
        g = np.broadcast_to(np.arange(codes.shape[-1]), codes.shape)
        ip = past if c.shape[1] > 1 else np.zeros_like(codes)
        ib = before if c.shape[2] > 1 else np.zeros_like(codes)
        bits = -np.log2(p[g, ip, ib, codes])
        out[name] = float(bits[..., :groups].sum())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder made by scripts/build_video_set.py")
    p.add_argument("--max-clips", type=int)
    args = p.parse_args()
    codec = BsqVitCodec()
    model = codec.model
    counts = model.table.freqs.astype(np.int64).reshape(model.cfg.groups, ALPHABET + 1, ALPHABET + 1, ALPHABET) - 1
    totals = {q: {"raw": 0.0, "payload": 0.0, **{m: 0.0 for m in MODELS}} for q in QUALITIES}
    seconds = 0.0
    for name, x, fps in clips(args.data, args.max_clips):
        seconds += len(x) / fps
        for start in range(0, len(x), GOP):
            frames = list(x[start:start + GOP])
            frames += [frames[-1]] * (-len(frames) % TUBELET)
            bits = model.bits(np.stack(frames))
            codes = subcodes(bits)
            for q in QUALITIES:
                t = totals[q]
                t["raw"] += codes[..., :q].size * 4
                t["payload"] += 8 * len(model.code(bits, q))
                for m, v in ideal_bits(codes, counts, q).items():
                    t[m] += v
        print(name, flush=True)
    lines = ["# video/bsqvit: entropy coding against raw bits", "",
             f"`python bench/bsqvit_entropy.py --data {args.data}`: {seconds:.1f} s of evaluation clips (bench/video.py's). "
             "kbps over the clips' duration. *payload* is what the codec writes (ANS words and packet headers, no "
             "container); the other columns are ideal code lengths under the shipped counts with fewer contexts "
             "(*none*: one table per sub-code position; *past*: the token's sub-code one tubelet back; *before*: the "
             "token's previous sub-code; *both*: the codec's model).", "",
             "| quality | raw kbps | payload kbps | saving | ideal none | ideal past | ideal before | ideal both |",
             "|---|---|---|---|---|---|---|---|"]
    for q, t in totals.items():
        k = {key: v / seconds / 1000 for key, v in t.items()}
        lines.append(f"| {q} | {k['raw']:.1f} | {k['payload']:.1f} | {100 * (1 - t['payload'] / t['raw']):.1f} % | "
                     + " | ".join(f"{k[m]:.1f}" for m in MODELS) + " |")
    out = Path(__file__).resolve().parent / "results" / "bsqvit_entropy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
