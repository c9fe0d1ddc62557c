"""Mutated files: reading may fail, but only with nc's own error type, and never hang."""
import io
import os

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import nc
from conftest import recrc_field
from nc.errors import NCError

EXAMPLES = int(os.environ.get("NC_FUZZ_EXAMPLES", "300"))


def _valid_file() -> bytes:
    x = (0.3 * np.sin(np.arange(12000) / 5)).astype(np.float32)[:, None]
    return nc.encode(x, codec="audio/toy-mulaw", sample_rate=8000, channels=1)


VALID = None


def _mutations():
    position = st.integers(0, 10_000)
    return st.lists(st.one_of(
        st.tuples(st.just("flip"), position, st.integers(1, 255)),
        st.tuples(st.just("truncate"), position, st.just(0)),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), position, st.integers(1, 64)),
        st.tuples(st.just("u32"), position, st.sampled_from([0, 1, 0xFFFF, 1 << 26, 0xFFFFFFFF])),
    ), min_size=1, max_size=4)


def _apply(data: bytes, mutations) -> bytes:
    b = bytearray(data)
    for kind, at, arg in mutations:
        at %= max(len(b), 1)
        if kind == "flip" and b:
            b[at] ^= arg
        elif kind == "truncate":
            del b[at:]
        elif kind == "insert":
            b[at:at] = arg
        elif kind == "delete":
            del b[at:at + arg]
        elif kind == "u32":
            b[at:at + 4] = arg.to_bytes(4, "little")
    return bytes(b)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(), st.booleans())
def test_mutated_files_raise_only_nc_errors(mutations, ignore_errors):
    global VALID
    VALID = VALID or _valid_file()
    data = _apply(VALID, mutations)
    try:
        decoded = nc.decode(data, ignore_errors=ignore_errors)
    except NCError:
        return
    for track in decoded.tracks:  # whatever decodes has a sane shape
        assert track.data.ndim == 2 and track.data.shape[1] == track.info.facts.channels
        assert len(track.data) <= 1 << 24


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_after_a_valid_signature(tail):
    try:
        nc.decode(b"\x89NCB\r\n\x1a\n" + tail)
    except NCError:
        pass


# DATA header fields: (offset in body, size): track, flags, seq, start, duration
_DATA_FIELDS = [(0, 2), (2, 1), (4, 4), (8, 8), (16, 4)]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 5), st.sampled_from(_DATA_FIELDS),
       st.sampled_from([0, 1, 2, 1999, 2001, 1 << 20, 1 << 31, (1 << 32) - 1, 1 << 40, (1 << 63) - 1]),
       st.booleans())
def test_crc_valid_but_absurd_chunk_headers(chunk, field, value, ignore_errors):
    from nc.bitstream.container import Chunk, ContainerReader

    global VALID
    VALID = VALID or _valid_file()
    offsets = [c.offset for c in ContainerReader(io.BytesIO(VALID)).chunks() if isinstance(c, Chunk)]
    at, size = field
    data = recrc_field(VALID, offsets[chunk], at, value % (1 << (8 * size)), size)
    try:
        decoded = nc.decode(data, ignore_errors=ignore_errors)
    except NCError:
        return
    assert len(decoded.data) <= 12000 + 600 * 8000  # never more than the file plus bounded filling
