#!/usr/bin/env python3
"""Build nc's video evaluation and training sets from Debian packages.

    python scripts/build_video_set.py --out /work/data/video [--clips 800] [--seed 0]

Sources: the photos of scripts/build_image_set.py (same packages, same evaluation/training
split of scenes) and the real clips of opencv-doc (`apt-get install -y --no-install-recommends
opencv-doc plasma-workspace-wallpapers mate-backgrounds libjxl-testdata`):

  vtest.avi     768x576, 10 fps, pedestrians (frames 0-49 are samples/clip.mp4: left out)  train
  box.mp4.gz    640x480, 30 fps, a hand-held box                                              train
  Megamind.avi  720x528, 24 fps, computer animation                                           train
  cup.mp4.gz    640x480, 27 fps, a hand-held cup                                              eval
  tree.avi      320x240, 15 fps, a tree                                                       eval

Real video is scarce here, so most of the motion is synthetic: pan and zoom over a photo,
shrunk 2-4x first (as for the image sets, to hide the source's JPEG blocking), each frame
resampled with Lanczos from a box that moves and scales a little every frame. Evaluation
pans use only the evaluation photos, training pans only the training photos.

Writes
  OUT/eval/NAME.npy       uint8 (frames, height, width, 3) evaluation clips, RGB, with
  OUT/eval/clips.json     {NAME: {"fps": [num, den], "source": ...}}
  OUT/train_clips.npy     uint8 (N, FRAMES, CROP, CROP, 3): half real-clip crops (a random
                          window, shrunk 1-2x, random frame stride 1-2), half pan/zooms
  OUT/manifest.json       how every clip was made
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMES, CROP = 16, 128  # a training clip: 16 frames of 128 x 128
EVAL_FRAMES = 48
EVAL_SIZE = (416, 240)  # (width, height) of the evaluation pans: the size of the classic 240p test clips
DEFAULT_CLIPS = 800  # 800 x 16 x 128 x 128 x 3 = 600 MiB
OPENCV = "usr/share/doc/opencv-doc"
REAL_TRAIN = (("examples/data/vtest.avi", 50), ("opencv4/html/box.mp4.gz", 0), ("examples/data/Megamind.avi", 0))
REAL_EVAL = (("opencv4/html/cup.mp4.gz", "cup", None), ("examples/data/tree.avi", "tree", None))
EVAL_PANS = ("plasma/EveningGlow", "mate/Garden", "plasma/ColorfulCups", "mate/Storm")


def _image_set():
    spec = importlib.util.spec_from_file_location("build_image_set", os.path.join(HERE, "build_image_set.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def read_clip(path: str) -> tuple[np.ndarray, Fraction]:
    """Every frame of a video file (a .gz is unpacked to a temporary file first), RGB uint8, and its rate."""
    import av

    with tempfile.TemporaryDirectory() as tmp:
        if path.endswith(".gz"):
            plain = os.path.join(tmp, os.path.basename(path)[:-3])
            with gzip.open(path) as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            path = plain
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate or 25).limit_denominator(100_000)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames), rate


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames])


def real_crop(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """FRAMES frames at a random stride 1-2 from a random start, a random CROP-square window shrunk 1-2x."""
    stride = int(rng.integers(1, 3))
    start = int(rng.integers(0, len(frames) - stride * (FRAMES - 1)))
    h, w = frames.shape[1:3]
    factor = float(np.exp(rng.uniform(0, np.log(min(2.0, h / CROP, w / CROP)))))
    span = int(round(CROP * factor))
    top, left = int(rng.integers(0, h - span + 1)), int(rng.integers(0, w - span + 1))
    clip = frames[start:start + stride * FRAMES:stride, top:top + span, left:left + span]
    if span != CROP:
        clip = resize_frames(clip, (CROP, CROP))
    flip = bool(rng.random() < 0.5)
    info = {"start": start, "stride": stride, "box": [left, top, span], "flip": flip}
    return (clip[:, :, ::-1] if flip else clip), info


def pan_zoom(image: Image.Image, size: tuple[int, int], frames: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A camera move over a photo: a box `factor` x `size` (factor 2-4: the shrink that hides JPEG
    blocking) whose centre drifts up to 3 output pixels per frame and whose scale changes by up to
    1.5 % per frame, each frame resampled to `size` with Lanczos."""
    w, h = size
    factor = float(np.exp(rng.uniform(np.log(2.0), np.log(min(4.0, image.width / w / 1.3, image.height / h / 1.3)))))
    zoom = float(rng.uniform(-0.015, 0.015))
    velocity = rng.uniform(-3, 3, 2) * factor
    # start where the whole move stays inside the photo
    scales = factor * np.exp(zoom * np.arange(frames))
    reach = np.abs(velocity) * frames + np.array([w, h]) * scales.max() / 2
    lo = reach
    hi = np.array([image.width, image.height]) - reach
    centre = np.where(hi > lo, rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi)), np.array([image.width, image.height]) / 2)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        half = np.minimum(np.array([w, h]) * scales[t], [image.width, image.height]) / 2
        # a move that would leave the photo stops at its edge
        cx, cy = np.clip(centre + velocity * t, half, np.array([image.width, image.height]) - half)
        box = (cx - half[0], cy - half[1], cx + half[0], cy + half[1])
        out[t] = np.asarray(image.resize(size, Image.Resampling.LANCZOS, box=box))
    info = {"factor": round(factor, 3), "zoom_per_frame": round(zoom, 4),
            "velocity": [round(float(v), 2) for v in velocity], "centre": [round(float(c), 1) for c in centre]}
    return out, info


def build(out: str, root: str = "/", clips: int = DEFAULT_CLIPS, seed: int = 0, command: str = "") -> dict:
    bis = _image_set()
    entries, _ = bis.discover(root)
    bis.check_disjoint(entries)
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out, "eval"), exist_ok=True)
    manifest: dict = {"command": command, "seed": seed, "eval": {}, "train": []}

    # evaluation: held-out real clips (first EVAL_FRAMES frames) and pans over held-out photos
    index = {}
    for rel, name, _ in REAL_EVAL:
        frames, rate = read_clip(os.path.join(root, OPENCV, rel))
        clip = frames[:EVAL_FRAMES]
        if clip.shape[2] > EVAL_SIZE[0]:  # cup: 640x480 -> 416x312
            clip = resize_frames(clip, (EVAL_SIZE[0], round(clip.shape[1] * EVAL_SIZE[0] / clip.shape[2] / 2) * 2))
        np.save(os.path.join(out, "eval", f"{name}.npy"), clip)
        index[name] = {"fps": [rate.numerator, rate.denominator], "source": f"opencv-doc {rel}",
                       "frames": [0, EVAL_FRAMES]}
    by_group = {e["group"]: e for e in entries}
    for group in EVAL_PANS:
        e = by_group.get(group)
        if e is None or e["split"] != "eval":
            continue
        clip, info = pan_zoom(bis.load_rgb(os.path.join(root, e["path"])), EVAL_SIZE, EVAL_FRAMES, rng)
        name = "pan_" + group.replace("/", "_")
        np.save(os.path.join(out, "eval", f"{name}.npy"), clip)
        index[name] = {"fps": [25, 1], "source": e["path"], **info}
    with open(os.path.join(out, "eval", "clips.json"), "w") as f:
        json.dump(index, f, indent=1)
    manifest["eval"] = index

    # training: half real crops, half pans over training photos
    real = [(rel, read_clip(os.path.join(root, OPENCV, rel))[0][skip:]) for rel, skip in REAL_TRAIN]
    photos = [e for e in entries if e["split"] == "train"]
    weights = np.array([bis.train_weight(*e["size"]) for e in photos])
    array = np.empty((clips, FRAMES, CROP, CROP, 3), np.uint8)
    for i in range(clips):
        if i % 2 == 0:
            k = int(rng.integers(len(real)))
            array[i], info = real_crop(real[k][1], rng)
            manifest["train"].append({"source": real[k][0], **info})
        else:
            e = photos[int(rng.choice(len(photos), p=weights / weights.sum()))]
            array[i], info = pan_zoom(bis.load_rgb(os.path.join(root, e["path"])), (CROP, CROP), FRAMES, rng)
            manifest["train"].append({"source": e["path"], **info})
    np.save(os.path.join(out, "train_clips.npy"), array)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (keep it outside the repository)")
    ap.add_argument("--clips", type=int, default=DEFAULT_CLIPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source-root", default="/")
    args = ap.parse_args(argv)
    t0 = time.time()
    manifest = build(args.out, args.source_root, args.clips, args.seed, " ".join(sys.argv))
    print(f"{len(manifest['eval'])} evaluation clips, {len(manifest['train'])} training clips "
          f"in {time.time() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
