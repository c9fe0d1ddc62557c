"""Peak memory of a long video through the stream API: does it grow with the video's length?

    .venv/bin/python bench/video_memory.py [--codec video/wfvae] [--seconds 8,24] [--size 854x480]

For each length, a fresh process writes that many seconds of generated 480p video at 25 fps
(a textured scene panning 3 pixels a frame, made frame by frame, never held whole) through
`nc.open(path, "wb")` one second at a time, then reads it back through `nc.open(path, "rb")`
chunk by chunk, discarding what it decodes. It reports the process's peak resident memory
(ru_maxrss) after each half, the resident memory after each minute of video (VmRSS) both ways,
and the frames per second. If memory is bounded, the peaks do not
depend on the length. Writes bench/results/video_memory.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
import nc

codec, seconds, width, height, threads, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(threads)
fps, frames = 25, int(seconds * 25)
rng = np.random.default_rng(0)
scene = np.kron(rng.integers(0, 256, (height // 8 + 1, (width + 3 * frames) // 8 + 1, 3)).astype(np.uint8),
                np.ones((8, 8, 1), np.uint8))

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def rss_mib():  # resident now (the peak only ever rises; this shows whether memory is given back)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

every = 60 * fps  # a sample of the resident memory after each minute of video, both ways
encode_rss, decode_rss = [], []

base = peak_mib()
t0 = time.time()
with nc.open(path, "wb", codec=codec, quality=4, width=width, height=height, fps=fps) as w:
    for start in range(0, frames, fps):
        w.write(np.stack([scene[:height, 3 * t:3 * t + width] for t in range(start, min(frames, start + fps))]))
        if (start + fps) % every == 0:
            encode_rss.append(round(rss_mib()))
t1 = time.time()
after_encode = peak_mib()
count = 0
with nc.open(path, "rb") as r:
    for _, piece in r:
        count += len(piece)
        if count // every > len(decode_rss):
            decode_rss.append(round(rss_mib()))
t2 = time.time()
print(json.dumps({"frames": frames, "decoded": count, "base_mib": base, "encode_peak_mib": after_encode,
                  "decode_peak_mib": peak_mib(), "enc_fps": frames / (t1 - t0), "dec_fps": count / (t2 - t1),
                  "encode_rss_mib": encode_rss, "decode_rss_mib": decode_rss}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", default="video/wfvae")
    p.add_argument("--seconds", default="8,24")
    p.add_argument("--size", default="854x480")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="results file name in bench/results (default: video_memory[_CODEC].md)")
    args = p.parse_args()
    width, height = map(int, args.size.split("x"))
    rows = []
    for seconds in map(float, args.seconds.split(",")):
        out = Path("/tmp") / f"nc_video_memory_{os.getpid()}.ncb"
        result = subprocess.run([sys.executable, "-c", CHILD, args.codec, str(seconds), str(width), str(height),
                                 str(args.threads), str(out)], capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(result.stderr)
        row = {"seconds": seconds, "file_mib": out.stat().st_size / 2**20, **json.loads(result.stdout)}
        out.unlink()
        rows.append(row)
        print(row, flush=True)
    lines = ["# Video memory: peak resident memory against the video's length", "",
             f"`python bench/video_memory.py --codec {args.codec} --seconds {args.seconds} --size {args.size} "
             f"--threads {args.threads}`, {time.strftime('%Y-%m-%d')}, this machine ({os.cpu_count()} CPUs). "
             "Generated video (a panning texture, 25 fps) written one second at a time through nc.open(\"wb\"), "
             "read back chunk by chunk through nc.open(\"rb\"); peak RSS of a fresh process (base: after imports).", "",
             "| seconds | frames | file MiB | base MiB | peak after encode MiB | peak after decode MiB | enc fps | dec fps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seconds']:g} | {r['frames']} | {r['file_mib']:.2f} | {r['base_mib']:.0f} | "
                     f"{r['encode_peak_mib']:.0f} | {r['decode_peak_mib']:.0f} | {r['enc_fps']:.2f} | {r['dec_fps']:.2f} |")
    for r in rows:
        if r["encode_rss_mib"]:
            lines += ["", f"{r['seconds']:g} s, resident MiB after each minute of video: encoding "
                      + ", ".join(map(str, r["encode_rss_mib"])) + "; decoding " + ", ".join(map(str, r["decode_rss_mib"]))]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.out or ("video_memory.md" if args.codec == "video/wfvae" else f"video_memory_{args.codec.split('/')[1]}.md")
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
