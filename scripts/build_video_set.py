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

With --export-sources it copies the training sources instead (OUT/clips, OUT/photos), for a
trainer that makes fresh clips on the fly (nc/train/video_data.py ClipSource; scripts/gpu_train_wfvae.sh).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
from nc.train.video_data import pan_zoom, read_clip, real_crop, resize_frames  # noqa: E402

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
            array[i], info = real_crop(real[k][1], rng, FRAMES, CROP)
            manifest["train"].append({"source": real[k][0], **info})
        else:
            e = photos[int(rng.choice(len(photos), p=weights / weights.sum()))]
            array[i], info = pan_zoom(bis.load_rgb(os.path.join(root, e["path"])), (CROP, CROP), FRAMES, rng)
            manifest["train"].append({"source": e["path"], **info})
    np.save(os.path.join(out, "train_clips.npy"), array)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def export_sources(out: str, root: str = "/") -> dict:
    """Copy the training sources, as they are, into OUT/clips and OUT/photos (ClipSource's layout, for
    a trainer that makes clips on the fly, e.g. on a GPU machine without these packages): 20 MiB."""
    bis = _image_set()
    entries, _ = bis.discover(root)
    bis.check_disjoint(entries)
    for sub in ("clips", "photos"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    skip = {}
    for rel, frames in REAL_TRAIN:
        shutil.copy(os.path.join(root, OPENCV, rel), os.path.join(out, "clips", os.path.basename(rel)))
        if frames:
            skip[os.path.basename(rel)] = frames
    with open(os.path.join(out, "clips", "skip.json"), "w") as f:
        json.dump(skip, f)
    photos = [e for e in entries if e["split"] == "train"]
    for e in photos:
        name = e["group"].replace("/", "__") + "__" + os.path.basename(e["path"]).lower()  # groups share files
        shutil.copy(os.path.join(root, e["path"]), os.path.join(out, "photos", name))
    return {"clips": [r for r, _ in REAL_TRAIN], "photos": [e["path"] for e in photos], "skip": skip}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (keep it outside the repository)")
    ap.add_argument("--clips", type=int, default=DEFAULT_CLIPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source-root", default="/")
    ap.add_argument("--export-sources", action="store_true",
                    help="instead: copy the training sources into OUT/clips and OUT/photos (nc.train.video_data.ClipSource)")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.export_sources:
        listing = export_sources(args.out, args.source_root)
        print(f"{len(listing['clips'])} clips and {len(listing['photos'])} photos copied to {args.out}")
        return 0
    manifest = build(args.out, args.source_root, args.clips, args.seed, " ".join(sys.argv))
    print(f"{len(manifest['eval'])} evaluation clips, {len(manifest['train'])} training clips "
          f"in {time.time() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
