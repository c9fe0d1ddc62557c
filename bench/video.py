"""Video benchmark: every installed neural video codec over its qualities, beside x264 and x265 at the
same bitrates, in one run.

    .venv/bin/python bench/video.py --data /work/data/video [--max-clips N] [--codecs video/wfvae]

Evaluation clips: DATA/eval/*.npy (uint8 (frames, h, w, 3)) with their frame rates in
DATA/eval/clips.json, built by scripts/build_video_set.py and never used in training: two held-out
real clips (opencv-doc cup, tree) and pan/zooms over held-out photos. Without --data: the bundled
samples/clip.mp4 (so it runs anywhere; vtest.avi, which the training set also draws from after
its first 50 frames).

Every clip goes through nc's container (nc.encode / nc.decode), so kbps is measured from the .ncb
bytes, container included, over the clip's duration. Per clip:
  - each neural codec at each quality (QUALITY_SWEEPS), and at a higher --effort (EFFORT_CURVES);
  - video/h264 (x264, preset medium) and video/h265 (x265, preset medium) in ABR mode at each
    of those measured bitrates ("matched bitrate");
  - x264 and x265 over a CRF sweep (CRF_SWEEP), for their whole rate-distortion curves.
Measured: kbps, PSNR of luma (BT.601 Y from RGB) and of RGB (each the mean over frames of the
frame's PSNR), MS-SSIM (nc.metrics.ms_ssim, mean of R, G, B; on every MS_SSIM_EVERY-th frame: it
costs 0.1 s a frame), and encode / decode frames per second (torch on --threads CPU threads; the
x26x encoders use nc's pinned 4 threads). BD-rate of each curve against x264's CRF curve, per clip
(nc.metrics.bd_rate, PSNR-RGB and PSNR-Y; NaN where the curves share no quality range).
Writes bench/results/video.md and video_rd.png.

`python bench/video.py` is the command (there is no `nc bench`: bench/ is not part of the installed package).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

import nc  # noqa: E402
from nc.bitstream.container import payload_bytes  # noqa: E402
from nc.metrics import bd_rate, ms_ssim  # noqa: E402
from nc.plugins import registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CLASSICAL = ("video/h264", "video/h265")
ANCHOR = "video/h264"
QUALITY_SWEEPS = {"video/wfvae": (1, 2, 3, 4, 5, 6, 7, 8), "video/bsqvit": (1, 2, 4, 8, 12, 16)}
DEFAULT_SWEEP = (1, 2, 3, 4, 5, 6, 7, 8)
# Codecs also measured at a higher --effort, as a curve of their own named "ID effort N", at these
# qualities (wfvae's refinement takes over a minute per 32-frame GOP at 416x240: fewer points)
EFFORT_CURVES = {"video/wfvae": (1, (1, 4, 8))}
CRF_SWEEP = (51, 46, 42, 38, 34, 30, 26)
MS_SSIM_EVERY = 4
MIN_ABR_KBPS = 50  # video/h264 and video/h265 take bitrates from 50k


def clips(data: Path | None, max_clips: int | None) -> list[tuple[str, np.ndarray, float]]:
    """(name, uint8 (frames, h, w, 3), fps) per evaluation clip."""
    if data is None:
        import av

        with av.open(str(ROOT / "samples" / "clip.mp4")) as f:
            frames = np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
        return [("samples_clip", frames, 25.0)]
    index = json.loads((data / "eval" / "clips.json").read_text())
    out = []
    for name in sorted(index)[:max_clips]:
        num, den = index[name]["fps"]
        out.append((name, np.load(data / "eval" / f"{name}.npy", allow_pickle=False), num / den))
    return out


def luma(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def frame_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """nc.metrics.psnr, but capped at 100 dB: a frame decoded exactly must not make the clip's mean infinite."""
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def measure(codec: str, kwargs: dict, x: np.ndarray, fps: float) -> dict:
    """Encode and decode one clip at one point."""
    t0 = time.perf_counter()
    data = nc.encode(x, fps=fps, codec=codec, **kwargs)
    t1 = time.perf_counter()
    y = nc.decode(data).data
    t2 = time.perf_counter()
    if y.shape != x.shape:
        raise RuntimeError(f"{codec} decoded {y.shape}, not {x.shape}")
    n = len(x)
    small = min(x.shape[1:3]) <= 160
    return {"kbps": len(data) * 8 / (n / fps) / 1000, "payload_kbps": payload_bytes(data) * 8 / (n / fps) / 1000,
            "psnr_y": float(np.mean([frame_psnr(luma(a), luma(b)) for a, b in zip(x, y)])),
            "psnr_rgb": float(np.mean([frame_psnr(a, b) for a, b in zip(x, y)])),
            "ms_ssim": float("nan") if small else float(np.mean([ms_ssim(a, b) for a, b in
                                                                 zip(x[::MS_SSIM_EVERY], y[::MS_SSIM_EVERY])])),
            "enc_fps": n / (t1 - t0), "dec_fps": n / (t2 - t1)}


def curves(neural: list[str]) -> list[tuple[str, str, tuple, dict]]:
    """(label, codec, qualities, other encode arguments) of each neural curve: every codec's sweep,
    then its EFFORT_CURVES one."""
    plain = [(c, c, QUALITY_SWEEPS.get(c, DEFAULT_SWEEP), {}) for c in neural]
    return plain + [(f"{c} effort {EFFORT_CURVES[c][0]}", c, EFFORT_CURVES[c][1], {"effort": EFFORT_CURVES[c][0]})
                    for c in neural if c in EFFORT_CURVES]


def run(data: Path | None, max_clips: int | None, neural: list[str]) -> tuple[list[dict], dict]:
    rows, bd = [], defaultdict(dict)
    for name, x, fps in clips(data, max_clips):
        print(f"{name}: {x.shape[0]} frames {x.shape[2]}x{x.shape[1]} at {fps:.3f} fps", flush=True)
        clip_rows = []
        for codec in neural:
            measure(codec, {"quality": 1}, x[:4], fps)  # loads the weights, so the timings below do not
        for label, codec, sweep, extra in curves(neural):
            for q in sweep:
                r = {"clip": name, "codec": label, "point": f"q{q:g}", "mode": "sweep",
                     **measure(codec, {"quality": q, **extra}, x, fps)}
                clip_rows.append(r)
                if r["payload_kbps"] < MIN_ABR_KBPS:
                    continue  # below what the x26x plugin's ABR mode takes; their CRF sweeps cover it
                for rival in CLASSICAL:  # x26x's ABR targets its payload: ask for the neural payload's rate
                    clip_rows.append({"clip": name, "codec": rival, "point": f"{label} q{q:g}", "mode": "matched",
                                      **measure(rival, {"bitrate": f"{r['payload_kbps']:.3f}k"}, x, fps)})
        for rival in CLASSICAL:
            for crf in CRF_SWEEP:
                clip_rows.append({"clip": name, "codec": rival, "point": f"crf{crf}", "mode": "sweep",
                                  **measure(rival, {"quality": crf}, x, fps)})
        for r in clip_rows:
            print(f"  {r['codec']:12s} {r['point']:18s} {r['kbps']:9.1f} kbps  Y {r['psnr_y']:6.2f}  "
                  f"RGB {r['psnr_rgb']:6.2f}  MS-SSIM {r['ms_ssim']:.4f}  enc {r['enc_fps']:6.1f} fps  "
                  f"dec {r['dec_fps']:6.1f} fps", flush=True)
        anchor = [r for r in clip_rows if r["codec"] == ANCHOR and r["mode"] == "sweep"]
        for codec in [*(label for label, *_ in curves(neural)), "video/h265"]:
            curve = [r for r in clip_rows if r["codec"] == codec and r["mode"] == "sweep"]
            for metric in ("psnr_rgb", "psnr_y"):
                bd[codec][(name, metric)] = bd_rate([r["kbps"] for r in anchor], [r[metric] for r in anchor],
                                                    [r["kbps"] for r in curve], [r[metric] for r in curve])
        rows += clip_rows
    return rows, bd


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def write_report(rows: list[dict], bd: dict, neural: list[str], args, seconds: float, threads: int) -> None:
    names = sorted({r["clip"] for r in rows})
    lines = ["# Video benchmark", "",
             f"`{' '.join(['python bench/video.py', *args])}`: {len(names)} clips never used in training, "
             f"{seconds / 60:.1f} min on this machine ({os.cpu_count()} CPUs, torch threads {threads}; "
             "neural decoders synthesize each GOP on one thread, up to one GOP per thread at once). kbps counts the whole .ncb file over the clip's duration. "
             "PSNR is the mean over frames; MS-SSIM is on every "
             f"{MS_SSIM_EVERY}th frame (RGB mean). x264 and x265: preset medium. "
             "Matched rows are x264/x265 in ABR mode asked for the neural codec's payload bitrate (ABR targets the "
             f"payload; each file then carries its own container), where that is at least {MIN_ABR_KBPS} kbps.", "",
             "## Mean over clips", "",
             "| codec | point | kbps | PSNR-Y | PSNR-RGB | MS-SSIM | enc fps | dec fps |", "|---|---|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["codec"], r["point"], r["mode"])].append(r)
    for (codec, point, mode), g in groups.items():
        lines.append(f"| {codec} | {point}{' (matched)' if mode == 'matched' else ''} | {_mean(g, 'kbps'):.1f} | "
                     f"{_mean(g, 'psnr_y'):.2f} | {_mean(g, 'psnr_rgb'):.2f} | {_mean(g, 'ms_ssim'):.4f} | "
                     f"{_mean(g, 'enc_fps'):.1f} | {_mean(g, 'dec_fps'):.1f} |")
    lines += ["", "## BD-rate against x264's CRF curve, per clip (negative: fewer bits for the same PSNR)", "",
              "Over the PSNR range both curves reach on that clip; 'no overlap' where they share none. The mean "
              "is over the clips with a value (their count in brackets).", "",
              "| codec | metric | " + " | ".join(names) + " | mean |", "|---|---|" + "---|" * (len(names) + 1)]
    for codec, values in bd.items():
        for metric in ("psnr_rgb", "psnr_y"):
            v = [values.get((n, metric), float("nan")) for n in names]
            finite = [a for a in v if np.isfinite(a)]
            mean = f"{np.mean(finite):+.1f}% ({len(finite)})" if finite else "-"
            cells = " | ".join(f"{a:+.1f}%" if np.isfinite(a) else "no overlap" for a in v)
            lines.append(f"| {codec} | {metric} | {cells} | {mean} |")
    lines += ["", "## Every clip", "", "| clip | codec | point | kbps | PSNR-Y | PSNR-RGB | MS-SSIM | enc fps | dec fps |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['codec']} | {r['point']}{' (matched)' if r['mode'] == 'matched' else ''} | "
                     f"{r['kbps']:.1f} | {r['psnr_y']:.2f} | {r['psnr_rgb']:.2f} | {r['ms_ssim']:.4f} | "
                     f"{r['enc_fps']:.1f} | {r['dec_fps']:.1f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "video.md").write_text("\n".join(lines) + "\n")
    plot(rows, names, [label for label, *_ in curves(neural)])


def plot(rows: list[dict], names: list[str], neural: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(names))
    fig, axes = plt.subplots((len(names) + cols - 1) // cols, cols, figsize=(5 * cols, 4 * ((len(names) + cols - 1) // cols)),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        for codec, style in [(c, "o-") for c in neural] + [("video/h264", "s--"), ("video/h265", "^--")]:
            pts = sorted((r["kbps"], r["psnr_rgb"]) for r in rows
                         if r["clip"] == name and r["codec"] == codec and r["mode"] == "sweep")
            if pts:
                ax.plot(*zip(*pts), style, label=codec, markersize=4)
        matched = [(r["kbps"], r["psnr_rgb"]) for r in rows if r["clip"] == name and r["mode"] == "matched"
                   and r["codec"] == "video/h264"]
        if matched:
            ax.plot(*zip(*matched), "kx", label="x264 at matched kbps")
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("kbps (whole file)")
        ax.set_ylabel("PSNR-RGB (dB)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "video_rd.png", dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder made by scripts/build_video_set.py")
    p.add_argument("--max-clips", type=int)
    p.add_argument("--codecs", help="comma-separated neural video codecs (default: every installed one)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    installed = registry().codecs
    neural = args.codecs.split(",") if args.codecs else sorted(
        c for c, codec in installed.items() if codec.descriptor.modality == "video" and c not in CLASSICAL)
    for c in [*neural, *CLASSICAL]:
        if c not in installed:
            raise SystemExit(f"{c} is not installed (nc codecs lists what is)")
    t0 = time.time()
    rows, bd = run(args.data, args.max_clips, neural)
    write_report(rows, bd, neural, sys.argv[1:], time.time() - t0, args.threads)
    (RESULTS / "video.json").write_text(json.dumps(rows, indent=0))
    print(f"wrote {RESULTS / 'video.md'} and video_rd.png in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
