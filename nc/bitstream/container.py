"""Reading and writing the `.ncb` container. The spec is docs/FORMAT.md; this is its code.

The public entry points are `nc.open`, `nc.encode` and `nc.decode` (nc/stream.py);
this module knows chunks and bytes, nothing about codecs or media.

    file    = preamble, HEAD, {DATA | optional chunk}, FINI, [indx], [tail]
    chunk   = u32 body length, 4-byte type, body, u32 CRC-32 of (type + body)

All integers are little-endian. A type whose first letter is upper case is
critical (a reader that does not know it must stop); lower case is optional
(a reader skips it). The writer only appends, so a file can go to a pipe; the
fixed-size `tail` chunk at the very end points back to FINI and the index.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from nc.errors import FormatError, TruncatedError

SIGNATURE = b"\x89NCB\r\n\x1a\n"
FORMAT_MAJOR, FORMAT_MINOR = 1, 0
# signature, major, minor, CRC-32 of the 12 bytes before it
PREAMBLE = struct.Struct("<8sHHI")
# body length, type
CHUNK_HEAD = struct.Struct("<I4s")
CHUNK_CRC = struct.Struct("<I")
FRAMING = CHUNK_HEAD.size + CHUNK_CRC.size
# DATA body prefix: track, flags (bit 0 keyframe), reserved, per-track sequence, start, duration
DATA_HEAD = struct.Struct("<HBBIQI")
# FINI body: track count, then per track: total duration, chunk count
FINI_COUNT = struct.Struct("<H")
FINI_TRACK = struct.Struct("<QI")
# indx body: entry count, then per DATA chunk: file offset, then DATA_HEAD's fields
INDEX_COUNT = struct.Struct("<I")
INDEX_ENTRY = struct.Struct("<QHBBIQI")
# tail body: offset of FINI, offset of indx
TAIL_BODY = struct.Struct("<QQ")
TAIL_SIZE = FRAMING + TAIL_BODY.size

MAX_BODY = 64 << 20  # bytes in one chunk body
MAX_HEAD = 1 << 20  # bytes of HEAD JSON
MAX_TRACKS = 16
KEYFRAME = 0x01
KNOWN_TYPES = (b"HEAD", b"DATA", b"FINI", b"indx", b"tail")


@dataclass(frozen=True)
class TrackHeader:
    """One track's entry in HEAD. `facts` and `params` are JSON objects."""

    codec: str
    codec_version: int
    weights_sha256: str
    rate: dict
    facts: dict
    params: dict

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Chunk:
    number: int  # DATA chunks counted from 0 in file order
    offset: int  # of the chunk's length field
    track: int
    seq: int
    start: int
    duration: int
    keyframe: bool
    payload: bytes


@dataclass(frozen=True)
class Damage:
    """Something unreadable in the file; iteration goes on past it."""

    number: int | None  # the DATA chunk it hit, when known
    offset: int
    message: str


@dataclass(frozen=True)
class IndexEntry:
    offset: int
    track: int
    keyframe: bool
    seq: int
    start: int
    duration: int


# ---------------------------------------------------------------- writing


class ContainerWriter:
    """Appends chunks to a binary stream; `close()` writes FINI, indx and tail."""

    def __init__(self, out: BinaryIO, tracks: list[TrackHeader], created_by: str):
        if not 1 <= len(tracks) <= MAX_TRACKS:
            raise FormatError(f"a file holds 1 to {MAX_TRACKS} tracks, not {len(tracks)}")
        self._out = out
        self._offset = 0
        self._index: list[IndexEntry] = []
        self._totals = [[0, 0] for _ in tracks]  # per track: duration so far, chunks
        head = json.dumps({"created_by": created_by, "tracks": [t.to_json() for t in tracks]},
                          separators=(",", ":"), sort_keys=True).encode()
        if len(head) > MAX_HEAD:
            raise FormatError("track headers are too large")
        pre = struct.pack("<8sHH", SIGNATURE, FORMAT_MAJOR, FORMAT_MINOR)
        self._write(PREAMBLE.pack(SIGNATURE, FORMAT_MAJOR, FORMAT_MINOR, zlib.crc32(pre)))
        self._write_chunk(b"HEAD", head)

    def write_chunk(self, track: int, start: int, duration: int, keyframe: bool, payload: bytes) -> None:
        total = self._totals[track]
        flags = KEYFRAME if keyframe else 0
        entry = IndexEntry(self._offset, track, keyframe, total[1], start, duration)
        self._write_chunk(b"DATA", DATA_HEAD.pack(track, flags, 0, total[1], start, duration) + payload)
        self._index.append(entry)
        total[0] = max(total[0], start + duration)
        total[1] += 1

    def close(self) -> None:
        fini_at = self._offset
        body = FINI_COUNT.pack(len(self._totals)) + b"".join(FINI_TRACK.pack(*t) for t in self._totals)
        self._write_chunk(b"FINI", body)
        index_at = self._offset
        entries = [INDEX_ENTRY.pack(e.offset, e.track, KEYFRAME if e.keyframe else 0, 0, e.seq, e.start, e.duration)
                   for e in self._index]
        if INDEX_COUNT.size + INDEX_ENTRY.size * len(entries) <= MAX_BODY:
            self._write_chunk(b"indx", INDEX_COUNT.pack(len(entries)) + b"".join(entries))
        else:  # too many chunks for one index: readers fall back to scanning
            index_at = 0
        self._write_chunk(b"tail", TAIL_BODY.pack(fini_at, index_at))
        self._out.flush()

    def _write_chunk(self, ctype: bytes, body: bytes) -> None:
        if len(body) > MAX_BODY:
            raise FormatError(f"a {ctype.decode()} chunk of {len(body)} bytes exceeds the {MAX_BODY}-byte limit")
        self._write(CHUNK_HEAD.pack(len(body), ctype) + body + CHUNK_CRC.pack(zlib.crc32(ctype + body)))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)


# ---------------------------------------------------------------- reading


class _Source:
    """A read buffer over any binary stream, seekable or not, with absolute offsets."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._buf = bytearray()
        self.pos = 0  # absolute offset of _buf[0]
        try:
            self.seekable = bool(f.seekable())
            self.size = f.seek(0, 2) if self.seekable else None
            if self.seekable:
                f.seek(0)
        except (AttributeError, OSError):
            self.seekable, self.size = False, None

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n:
            more = self._f.read(max(n - len(self._buf), 1 << 16))
            if not more:
                break
            self._buf += more
        return bytes(self._buf[:n])

    def consume(self, n: int) -> None:
        del self._buf[:n]
        self.pos += n

    def seek(self, offset: int) -> None:
        if offset >= self.pos and offset - self.pos <= len(self._buf):
            self.consume(offset - self.pos)
            return
        if not self.seekable:
            if offset < self.pos:
                raise FormatError("cannot seek backwards in a stream that is not a file")
            while self.pos < offset and self.peek(1):
                self.consume(min(len(self._buf), offset - self.pos))
            return
        self._f.seek(offset)
        self._buf.clear()
        self.pos = offset


def _parse_chunk(raw: bytes) -> tuple[bytes, bytes] | None:
    """(type, body) if `raw` starts with a whole chunk whose CRC checks, else None."""
    if len(raw) < FRAMING:
        return None
    length, ctype = CHUNK_HEAD.unpack_from(raw)
    if length > MAX_BODY or len(raw) < FRAMING + length:
        return None
    body = raw[CHUNK_HEAD.size:CHUNK_HEAD.size + length]
    (crc,) = CHUNK_CRC.unpack_from(raw, CHUNK_HEAD.size + length)
    return (ctype, body) if crc == zlib.crc32(ctype + body) else None


class ContainerReader:
    """Parses the preamble and HEAD at once; `chunks()` walks the rest.

    On a seekable file it also reads FINI and the index through the tail, so
    `index` and `totals` are known up front; on a pipe or a truncated file they
    are None and the chunks are simply read in order.
    """

    def __init__(self, f: BinaryIO):
        self._src = _Source(f)
        self._read_preamble()
        ctype, body = self._read_whole_chunk("the header")
        if ctype != b"HEAD":
            raise FormatError(f"expected the HEAD chunk after the preamble, found {ctype!r}")
        self.created_by, self.tracks = _parse_head(body)
        self.data_at = self._src.pos
        self.totals: list[tuple[int, int]] | None = None
        self.index: list[IndexEntry] | None = None
        if self._src.seekable:
            self._read_tail()

    def _read_preamble(self) -> None:
        raw = self._src.peek(PREAMBLE.size)
        if len(raw) < PREAMBLE.size or not raw.startswith(SIGNATURE):
            raise FormatError("not an .ncb file (bad signature)")
        _, major, minor, crc = PREAMBLE.unpack(raw)
        if crc != zlib.crc32(raw[:12]):
            raise FormatError("the file's preamble is corrupt (CRC mismatch)")
        if major != FORMAT_MAJOR:
            raise FormatError(f"this is .ncb format {major}.{minor}; this nc reads format {FORMAT_MAJOR}.x")
        self._src.consume(PREAMBLE.size)

    def _read_whole_chunk(self, what: str) -> tuple[bytes, bytes]:
        head = self._src.peek(CHUNK_HEAD.size)
        if len(head) < CHUNK_HEAD.size:
            raise TruncatedError(f"the file ends before {what}")
        length, ctype = CHUNK_HEAD.unpack(head)
        limit = MAX_HEAD if ctype == b"HEAD" else MAX_BODY
        if length > limit:
            raise FormatError(f"{what} claims {length} bytes, over the {limit}-byte limit")
        raw = self._src.peek(FRAMING + length)
        if len(raw) < FRAMING + length:
            raise TruncatedError(f"the file ends inside {what}")
        parsed = _parse_chunk(raw)
        if parsed is None:
            raise FormatError(f"{what} is corrupt (CRC mismatch)")
        self._src.consume(len(raw))
        return parsed

    def _read_tail(self) -> None:
        """Best effort: a damaged or missing tail just means no index."""
        size = self._src.size
        if size is None or size < self.data_at + TAIL_SIZE:
            return
        try:
            self._src.seek(size - TAIL_SIZE)
            ctype, body = self._read_whole_chunk("the tail")
            if ctype != b"tail" or len(body) != TAIL_BODY.size:
                return
            fini_at, index_at = TAIL_BODY.unpack(body)
            if not self.data_at <= fini_at < size:
                return
            self._src.seek(fini_at)
            ctype, body = self._read_whole_chunk("FINI")
            if ctype == b"FINI":
                self.totals = _parse_fini(body, len(self.tracks))
            if self.data_at <= index_at < size:
                self._src.seek(index_at)
                ctype, body = self._read_whole_chunk("the index")
                if ctype == b"indx":
                    self.index = _parse_index(body, len(self.tracks))
        except FormatError:
            pass
        finally:
            self._src.seek(self.data_at)

    def chunks(self, offset: int | None = None, first_number: int = 0) -> Iterator[Chunk | Damage]:
        """DATA chunks in file order from `offset`, with a `Damage` for each unreadable stretch.

        Ends after FINI, or with a Damage saying the file was truncated.
        """
        src = self._src
        src.seek(self.data_at if offset is None else offset)
        number = first_number
        while True:
            at = src.pos
            head = src.peek(CHUNK_HEAD.size)
            if not head:
                yield Damage(number, at, f"the file is truncated after chunk {number - 1}: no FINI chunk")
                return
            length, ctype = CHUNK_HEAD.unpack(head) if len(head) == CHUNK_HEAD.size else (0, b"")
            raw = src.peek(FRAMING + length) if length <= MAX_BODY else b""
            parsed = _parse_chunk(raw) if raw else None
            if parsed is None:
                if length <= MAX_BODY and len(raw) < FRAMING + length and not self._more_after(at):
                    yield Damage(number, at, f"the file is truncated inside chunk {number}")
                    return
                yield Damage(number, at, f"chunk {number} at byte {at} is corrupt (CRC mismatch)")
                number = self._resync(at, number)
                if number is None:
                    yield Damage(None, src.pos, "no readable chunk after the damage; the file may be truncated")
                    return
                continue
            ctype, body = parsed
            src.consume(len(raw))
            if ctype == b"DATA":
                chunk = _parse_data(body, number, at, len(self.tracks))
                number += 1
                yield chunk
            elif ctype == b"FINI":
                self.totals = _parse_fini(body, len(self.tracks))
                return
            elif ctype == b"HEAD":
                raise FormatError(f"a second HEAD chunk at byte {at}")
            elif ctype[:1].isupper():
                raise FormatError(f"unknown critical chunk {ctype!r} at byte {at}: this file needs a newer nc")
            # unknown optional chunk (or an early indx/tail): skip

    def _more_after(self, at: int) -> bool:
        """Whether any valid chunk follows `at` (so a short read was damage, not truncation)."""
        return self.index is not None and any(e.offset > at for e in self.index)

    def _resync(self, bad_at: int, number: int) -> int | None:
        """Move to the next valid chunk after damage at `bad_at`; return the next chunk number."""
        if self.index is not None:
            for i, e in enumerate(self.index):
                if e.offset > bad_at:
                    self._src.seek(e.offset)
                    return i
        return self._scan_for_chunk(bad_at + 1, number + 1)

    def _scan_for_chunk(self, start: int, number: int) -> int | None:
        """Search byte by byte for a chunk whose type is known and whose CRC checks."""
        src = self._src
        src.seek(start)
        window = 1 << 20
        while True:
            data = src.peek(window)
            if len(data) < FRAMING:
                return None
            hits = sorted({i - 4 for t in KNOWN_TYPES for i in _find_all(data, t) if i >= 4})
            for c in hits:
                (length,) = struct.unpack_from("<I", data, c)
                if length <= MAX_BODY and _parse_chunk(src.peek(c + FRAMING + length)[c:]):
                    src.consume(c)
                    return number
            src.consume(max(len(data) - 8, 1))


def _find_all(data: bytes, needle: bytes) -> Iterator[int]:
    i = data.find(needle)
    while i >= 0:
        yield i
        i = data.find(needle, i + 1)


def _parse_head(body: bytes) -> tuple[str, list[TrackHeader]]:
    try:
        head = json.loads(body.decode("utf-8"))
        tracks = [
            TrackHeader(str(t["codec"]), int(t["codec_version"]), str(t["weights_sha256"]), dict(t["rate"]),
                        dict(t["facts"]), dict(t["params"]))
            for t in head["tracks"]
        ]
        created_by = str(head.get("created_by", ""))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise FormatError(f"the file's HEAD chunk is malformed ({e.__class__.__name__})") from None
    if not 1 <= len(tracks) <= MAX_TRACKS:
        raise FormatError(f"the file declares {len(tracks)} tracks (1 to {MAX_TRACKS} allowed)")
    return created_by, tracks


def _parse_data(body: bytes, number: int, at: int, n_tracks: int) -> Chunk:
    if len(body) < DATA_HEAD.size:
        raise FormatError(f"chunk {number} at byte {at} is too short for a DATA header")
    track, flags, _, seq, start, duration = DATA_HEAD.unpack_from(body)
    if track >= n_tracks:
        raise FormatError(f"chunk {number} at byte {at} names track {track}, but the file has {n_tracks}")
    return Chunk(number, at, track, seq, start, duration, bool(flags & KEYFRAME), body[DATA_HEAD.size:])


def _parse_fini(body: bytes, n_tracks: int) -> list[tuple[int, int]]:
    if len(body) != FINI_COUNT.size + n_tracks * FINI_TRACK.size or FINI_COUNT.unpack_from(body)[0] != n_tracks:
        raise FormatError("the FINI chunk does not match the track count")
    return [FINI_TRACK.unpack_from(body, FINI_COUNT.size + i * FINI_TRACK.size) for i in range(n_tracks)]


def _parse_index(body: bytes, n_tracks: int) -> list[IndexEntry]:
    (count,) = INDEX_COUNT.unpack_from(body) if len(body) >= INDEX_COUNT.size else (None,)
    if count is None or len(body) != INDEX_COUNT.size + count * INDEX_ENTRY.size:
        raise FormatError("the index chunk's size does not match its entry count")
    entries = []
    for off in range(INDEX_COUNT.size, len(body), INDEX_ENTRY.size):
        offset, track, flags, _, seq, start, duration = INDEX_ENTRY.unpack_from(body, off)
        if track >= n_tracks:
            raise FormatError("the index names a track the file does not have")
        entries.append(IndexEntry(offset, track, bool(flags & KEYFRAME), seq, start, duration))
    return entries
