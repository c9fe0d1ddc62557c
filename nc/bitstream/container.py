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

import io
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from nc.errors import FormatError, PluginError, TruncatedError

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
#: bytes whose CRC a reader computes while looking for chunks after damage, in all: a few seconds of
#: zlib's CRC, far beyond what a damaged real file needs (a candidate there is a rare 4-byte match)
SCAN_BUDGET = 4 << 30
UNITS = ("bps", "bpp", "quality")


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
    truncated: bool = False  # the file ends early (rather than holding bad bytes)


#: One index entry as a numpy record; the index is kept as one array of these
#: (a 64 MiB index would be ~10x that as Python objects).
INDEX_DTYPE = np.dtype([("offset", "<u8"), ("track", "<u2"), ("flags", "u1"), ("reserved", "u1"),
                        ("seq", "<u4"), ("start", "<u8"), ("duration", "<u4")])
assert INDEX_DTYPE.itemsize == INDEX_ENTRY.size
INDEX_FIELDS = ("track", "flags", "seq", "start", "duration")  # what a row repeats of its chunk's header


# ---------------------------------------------------------------- writing


class ContainerWriter:
    """Appends chunks to a binary stream; `close()` writes FINI, indx and tail."""

    def __init__(self, out: BinaryIO, tracks: list[TrackHeader], created_by: str):
        head = self.head_body(tracks, created_by)
        self._out = out
        self._offset = 0
        self._index: list[bytes] = []  # packed INDEX_ENTRY records
        self._totals = [[0, 0] for _ in tracks]  # per track: duration so far, chunks
        self._images = [t.codec.startswith("image/") for t in tracks]
        pre = struct.pack("<8sHH", SIGNATURE, FORMAT_MAJOR, FORMAT_MINOR)
        self._write(PREAMBLE.pack(SIGNATURE, FORMAT_MAJOR, FORMAT_MINOR, zlib.crc32(pre)))
        self._write_chunk(b"HEAD", head)

    @staticmethod
    def head_body(tracks: list[TrackHeader], created_by: str) -> bytes:
        """The HEAD chunk's body, or FormatError for tracks no file can hold (a writer may check first,
        before it opens its output)."""
        if not 1 <= len(tracks) <= MAX_TRACKS:
            raise FormatError(f"a file holds 1 to {MAX_TRACKS} tracks, not {len(tracks)}")
        head = json.dumps({"created_by": created_by, "tracks": [t.to_json() for t in tracks]},
                          separators=(",", ":"), sort_keys=True).encode()
        if len(head) > MAX_HEAD:
            raise FormatError("track headers are too large")
        return head

    def write_chunk(self, track: int, start: int, duration: int, keyframe: bool, payload: bytes) -> None:
        """Append one DATA chunk. Its start must be where the track's chunks so far end (an image's one
        chunk: start 0, duration 1): a file is never written that nc would read as damaged."""
        total = self._totals[track]
        if start != total[0] or duration < 0 or (self._images[track] and (total[1] or duration != 1)):
            raise PluginError(f"track {track}'s encoder gave a packet at {start} lasting {duration}, where the track "
                              f"{'is an image (one packet, start 0, duration 1)' if self._images[track] else f'ends at {total[0]}'}")
        head = DATA_HEAD.pack(track, KEYFRAME if keyframe else 0, 0, total[1], start, duration)
        self._index.append(struct.pack("<Q", self._offset) + head)
        self._write_chunk(b"DATA", head + payload)
        total[0] = max(total[0], start + duration)
        total[1] += 1

    def chunks_written(self, track: int) -> int:
        return self._totals[track][1]

    def close(self) -> None:
        fini_at = self._offset
        body = FINI_COUNT.pack(len(self._totals)) + b"".join(FINI_TRACK.pack(*t) for t in self._totals)
        self._write_chunk(b"FINI", body)
        index_at = self._offset
        if INDEX_COUNT.size + INDEX_ENTRY.size * len(self._index) <= MAX_BODY:
            self._write_chunk(b"indx", INDEX_COUNT.pack(len(self._index)) + b"".join(self._index))
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
        self.crc_bytes = 0  # bytes whose CRC whole_chunk computed for candidates that were not chunks
        try:
            self.seekable = bool(f.seekable())
            self.size = f.seek(0, 2) if self.seekable else None
            if self.seekable:
                f.seek(0)
        except (AttributeError, OSError):
            self.seekable, self.size = False, None

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self._buf[:n])

    def _fill(self, n: int) -> bool:
        """Read until `n` bytes are buffered; False if the stream ends first."""
        while len(self._buf) < n:
            more = self._f.read(max(n - len(self._buf), 1 << 16))
            if not more:
                return False
            self._buf += more
        return True

    def whole_chunk(self, at: int) -> tuple[bytes, bytes] | None:
        """(type, body) of a valid chunk starting `at` bytes ahead, or None, without copying the buffer
        to find out (a scan tries many candidates, each claiming up to 64 MiB). Counts the bytes whose
        CRC it computed in vain in `crc_bytes`, so a scan can bound its work."""
        if not self._fill(at + CHUNK_HEAD.size):
            return None
        length, ctype = CHUNK_HEAD.unpack_from(self._buf, at)
        end = at + FRAMING + length
        if length > MAX_BODY or not _valid_type(ctype) or (self.size is not None and self.pos + end > self.size) \
                or not self._fill(end):
            return None
        with memoryview(self._buf) as m:
            parsed = _parse_chunk(m[at:end])
        if parsed is None:
            self.crc_bytes += length
        return parsed

    @property
    def read_so_far(self) -> int:
        return self.pos + len(self._buf)

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


def _valid_type(ctype: bytes) -> bool:
    return len(ctype) == 4 and ctype.isascii() and ctype.isalpha()


def _parse_chunk(raw: bytes) -> tuple[bytes, bytes] | None:
    """(type, body) if `raw` starts with a whole chunk whose type is valid and whose CRC checks, else None."""
    if len(raw) < FRAMING:
        return None
    length, ctype = CHUNK_HEAD.unpack_from(raw)
    if length > MAX_BODY or len(raw) < FRAMING + length or not _valid_type(ctype):
        return None
    view = memoryview(raw)[CHUNK_HEAD.size - 4:CHUNK_HEAD.size + length]  # type + body, without copying
    (crc,) = CHUNK_CRC.unpack_from(raw, CHUNK_HEAD.size + length)
    return (ctype, bytes(view[4:])) if crc == zlib.crc32(view) else None


class ContainerReader:
    """Parses the preamble and HEAD at once; `chunks()` walks the rest.

    On a seekable file it also reads FINI and the index through the tail, so
    `index` (a numpy array of INDEX_DTYPE records) and `totals` are known up
    front; on a pipe or a truncated file they are None and the chunks are
    simply read in order.
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
        self.index: np.ndarray | None = None
        self.fini_at: int | None = None  # where FINI starts, when the tail gave it
        if self._src.seekable:
            self._read_tail()


    @property
    def seekable(self) -> bool:
        return self._src.seekable

    @property
    def size_so_far(self) -> int:
        """The file's size, or for a pipe the bytes read from it so far."""
        return self._src.size if self._src.size is not None else self._src.read_so_far

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
        """Best effort: a damaged, missing or inconsistent tail, FINI or index just means no index."""
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
            if ctype != b"FINI":
                return
            self.totals = _parse_fini(body, len(self.tracks))
            self.fini_at = fini_at
            if fini_at < index_at < size:
                self._src.seek(index_at)
                ctype, body = self._read_whole_chunk("the index")
                if ctype == b"indx":
                    self.index = _parse_index(body, len(self.tracks), self.data_at, fini_at)
        except FormatError:
            pass
        finally:
            self._src.seek(self.data_at)

    def track_bytes(self) -> list[int] | None:
        """Bytes of each track's chunks (framing included), from the index: None without one."""
        if self.index is None or self.fini_at is None:
            return None
        ends = np.append(self.index["offset"][1:].astype(np.int64), self.fini_at)
        sizes = ends - self.index["offset"].astype(np.int64)
        return [int(sizes[self.index["track"] == t].sum()) for t in range(len(self.tracks))]

    def index_agrees(self, rows: Iterable[int]) -> bool:
        """Whether the DATA chunks at these index rows' offsets have the headers the rows give. The
        index's CRC says it was written as it is, not that it was written right."""
        for row in rows:
            entry = self.index[row]
            self._src.seek(int(entry["offset"]))
            head = self._src.peek(CHUNK_HEAD.size + DATA_HEAD.size)
            if len(head) < CHUNK_HEAD.size + DATA_HEAD.size or head[4:8] != b"DATA":
                return False
            track, flags, _, seq, start, duration = DATA_HEAD.unpack_from(head, CHUNK_HEAD.size)
            if (track, flags, seq, start, duration) != tuple(int(entry[f]) for f in INDEX_FIELDS):
                return False
        return True

    def rebuild_index(self) -> None:
        """Replace the index with one read from the DATA chunks themselves, in one walk that steps
        over damage as reading does (`chunks`): a damaged chunk has no row, the chunks after it do."""
        self.index = None  # the walk must not resync through the index it replaces
        self.index = np.array([(c.offset, c.track, int(c.keyframe), 0, c.seq, c.start, c.duration)
                               for c in self.chunks() if isinstance(c, Chunk)], INDEX_DTYPE)

    def chunks(self, offset: int | None = None, first_number: int = 0) -> Iterator[Chunk | Damage]:
        """DATA chunks in file order from `offset`, with a `Damage` for each unreadable stretch.

        Ends after FINI, or with a truncated Damage when the file ends first.
        """
        src = self._src
        src.seek(self.data_at if offset is None else offset)
        src.crc_bytes = 0  # each walk through the file has the whole scan budget
        number = first_number
        while True:
            at = src.pos
            head = src.peek(CHUNK_HEAD.size)
            if not head:
                where = f"after chunk {number - 1}" if number else "before its first chunk"
                yield Damage(number, at, f"the file is truncated {where}: no FINI chunk", True)
                return
            length, ctype = CHUNK_HEAD.unpack(head) if len(head) == CHUNK_HEAD.size else (0, b"")
            raw = src.peek(FRAMING + length) if length <= MAX_BODY else b""
            parsed = _parse_chunk(raw) if raw else None
            if parsed is None:
                if length > MAX_BODY:
                    problem = f"chunk {number} at byte {at} has an impossible length ({length} bytes)"
                elif len(raw) < FRAMING + length:
                    problem = f"chunk {number} at byte {at} runs past the end of the file"
                else:
                    problem = f"chunk {number} at byte {at} is corrupt (CRC mismatch)"
                resumed = self._resync(at, number, length)
                if resumed is None:
                    yield Damage(number, at, f"the file is truncated inside chunk {number}"
                                 if "past the end" in problem else problem + "; nothing readable follows", True)
                    return
                yield Damage(number, at, problem)
                number = resumed
                continue
            ctype, body = parsed
            src.consume(len(raw))
            if ctype == b"DATA":
                chunk = _parse_data(body, number, at, len(self.tracks))
                number += 1
                yield chunk
            elif ctype == b"FINI":
                try:
                    self.totals = _parse_fini(body, len(self.tracks))
                except FormatError as e:  # the chunks before it are intact; only the lengths are lost
                    yield Damage(None, at, f"{e} (byte {at}): the tracks' lengths are unknown")
                return
            elif ctype == b"HEAD":
                raise FormatError(f"a second HEAD chunk at byte {at}")
            elif ctype[:1].isupper():
                raise FormatError(f"unknown critical chunk {ctype!r} at byte {at}: this file needs a newer nc")
            # unknown optional chunk (or an early indx/tail): skip

    def _resync(self, bad_at: int, number: int, length: int) -> int | None:
        """Move to the next valid chunk after damage at `bad_at`; return the next chunk number (None: none left)."""
        src = self._src
        if self.index is not None:
            later = np.flatnonzero(self.index["offset"] > bad_at)
            if len(later):
                src.seek(int(self.index["offset"][later[0]]))
                return int(later[0])
        if length <= MAX_BODY:  # the body was hit, not the length: the next chunk is where it says
            src.seek(bad_at)  # (where the damaged chunk began: nothing consumed yet, so pipes need no seek back)
            after = FRAMING + length
            head = src.peek(after + CHUNK_HEAD.size + DATA_HEAD.size)[after:]
            # a valid chunk there, or the header of one (damaged too: it is reported as chunk number + 1)
            if src.whole_chunk(after) or (head[4:8] in KNOWN_TYPES and self._plausible(head, 0)):
                src.seek(bad_at + after)
                return number + 1
        return number + 1 if self._scan_for_chunk(bad_at + 1) else None

    def _scan_for_chunk(self, start: int) -> bool:
        """Search byte by byte for a chunk of a known type whose CRC checks; leave the source there.
        Gives up (nothing readable follows) once candidates that were not chunks have cost SCAN_BUDGET
        bytes of CRC in this walk, so a file of fake chunk headers cannot make reading take hours."""
        src = self._src
        src.seek(start)
        window = 1 << 20
        while True:
            data = src.peek(window)
            if len(data) < FRAMING:
                return False
            for c in sorted({i - 4 for t in KNOWN_TYPES for i in _find_all(data, t) if i >= 4}):
                if src.crc_bytes > SCAN_BUDGET:
                    return False
                if self._plausible(data, c) and src.whole_chunk(c):
                    src.consume(c)
                    return True
            src.consume(max(len(data) - 8, 1))

    def _plausible(self, data: bytes, c: int) -> bool:
        """Cheap checks before paying for a candidate's CRC: length bound and, for DATA, its header."""
        (length,) = struct.unpack_from("<I", data, c)
        if length > MAX_BODY:
            return False
        if data[c + 4:c + 8] == b"DATA":
            if length < DATA_HEAD.size or len(data) < c + 8 + DATA_HEAD.size:
                return length >= DATA_HEAD.size
            track, flags, reserved = struct.unpack_from("<HBB", data, c + 8)
            return track < len(self.tracks) and reserved == 0 and flags <= KEYFRAME
        return True


def payload_bytes(data: bytes) -> int:
    """The codecs' own bytes in a whole .ncb file (its DATA chunks' payloads); the rest is container."""
    return sum(len(c.payload) for c in ContainerReader(io.BytesIO(data)).chunks() if isinstance(c, Chunk))


def _find_all(data: bytes, needle: bytes) -> Iterator[int]:
    i = data.find(needle)
    while i >= 0:
        yield i
        i = data.find(needle, i + 1)


#: a codec id, as HEAD stores it and descriptors declare it (use fullmatch: `$` would let "\n" end one)
CODEC_ID = re.compile(r"(audio|image|video)/[a-z0-9][a-z0-9_.-]{0,62}")
_SHA256 = re.compile(r"([0-9a-f]{64})?")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent; 1e999 would be infinity, which JSON cannot hold."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different: JSON parsers disagree on which of two equal keys
    wins, so a file that repeats one could mean different things to different readers."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"repeated key {key!r}")
        seen.add(key)
    return dict(pairs)


def _parse_head(body: bytes) -> tuple[str, list[TrackHeader]]:
    """Strict RFC 8259 JSON (no NaN/Infinity); typed and validated fields; unknown keys ignored."""
    try:
        head = json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite,
                          object_pairs_hook=_unique_keys)
        if not isinstance(head, dict):
            raise TypeError(f"a JSON {type(head).__name__}, not an object")
        tracks = [_parse_track(t) for t in head["tracks"]]
        created_by = head.get("created_by", "")
        if not isinstance(created_by, str):
            raise TypeError("created_by")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        raise FormatError(f"the file's HEAD chunk is malformed ({e.__class__.__name__}: {e})") from None
    except RecursionError:  # JSON nested deeper than Python's stack
        raise FormatError("the file's HEAD chunk is malformed (nested too deeply)") from None
    if not 1 <= len(tracks) <= MAX_TRACKS:
        raise FormatError(f"the file declares {len(tracks)} tracks (1 to {MAX_TRACKS} allowed)")
    return created_by, tracks


def _parse_track(t: dict) -> TrackHeader:
    def typed(key, kind):
        value = t[key]
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise TypeError(f"{key} must be {kind.__name__}")
        return value

    codec, version, sha = typed("codec", str), typed("codec_version", int), typed("weights_sha256", str)
    rate, facts, params = typed("rate", dict), typed("facts", dict), typed("params", dict)
    if not CODEC_ID.fullmatch(codec) or not _SHA256.fullmatch(sha) or not 0 <= version < 2**31:
        raise ValueError("codec id, codec_version or weights_sha256 is malformed")
    if facts.get("modality") != codec.split("/")[0]:
        raise ValueError(f"{codec}'s facts name modality {facts.get('modality')!r}")
    value = rate.get("value")
    if (not isinstance(rate.get("name"), str) or rate.get("unit") not in UNITS
            or type(value) not in (int, float) or not math.isfinite(value)):
        raise ValueError("rate must be {name: str, value: finite number, unit: bps|bpp|quality}")
    return TrackHeader(codec, version, sha, rate, facts, params)


def _parse_data(body: bytes, number: int, at: int, n_tracks: int) -> Chunk | Damage:
    """The chunk, or Damage for a header that cannot be (its CRC checks: a writer's bug or a crafted file)."""
    if len(body) < DATA_HEAD.size:
        return Damage(number, at, f"chunk {number} at byte {at} is too short for a DATA header")
    track, flags, _, seq, start, duration = DATA_HEAD.unpack_from(body)
    if track >= n_tracks:
        return Damage(number, at, f"chunk {number} at byte {at} names track {track}, but the file has {n_tracks}")
    return Chunk(number, at, track, seq, start, duration, bool(flags & KEYFRAME), body[DATA_HEAD.size:])


def _parse_fini(body: bytes, n_tracks: int) -> list[tuple[int, int]]:
    if len(body) != FINI_COUNT.size + n_tracks * FINI_TRACK.size or FINI_COUNT.unpack_from(body)[0] != n_tracks:
        raise FormatError("the FINI chunk does not match the track count")
    return [FINI_TRACK.unpack_from(body, FINI_COUNT.size + i * FINI_TRACK.size) for i in range(n_tracks)]


def _parse_index(body: bytes, n_tracks: int, data_at: int, fini_at: int) -> np.ndarray | None:
    """The index as records, or None if it is inconsistent (then readers scan instead)."""
    (count,) = INDEX_COUNT.unpack_from(body) if len(body) >= INDEX_COUNT.size else (None,)
    if count is None or len(body) != INDEX_COUNT.size + count * INDEX_ENTRY.size:
        return None
    index = np.frombuffer(body, INDEX_DTYPE, count, offset=INDEX_COUNT.size)
    offsets = index["offset"].astype(np.int64)  # (unsigned differences would wrap around)
    if count and (offsets.min() < data_at or offsets.max() >= fini_at or np.any(np.diff(offsets) <= 0)
                  or index["track"].max() >= n_tracks):
        return None
    return index
