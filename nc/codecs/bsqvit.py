"""video/bsqvit: learned video coding with a block-causal ViT and binary spherical quantization.

PLACEHOLDER docstring: filled in with the codec.
"""
from __future__ import annotations

import numpy as np

from nc.models.bsqvit import GROUP

ALPHABET = 2**GROUP  # a sub-code: GROUP bits, the first most significant
NONE = ALPHABET  # the context value where there is no neighbour
PER_GROUP = (ALPHABET + 1) ** 2  # contexts of one group: (previous tubelet's sub-code, previous group's)


def subcodes(bits: np.ndarray) -> np.ndarray:
    """Bits (..., groups * GROUP) 0/1 -> sub-codes (..., groups) in [0, ALPHABET)."""
    b = bits.reshape(*bits.shape[:-1], -1, GROUP).astype(np.int64)
    return (b << np.arange(GROUP - 1, -1, -1)).sum(-1)


def context_rows(codes: np.ndarray, n: int, g: int) -> np.ndarray:
    """Table rows for group g of tubelet n of sub-codes (tubelets, rows, columns, groups): the same
    token's sub-code of group g one tubelet back and its sub-code of group g - 1 (NONE for none)."""
    shape = codes.shape[1:3]
    past = codes[n - 1, :, :, g] if n > 0 else np.full(shape, NONE)
    before = codes[n, :, :, g - 1] if g > 0 else np.full(shape, NONE)
    return (g * PER_GROUP + past * (ALPHABET + 1) + before).reshape(-1)


def count_subcodes(bits: np.ndarray) -> np.ndarray:
    """Bits (tubelets, rows, columns, bits) of one clip -> counts (groups * PER_GROUP, ALPHABET)."""
    codes = subcodes(bits)
    n, _, _, groups = codes.shape
    counts = np.zeros(groups * PER_GROUP * ALPHABET, np.int64)
    for t in range(n):
        for g in range(groups):
            np.add.at(counts, context_rows(codes, t, g) * ALPHABET + codes[t, :, :, g].reshape(-1), 1)
    return counts.reshape(groups * PER_GROUP, ALPHABET)
