"""The stream API: `nc.open(path, "wb", ...)` writers and `nc.open(path, "rb")` readers.

Writers take media in pieces of any size and write chunks as the codecs emit
them, so memory stays bounded whatever the input's length. Readers decode
chunk by chunk, restore each track's exact length, seek through the file's
index, and (with `ignore_errors=True`) step over damaged chunks, filling the
gap with silence or the last good frame and recording what was lost.
"""
from __future__ import annotations

import builtins
import io
import math
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np

import nc
from nc.bitstream.container import Chunk, ContainerReader, ContainerWriter, Damage, TrackHeader
from nc.codecs.base import Codec, Decoder, Packet, RatePoint, is_near, parse_rate
from nc.errors import (CorruptChunkError, FormatError, InputWarning, MediaError, NCError, PluginError, RateWarning,
                       TruncatedError, UsageError, WeightsMismatchError, one_line)
from nc.media.facts import LOUD_PEAK, MAX_SAR_TERM, AudioFacts, ImageFacts, MediaFacts, VideoFacts, facts_from_json, facts_to_json
from nc.plugins import find_codec, registry


#: a rate asked of a codec's range may come out this much above it (a rate controller's slack) before nc warns
RATE_OVERSHOOT = 1.2
#: what a decoder may raise that is no fault of the file: nc reports it as it is, never as damage
NOT_THE_FILES_FAULT = (MemoryError, ImportError, PluginError)
MAX_FILL_SECONDS = 600  # silence / repeated frames a reader fills in, per file, at most
SUSPECT_GAP_CHUNKS = 64  # a gap of more chunks than this is not filled where the track's length is unknown
FILL_BYTES, FILL_PER_FILE_BYTE = 256 << 20, 1000  # and of their decoded bytes: 256 MiB + 1000 per byte of file


@dataclass(frozen=True)
class TrackSpec:
    """What a writer needs for one track: a codec, its rate point and the media facts."""

    facts: MediaFacts
    codec: str | None = None
    bitrate: str | float | None = None
    quality: float | None = None
    effort: int = 0  # encoding effort (CodecDescriptor.efforts); 0, the default, is the fastest


@dataclass(frozen=True)
class TrackInfo:
    """One track of a file being read."""

    index: int
    codec: str
    codec_version: int
    weights_sha256: str
    rate: RatePoint
    facts: MediaFacts
    params: dict
    length: int | None  # samples or frames; None until known (stream without FINI)

    @property
    def modality(self) -> str:
        return self.facts.modality

    @property
    def seconds(self) -> float | None:
        return None if self.length is None else self.facts.seconds(self.length)


# ---------------------------------------------------------------- writing


class Writer:
    """Encodes media into an `.ncb` stream; use as a context manager."""

    def __init__(self, out, specs: list[TrackSpec], close_out: bool = False):
        """`out`: a binary file object, or a function returning (file object, close_out) that is
        called once the tracks are found valid (so a mistake in them leaves the file that was there)."""
        self._encoders, self.facts, self.rates, self.codecs = [], [], [], []
        self._asked: list[RatePoint | None] = []  # a rate asked of a continuous range, to check after
        headers = []
        for spec in specs:
            if not isinstance(spec, TrackSpec) or not hasattr(spec.facts, "validate"):
                raise UsageError("tracks must be nc.TrackSpec(facts, codec, bitrate, quality, effort) with facts from "
                                 "nc.media.facts (AudioFacts, ImageFacts, VideoFacts)")
            facts = _valid(spec.facts)
            codec = find_codec(spec.codec, facts.modality, spec.bitrate, spec.quality)
            codec.check(facts)
            rate = codec.descriptor.resolve(spec.bitrate, spec.quality)
            effort = _checked_effort(spec.effort, codec.descriptor)
            _warn_if_another_point(codec.descriptor, rate, spec)
            encoder = codec.encoder(facts, rate, effort=effort) if effort else codec.encoder(facts, rate)
            d = codec.descriptor
            headers.append(TrackHeader(d.id, d.version, d.weights_sha256, rate.to_json(), facts_to_json(facts),
                                       dict(encoder.params)))
            self._encoders.append(encoder)
            self._asked.append(rate if _is_a_target(d, rate) else None)
            self.facts.append(facts)
            self.rates.append(rate)
            self.codecs.append(d.id)
        created_by = f"nc {nc.__version__}"
        ContainerWriter.head_body(headers, created_by)  # what no file can hold is said before a file is opened
        if not hasattr(out, "write"):
            out, close_out = out()
        self._out, self._close_out = out, close_out
        self._container = ContainerWriter(_CountingWriter(out), headers, created_by)
        self._payload_bytes = [0] * len(specs)
        self._ends = [0] * len(specs)
        self._loud: set[int] = set()  # tracks already warned of sound above full scale
        self._closed = False

    def __del__(self):
        if not getattr(self, "_closed", True):  # as Python's own files say it; the file has no FINI
            warnings.warn("an nc writer was never closed, so its file ends without FINI (a recording cut short); "
                          "use `with nc.open(...)` or close()", ResourceWarning, source=self)

    @property
    def bytes_written(self) -> int:
        return self._container._out.count

    def write(self, block, track: int = 0) -> None:
        """Encode the next piece of a track: samples (n, ch), frames (n, h, w, 3) or a whole image."""
        if self._closed:
            raise UsageError("write to a closed nc writer")
        _check_track(track, len(self._encoders))
        media = as_media(block, self.facts[track])
        if track not in self._loud and self.facts[track].modality == "audio" and len(media):
            peak = float(np.abs(media).max())
            if peak > LOUD_PEAK:  # float sound only (integer PCM cannot go there); not a lossy decoder's overshoot
                self._loud.add(track)
                warnings.warn(f"the sound goes above full scale (to {peak:.2f}, {20 * np.log10(peak):+.1f} dBFS): "
                              f"codecs here are made for [-1, 1], learned ones distort it and 16-bit files clip it; "
                              f"scale it down", InputWarning)
        self._put(track, self._encoders[track].encode(media))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for track, encoder in enumerate(self._encoders):
            self._put(track, encoder.flush())
        for track, facts in enumerate(self.facts):
            if facts.modality == "image" and not self._container.chunks_written(track):
                raise UsageError(f"track {track} is an image, but none was written")
        self._container.close()
        if self._close_out:
            self._out.close()
        for track in range(len(self._encoders)):
            miss = self._rate_miss(track)
            if miss:
                warnings.warn(miss, RateWarning, stacklevel=_first_level_outside_nc())

    def _put(self, track: int, packets) -> None:
        for p in packets:
            self._container.write_chunk(track, p.start, p.duration, p.keyframe, p.payload)
            self._payload_bytes[track] += len(p.payload)
            self._ends[track] = max(self._ends[track], p.start + p.duration)

    def achieved(self, track: int) -> float | None:
        """The track's payload rate so far, in its rate's unit (bits per pixel or per second); None if unknown."""
        _check_track(track, len(self.facts))
        facts, unit = self.facts[track], self.rates[track].unit
        if unit == "bpp" and facts.modality == "image":
            return self._payload_bytes[track] * 8 / (facts.width * facts.height)
        seconds = facts.seconds(self._ends[track])
        return self._payload_bytes[track] * 8 / seconds if unit == "bps" and seconds > 0 else None

    def _rate_miss(self, track: int) -> str | None:
        """A warning when a rate asked of a codec's continuous range came out well above it (the codec's
        lowest setting still needs more on this input, or its rate control overshot). Below is no news:
        easy content needs fewer bits. Rate points outside any range (a learned codec's stage counts)
        are nominal and not checked."""
        asked, got = self._asked[track], self.achieved(track)
        if asked is None or got is None or got <= RATE_OVERSHOOT * asked.value:
            return None
        shown = f"{got:.3g} bpp" if asked.unit == "bpp" else f"{got / 1000:.3g} kbps"
        return f"track {track} ({self.codecs[track]}) came out at {shown}, above the {asked.name} asked"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
            return
        self._closed = True  # left unfinished on purpose (a recording cut short), not forgotten
        if self._close_out:
            self._out.close()


class _CountingWriter:
    def __init__(self, out: BinaryIO):
        self._out, self.count = out, 0

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self.count += len(data)

    def flush(self) -> None:
        self._out.flush()


def as_media(block, facts: MediaFacts) -> np.ndarray:
    """Check and convert one block of user media (numpy or torch) to nc's array conventions."""
    if hasattr(block, "detach") and hasattr(block, "cpu"):  # a torch tensor, without importing torch
        block = block.detach().cpu().numpy()
    a = np.asarray(block)
    if isinstance(facts, AudioFacts):
        if a.ndim == 1 and facts.channels == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[1] != facts.channels:
            raise UsageError(f"audio blocks must have shape (samples, {facts.channels}), not {a.shape} "
                             f"(the track was opened with channels={facts.channels})")
        if a.dtype.kind == "i":
            return (a / float(np.iinfo(a.dtype).max + 1)).astype(np.float32)
        if a.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
            return ((a.astype(np.float32) - 128) / 128).astype(np.float32)
        if a.dtype.kind != "f":
            raise UsageError(f"audio samples must be floats or signed integers, not {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():  # a codec would turn them into noise or silence without a word
            raise UsageError(f"audio samples must be finite; this block has NaN or infinity at sample "
                             f"{int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])}")
        return a
    if isinstance(facts, ImageFacts):
        if a.ndim == 2:
            a = a[:, :, None]
        want = (facts.height, facts.width, facts.channels)
        if a.shape != want:
            raise UsageError(f"the image must have shape {want}, not {a.shape}")
        return _as_uint8(a)
    if a.ndim == 3:
        a = a[None]
    want = (facts.height, facts.width, 3)
    if a.ndim != 4 or a.shape[1:] != want:
        raise UsageError(f"video blocks must have shape (frames, {want[0]}, {want[1]}, 3), not {a.shape}")
    return _as_uint8(a)


def _as_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and -0.5 <= a.min() and a.max() <= 1.5):  # not [0, 1] plus noise
            shown = "NaN or infinity" if not np.isfinite(a).all() else f"values from {a.min():g} to {a.max():g}"
            raise UsageError(f"float pixels are taken in [0, 1]; these have {shown}"
                             + (" (0-255 values: pass them as uint8)" if np.isfinite(a).all() and a.max() > 1.5 else ""))
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    raise UsageError(f"pixels must be uint8 or floats in [0, 1], not {a.dtype}")


# ---------------------------------------------------------------- reading


@dataclass
class _TrackState:
    info: TrackInfo
    decoder: Decoder | None = None
    emitted: int = 0  # position (sample or frame) of the next output handed out
    next_start: int = 0  # where the next chunk should start if nothing was lost
    discard: int = 0  # output to drop after a seek that landed before its target
    from_offset: int = 0  # ignore this track's chunks before this file offset (after a seek)
    last_frame: np.ndarray | None = None
    failed: str | None = None  # why this track cannot be decoded (with ignore_errors)
    unfilled: tuple[int, int] | None = None  # (position, length) of the last gap too long to fill
    longest: int = 0  # the longest chunk decoded so far (samples or frames)


@dataclass
class Reader:
    """Decodes an `.ncb` stream chunk by chunk. Iterate for `(track, array)` pieces."""

    source: BinaryIO
    ignore_errors: bool = False
    close_in: bool = False
    damage: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._container = ContainerReader(self.source)
        self.refresh_lengths()
        self._states = [_TrackState(t) for t in self.tracks]
        self._start_offset, self._start_number = None, 0
        self._fill_budget, self._fill_bytes = float(MAX_FILL_SECONDS), 0
        self._closed = False
        self._iterated = self._sought = False  # a new iteration starts over unless seek() placed it
        self._lock, self._reading_in = threading.Lock(), None  # the thread iterating, if any

    @property
    def created_by(self) -> str:
        return self._container.created_by

    @property
    def container(self) -> ContainerReader:
        """The chunk-level reader underneath (for tools that list chunks or check the index)."""
        return self._container

    def refresh_lengths(self) -> None:
        """Take track lengths from FINI once a walk through the file has found it."""
        self.tracks = [_track_info(i, h, self._container.totals) for i, h in enumerate(self._container.tracks)]

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._closed:
            raise UsageError("this reader is closed")
        with self._lock:  # one file position and one set of decoders: two threads would each get half
            if self._reading_in not in (None, threading.get_ident()):
                raise UsageError("this reader is being read in another thread: nc.open the file once per thread")
            self._reading_in = threading.get_ident()
        try:
            if self._iterated and not self._sought:
                self._rewind()
            self._iterated, self._sought = True, False
            for item in self._container.chunks(self._start_offset, self._start_number):
                if isinstance(item, Damage):
                    self._note_damage(item)
                else:
                    yield from self._decode_chunk(item)
            yield from self._finish()
        finally:
            self._reading_in = None

    def _rewind(self) -> None:
        """Back to the first chunk, every track's decoder reset, as a fresh reader would start."""
        for state in self._states:
            if state.decoder is not None:
                state.decoder.reset()
        self._states = [_TrackState(info, decoder=s.decoder) for info, s in zip(self.tracks, self._states)]
        self._start_offset, self._start_number = None, 0
        self._fill_budget, self._fill_bytes = float(MAX_FILL_SECONDS), 0
        self.damage.clear()

    def decoded_seconds(self, track: int) -> float:
        """Where the track's next piece starts, in seconds: how much of it the iteration so far has handed
        out (gaps it filled included), or after a seek, the time sought."""
        _check_track(track, len(self.tracks))
        return self._states[track].info.facts.seconds(self._states[track].emitted)

    def read(self, track: int = 0) -> np.ndarray:
        """The whole of one track, decoded (for long media prefer iterating)."""
        _check_track(track, len(self.tracks))
        return join_pieces(self.tracks[track], [a for t, a in self if t == track])

    def seek(self, seconds: float) -> None:
        """Make the next iteration start at this time (every track), through the file's index."""
        if self._closed:
            raise UsageError("this reader is closed")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) \
                or not math.isfinite(seconds):
            shown = repr(seconds) if isinstance(seconds, (int, float, str)) else type(seconds).__name__
            raise UsageError(f"seek takes a finite number of seconds, not {shown}"[:200])
        container = self._container
        if container.index is None and container.seekable:  # a file cut short (a recording): index its chunks
            container.rebuild_index()
        if container.index is None:
            raise UsageError("a stream (not a file) has no index to seek with: read it in order")
        rows = self._seek_rows(seconds)
        if not container.index_agrees(i for _, _, i in rows if i is not None):
            container.rebuild_index()  # a wrong index (CRC-valid) would land between chunks or on others
            rows = self._seek_rows(seconds)
        index = container.index
        first = len(index)
        for state, target, i in rows:
            start = int(index["start"][i]) if i is not None else 0
            state.from_offset = int(index["offset"][i]) if i is not None else 1 << 62
            state.next_start = start
            state.emitted = max(start, target)  # the next sample handed out is the target's
            state.discard = state.emitted - start
            state.unfilled = None
            if state.decoder is not None:
                state.decoder.reset()
            if i is not None:
                first = min(first, i)
        self._start_number, self._sought = first, True
        self._start_offset = int(index["offset"][first]) if first < len(index) else self._container.data_at

    def _seek_rows(self, seconds: float) -> list[tuple[_TrackState, int, int | None]]:
        """For each track that has a time axis: the position `seconds` is, and the index row of the
        last keyframe at or before it, with the codec's pre-roll (None: the track has no chunks)."""
        index, rows = self._container.index, []
        for state in self._states:
            info = state.info
            if info.modality == "image":
                continue
            if info.modality == "audio":
                target = round(seconds * info.facts.sample_rate)
            else:  # the frame on screen at that time, as a player shows it (not the nearest: up to half a frame late)
                target = math.floor(seconds * info.facts.fps + 1e-6)
            if info.length is not None:
                target = min(max(target, 0), info.length)
            ours = np.flatnonzero(index["track"] == info.index)
            keys = ours[((index["flags"][ours] & 1) == 1) & (index["start"][ours] <= target - _preroll(info))]
            rows.append((state, target, int(keys[-1]) if len(keys) else (int(ours[0]) if len(ours) else None)))
        return rows

    def close(self) -> None:
        self._closed = True
        if self.close_in:
            self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    # -- internals

    def _note_damage(self, damage: Damage) -> None:
        if not self.ignore_errors:
            cls = TruncatedError if damage.truncated else CorruptChunkError
            raise cls(damage.message + " (decode with --ignore-errors, in Python ignore_errors=True, to recover "
                                       "the rest)", damage.number)
        self.damage.append(damage.message)

    def _decode_chunk(self, chunk: Chunk) -> Iterator[tuple[int, np.ndarray]]:
        state = self._states[chunk.track]
        if chunk.offset < state.from_offset or state.failed:
            return
        if state.decoder is None:
            try:
                state.decoder = _make_decoder(state.info)
            except NCError as e:  # codec missing or other weights: other tracks may still decode
                if not self.ignore_errors:
                    raise
                state.failed = str(e)
                self.damage.append(f"track {chunk.track} skipped: {e}")
                return
        if state.info.modality == "image" and (chunk.start, chunk.duration) != (0, 1):
            self._note_damage(Damage(chunk.number, chunk.offset, f"chunk {chunk.number} (track {chunk.track}) "
                                     f"is an image's, but starts at {chunk.start} lasting {chunk.duration}, "
                                     f"not 0 and 1: misplaced, skipped"))
            return
        # a chunk running past the track's length is kept (trimmed) only where it follows on from the
        # chunks before it and decodes: then it is the length that lies (or the chunk's last samples)
        length, end = state.info.length, chunk.start + chunk.duration
        past_end = length is not None and end > length
        if past_end and (not chunk.start == state.next_start < length or not self.ignore_errors):
            self._note_damage(self._past_end(chunk, length, "misplaced, skipped"))
            return
        unfilled, state.unfilled = state.unfilled, None  # only the chunk after the gap can undo it
        if unfilled and unfilled[0] <= chunk.start < sum(unfilled):
            self._undo_unfilled_gap(state, chunk, *unfilled)
        if chunk.start != state.next_start:  # damage of its own, outside the decoder's
            message = (f"track {state.info.index}: chunk positions jump from {state.next_start} to {chunk.start} "
                       f"(missing or misplaced chunks)")
            self._note_damage(Damage(chunk.number, chunk.offset, message))
            yield from self._skip_to(state, chunk.start)
        try:
            out = _checked_output(state.info, state.decoder.decode(Packet(chunk.payload, chunk.start,
                                                                          chunk.duration, chunk.keyframe)))
        except NOT_THE_FILES_FAULT:
            raise
        except Exception as e:  # a codec that chokes on damaged-but-CRC-valid bytes
            if past_end:  # its span is as doubtful as its bytes: padding it could cover the chunks after it
                self.damage.append(self._past_end(chunk, length, f"misplaced, skipped ({one_line(e)})").message)
                yield from self._skip_to(state, state.next_start)  # what the decoder holds, then afresh
                return
            self._note_damage(Damage(chunk.number, chunk.offset, f"chunk {chunk.number} (track {chunk.track}) "
                                     f"could not be decoded: {one_line(e)}"))
            yield from self._skip_to(state, end)  # the chunk's own span, no more
            return
        if past_end:
            self.damage.append(self._past_end(chunk, length, "what it holds past that is dropped").message)
            end = length
        state.next_start = end
        state.longest = max(state.longest, chunk.duration)  # of chunks that decoded: a damaged one may claim anything
        yield from self._emit(state, out)

    @staticmethod
    def _past_end(chunk: Chunk, length: int, outcome: str) -> Damage:
        return Damage(chunk.number, chunk.offset, f"chunk {chunk.number} (track {chunk.track}) ends at "
                                                  f"{chunk.start + chunk.duration}, past the track's end ({length}): "
                                                  f"{outcome}")

    def _flushed(self, state: _TrackState) -> np.ndarray | None:
        """What the decoder still holds back from the chunks it decoded. A decoder that fails here is
        damage like a chunk that fails (reported, or raised without ignore_errors); then it gives nothing."""
        try:
            return _checked_output(state.info, state.decoder.flush())
        except NOT_THE_FILES_FAULT:
            raise
        except Exception as e:
            message = f"track {state.info.index}: output held back by its decoder was lost: {one_line(e)}"
            if not self.ignore_errors:
                raise CorruptChunkError(message) from e
            self.damage.append(message)
            return None

    def _skip_to(self, state: _TrackState, end: int) -> Iterator[tuple[int, np.ndarray]]:
        """What lies before `end` is lost: hand out what the decoder still holds of what came before,
        pad up to `end`, and start the decoder afresh there. (An image has nothing to pad: it is lost.)"""
        if state.info.modality != "image":
            # all it holds of the chunks before, and a fading tail into the gap; a chunk that goes back
            # (end < next_start) must not cut off the intact output before it
            yield from self._emit(state, self._flushed(state), limit=max(end, state.next_start))
            yield from self._pad_to(state, end)
        state.decoder.reset()
        state.discard = max(0, state.emitted - end)  # output already given for [end, emitted)
        state.next_start = end

    def _undo_unfilled_gap(self, state: _TrackState, chunk: Chunk, at: int, length: int) -> None:
        """The chunk after a gap too long to fill goes back into it: the jump was one chunk with a
        wrong start (its output, if it decoded, was handed out where the gap began), not lost media.
        Take the gap out of the positions past it, so that the chunks that follow are not dropped as
        output already given."""
        state.emitted = at + max(0, state.emitted - at - length)
        state.next_start = at + max(0, state.next_start - at - length)
        self.damage.append(f"track {state.info.index}: chunk {chunk.number} goes back to {chunk.start}, so the "
                           f"jump to {at + length} before it was a misplaced chunk; decoding goes on from {at}")

    def _finish(self) -> Iterator[tuple[int, np.ndarray]]:
        totals = self._container.totals
        for state in self._states:
            if state.info.modality == "image" or state.failed:
                continue
            end = totals[state.info.index][0] if totals else state.next_start
            if state.decoder is not None:
                yield from self._emit(state, self._flushed(state), limit=end)
            if end > state.next_start:
                self._lost_end(state, end, f"its chunks stop at {state.next_start}" if state.decoder is not None
                               else "none of its chunks could be read")
            elif end < state.next_start:  # read from a pipe, whose chunks came before the length did
                self._note_damage(Damage(None, 0, f"track {state.info.index}: its chunks reach {state.next_start}, "
                                                  f"but the file says it ends at {end}"))
            yield from self._pad_to(state, end)
        if totals:
            self.refresh_lengths()

    def _fill_bytes_allowed(self) -> int:
        """Filler a file may make, in all: in proportion to its size (what a pipe has given so far), so that
        a few hundred crafted bytes cannot decode to gigabytes of 768 kHz 64-channel silence."""
        return FILL_BYTES + FILL_PER_FILE_BYTE * self._container.size_so_far

    def _lost_end(self, state: _TrackState, end: int, what: str) -> None:
        """The file's FINI says the track runs further than its chunks did: its last chunks are lost."""
        self._note_damage(Damage(None, 0, f"track {state.info.index}: {what}, but the file says it runs to {end} "
                                          f"(chunks missing at its end)"))

    def _emit(self, state: _TrackState, out: np.ndarray | None, limit: int | None = None):
        if out is None or len(out) == 0:
            return
        if state.info.modality == "image":
            yield state.info.index, out
            return
        if state.discard:
            drop = min(state.discard, len(out))
            out, state.discard = out[drop:], state.discard - drop
        if limit is None:  # never past the end of the chunks decoded so far, nor the track's length
            limit = state.next_start if state.info.length is None else min(state.info.length, state.next_start)
        out = out[:max(0, limit - state.emitted)]
        if len(out):
            state.emitted += len(out)
            if state.info.modality == "video":
                state.last_frame = out[-1]
            yield state.info.index, out

    def _pad_to(self, state: _TrackState, end: int) -> Iterator[tuple[int, np.ndarray]]:
        """Silence (audio) or the last good frame (video) up to `end`, in bounded pieces.

        Positions come from the file, so a gap longer than MAX_FILL_SECONDS is
        not filled (a damaged file must not make nc write hours of nothing).
        """
        facts = state.info.facts
        gap = end - state.emitted
        if gap <= 0 or isinstance(facts, ImageFacts):
            return
        seconds, size = facts.seconds(gap), gap * _bytes_per_position(facts)
        over = seconds > self._fill_budget or self._fill_bytes + size > self._fill_bytes_allowed()
        # with no length to check against (a pipe, before FINI), a gap of many chunks is more likely one
        # misplaced chunk than that many lost: left unfilled, so the next chunk going back can undo it
        unlikely = state.info.length is None and state.longest and gap > SUSPECT_GAP_CHUNKS * state.longest
        if over or unlikely:
            why = (f"more than {SUSPECT_GAP_CHUNKS} chunks' worth while the track's length is unknown" if unlikely
                   else f"at most {MAX_FILL_SECONDS} s, and {FILL_PER_FILE_BYTE} bytes of filler per byte of the "
                        f"file, are filled per file")
            self.damage.append(f"track {state.info.index}: a gap of {seconds:.0f} s was not filled ({why})")
            state.unfilled = (state.emitted, gap)
            state.emitted = end
            return
        self._fill_budget -= seconds
        self._fill_bytes += size
        if isinstance(facts, AudioFacts):
            piece = np.zeros((min(gap, 1 << 16), facts.channels), np.float32)
        else:
            frame = state.last_frame if state.last_frame is not None else np.zeros((facts.height, facts.width, 3), np.uint8)
            piece = np.repeat(frame[None], min(gap, 8), axis=0)
        while state.emitted < end:
            yield from self._emit(state, piece[: end - state.emitted], limit=end)


def _checked_output(info: TrackInfo, out) -> np.ndarray | None:
    """A decoder's output as the base module's contract has it (audio as float32), or PluginError:
    a decoder that breaks the contract is a plugin's bug, not damage in the file."""
    if out is None:
        return None
    facts = info.facts
    if isinstance(facts, AudioFacts):
        want, fits = f"float (samples, {facts.channels})", lambda a: a.ndim == 2 and a.shape[1] == facts.channels \
            and a.dtype.kind == "f"
    elif isinstance(facts, ImageFacts):
        want = f"uint8 {(facts.height, facts.width, facts.channels)}"
        fits = lambda a: a.shape == (facts.height, facts.width, facts.channels) and a.dtype == np.uint8
    else:
        want = f"uint8 (frames, {facts.height}, {facts.width}, 3)"
        fits = lambda a: a.ndim == 4 and a.shape[1:] == (facts.height, facts.width, 3) and a.dtype == np.uint8
    if not isinstance(out, np.ndarray) or not fits(out):
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise PluginError(f"{info.codec}'s decoder returned {got}, not {want} (a bug in the codec)")
    return out.astype(np.float32, copy=False) if isinstance(facts, AudioFacts) else out


def _is_a_target(d, rate: RatePoint) -> bool:
    """Whether a rate is one the codec aims at (in one of its ranges: Opus's 64k, named or not), not a
    nominal point of a fixed set (audio/rvq's 6k, its stage count)."""
    return rate.unit != "quality" and (rate not in d.points or any(r.unit == rate.unit and r.low <= rate.value <= r.high
                                                                      for r in d.ranges))


def _warn_if_another_point(d, rate: RatePoint, spec: TrackSpec) -> None:
    """A rate asked that no point of the codec is (within 10 %; a quality exactly) gets the nearest
    point: say which, as `--bitrate 4k` getting audio/rvq's 3k would otherwise go unnoticed."""
    if rate not in d.points:
        return
    if spec.quality is not None:
        asked, off = f"quality {float(spec.quality):g}", float(spec.quality) != rate.value
    elif spec.bitrate is not None:
        asked, off = str(spec.bitrate), not is_near(rate, parse_rate(spec.bitrate, d.modality)[0])
    else:
        return
    if off:
        warnings.warn(f"{d.id} has no {asked} point; coding at its nearest, {rate.name}", RateWarning,
                      stacklevel=_first_level_outside_nc())


def _check_track(track, count: int) -> None:
    if isinstance(track, bool) or not isinstance(track, int) or not 0 <= track < count:
        raise UsageError(f"track {track!r} does not exist; this file has {count}")


def _first_level_outside_nc() -> int:
    """warnings.warn's stacklevel that names the user's line (a `with` block's end, say), not nc's."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_NC_DIR):
        frame, level = frame.f_back, level + 1
    return level


_NC_DIR = os.path.dirname(os.path.abspath(nc.__file__)) + os.sep


def _bytes_per_position(facts: MediaFacts) -> int:
    """Bytes of decoded output per sample (audio, float32) or frame (video, RGB)."""
    return 4 * facts.channels if isinstance(facts, AudioFacts) else 3 * facts.width * facts.height


def _track_info(i: int, h: TrackHeader, totals) -> TrackInfo:
    try:
        rate = RatePoint.from_json(h.rate)
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"track {i}'s rate point is malformed") from None
    return TrackInfo(i, h.codec, h.codec_version, h.weights_sha256, rate, facts_from_json(h.facts), h.params,
                     totals[i][0] if totals else None)


def _preroll(info: TrackInfo) -> int:
    """The track codec's pre-roll in samples or frames (0 when the codec is not installed: decoding will say so)."""
    try:
        seconds = registry().get(info.codec).descriptor.preroll
    except NCError:
        return 0
    return math.ceil(seconds * (info.facts.sample_rate if info.modality == "audio" else info.facts.fps))


def _make_decoder(info: TrackInfo) -> Decoder:
    codec: Codec = registry().get(info.codec)
    d = codec.descriptor
    if info.codec_version > d.version:
        raise FormatError(f"track {info.index} uses {d.id} bitstream version {info.codec_version}; "
                          f"the installed codec reads up to version {d.version}")
    if info.weights_sha256 != d.weights_sha256:
        raise WeightsMismatchError(f"track {info.index} was encoded with {d.id} weights {info.weights_sha256[:12] or 'none'}, "
                                   f"but the installed weights are {d.weights_sha256[:12] or 'none'}")
    try:
        return codec.decoder(info.facts, info.rate, info.params)
    except UsageError as e:  # what a codec refuses to be asked for, here read from the file
        raise FormatError(f"track {info.index} cannot be decoded: {e}") from None
    except (NCError, *NOT_THE_FILES_FAULT):  # said well already, or no fault of the file
        raise
    except Exception as e:  # track params a codec chokes on (a value out of range, say): the file's fault
        raise FormatError(f"track {info.index} cannot be decoded: {one_line(e)}") from None


def join_pieces(info: TrackInfo, pieces: list[np.ndarray]) -> np.ndarray:
    """One track's decoded pieces as one array (an image is its single piece)."""
    if info.modality == "image":
        if not pieces:
            raise CorruptChunkError(f"track {info.index}: the image could not be decoded")
        return pieces[0]
    return np.concatenate([_empty(info.facts)] + pieces)


def _empty(facts: MediaFacts) -> np.ndarray:
    if isinstance(facts, AudioFacts):
        return np.zeros((0, facts.channels), np.float32)
    return np.zeros((0, facts.height, facts.width, 3), np.uint8)


# ---------------------------------------------------------------- nc.open


def open(target, mode: str = "rb", /, *, codec: str | None = None, bitrate=None, quality=None, effort: int = 0,
         tracks: list[TrackSpec] | None = None, ignore_errors: bool = False, **facts):
    """Open an `.ncb` file (path, '-' or binary file object) for streaming.

    Writing one track: `nc.open("x.ncb", "wb", codec="audio/opus", bitrate="12k", sample_rate=16000, channels=1)`;
    several: `nc.open("x.ncb", "wb", tracks=[TrackSpec(...), ...])` and `write(block, track=i)`.
    `effort`: the encoder's effort, for codecs that offer one (`CodecDescriptor.efforts`).
    Media facts: audio `sample_rate`, `channels`; image `width`, `height`, `mode`;
    video `width`, `height`, `fps` (a number or Fraction), optionally `sar` (the pixels' width / height
    as shown, a Fraction; 1 by default). (`mode` after the target is the open mode;
    as a keyword it is the image's mode, "L", "RGB" or "RGBA", unless it is "rb" or "wb".)
    """
    if facts.get("mode") in ("rb", "wb"):
        mode = facts.pop("mode")
    if mode not in ("rb", "wb"):
        raise UsageError(f"mode must be 'rb' or 'wb', not {mode!r}")
    if mode == "rb" and (facts or codec or bitrate is not None or quality is not None or effort or tracks):
        raise UsageError("reading takes no codec, rate, effort, tracks or media facts: the file says them")
    if mode == "rb":
        f, owned = _open_binary(target, mode)
        try:
            return Reader(f, ignore_errors=ignore_errors, close_in=owned)
        except FormatError as e:  # a header that cannot be read: say which file (`nc decode a.wav` named none)
            if owned:
                f.close()
            if isinstance(target, (str, os.PathLike)) and not isinstance(e, CorruptChunkError):
                raise type(e)(f"{os.fspath(target)}: {e}") from None
            raise
        except BaseException:
            if owned:
                f.close()
            raise
    if tracks is None:
        tracks = [TrackSpec(facts_from_kwargs(**facts), codec, bitrate, quality, effort)]
    elif facts or codec or bitrate or quality or effort:
        raise UsageError("give either tracks=[...] or one track's codec, rate and facts, not both")
    opened = []  # the file is opened (and emptied) only once the tracks are known to be valid

    def opener() -> tuple[BinaryIO, bool]:
        opened.append(_open_binary(target, mode))
        return opened[0]

    try:
        return Writer(opener, tracks)
    except BaseException:
        if opened and opened[0][1]:
            opened[0][0].close()
            if os.path.isfile(target) and not os.path.islink(target):  # not a device or FIFO
                os.unlink(target)
        raise


def _checked_effort(effort, descriptor) -> int:
    """`effort` as an int the codec offers; UsageError otherwise."""
    if isinstance(effort, bool) or not isinstance(effort, (int, np.integer)) or effort < 0:
        raise UsageError(f"effort must be a whole number from 0, not {effort!r}")
    if effort > descriptor.efforts:
        offered = f"takes --effort 0-{descriptor.efforts}" if descriptor.efforts else "has no effort levels"
        others = [d.id for d in registry().descriptors()
                  if d.modality == descriptor.modality and d.efforts >= effort and d.id != descriptor.id]
        hint = f" ({', '.join(others)} {'does' if len(others) == 1 else 'do'}: choose it with --codec)" if others else ""
        raise UsageError(f"{descriptor.id} {offered}, not {effort}{hint}")
    return int(effort)


def _valid(facts: MediaFacts) -> MediaFacts:
    try:
        return facts.validate()
    except FormatError as e:
        raise UsageError(str(e)) from None


def facts_from_kwargs(**kw) -> MediaFacts:
    """Media facts from keyword arguments; the modality follows from which are given."""
    from fractions import Fraction

    known = {"sample_rate", "channels", "fps", "width", "height", "mode", "sar"}
    if set(kw) - known:
        raise UsageError(f"unknown arguments: {', '.join(sorted(set(kw) - known))}")
    def whole(name: str, default=None) -> int:
        value = kw.pop(name) if default is None else kw.pop(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not float(value).is_integer():  # 44100.5 or "16000" is a mistake, not a number to round
            raise UsageError(f"{name} must be a whole number, not {value!r}"[:200])
        return int(value)

    try:
        if "sample_rate" in kw:
            facts = AudioFacts(whole("sample_rate"), whole("channels", 1))
        elif "fps" in kw:
            fps = Fraction(kw.pop("fps")).limit_denominator(1001)
            sar = Fraction(kw.pop("sar", 1)).limit_denominator(MAX_SAR_TERM)
            facts = VideoFacts(whole("width"), whole("height"), fps.numerator, fps.denominator, sar.numerator,
                               sar.denominator)
        elif "width" in kw:
            facts = ImageFacts(whole("width"), whole("height"), str(kw.pop("mode", "RGB")))
        else:
            facts = None
    except KeyError as e:
        raise UsageError(f"missing media fact {e}") from None
    except (TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
        raise UsageError(f"media facts must be numbers: {e}") from None
    if kw:
        raise UsageError(f"{', '.join(sorted(kw))}: not facts of {facts.modality if facts else 'this media'}")
    if facts is not None:
        return _valid(facts)
    raise UsageError("say what the media is: sample_rate=... (audio), width/height (image) or width/height/fps (video)")


def _open_binary(target, mode: str) -> tuple[BinaryIO, bool]:
    if target == "-":
        return (sys.stdin.buffer if mode == "rb" else sys.stdout.buffer), False
    if isinstance(target, io.TextIOBase):
        raise UsageError("an .ncb file is bytes: open it in binary mode ('rb' or 'wb'), not as text")
    if hasattr(target, "read" if mode == "rb" else "write"):
        return target, False
    if not isinstance(target, (str, bytes, os.PathLike)):  # an int would open that file descriptor
        raise UsageError(f"open a path, '-' or a binary file object, not {type(target).__name__}")
    try:
        return builtins.open(target, mode), True  # this module's `open` is nc.open
    except OSError as e:
        raise MediaError(f"cannot open {target}: {e.strerror}") from None
