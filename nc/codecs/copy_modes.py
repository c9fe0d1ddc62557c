"""Copy mode: where a latent frame repeats the one before it, code it as a change from that one.

video/wfvae's context prior predicts each latent frame's means and spreads from the previous one,
but its shipped weights have learned that poorly: a still background costs nearly as many bits in
every latent frame as in the first. In copy mode a block of cells is coded around the previous
latent frame's decoded values instead (means y_hat_{t-1} g, the prior's scale indices, moved by
the copy mode's own per-channel scale offsets, nc/codecs/scale_offsets.py): a still region then
codes as zeros. The encoder chooses the mode of each BLOCK x BLOCK block of cells (32 x 32 pixels)
by the bits it costs and sends the choices, one bit per block.

Payload of a map: the blocks' bits in raster order, most significant bit first
(np.packbits), 1 for copy mode, zero-padded to whole bytes; rows x cols blocks take
ceil(rows cols / 8) bytes.
"""
from __future__ import annotations

import numpy as np

from nc.errors import CorruptChunkError

BLOCK = 2  # latent cells per side of a block with one mode


def block_sums(cell_values: np.ndarray) -> np.ndarray:
    """(h, w) per-cell values -> (h / BLOCK, w / BLOCK) sums per block."""
    h, w = cell_values.shape
    return cell_values.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).sum((1, 3))


def choose(prior: np.ndarray, prior_index: np.ndarray, copy: np.ndarray, copy_index: np.ndarray, coder) -> np.ndarray:
    """The blocks (bool, (h / BLOCK, w / BLOCK)) whose symbols (latent, h, w) cost fewer bits in copy
    mode (`copy` at `copy_index`) than around the prior (`prior` at `prior_index`), as estimated from
    `coder`'s (a ScaleTableCoder) tables."""
    prior_bits = block_sums(coder.residual_bits(prior, prior_index).sum(0))
    copy_bits = block_sums(coder.residual_bits(copy, copy_index).sum(0))
    return copy_bits < prior_bits


def cells(blocks: np.ndarray) -> np.ndarray:
    """A block map -> the same map per cell (h, w)."""
    return np.repeat(np.repeat(blocks, BLOCK, 0), BLOCK, 1)


def pack(blocks: np.ndarray) -> bytes:
    return np.packbits(blocks.ravel()).tobytes()


def unpack(data: bytes, pos: int, shape: tuple[int, int], codec_id: str) -> tuple[np.ndarray, int]:
    """A map of `shape` blocks read at `pos` of data, and the position after it; CorruptChunkError
    where the payload ends first or a padding bit is set."""
    count = shape[0] * shape[1]
    end = pos + -(-count // 8)
    if end > len(data):
        raise CorruptChunkError(f"{codec_id} payload ends inside a copy-mode map")
    bits = np.unpackbits(np.frombuffer(data, np.uint8, end - pos, pos))
    if bits[count:].any():
        raise CorruptChunkError(f"{codec_id} copy-mode map has padding bits set")
    return bits[:count].reshape(shape).astype(bool), end
