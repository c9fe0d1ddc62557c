"""Helpers the learned image codecs' tests share: a synthetic photo and decoding on 1 and 2 threads."""
import numpy as np
import torch

import nc


def photo(h, w, channels=3, seed=0):
    """Smooth colour gradients plus texture: something a transform codec can compress."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(3 * xx + c) * np.cos(2 * yy - c) for c in range(channels)], -1)
    return np.clip(127 + 90 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def decode_on_one_and_two_threads(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = nc.decode(data).data
        torch.set_num_threads(2)
        return one, nc.decode(data).data
    finally:
        torch.set_num_threads(threads)
