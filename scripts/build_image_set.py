#!/usr/bin/env python3
"""Build nc's image evaluation and training sets from Debian packages.

    python scripts/build_image_set.py --out /work/data/images [--crops 250] [--seed 0]

Sources (install with
`apt-get install -y --no-install-recommends plasma-workspace-wallpapers mate-backgrounds opencv-doc libjxl-testdata`):
  plasma-workspace-wallpapers  the 11 real photos among its wallpapers, 2560x1600 JPEG (GPL-2+)
  mate-backgrounds             the 12 photos in backgrounds/mate/nature, 1280x1024 to 2560x1920 JPEG (GPL-2+)
  opencv-doc                   ~25 colour photos in examples/data, most under 900 px (Apache-2.0 AND BSD-3-Clause)
  libjxl-testdata              jxl/flower/flower.png, 2268x1512, lossless (BSD-3-Clause, JPEG XL Project Authors)

Every photo is shrunk 2-4x with Lanczos before use: that hides the sources' JPEG blocking,
so a codec is judged (and trained) on image content rather than on reproducing another
codec's artefacts. That rule decides what each source can give: a 768x512 evaluation image
needs a source of at least 1536x1024, a 256x256 training crop one at least 512 px on its
short side. So the evaluation photos come from the big wallpapers and the flower, chosen by
hand for varied content (EVAL_GROUPS); the other big photos and the opencv-doc photos that
are large enough go to training. Most opencv-doc photos and every scikit-image photo
(astronaut, coffee, chelsea, rocket, motorcycle: all under 512 px on the short side;
astronaut is samples/photo.png besides) are too small for either set and are not used.
Files that show one scene (stereo pairs, two views of one wall) share a group, and a group
is never split; the build asserts that no group and no file content is in both sets.

Writes
  OUT/eval/*.png       evaluation photos, 768x512 RGB (portrait sources turned), lossless PNG
  OUT/train_256.npy    (N, 256, 256, 3) uint8: random crops, each of a source shrunk by a
                       random factor in [2, 4], half of them mirrored left-right
  OUT/train_photos/    with --photos: each training photo whole, shrunk 2, 2.83 and 4x, lossless
                       PNG (a GPU run crops these at random; nc/train/image.py)
  OUT/manifest.json    every source file: package, licence, group, split and, for each
                       evaluation image and training crop, exactly how it was cut
Same seed, same sources and same Pillow version give the same bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps

EVAL_SIZE = (768, 512)  # (width, height): Kodak's size, so numbers sit beside published ones
CROP = 256
MIN_FACTOR, MAX_FACTOR = 2.0, 4.0  # downscale range for every use of a photo (see the docstring)
PHOTO_FACTORS = (2.0, 2.0**1.5, 4.0)  # --photos: the downscale range, log-spaced
DEFAULT_CROPS = 250  # 250 x 256 x 256 x 3 bytes = 46.9 MiB, under the 50 MiB a shard may take
SEED = 0

PLASMA = "usr/share/wallpapers"
MATE = "usr/share/backgrounds/mate/nature"
OPENCV = "usr/share/doc/opencv-doc/examples/data"


@dataclass(frozen=True)
class Photo:
    """One source photo: where it lies under the source root, whose it is, and its scene group."""

    package: str
    path: str
    licence: str
    group: str


def _plasma(name: str) -> Photo:
    # Each wallpaper folder holds one photo at several sizes; the largest is found at build time.
    return Photo("plasma-workspace-wallpapers", f"{PLASMA}/{name}/contents/images", "GPL-2+", f"plasma/{name}")


def _mate(name: str) -> Photo:
    return Photo("mate-backgrounds", f"{MATE}/{name}.jpg", "GPL-2+", f"mate/{name}")


def _opencv(file: str, group: str | None = None) -> Photo:
    stem = os.path.splitext(file)[0]
    return Photo("opencv-doc", f"{OPENCV}/{file}", "Apache-2.0 AND BSD-3-Clause", f"opencv/{group or stem}")


# Real photos only: the packages also hold renders, drawings, logos and charts, which are left out.
# opencv-doc's chicky_512.png is a photo but half transparent; licenseplate_motion and text_* are
# synthetically blurred; starry_night is a painting.
PHOTOS = (
    Photo("libjxl-testdata", "usr/share/libjxl-testdata/jxl/flower/flower.png",
          "BSD-3-Clause (the JPEG XL Project Authors)", "libjxl/flower"),
    *(_plasma(n) for n in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
                           "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")),
    *(_mate(n) for n in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
                         "Storm", "TwoWings", "Wood", "YellowFlower")),
    *(_opencv(f, g) for f, g in (
        ("aero1.jpg", "aero"), ("aero3.jpg", "aero"), ("aloeL.jpg", "aloe"), ("aloeR.jpg", "aloe"),
        ("apple.jpg", None), ("baboon.jpg", None), ("board.jpg", None), ("building.jpg", None),
        ("butterfly.jpg", None), ("ela_original.jpg", "ela"), ("ela_modified.jpg", "ela"), ("fruits.jpg", None),
        ("graf1.png", "graf"), ("graf3.png", "graf"), ("home.jpg", None), ("left.jpg", "stereo_books"),
        ("right.jpg", "stereo_books"), ("leuvenA.jpg", "leuven"), ("leuvenB.jpg", "leuven"), ("messi5.jpg", None),
        ("orange.jpg", None), ("rubberwhale1.png", "rubberwhale"), ("rubberwhale2.png", "rubberwhale"),
        ("smarties.png", None), ("squirrel_cls.jpg", None), ("stuff.jpg", None), ("sudoku.png", None))),
)

# Held out for evaluation: 14 scenes picked for variety (fine detail, texture, smooth skies, macro
# with bokeh, a grey photo), all big enough for a 768x512 view at 2-4x. Training keeps a similar
# mix (forest, moss, grass, leaves, smooth skies) from the other big photos.
EVAL_GROUPS = frozenset({
    "libjxl/flower",
    "plasma/EveningGlow", "plasma/Grey", "plasma/ColorfulCups", "plasma/Kite", "plasma/FallenLeaf",
    "mate/Dune", "mate/Storm", "mate/Wood", "mate/LadyBird", "mate/RainDrops", "mate/YellowFlower",
    "mate/TwoWings", "mate/Garden",
})


def resolve(root: str, photo: Photo) -> str | None:
    """The file a photo names, relative to `root`; for a wallpaper folder, its largest image. None if absent."""
    full = os.path.join(root, photo.path)
    if os.path.isfile(full):
        return photo.path
    if not os.path.isdir(full):
        return None
    sizes = {}
    for name in os.listdir(full):
        try:
            with Image.open(os.path.join(full, name)) as im:
                sizes[name] = im.size[0] * im.size[1]
        except OSError:
            continue
    return f"{photo.path}/{max(sorted(sizes), key=sizes.get)}" if sizes else None


def upright_size(path: str) -> tuple[int, int]:
    """(width, height) as the photo will be shown, read from the header (EXIF orientations 5-8 turn it)."""
    with Image.open(path) as im:
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        return (im.height, im.width) if turned else im.size


@lru_cache(maxsize=None)
def load_rgb(path: str) -> Image.Image:
    """A decoded photo in RGB, turned upright by its EXIF orientation (grey photos become grey RGB).
    Cached: the training crops come back to the same few big photos many times."""
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def shrink_box(image: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The region `box` (left, top, right, bottom; fractional) of `image`, resampled to `size` with Lanczos.
    Pillow filters with the pixels around the box too, so this equals shrinking the whole photo and
    then cropping, without resampling the parts that are thrown away."""
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS, box=box))


def eval_view(image: Image.Image, size: tuple[int, int] = EVAL_SIZE) -> tuple[np.ndarray, dict]:
    """The evaluation image of a photo: turned landscape if it is portrait, shrunk by the factor that
    makes it just cover `size` (at most MAX_FACTOR, so a huge photo keeps its detail and is cropped
    more), centre-cropped. Raises ValueError for a photo that cannot be shrunk at least MIN_FACTOR."""
    rotated = image.height > image.width
    if rotated:
        image = image.transpose(Image.Transpose.ROTATE_90)
    factor = min(image.width / size[0], image.height / size[1], MAX_FACTOR)
    if factor < MIN_FACTOR:
        raise ValueError(f"{image.width}x{image.height} is too small for {size[0]}x{size[1]} "
                         f"at {MIN_FACTOR:g}x downscaling")
    w, h = size[0] * factor, size[1] * factor
    box = ((image.width - w) / 2, (image.height - h) / 2, (image.width + w) / 2, (image.height + h) / 2)
    info = {"rotated": rotated, "factor": round(factor, 4), "box": [round(v, 2) for v in box]}
    return shrink_box(image, box, size), info


def can_train(width: int, height: int, size: int = CROP) -> bool:
    return min(width, height) >= MIN_FACTOR * size


def train_weight(width: int, height: int, size: int = CROP) -> float:
    """How many crops a photo should give, relative to the others: its area at the smallest
    downscale, in crops. A 2560x1600 wallpaper counts ~16 times a 512x512 opencv photo, so small
    photos are not cut into many near-identical crops."""
    return (width / MIN_FACTOR) * (height / MIN_FACTOR) / size**2


def train_crop(image: Image.Image, rng: np.random.Generator, size: int = CROP) -> tuple[np.ndarray, dict]:
    """One random training crop: a factor log-uniform in [MIN_FACTOR, MAX_FACTOR] (capped so the
    crop fits), a uniform position, and a left-right mirror half of the time (up-down flips are
    left out: photos have a sky and a ground, which a codec may learn to expect)."""
    top = min(MAX_FACTOR, min(image.width, image.height) / size)
    factor = float(np.exp(rng.uniform(np.log(MIN_FACTOR), np.log(top))))
    span = size * factor
    x, y = rng.uniform(0, image.width - span), rng.uniform(0, image.height - span)
    flip = bool(rng.random() < 0.5)
    crop = shrink_box(image, (x, y, x + span, y + span), (size, size))
    info = {"factor": round(factor, 4), "box": [round(v, 2) for v in (x, y, x + span, y + span)], "flip": flip}
    return (crop[:, ::-1] if flip else crop), info


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_disjoint(entries: list[dict]) -> None:
    """No scene group and no file content may be in both evaluation and training."""
    by_split: dict[str, tuple[set, set]] = {"eval": (set(), set()), "train": (set(), set())}
    for e in entries:
        if e["split"] in by_split:
            by_split[e["split"]][0].add(e["group"])
            by_split[e["split"]][1].add(e["sha256"])
    groups = by_split["eval"][0] & by_split["train"][0]
    contents = by_split["eval"][1] & by_split["train"][1]
    assert not groups, f"scene groups in both evaluation and training: {sorted(groups)}"
    assert not contents, f"{len(contents)} files in both evaluation and training (same bytes)"


def discover(root: str, eval_groups: frozenset = EVAL_GROUPS) -> tuple[list[dict], list[str]]:
    """A manifest entry for every photo found, with split 'eval', 'train' or 'unused' (and why);
    and the paths of the photos that were not found."""
    entries, absent = [], []
    for photo in PHOTOS:
        rel = resolve(root, photo)
        if rel is None:
            absent.append(photo.path)
            continue
        path = os.path.join(root, rel)
        width, height = upright_size(path)
        entry = {"path": rel, "package": photo.package, "licence": photo.licence, "group": photo.group,
                 "size": [width, height], "sha256": file_digest(path)}
        if photo.group in eval_groups:
            entry["split"] = "eval"
        elif can_train(width, height):
            entry["split"] = "train"
        else:
            entry["split"], entry["note"] = "unused", f"short side under {MIN_FACTOR * CROP:g} px"
        entries.append(entry)
    return entries, absent


def missing_packages(entries: list[dict]) -> list[str]:
    """apt-get lines for the packages none of whose photos were found."""
    found = {e["package"] for e in entries}
    packages = dict.fromkeys(p.package for p in PHOTOS if p.package not in found)
    return [f"apt-get install -y --no-install-recommends {p}" for p in packages]


def eval_name(entry: dict) -> str:
    """'plasma__EveningGlow.png': the group says where the photo came from."""
    return entry["group"].replace("/", "__") + ".png"


def write_eval(entries: list[dict], root: str, out: str) -> None:
    folder = os.path.join(out, "eval")
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        if old.endswith(".png"):
            os.remove(os.path.join(folder, old))  # a rebuild must not leave images of an older split behind
    for e in (e for e in entries if e["split"] == "eval"):
        pixels, info = eval_view(load_rgb(os.path.join(root, e["path"])))
        e["eval_image"] = eval_name(e)
        e["processing"] = {**info, "resample": "lanczos", "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
        Image.fromarray(pixels).save(os.path.join(folder, e["eval_image"]))


def write_train(entries: list[dict], root: str, out: str, crops: int, seed: int) -> list[dict]:
    """Cut `crops` random crops, photos drawn with probability by `train_weight`; returns one record per crop."""
    sources = [e for e in entries if e["split"] == "train"]
    if not sources:
        raise SystemExit("no training photos found: install the packages listed at the top of this script")
    weights = np.array([train_weight(*e["size"]) for e in sources])
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(sources), size=crops, p=weights / weights.sum())
    array = np.zeros((crops, CROP, CROP, 3), np.uint8)
    records = []
    for i, k in enumerate(picks):
        array[i], info = train_crop(load_rgb(os.path.join(root, sources[k]["path"])), rng)
        records.append({"source": sources[k]["path"], **info})
    for k, e in enumerate(sources):
        e["train_crops"] = int((picks == k).sum())
    np.save(os.path.join(out, f"train_{CROP}.npy"), array)
    return records


def write_train_photos(entries: list[dict], root: str, out: str) -> None:
    """OUT/train_photos/: every training photo whole, shrunk by each of PHOTO_FACTORS (Lanczos) that
    leaves it at least CROP pixels on its short side, as lossless PNG: what a GPU run carries
    (23 MiB) to cut fresh random crops from at every step."""
    folder = os.path.join(out, "train_photos")
    os.makedirs(folder, exist_ok=True)
    for e in (e for e in entries if e["split"] == "train"):
        image = load_rgb(os.path.join(root, e["path"]))
        stem = os.path.splitext(os.path.basename(e["path"]))[0]  # a group may hold several files
        e["train_photos"] = []
        for factor in PHOTO_FACTORS:
            if min(image.size) / factor < CROP:  # too small for a crop: the trainer would skip it
                continue
            name = f"{eval_name(e)[:-4]}__{stem}_x{factor:.2f}.png"
            size = (round(image.width / factor), round(image.height / factor))
            image.resize(size, Image.Resampling.LANCZOS).save(os.path.join(folder, name))
            e["train_photos"].append(name)


def build(out: str, root: str = "/", crops: int = DEFAULT_CROPS, seed: int = SEED, command: str = "",
          eval_groups: frozenset = EVAL_GROUPS, photos: bool = False) -> dict:
    """The whole build; returns the manifest it wrote. `root` lets tests point it at a fake tree."""
    os.makedirs(out, exist_ok=True)
    entries, absent = discover(root, eval_groups)
    missing = missing_packages(entries)
    for line in missing:
        print(f"missing source, skipped; to add it run: {line}", file=sys.stderr)
    check_disjoint(entries)
    write_eval(entries, root, out)
    records = write_train(entries, root, out, crops, seed)
    if photos:
        write_train_photos(entries, root, out)
    load_rgb.cache_clear()
    manifest = {
        "command": command, "source_root": root, "seed": seed, "pillow": Image.__version__,
        "settings": {"eval_size": list(EVAL_SIZE), "crop": CROP, "downscale": [MIN_FACTOR, MAX_FACTOR],
                     "resample": "lanczos", "crops": crops},
        "missing": missing,
        "absent": absent,
        "counts": {s: sum(e["split"] == s for e in entries) for s in ("eval", "train", "unused")},
        "files": entries,
        "train_crops": records,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (keep it outside the repository)")
    ap.add_argument("--crops", type=int, default=DEFAULT_CROPS, help=f"training crops (default {DEFAULT_CROPS})")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--photos", action="store_true",
                    help="also write train_photos/: the training photos whole, shrunk 2, 2.83 and 4x")
    ap.add_argument("--source-root", default="/", help="where the packages' usr/ tree is (tests use a fake one)")
    args = ap.parse_args(argv)
    t0 = time.time()
    command = shlex.join([os.path.relpath(sys.argv[0]) if argv is None else "build_image_set.py",
                          *(sys.argv[1:] if argv is None else argv)])
    manifest = build(args.out, args.source_root, args.crops, args.seed, command, photos=args.photos)
    size = os.path.getsize(os.path.join(args.out, f"train_{CROP}.npy"))
    print(json.dumps(manifest["counts"]), f"train_{CROP}.npy: {size / 2**20:.1f} MiB")
    print(f"built {args.out} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
