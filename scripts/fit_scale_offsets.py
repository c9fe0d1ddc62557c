"""Counts the per-channel scale offsets (nc/codecs/scale_offsets.py) image/hvae's encoder chooses with a
uniform table, for the table FREQS that replaces it.

Photos: 4 of skimage.data and the first 4 training photos shrunk 4x (`scripts/build_image_set.py
--photos`), never the evaluation photos; qualities 0, 2, 4 and 8; z's and y's channels together.

    python scripts/fit_scale_offsets.py [TRAIN_PHOTOS_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from nc.codecs import scale_offsets
from nc.codecs.hvae import TILE, WEIGHTS, HvaeModel, _canvas, tiles

SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket")
QUALITIES = (0, 2, 4, 8)
FLOOR = 1 / 1000  # no offset rarer than this


def photos(train_dir: Path):
    import skimage.data

    for name in SKIMAGE:
        yield getattr(skimage.data, name)()
    for path in sorted(train_dir.glob("*x4.00*.png"))[:4]:
        yield np.asarray(Image.open(path).convert("RGB"))


def main() -> None:
    train_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/data/images/train_photos")
    model, counts = HvaeModel(WEIGHTS), np.zeros(2 * scale_offsets.RADIUS + 1, np.int64)
    scale_offsets.FREQS = (1,) * len(counts)  # what the encoder chooses when every offset costs the same
    coder = model.coder
    for rgb in photos(train_dir):
        h, w = rgb.shape[:2]
        grid = list(tiles(h, w, TILE))
        ys, zs = zip(*(model.analyse(rgb, *tile) for tile in grid))
        z_all = _canvas(zs, model.cfg.hyper, 64, h, w, np.int64)
        for y, z, tile in zip(ys, zs, grid):
            side = model.hyper_side(z_all, *tile)
            chosen = [coder.choose_z_offsets(z)[0]]
            chosen += [coder.choose_y_offsets(y, side, coder.step_of(q))[0] for q in QUALITIES]
            for offsets in chosen:
                counts += np.bincount(offsets + scale_offsets.RADIUS, minlength=len(counts))
    p = np.maximum(counts / counts.sum(), FLOOR)
    print("counts", counts.tolist())
    print("FREQS = ", tuple(int(v) for v in np.round(p / p.min())))


if __name__ == "__main__":
    main()
