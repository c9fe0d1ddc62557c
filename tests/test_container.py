"""The `.ncb` container on its own: layout, golden file, damage, limits."""
import io
import struct
import zlib
from pathlib import Path

import pytest

from nc.bitstream import container as C
from nc.errors import FormatError, PluginError, TruncatedError

GOLDEN = Path(__file__).parent / "golden"


def _golden_bytes() -> bytes:
    return (GOLDEN / "v1_two_tracks.ncb").read_bytes()


class Pipe(io.RawIOBase):
    """A non-seekable stream, like stdin from a pipe."""

    def __init__(self, data: bytes):
        self._f = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        chunk = self._f.read(min(len(b), 7))  # short reads on purpose
        b[:len(chunk)] = chunk
        return len(chunk)


def _chunks(data: bytes, pipe=False):
    reader = C.ContainerReader(Pipe(data) if pipe else io.BytesIO(data))
    return reader, list(reader.chunks())


def test_golden_file_still_reads_as_written():
    import sys

    sys.path.insert(0, str(GOLDEN))
    import make_golden

    reader, items = _chunks(_golden_bytes())
    assert reader.created_by == "nc golden"
    assert reader.tracks == make_golden.TRACKS
    assert [(c.track, c.start, c.duration, c.keyframe, c.payload) for c in items] == make_golden.CHUNKS
    assert [c.number for c in items] == list(range(5))
    assert reader.totals == [(3, 2), (2660, 3)]
    assert reader.index["offset"].tolist() == [c.offset for c in items]
    assert C.payload_bytes(_golden_bytes()) == sum(len(p) for *_, p in make_golden.CHUNKS)


def test_writer_still_writes_the_golden_bytes(tmp_path):
    import sys

    sys.path.insert(0, str(GOLDEN))
    import make_golden

    make_golden.write(tmp_path / "x.ncb")
    assert (tmp_path / "x.ncb").read_bytes() == _golden_bytes()


def test_layout_matches_the_spec():
    data = _golden_bytes()
    assert data[:8] == b"\x89NCB\r\n\x1a\n"
    assert struct.unpack_from("<HHI", data, 8) == (1, 0, zlib.crc32(data[:12]))
    length, ctype = struct.unpack_from("<I4s", data, 16)
    assert ctype == b"HEAD"
    assert struct.unpack_from("<I", data, 24 + length)[0] == zlib.crc32(data[20:24 + length])
    # the tail is the last 24 bytes and points at FINI and indx
    tail_len, tail_type, fini_at, index_at, _ = struct.unpack_from("<I4sQQI", data, len(data) - 28)
    assert (tail_len, tail_type) == (16, b"tail")
    assert data[fini_at + 4:fini_at + 8] == b"FINI" and data[index_at + 4:index_at + 8] == b"indx"


def test_pipe_reading_needs_no_index():
    reader, items = _chunks(_golden_bytes(), pipe=True)
    assert reader.index is None
    assert len(items) == 5 and all(isinstance(c, C.Chunk) for c in items)
    assert reader.totals == [(3, 2), (2660, 3)]  # learnt from FINI on the way


@pytest.mark.parametrize("pipe", [False, True])
def test_flipped_byte_damages_one_chunk_and_the_rest_reads(pipe):
    reader, good = _chunks(_golden_bytes())
    data = bytearray(_golden_bytes())
    data[good[2].offset + 30] ^= 0x40  # inside chunk 2's payload
    _, items = _chunks(bytes(data), pipe=pipe)
    damage = [i for i in items if isinstance(i, C.Damage)]
    assert len(damage) == 1 and damage[0].number == 2 and "chunk 2" in damage[0].message
    assert [c.number for c in items if isinstance(c, C.Chunk)] == [0, 1, 3, 4]


@pytest.mark.parametrize("pipe", [False, True])
def test_corrupt_length_field_resyncs(pipe):
    _, good = _chunks(_golden_bytes())
    data = bytearray(_golden_bytes())
    data[good[1].offset + 3] = 0x7F  # length now absurd (> 64 MiB)
    _, items = _chunks(bytes(data), pipe=pipe)
    assert [c.payload for c in items if isinstance(c, C.Chunk)] == [b"video gop 0", b"audio 1", b"video gop 1", b""]


def test_truncation_keeps_every_complete_chunk():
    _, good = _chunks(_golden_bytes())
    data = _golden_bytes()[: good[3].offset + 10]
    reader, items = _chunks(data)
    assert reader.index is None and reader.totals is None
    assert [c.number for c in items if isinstance(c, C.Chunk)] == [0, 1, 2]
    assert isinstance(items[-1], C.Damage) and "truncated" in items[-1].message


def test_truncated_after_last_data_chunk():
    _, good = _chunks(_golden_bytes())
    end = good[4].offset + C.FRAMING + C.DATA_HEAD.size
    _, items = _chunks(_golden_bytes()[:end])
    assert len([c for c in items if isinstance(c, C.Chunk)]) == 5
    assert "truncated" in items[-1].message


def _insert_chunk(ctype: bytes, body: bytes) -> bytes:
    """The golden file with one extra chunk before the first DATA chunk (no index: it would be stale)."""
    _, good = _chunks(_golden_bytes())
    data = _golden_bytes()
    extra = struct.pack("<I4s", len(body), ctype) + body + struct.pack("<I", zlib.crc32(ctype + body))
    return data[:good[0].offset] + extra + data[good[0].offset:]


def test_unknown_optional_chunk_is_skipped():
    _, items = _chunks(_insert_chunk(b"xtra", b"future metadata"), pipe=True)
    assert len([c for c in items if isinstance(c, C.Chunk)]) == 5


def test_unknown_critical_chunk_is_refused():
    with pytest.raises(FormatError, match="unknown critical chunk b'XTRA'.*newer nc"):
        _chunks(_insert_chunk(b"XTRA", b"must understand"), pipe=True)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"RIFF" + d[4:], "not an .ncb"),
    (lambda d: d[:8] + b"\x02" + d[9:], "preamble is corrupt"),
    (lambda d: d[:10], "not an .ncb"),
    (lambda d: d[:30], "ends inside the header"),
])
def test_bad_preamble_or_header(mutate, message):
    with pytest.raises(FormatError, match=message):
        C.ContainerReader(io.BytesIO(mutate(_golden_bytes())))


def test_newer_major_version_is_refused():
    pre = struct.pack("<8sHH", C.SIGNATURE, 2, 0)
    data = pre + struct.pack("<I", zlib.crc32(pre)) + _golden_bytes()[16:]
    with pytest.raises(FormatError, match="format 2.0"):
        C.ContainerReader(io.BytesIO(data))


def test_huge_header_length_is_refused_before_allocation():
    data = bytearray(_golden_bytes())
    data[16:20] = struct.pack("<I", 0xFFFFFFF0)
    with pytest.raises(FormatError, match="over the"):
        C.ContainerReader(io.BytesIO(bytes(data)))


def test_writer_refuses_oversized_chunks():
    w = C.ContainerWriter(io.BytesIO(), [C.TrackHeader("audio/x", 1, "", {}, {}, {})], "t")
    with pytest.raises(FormatError, match="exceeds"):
        w.write_chunk(0, 0, 1, True, bytes(C.MAX_BODY))


def test_empty_truncated_file():
    with pytest.raises(TruncatedError):
        C.ContainerReader(io.BytesIO(_golden_bytes()[:16]))


def test_length_running_past_the_end_is_damage_not_truncation_on_a_pipe():
    _, good = _chunks(_golden_bytes())
    data = bytearray(_golden_bytes())
    data[good[1].offset:good[1].offset + 4] = struct.pack("<I", 5000)  # plausible, but past the end of the file
    _, items = _chunks(bytes(data), pipe=True)
    assert [c.payload for c in items if isinstance(c, C.Chunk)] == [b"video gop 0", b"audio 1", b"video gop 1", b""]
    damage = [i for i in items if isinstance(i, C.Damage)]
    assert len(damage) == 1 and not damage[0].truncated


def test_inconsistent_index_is_ignored():
    data = bytearray(_golden_bytes())
    reader, _ = _chunks(bytes(data))
    first = data.index(b"indx") + 4 + 4  # first entry's offset field
    data[first:first + 8] = struct.pack("<Q", 10**9)
    crc_at = data.index(b"indx") + 4 + int.from_bytes(data[data.index(b"indx") - 4:data.index(b"indx")], "little")
    data[crc_at:crc_at + 4] = struct.pack("<I", zlib.crc32(bytes(data[data.index(b"indx"):crc_at])))
    reader, items = _chunks(bytes(data))
    assert reader.index is None and len([c for c in items if isinstance(c, C.Chunk)]) == 5


def _file_with_head(head: str) -> bytes:
    pre = struct.pack("<8sHH", C.SIGNATURE, 1, 0)
    body = head.encode()
    chunk = struct.pack("<I4s", len(body), b"HEAD") + body + struct.pack("<I", zlib.crc32(b"HEAD" + body))
    return pre + struct.pack("<I", zlib.crc32(pre)) + chunk


TRACK = ('"codec": "audio/x", "codec_version": 1, "weights_sha256": "", "rate": {"name": "a", "value": 1, '
         '"unit": "bps"}, "facts": {"modality": "audio", "sample_rate": 8000, "channels": 1}, "params": {}')


@pytest.mark.parametrize("track, message", [
    (TRACK.replace('"codec": "audio/x"', '"codec": "audio/x\\n"'), "codec id"),
    (TRACK + ', "codec": "image/x"', "repeated key 'codec'"),
    (TRACK.replace('"modality": "audio"', '"modality": "video"'), "audio/x's facts name modality 'video'"),
    (TRACK.replace('"value": 1,', '"value": 1%s,' % ("0" * 400)), "int too large"),
    (TRACK.replace('"params": {}', '"params": {"preskip": 1e999}'), "1e999 is out of range"),
    (TRACK.replace('"params": {}', '"params": %s' % ("[" * 100000 + "]" * 100000)), "nested too deeply"),
])
def test_a_head_two_readers_could_read_differently_is_refused(track, message):
    C.ContainerReader(io.BytesIO(_file_with_head('{"tracks": [{%s}]}' % TRACK)))  # the valid one reads
    with pytest.raises(FormatError, match=message):
        C.ContainerReader(io.BytesIO(_file_with_head('{"tracks": [{%s}]}' % track)))


def test_writer_refuses_packets_a_reader_would_call_damage():
    audio = C.TrackHeader("audio/x", 1, "", {}, {}, {})
    image = C.TrackHeader("image/x", 1, "", {}, {}, {})
    w = C.ContainerWriter(io.BytesIO(), [audio, image], "t")
    w.write_chunk(0, 0, 10, True, b"")
    with pytest.raises(PluginError, match="track 0's encoder gave a packet at 12 lasting 5, where the track ends at 10"):
        w.write_chunk(0, 12, 5, True, b"")
    with pytest.raises(PluginError, match="is an image"):
        w.write_chunk(1, 0, 2, True, b"")
    w.write_chunk(1, 0, 1, True, b"")
    with pytest.raises(PluginError, match="is an image"):
        w.write_chunk(1, 1, 1, True, b"")


@pytest.mark.parametrize("pipe", [False, True])
def test_two_damaged_chunks_in_a_row_resync_on_a_pipe_too(pipe):
    _, good = _chunks(_golden_bytes())
    data = bytearray(_golden_bytes())
    data[good[1].offset + 30] ^= 0x40
    data[good[2].offset + 30] ^= 0x40  # the chunk after the first damage is damaged too: a scan follows
    _, items = _chunks(bytes(data), pipe=pipe)
    assert [d.number for d in items if isinstance(d, C.Damage)] == [1, 2]
    assert [c.number for c in items if isinstance(c, C.Chunk)] == [0, 3, 4]


def test_a_scan_through_fake_chunk_headers_costs_bounded_work(monkeypatch):
    """After damage, every 12 bytes claims a 60 MiB DATA chunk: each candidate once cost a copy of the
    rest of the buffer (minutes for 1 MB); now one past the file's end is skipped unread, and the CRC
    work of a scan is bounded."""
    _, good = _chunks(_golden_bytes())
    absurd = struct.pack("<I4sI", 0x7FFFFFFF, b"DATA", 0)  # chunk 1: a length no chunk has, so a scan follows
    fakes = struct.pack("<I4sHBB", 60 << 20, b"DATA", 0, 0, 0) * 40000  # 480 kB of plausible headers
    _, items = _chunks(_golden_bytes()[:good[1].offset] + absurd + fakes)
    assert isinstance(items[-1], C.Damage) and items[-1].truncated
    fake = struct.pack("<I4sHBB", 100, b"DATA", 0, 0, 0) + bytes(200)  # present in full, CRC wrong
    monkeypatch.setattr(C, "SCAN_BUDGET", 100_000)
    _, items = _chunks(_golden_bytes()[:good[1].offset] + absurd + fake * 2000 + _golden_bytes()[good[2].offset:])
    assert "nothing readable follows" in items[-1].message  # gave up after ~1000 candidates, not 2000
