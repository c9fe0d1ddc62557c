"""Training clips for the video codecs, made from real video and from camera moves over photos.

Real video is scarce here (scripts/build_video_set.py lists the sources), so most motion is
synthetic: `pan_zoom` moves and scales a box over a photo a little every frame and resamples each
frame with Lanczos; `real_crop` cuts a random window out of a real clip. Both give uint8
(frames, side, side, 3).

Two ways to feed a trainer: scripts/build_video_set.py writes a fixed shard (train_clips.npy) with
these functions; `ClipSource` makes fresh clips on the fly from a folder of sources (clips/*.avi,
*.mp4, *.mp4.gz, with clips/skip.json naming leading frames to leave out, and photos/*.jpg, *.png; `build_video_set.py --export-sources DIR` lays one out),
which a GPU run needs (it consumes clips far faster than a shard of a few hundred can vary) and
`ClipStream` spreads over worker processes.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from fractions import Fraction

import numpy as np
from PIL import Image, ImageOps

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mp4.gz", ".avi.gz")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_clip(path: str) -> tuple[np.ndarray, Fraction]:
    """Every frame of a video file (a .gz is unpacked to a temporary file first), RGB uint8, and its
    rate. PyAV where it is installed, else OpenCV (GPU machines have that one)."""
    with tempfile.TemporaryDirectory() as tmp:
        if path.endswith(".gz"):
            plain = os.path.join(tmp, os.path.basename(path)[:-3])
            with gzip.open(path) as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            path = plain
        try:
            import av
        except ImportError:
            return _read_clip_cv2(path)
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate or 25).limit_denominator(100_000)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames), rate


def _read_clip_cv2(path: str) -> tuple[np.ndarray, Fraction]:
    import cv2

    capture = cv2.VideoCapture(path)
    rate = Fraction(capture.get(cv2.CAP_PROP_FPS) or 25).limit_denominator(100_000)
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1].copy())
    capture.release()
    if not frames:
        raise ValueError(f"{path}: no frames")
    return np.stack(frames), rate


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames])


def real_crop(frames: np.ndarray, rng: np.random.Generator, count: int, side: int) -> tuple[np.ndarray, dict]:
    """`count` frames at a random stride 1-2 from a random start, a random side-square window shrunk 1-2x."""
    stride = int(rng.integers(1, 3)) if len(frames) > 2 * count else 1
    start = int(rng.integers(0, len(frames) - stride * (count - 1)))
    h, w = frames.shape[1:3]
    factor = float(np.exp(rng.uniform(0, np.log(max(1.0, min(2.0, h / side, w / side))))))
    span = min(int(round(side * factor)), h, w)
    top, left = int(rng.integers(0, h - span + 1)), int(rng.integers(0, w - span + 1))
    clip = frames[start:start + stride * count:stride, top:top + span, left:left + span]
    if span != side:
        clip = resize_frames(clip, (side, side))
    flip = bool(rng.random() < 0.5)
    info = {"start": start, "stride": stride, "box": [left, top, span], "flip": flip}
    return (clip[:, :, ::-1] if flip else clip), info


def pan_zoom(image: Image.Image, size: tuple[int, int], frames: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A camera move over a photo: a box `factor` x `size` (factor 2-4: the shrink that hides JPEG
    blocking) whose centre drifts up to 3 output pixels per frame and whose scale changes by up to
    1.5 % per frame, each frame resampled to `size` with Lanczos."""
    w, h = size
    factor = float(np.exp(rng.uniform(np.log(2.0), np.log(max(2.0, min(4.0, image.width / w / 1.3,
                                                                        image.height / h / 1.3))))))
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


class ClipSource:
    """Fresh training clips from a folder of sources: half real-clip crops, half pan/zooms (photos
    drawn by area, as scripts/build_image_set.py weighs its crops)."""

    def __init__(self, folder: str):
        check_sources(folder)
        skip_file = os.path.join(folder, "clips", "skip.json")  # {file name: leading frames not to use}
        skip = json.loads(open(skip_file).read()) if os.path.exists(skip_file) else {}
        self.clips = [read_clip(p)[0][int(skip.get(os.path.basename(p), 0)):]
                      for p in _sources(folder, "clips", VIDEO_SUFFIXES)]
        self.photos = []
        for p in _sources(folder, "photos", PHOTO_SUFFIXES):
            with Image.open(p) as im:
                self.photos.append(ImageOps.exif_transpose(im).convert("RGB"))
        area = np.array([im.width * im.height for im in self.photos], np.float64)
        self.photo_p = area / area.sum() if len(area) else area

    def clip(self, rng: np.random.Generator, frames: int, side: int) -> np.ndarray:
        if self.clips and (not self.photos or rng.random() < 0.5):
            return real_crop(self.clips[int(rng.integers(len(self.clips)))], rng, frames, side)[0]
        image = self.photos[int(rng.choice(len(self.photos), p=self.photo_p))]
        return pan_zoom(image, (side, side), frames, rng)[0]


def _sources(folder: str, sub: str, suffixes: tuple) -> list[str]:
    d = os.path.join(folder, sub)
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.lower().endswith(suffixes)) if os.path.isdir(d) else []


def check_sources(folder: str) -> None:
    """Fail in one line, before any process starts, when `folder` holds nothing to make clips from."""
    if not _sources(folder, "clips", VIDEO_SUFFIXES) and not _sources(folder, "photos", PHOTO_SUFFIXES):
        raise SystemExit(f"{folder}: no train_clips.npy, and no clips/ or photos/ to make training clips from")


def _worker(folder: str, seed: int, frames: int, side: int, count: int, queue) -> None:
    source, rng = ClipSource(folder), np.random.default_rng(seed)
    while True:
        queue.put(np.stack([source.clip(rng, frames, side) for _ in range(count)]))


class ClipStream:
    """`workers` processes making batches of `count` clips from a ClipSource, a few batches ahead."""

    def __init__(self, folder: str, seed: int, frames: int, side: int, count: int, workers: int):
        import multiprocessing as mp

        check_sources(folder)
        ctx = mp.get_context("spawn")  # no forked torch state
        self.folder = folder
        self.queue = ctx.Queue(maxsize=4 * workers)
        self.procs = [ctx.Process(target=_worker, args=(folder, seed * 1000 + i, frames, side, count, self.queue),
                                  daemon=True) for i in range(workers)]
        for p in self.procs:
            p.start()

    def next(self) -> np.ndarray:
        import queue

        waited = 0
        while True:
            try:
                return self.queue.get(timeout=5)
            except queue.Empty:
                waited += 5
                if waited >= 600 or not any(p.is_alive() for p in self.procs):
                    raise SystemExit(f"{self.folder}: the processes making training clips stopped or stalled "
                                     f"(their error, if any, is above)") from None

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
