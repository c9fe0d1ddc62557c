"""What the learned image codecs share: cutting an image into tiles, padding a tile to the network's
grid, and running a float network on one thread so its pixels do not depend on the thread count."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np


def tiles(height: int, width: int, tile: int):
    """(top, left, h, w) of each tile of side `tile` in raster order (the last row and column smaller)."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(tile, height - top), min(tile, width - left)


def pad_to(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """(h, w, c) padded at the bottom and right, edge pixels repeated, to multiples of `multiple`."""
    h, w = pixels.shape[:2]
    return np.pad(pixels, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode="edge")


@contextmanager
def one_thread(torch):
    """Run a float synthesis on one thread: oneDNN splits a convolution's sums differently for other
    thread counts, which moved some pixels by one level between 1 and 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
