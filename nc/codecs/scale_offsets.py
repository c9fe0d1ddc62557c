"""Per-channel scale offsets: the encoder's correction, for one image, of its entropy model's spreads.

A hyperprior predicts each latent's spread well on average over images, but in one image some
channels come out consistently wider or narrower than predicted: a channel this image leaves at
zero, a texture channel it uses more than most. The encoder measures, for each channel of a map,
which shift of its scale indices codes that channel's symbols in the fewest bits, counting the
shift's own bits, and sends the shifts: the channel's symbols are coded at scale index
clip(index + offset, 0, 63) instead of index (SCALES steps by about 10 %). Only the bits depend on
the offsets: the coded values, hence the pixels, do not.

Payload: the offsets of the channels a tile codes, offset + RADIUS in [0, 2 RADIUS], ANS-coded
(nc/bitstream/entropy.encode_categorical) with the fixed table FREQS; image/hvae sends hyper + latent
of them in one payload, z's channels first. The encoder's choice is an estimate (`bits_by_offset`
prices a residual by its magnitude; the integer tables are symmetric only to within their rounding),
so it may miss the best offset by a fraction of a bit; any offsets decode.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from nc.errors import CorruptChunkError, FormatError

# bit 14 of a u16 step field: image/hvae's, every tile's offsets precede its z; video/wfvae's, the
# GOP's offsets and its copy-mode maps (nc/codecs/copy_modes.py) are sent
FLAG = 1 << 14
RADIUS = 15  # offsets lie in [-RADIUS, RADIUS]
MAX_CHANNELS = 2**16  # a map's channels, for the estimate's packed keys
# How often each offset -15..15 is chosen: counted over the choices for 8 photos (4 of skimage.data,
# 4 training photos; never the evaluation photos) at qualities 0, 2, 4 and 8 with a uniform table,
# floored at 1 in 1000 (scripts/fit_scale_offsets.py). -15 is a channel the image leaves at zero.
FREQS = (138, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 6, 18, 86, 239, 230, 149, 65, 29, 12, 6, 8, 2, 3, 1, 1, 1, 1, 1, 1, 1)


@lru_cache(maxsize=1)
def table():
    """FREQS as a FrequencyTable, built once: it caches its ANS model, which every tile's offsets use."""
    from nc.bitstream.entropy import FrequencyTable

    return FrequencyTable(np.asarray(FREQS, np.int64))


def split_step(field: int) -> tuple[int, bool]:
    """A step field without its post-filter bit -> (step, whether FLAG is set)."""
    return field & (FLAG - 1), bool(field & FLAG)


def split_flags(field: int) -> tuple[int, bool, bool]:
    """A codec's whole u16 step field -> (step, whether a post-filter follows (bit 15, nc/codecs/
    postfilter.py), whether FLAG is set)."""
    from nc.codecs import postfilter

    step, has_filter = postfilter.split_step(field)
    return step & (FLAG - 1), has_filter, bool(step & FLAG)


def bits_by_offset(residuals: np.ndarray, index: np.ndarray, coder) -> np.ndarray:
    """(channels, 2 RADIUS + 1): the bits of each channel's residuals (channels, ...) at each offset
    of its scale indices, estimated from `coder`'s (a ScaleTableCoder) tables. Equal (channel, index,
    |residual|) triples are counted once: a map has few distinct ones."""
    channels = len(residuals)
    if channels > MAX_CHANNELS:
        raise ValueError(f"{channels} channels: at most {MAX_CHANNELS}")
    c = np.repeat(np.arange(channels, dtype=np.int64), residuals[0].size)
    key = (c << 38) | (index.astype(np.int64).ravel() << 32) | np.abs(residuals.astype(np.int64)).ravel()
    unique, counts = np.unique(key, return_counts=True)
    c, i, magnitude = unique >> 38, (unique >> 32) & 63, unique & (2**32 - 1)
    out = np.empty((channels, 2 * RADIUS + 1))
    for k, offset in enumerate(range(-RADIUS, RADIUS + 1)):
        bits = coder.residual_bits(magnitude, np.clip(i + offset, 0, 63)) * counts
        out[:, k] = np.bincount(c, bits, minlength=channels)
    return out


def choose(residuals: np.ndarray, index: np.ndarray, coder) -> tuple[np.ndarray, float]:
    """Each channel's offset, the one of least bits + its own code length, and the bits it saves
    against no offsets (estimated; the offsets' own bits counted)."""
    bits = bits_by_offset(residuals, index, coder)
    cost = bits - np.log2(np.asarray(FREQS) / sum(FREQS))
    best = cost.argmin(1)
    return best - RADIUS, float(bits[:, RADIUS].sum() - cost[np.arange(len(best)), best].sum())


def shifted(index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The scale indices of a map (channels, ...) moved by its channels' offsets, within the table."""
    return np.clip(index + offsets.reshape((-1,) + (1,) * (index.ndim - 1)), 0, 63).astype(np.int32)


def pack(offsets: np.ndarray) -> bytes:
    from nc.bitstream.entropy import encode_categorical

    return encode_categorical(np.asarray(offsets) + RADIUS, table())


def unpack(data: bytes, channels: int, codec_id: str) -> np.ndarray:
    """`channels` offsets from their payload; CorruptChunkError where it does not hold exactly them."""
    from nc.bitstream.entropy import decode_categorical

    try:
        return decode_categorical(data, table(), channels).astype(np.int64) - RADIUS
    except (FormatError, ValueError) as e:
        raise CorruptChunkError(f"{codec_id} scale offsets: {e}") from None
