"""Delta coding of a GOP's hyper latents: z of a later latent frame coded as a change from the one before.

The hyper latent z sums up a latent frame's spreads and layout at 1/64 of the side; within a GOP it
barely changes (a pan moves less than a cell of it per latent frame), yet its prior (zero mean, one
learned scale per channel) codes each latent frame's z afresh: 4-15 % of video/wfvae's payload.
Here the encoder chooses, for each channel of z, how the GOP's later latent frames code it: with
that prior, or as z_t - z_{t-1} with a Gaussian of any of the coder's scales (nc/bitstream/
entropy.SCALES), whichever costs fewer bits as estimated from the coder's tables. The first
latent frame's z is coded as before. The values, hence the pixels, do not change.

Payload of a map: one byte per channel of z, 0 for the prior, k in 1..len(SCALES) for the change
at scale index k - 1; sent only where it saves more bits than its own.
"""
from __future__ import annotations

import numpy as np

from nc.bitstream.entropy import SCALES
from nc.errors import CorruptChunkError

FLAG = 1 << 13  # in a step field (video/wfvae): the payload carries a map of z modes


def choose(zs: list[np.ndarray], index: np.ndarray, coder) -> np.ndarray | None:
    """The modes (uint8, (hyper,)) for the hyper latents `zs` (int64 (hyper, h, w) per latent frame)
    whose prior's scale indices are `index` (hyper,), or None where the map would not pay for its
    bytes (or there is no later latent frame). coder: a ScaleTableCoder."""
    if len(zs) < 2:
        return None
    later = np.stack(zs[1:], 1)  # (hyper, frames - 1, h, w)
    changes = later - np.stack(zs[:-1], 1)
    prior_bits = coder.residual_bits(later, index[:, None, None, None]).sum((1, 2, 3))
    change_bits = np.stack([coder.residual_bits(changes, k).sum((1, 2, 3)) for k in range(len(SCALES))], 1)
    best = change_bits.argmin(1)
    modes = np.where(change_bits[np.arange(len(best)), best] < prior_bits, best + 1, 0).astype(np.uint8)
    saved = np.maximum(prior_bits - change_bits.min(1), 0).sum()
    return modes if saved > 8 * len(modes) else None


def prior(previous: np.ndarray, modes: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The means and scale indices (both (hyper, h, w)) a later latent frame's z is coded with, from
    the previous latent frame's z, the modes and the prior's scale indices (hyper,)."""
    change = (modes > 0)[:, None, None]
    means = np.where(change, previous, 0)
    indices = np.where(change, modes.astype(np.int64)[:, None, None] - 1, index[:, None, None])
    return means, np.broadcast_to(indices, previous.shape)


def pack(modes: np.ndarray) -> bytes:
    return modes.astype(np.uint8).tobytes()


def unpack(data: bytes, pos: int, channels: int, codec_id: str) -> tuple[np.ndarray, int]:
    """A map of `channels` modes read at `pos` of data, and the position after it; CorruptChunkError
    where the payload ends first or a mode names no scale."""
    end = pos + channels
    if end > len(data):
        raise CorruptChunkError(f"{codec_id} payload ends inside its map of z modes")
    modes = np.frombuffer(data, np.uint8, channels, pos)
    if (modes > len(SCALES)).any():
        raise CorruptChunkError(f"{codec_id} map of z modes names a scale beyond the {len(SCALES)} there are")
    return modes, end
