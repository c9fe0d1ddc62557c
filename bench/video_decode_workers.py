"""Decoding speed of the learned video codecs with GOPs synthesized one at a time or several at once.

    .venv/bin/python bench/video_decode_workers.py [--data /work/data/video] [--frames 128] [--repeats 3]

A decoder synthesizes several GOPs at once (as many as torch has threads, fewer for large frames:
nc/codecs/learned_video.py GopModel.decode_workers), each on one thread, so the pixels do not depend
on the thread count. This script checks that they do not, and measures the gain: every clip is
encoded once (quality 4), then decoded through nc.decode with 1 worker and with 2, alternating,
`--repeats` times each; the best time of each counts (the machine is shared and noisy; both are
measured in the same run).

Clips: the evaluation clips of DATA (scripts/build_video_set.py; 48 frames each), played forward
and back until --frames frames (several GOPs); without --data, samples/clip.mp4.
Writes bench/results/video_decode_workers.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import nc
from nc.codecs import learned_video
from nc.plugins import registry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from video import clips  # noqa: E402

CODECS = ("video/wfvae", "video/bsqvit")
WORKERS = (1, 2)
assert max(WORKERS) <= learned_video.MAX_DECODE_WORKERS


def ping_pong(x: np.ndarray, frames: int) -> np.ndarray:
    """x forward, backward, forward... cut to `frames` frames (a longer clip without a cut in it)."""
    cycle = np.concatenate([x, x[::-1]])
    return np.concatenate([cycle] * (frames // len(cycle) + 1))[:frames]


def decode_seconds(data: bytes, workers: int) -> tuple[float, np.ndarray]:
    # every decoder takes `workers` GOPs at once (the model's pool holds MAX_DECODE_WORKERS threads,
    # whichever run makes it)
    learned_video.GopModel.decode_workers = lambda model, facts: workers
    t = time.perf_counter()
    frames = nc.decode(data).data
    return time.perf_counter() - t, frames


def measure(codec: str, x: np.ndarray, fps: float, repeats: int) -> dict:
    data = nc.encode(x, fps=fps, codec=codec, quality=4)
    decode_seconds(data, 1)  # loads the weights and copies the networks
    best, frames = {}, {}
    for _ in range(repeats):
        for w in WORKERS:
            seconds, frames[w] = decode_seconds(data, w)
            best[w] = min(best.get(w, np.inf), seconds)
    same = all(np.array_equal(frames[w], frames[WORKERS[0]]) for w in WORKERS)
    return {"fps": {w: len(x) / best[w] for w in WORKERS}, "same": same}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path)
    p.add_argument("--frames", type=int, default=128, help="frames per clip (32 per GOP)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-clips", type=int, default=3)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    installed = [c for c in CODECS if c in registry().codecs]
    rows, t0 = [], time.time()
    for name, x, fps in clips(args.data, args.max_clips):
        x = ping_pong(x, args.frames)
        for codec in installed:
            r = measure(codec, x, fps, args.repeats)
            rows.append((name, f"{x.shape[2]}x{x.shape[1]}", codec, r))
            print(name, codec, {w: round(f, 2) for w, f in r["fps"].items()}, "same frames" if r["same"] else "FRAMES DIFFER",
                  flush=True)
    lines = ["# Learned video decoding: one GOP at a time or two at once", "",
             f"`python bench/video_decode_workers.py {' '.join(sys.argv[1:])}`: {time.time() - t0:.0f} s on this machine "
             f"({os.cpu_count()} CPUs). Each clip: {args.frames} frames (ping-pong of an evaluation clip), quality 4, "
             f"decoded through nc.decode; best of {args.repeats} alternating runs each. \"same\": the two decodes "
             "gave identical frames.", "",
             "| clip | size | codec | dec fps, 1 worker | dec fps, 2 workers | ratio | same |", "|---|---|---|---|---|---|---|"]
    for name, size, codec, r in rows:
        one, two = r["fps"][1], r["fps"][2]
        lines.append(f"| {name} | {size} | {codec} | {one:.1f} | {two:.1f} | {two / one:.2f} | {'yes' if r['same'] else 'NO'} |")
    out = ROOT / "bench" / "results" / "video_decode_workers.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    if not all(r["same"] for *_, r in rows):
        sys.exit("decoding with more workers changed the frames")


if __name__ == "__main__":
    main()
