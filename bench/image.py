"""Image benchmark: every installed image codec over its quality range, beside JPEG and WebP, in one run.

    .venv/bin/python bench/image.py --data /work/data/images [--max-images N] [--codecs image/jpeg,image/webp]

Evaluation photos: DATA/eval/*.png, 768x512, held out from training by
scripts/build_image_set.py (without --data: the bundled samples/photo.png, so it runs anywhere).
Every photo goes through nc's container (nc.encode / nc.decode), so bpp is measured from the
.ncb bytes, container included. Points: a codec's declared rate points if it has any (the neural
codecs); otherwise a sweep of its quality scale (QUALITY_SWEEPS: JPEG, WebP and AVIF each spread
over ~0.1-2.5 bpp), or of bpp targets if it takes only those; the codecs in EFFORT_CURVES also
at `--effort 1`, as curves of their own ("image/hvae effort 1"). Per point, averaged over the photos:
bpp, PSNR (RGB, 8-bit, whole image), MS-SSIM (nc.metrics.ms_ssim: mean of R, G, B) and encode /
decode seconds per photo with the process pinned to one CPU core. Then BD-rate of every codec
against JPEG and WebP (nc.metrics.bd_rate, on the averaged curves, over the quality range both
cover), PSNR at fixed bpp, and a side-by-side crop near 0.25 bpp. When image/vqgan runs: JPEG,
WebP and AVIF again at each photo's image/vqgan q1 payload size (their bpp targets), and a crop of
those. Writes bench/results/image.md, image_rd.png, image_rd_low.png (0-0.4 bpp) and
image_crops.png (and image_low_rate_crops.png).

`python bench/image.py` is the command (there is no `nc bench`: bench/ is not part of the installed package).
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import nc  # noqa: E402
from nc.bitstream.container import payload_bytes  # noqa: E402
from nc.metrics import bd_rate, ms_ssim, psnr  # noqa: E402
from nc.plugins import registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ANCHORS = ("image/jpeg", "image/webp")
# Chosen on the evaluation set so each curve runs from its codec's floor (JPEG cannot go below
# ~0.17 bpp, WebP ~0.14, AVIF ~0.07) to ~2 bpp, densest where the learned codecs will sit.
QUALITY_SWEEPS = {
    "image/jpeg": (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
    "image/webp": (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98),
    "image/avif": (10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95),
    "image/hvae": (0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8),  # its whole range: 0-1 extrapolated, 1-8 trained
    "image/vqgan": (1, 2, 3, 4),  # its codebooks, 1-4
}
# Codecs also measured at a higher --effort, as a curve of their own named "ID effort N", at these
# qualities (hvae's refinement takes ~40 s per photo on one core: fewer points than its plain curve)
EFFORT_CURVES = {"image/hvae": (1, (0, 1, 2, 4, 6, 8)),
                 **{c: (1, QUALITY_SWEEPS[c]) for c in ("image/jpeg", "image/webp", "image/avif")}}
# Part of a codec's curve also reported on its own in the BD-rate table: hvae's trained qualities
# (its 0-1 are extrapolated below what it was trained on)
SUB_CURVES = {"image/hvae": ("q1-8, trained", lambda label: float(label[1:]) >= 1)}
# The extreme-rate codec and its lowest setting: the classical codecs are also measured at its file sizes
LOW_RATE = ("image/vqgan", "q1", {"quality": 1})
LOW_RATE_RIVALS = ("image/jpeg", "image/webp", "image/avif")
DEFAULT_SWEEP = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
BPP_TARGETS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
FIXED_BPP = (0.25, 0.5, 0.75, 1.0)  # the columns of the published Kodak tables (CompressAI, QRes-VAE)
CROP_BPP, CROP = 0.25, 256
CROP_IMAGE = "plasma__EveningGlow.png"  # fine detail (boats, gravel, hills): artefacts show


def photos(data: Path | None, max_images: int | None) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB (h, w, 3)) for each evaluation photo."""
    paths = sorted((data / "eval").glob("*.png"))[:max_images] if data else [ROOT / "samples" / "photo.png"]
    if not paths:
        raise SystemExit(f"no photos in {data}/eval: build them with scripts/build_image_set.py")
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def rate_points(descriptor) -> list[tuple[str, dict]]:
    """(label, nc.encode keyword arguments) for every point to measure of one codec."""
    if descriptor.points:
        return [(p.name, {"quality": p.value} if p.unit == "quality" else {"bitrate": f"{p.value:g}bpp"})
                for p in descriptor.points]
    ranges = {r.unit: r for r in descriptor.ranges}
    if "quality" in ranges:
        r = ranges["quality"]
        sweep = QUALITY_SWEEPS.get(descriptor.id, DEFAULT_SWEEP)
        return [(f"q{q:g}", {"quality": q}) for q in sweep if r.low <= q <= r.high]
    r = ranges["bpp"]
    return [(f"{b:g}bpp", {"bitrate": f"{b:g}bpp"}) for b in BPP_TARGETS if r.low <= b <= r.high]


def run_one(codec: str, kwargs: dict, x: np.ndarray) -> tuple[dict, np.ndarray]:
    """Encode and decode one photo at one point; its measurements and the decoded pixels."""
    t0 = time.perf_counter()
    data = nc.encode(x, codec=codec, **kwargs)
    t1 = time.perf_counter()
    y = nc.decode(data).data
    t2 = time.perf_counter()
    pixels = x.shape[0] * x.shape[1]
    row = {"bpp": len(data) * 8 / pixels, "psnr": psnr(x, y), "ms_ssim": ms_ssim(x, y),
           "container_bytes": len(data) - payload_bytes(data), "enc_s": t1 - t0, "dec_s": t2 - t1}
    return row, y


def busiest_window(x: np.ndarray, size: int = CROP, step: int = 16) -> tuple[int, int]:
    """(top, left) of the size x size window with the most luma gradient energy: where codecs differ."""
    luma = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    energy = np.zeros_like(luma)
    energy[1:, 1:] = np.diff(luma, axis=0)[:, 1:] ** 2 + np.diff(luma, axis=1)[1:] ** 2
    total = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # integral image
    best, where = -1.0, (0, 0)
    for top in range(0, x.shape[0] - size + 1, step):
        for left in range(0, x.shape[1] - size + 1, step):
            s = total[top + size, left + size] - total[top, left + size] - total[top + size, left] + total[top, left]
            if s > best:
                best, where = s, (top, left)
    return where


def pin_to_one_core() -> None:
    """One CPU core for the whole process: OMP_NUM_THREADS bounds torch, but libavif sizes its thread
    pool by the CPUs the process may use, and the timings must all mean the same thing."""
    torch = __import__("torch")
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder made by scripts/build_image_set.py")
    p.add_argument("--max-images", type=int, help="use only the first N photos")
    p.add_argument("--codecs", help="comma-separated codec ids (default: every installed image codec)")
    p.add_argument("--crop-image", default=CROP_IMAGE, help="photo for the side-by-side crops")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--note", help="a paragraph for the top of the report (what the measured weights are)")
    args = p.parse_args()
    pin_to_one_core()
    wanted = set(args.codecs.split(",")) if args.codecs else None
    codecs = [d for d in registry().descriptors() if d.modality == "image" and d.rank >= 0
              and (wanted is None or d.id in wanted)]
    runs = [(d.id, d.id, label, kw) for d in codecs for label, kw in rate_points(d)]
    runs += [(f"{d.id} effort {effort}", d.id, f"q{q:g}", {"quality": q, "effort": effort})
             for d in codecs if d.id in EFFORT_CURVES for effort, sweep in [EFFORT_CURVES[d.id]] for q in sweep]
    images = photos(args.data, args.max_images)
    crop_name = args.crop_image if args.crop_image in dict(images) else images[0][0]
    table: dict[tuple, list[dict]] = defaultdict(list)
    crops: dict[tuple, tuple[dict, np.ndarray]] = {}
    t0 = time.time()
    for name, x in images:
        region = np.s_[:0]
        if name == crop_name:
            top, left = busiest_window(x)
            region = np.s_[top:top + CROP, left:left + CROP]
            crops["original"] = ({"top": top, "left": left}, x[region])
        for codec, codec_id, label, kw in runs:
            row, y = run_one(codec_id, kw, x)
            table[(codec, label)].append(row)
            if name == crop_name:
                crops[(codec, label)] = (row, y[region])
            if (codec, label) == LOW_RATE[:2]:
                matched_size(x, row, table, crops if name == crop_name else {}, region)
        print(f"{name} done ({time.time() - t0:.0f} s)", flush=True)
    low = {k[0]: v for k, v in table.items() if k[1] == "matched"}
    if low:  # the low-rate codec's own photos first
        low = {LOW_RATE[0]: table[LOW_RATE[:2]], **low}
    curves = summarize({k: v for k, v in table.items() if k[1] != "matched"})
    write_report(curves, images, crop_name, crops["original"][0], time.time() - t0, args, low)
    plot_curves(curves, args.out / "image_rd.png")
    plot_curves(curves, args.out / "image_rd_low.png", xmax=0.4)
    plot_crops({k: v for k, v in crops.items() if k[1] != "matched"}, crop_name, args.out / "image_crops.png")
    if low:
        matched = {k: v for k, v in crops.items() if k == "original" or k[1] == "matched" or k == LOW_RATE[:2]}
        plot_crops(matched, crop_name, args.out / "image_low_rate_crops.png", near=crops[LOW_RATE[:2]][0]["bpp"],
                   what=f"each classical codec at {LOW_RATE[0]} {LOW_RATE[1]}'s payload size")


def matched_size(x: np.ndarray, row: dict, table: dict, crops: dict, region) -> None:
    """Each of LOW_RATE_RIVALS at the low-rate codec's payload bpp on this photo (its bpp target: the
    largest quality whose payload fits, or its smallest file when none does), as (rival, "matched")."""
    pixels = x.shape[0] * x.shape[1]
    target = (row["bpp"] - row["container_bytes"] * 8 / pixels)
    for rival in LOW_RATE_RIVALS:
        if rival in registry().codecs:
            floor = min(r.low for r in registry().get(rival).descriptor.ranges if r.unit == "bpp")
            r, y = run_one(rival, {"bitrate": f"{max(target, floor):.6f}bpp"}, x)
            table[(rival, "matched")].append(r)
            if crops:
                crops[(rival, "matched")] = (r, y[region])


def summarize(table: dict[tuple, list[dict]]) -> dict[str, list[dict]]:
    """Per codec, its points sorted by bpp, each the mean of every measurement over the photos;
    ms_ssim_db is -10 log10(1 - mean MS-SSIM), the scale the curves and BD-rates use."""
    curves: dict[str, list[dict]] = defaultdict(list)
    for (codec, label), rows in table.items():
        point = {"label": label, **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}}
        point["ms_ssim_db"] = float(-10 * np.log10(max(1 - point["ms_ssim"], 1e-10)))
        curves[codec].append(point)
    return {c: sorted(v, key=lambda r: r["bpp"]) for c, v in sorted(curves.items())}


def column(points: list[dict], key: str) -> np.ndarray:
    return np.array([p[key] for p in points])


def bd_table(curves: dict[str, list[dict]]) -> list[str]:
    """BD-rate rows: every codec against each anchor that ran, in PSNR and in MS-SSIM (dB)."""
    anchors = [a for a in ANCHORS if a in curves]
    head = [f"{m} vs {a.split('/')[1]}" for a in anchors for m in ("PSNR", "MS-SSIM")]
    lines = ["| codec | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    rows = [(codec, codec, pts) for codec, pts in curves.items()]
    rows += [(codec, f"{codec} ({what})", [p for p in curves[codec] if keep(p["label"])])
             for codec, (what, keep) in SUB_CURVES.items() if codec in curves]
    for codec, name, pts in sorted(rows, key=lambda r: r[1]):
        cells = []
        for a in anchors:
            for key in ("psnr", "ms_ssim_db"):
                ref = curves[a]
                v = bd_rate(column(ref, "bpp"), column(ref, key), column(pts, "bpp"), column(pts, key))
                lo = max(column(ref, key).min(), column(pts, key).min())
                hi = min(column(ref, key).max(), column(pts, key).max())
                cells.append("-" if codec == a else (f"{v:+.1f} % ({lo:.1f}-{hi:.1f})" if np.isfinite(v) else "no overlap"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def at_bpp(points: list[dict], key: str, bpp: float) -> float:
    """`key` at `bpp` on a codec's averaged curve, linear in log bpp; NaN outside the curve."""
    b, v = column(points, "bpp"), column(points, key)
    return float(np.interp(np.log(bpp), np.log(b), v)) if b[0] <= bpp <= b[-1] else float("nan")


def write_report(curves: dict[str, list[dict]], images, crop_name: str, corner: dict, seconds: float, args,
                 low: dict[str, list[dict]]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    h, w = images[0][1].shape[:2]
    source = f"`{args.data}/eval` ({len(images)} held-out photos, {w}x{h})" if args.data else \
        f"the bundled samples/photo.png ({w}x{h})"
    lines = ["# Image benchmark", "", *([args.note, ""] if args.note else []),
             f"Photos: {source}. bpp is measured from the .ncb file (container included), PSNR over the "
             "whole RGB image at 8 bits, MS-SSIM as `nc.metrics.ms_ssim` (Wang 2003, 5 scales, the mean of "
             "R, G and B); each is the mean over the photos at one codec setting. MS-SSIM (dB) is "
             "-10 log10(1 - MS-SSIM). Encode / decode: seconds per photo through nc.encode / nc.decode, "
             f"the process pinned to one CPU core. Whole run: {seconds:.0f} s.", "",
             "## BD-rate", "",
             "Bitrate change at equal quality against each anchor (negative: fewer bits), over the quality "
             "range both curves cover (in brackets, dB); piecewise-cubic interpolation of log-rate "
             "(`nc.metrics.bd_rate`).", "",
             *bd_table(curves), "",
             "## PSNR (dB) at fixed bpp", "",
             "Interpolated on each averaged curve (linear in log bpp); '-' where the curve does not reach. "
             "The project's anchor notes give the same columns for Kodak.", "",
             "| codec | " + " | ".join(f"{b:g} bpp" for b in FIXED_BPP) + " |", "|---" * (len(FIXED_BPP) + 1) + "|"]
    for codec, pts in curves.items():
        cells = (at_bpp(pts, "psnr", b) for b in FIXED_BPP)
        lines.append(f"| {codec} | " + " | ".join(f"{v:.2f}" if np.isfinite(v) else "-" for v in cells) + " |")
    lines += ["", "## Every point", "",
              "| codec | setting | bpp | PSNR (dB) | MS-SSIM | MS-SSIM (dB) | encode s | decode s | container bytes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for codec, pts in curves.items():
        for r in pts:
            lines.append(f"| {codec} | {r['label']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['ms_ssim']:.4f} | "
                         f"{r['ms_ssim_db']:.2f} | {r['enc_s']:.3f} | {r['dec_s']:.3f} | {r['container_bytes']:.0f} |")
    lines += low_rate_section(low)
    lines += ["", f"Crops (`image_crops.png`): the same {CROP}x{CROP} region of `{crop_name}` (its most detailed, "
              f"top {corner['top']}, left {corner['left']}), each codec at its setting whose bpp on that photo is "
              f"nearest {CROP_BPP:g}; the labels give that photo's bpp and whole-photo PSNR.", ""]
    (args.out / "image.md").write_text("\n".join(lines))
    print("\n".join(lines))


def low_rate_section(low: dict[str, list[dict]]) -> list[str]:
    """The classical codecs at the low-rate codec's sizes, photo by photo (`low`: per codec, its rows
    in photo order, the low-rate codec's own first), averaged."""
    if not low:
        return []
    codec, label, _ = LOW_RATE
    lines = ["", f"## At {codec} {label}'s sizes", "",
             f"Each photo coded by each classical codec with {codec} {label}'s payload bpp on that photo as its "
             "target (the largest quality whose payload fits; its smallest file where none does); means over the "
             "photos. 'photos over' counts the photos where the classical file came out more than 5 % larger "
             f"than {codec}'s. Crops: `image_low_rate_crops.png`.", "",
             "| codec | bpp | PSNR (dB) | MS-SSIM | photos over |", "|---|---|---|---|---|"]
    mine = [r["bpp"] for r in low[codec]]
    for name, rows in low.items():
        over = "-" if name == codec else f"{sum(r['bpp'] > 1.05 * b for r, b in zip(rows, mine))} of {len(rows)}"
        lines.append(f"| {name}{' ' + label if name == codec else ''} | {np.mean([r['bpp'] for r in rows]):.3f} | "
                     f"{np.mean([r['psnr'] for r in rows]):.2f} | {np.mean([r['ms_ssim'] for r in rows]):.4f} | {over} |")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict[str, list[dict]], path: Path, xmax: float = 2.2) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (key, label) in zip(axes, (("psnr", "PSNR (dB), RGB"), ("ms_ssim_db", "MS-SSIM (dB)"))):
        for codec, pts in curves.items():
            keep = column(pts, "bpp") <= xmax * 1.1
            if keep.any():
                ax.plot(column(pts, "bpp")[keep], column(pts, key)[keep], marker="o", markersize=3, label=codec)
        ax.set_xlabel("bits per pixel (measured, container included)")
        ax.set_ylabel(label)
        ax.set_xlim(0, xmax)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_crops(crops: dict, photo: str, path: Path, near: float = CROP_BPP, what: str = "") -> None:
    """The original region, then per codec its point whose bpp on this photo is nearest `near`,
    each shown pixel for pixel (no resampling) with its codec, setting, bpp and PSNR."""
    plt = _pyplot()
    panels = [("original", crops["original"][1])]
    for codec in sorted({k[0] for k in crops if k != "original"}):
        label, (row, pixels) = min(((k[1], v) for k, v in crops.items() if k[0] == codec),
                                   key=lambda kv: abs(np.log(kv[1][0]["bpp"] / near)))
        panels.append((f"{codec} {label}\n{row['bpp']:.3f} bpp, {row['psnr']:.2f} dB (photo)", pixels))
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    pad, label_h, head_h = 12, 36, 28  # pixels; axes are placed by hand so each shows exactly CROP px
    width, height = cols * (CROP + pad) + pad, rows * (CROP + label_h) + head_h
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    fig.suptitle(f"{photo}: same {CROP}x{CROP} region, {what or f'each codec near {near:g} bpp'}", fontsize=9)
    for i, (title, pixels) in enumerate(panels):
        r, c = divmod(i, cols)
        bottom = height - head_h - (r + 1) * (CROP + label_h)
        ax = fig.add_axes([(pad + c * (CROP + pad)) / width, bottom / height, CROP / width, CROP / height])
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
