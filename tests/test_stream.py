"""The stream API and nc.encode/nc.decode, on the toy third-party codec (deterministic, fast)."""
import io
import os
import re
import struct
import tracemalloc
import warnings

import numpy as np
import pytest

import nc
from conftest import decode_fails_at, recrc_field
from nc.bitstream import container as C
from nc.errors import CorruptChunkError, RateWarning, TruncatedError, UsageError

TOY = dict(codec="audio/toy-mulaw", sample_rate=16000, channels=1)


def _write(pieces, **kw) -> bytes:
    out = io.BytesIO()
    with nc.open(out, "wb", **{**TOY, **kw}) as w:
        for p in pieces:
            w.write(p)
    return out.getvalue()


def test_round_trip_exact_length(tone):
    data = nc.encode(tone, **TOY)
    decoded = nc.decode(data)
    assert decoded.data.shape == tone.shape and decoded.data.dtype == np.float32
    assert np.abs(decoded.data - tone).max() < 0.02
    assert decoded[0].info.length == len(tone) and decoded[0].info.seconds == 2.0


def test_hundred_pieces_equal_one_piece(tone):
    cuts = np.sort(np.random.default_rng(1).choice(len(tone), 99, replace=False))
    assert _write(np.split(tone, cuts)) == _write([tone])


def test_torch_tensors_and_int16_are_accepted(tone):
    import torch

    assert nc.encode(torch.from_numpy(tone), **TOY) == nc.encode(tone, **TOY)
    as_int16 = (tone * 32768).astype(np.int16)
    assert np.abs(nc.decode(nc.encode(as_int16, **TOY)).data - tone).max() < 0.02


def test_audio_channels_follow_from_the_array_and_options_are_keywords(tone):
    """nc.encode takes a stereo array's channels from its shape, as an image's facts; nc.decode(data, "x.wav")
    is a TypeError, not ignore_errors="x.wav" (which stepped over damage silently)."""
    stereo = np.concatenate([tone, -tone], 1)
    data = nc.encode(stereo, codec="audio/toy-mulaw", sample_rate=16000)
    assert nc.decode(data)[0].info.facts.channels == 2 and nc.decode(data).data.shape == stereo.shape
    assert nc.decode(nc.encode(tone[:, 0], codec="audio/toy-mulaw", sample_rate=16000)).data.shape == tone.shape
    with pytest.raises(TypeError):
        nc.decode(data, "out.wav")
    with pytest.raises(TypeError):
        nc.encode(tone, "audio/toy-mulaw", "6k", sample_rate=16000)
    with pytest.raises(UsageError, match=r"audio arrays are \(samples, channels\), or 1-D for mono; this one is "
                                         r"\(2, 32000\): transpose it"):
        nc.encode(stereo.T, codec="audio/toy-mulaw", sample_rate=16000)  # torchaudio.load's layout


def test_wrong_shape_is_a_usage_error(tone):
    with pytest.raises(UsageError, match="shape"):
        nc.encode(np.zeros((10, 2), np.float32), **TOY)


def test_seek_by_time(tone):
    reader = nc.open(io.BytesIO(nc.encode(tone, **TOY)), "rb")
    full = reader.read()
    reader.seek(0.6)
    tail = np.concatenate([a for _, a in reader])
    np.testing.assert_array_equal(tail, full[9600:])
    reader.seek(0.0)
    np.testing.assert_array_equal(np.concatenate([a for _, a in reader]), full)


def test_a_seek_through_a_wrong_index_lands_where_the_chunks_say(tone):
    """Every index row points at the chunk after its own (its CRC recomputed: the offsets still rise, so it
    looks sound). The seek checks the rows it uses against the chunks' headers and reads a new index."""
    data = bytearray(nc.encode(tone, **TOY))
    reader = C.ContainerReader(io.BytesIO(bytes(data)))
    index_at = struct.unpack_from("<Q", data, len(data) - 12)[0]  # tail body: FINI's offset, the index's
    original, rows = reader.index, reader.index.copy()
    rows["offset"][:-1] = rows["offset"][1:]
    rows["offset"][-1] += 1
    body_at = index_at + 8 + C.INDEX_COUNT.size
    data[body_at:body_at + rows.nbytes] = rows.tobytes()
    data = recrc_field(bytes(data), index_at, 0, len(rows), C.INDEX_COUNT.size)  # (the count, unchanged)
    assert C.ContainerReader(io.BytesIO(data)).index["offset"].tolist() == rows["offset"].tolist()
    reader = nc.open(io.BytesIO(data), "rb")
    full = reader.read()
    reader.seek(0.6)
    np.testing.assert_array_equal(np.concatenate([a for _, a in reader]), full[9600:])
    assert reader.damage == [] and reader.container.index.tolist() == original.tolist()


def test_an_index_rebuilt_past_damage_keeps_the_chunks_after_it(tone):
    """A wrong index is rebuilt from the chunks; a damaged chunk on the way loses its row only (the
    walk stopped there, so every later seek landed before the damage)."""
    data = bytearray(_damaged(tone, 2)[0])
    index_at = struct.unpack_from("<Q", data, len(data) - 12)[0]
    original = C.ContainerReader(io.BytesIO(bytes(data))).index
    rows = original.copy()
    rows["offset"][:-1] = rows["offset"][1:]
    rows["offset"][-1] += 1
    body_at = index_at + 8 + C.INDEX_COUNT.size
    data[body_at:body_at + rows.nbytes] = rows.tobytes()
    data = recrc_field(bytes(data), index_at, 0, len(rows), C.INDEX_COUNT.size)
    reader = nc.open(io.BytesIO(data), "rb", ignore_errors=True)
    full = reader.read()
    reader.seek(0.6)
    np.testing.assert_array_equal(np.concatenate([a for _, a in reader]), full[9600:])
    rebuilt = reader.container.index.tolist()
    assert rebuilt == [row for i, row in enumerate(original.tolist()) if i != 2]


def _damaged(tone, chunk: int) -> tuple[bytes, list]:
    data = bytearray(nc.encode(tone, **TOY))
    chunks = list(C.ContainerReader(io.BytesIO(bytes(data))).chunks())
    data[chunks[chunk].offset + 40] ^= 0xFF
    return bytes(data), chunks


def test_corrupt_chunk_is_reported_by_number(tone):
    data, _ = _damaged(tone, 3)
    with pytest.raises(CorruptChunkError, match="chunk 3 .*corrupt.*--ignore-errors") as e:
        nc.decode(data)
    assert e.value.chunk_number == 3


def test_ignore_errors_decodes_every_other_chunk(tone):
    data, chunks = _damaged(tone, 3)
    clean = nc.decode(nc.encode(tone, **TOY)).data
    decoded = nc.decode(data, ignore_errors=True)
    assert decoded.data.shape == tone.shape
    lost = slice(chunks[3].start, chunks[3].start + chunks[3].duration)
    assert np.all(decoded.data[lost] == 0)
    keep = np.ones(len(tone), bool)
    keep[lost] = False
    np.testing.assert_array_equal(decoded.data[keep], clean[keep])
    assert any("chunk 3" in d for d in decoded.damage)


@pytest.mark.parametrize("with_end", [True, False], ids=["length known", "cut after the last DATA chunk"])
def test_a_chunk_with_a_wild_position_costs_at_most_itself(tone, with_end):
    """Chunk 2 says it starts at 2^62 (CRC intact). Where FINI gives the track's length, it is skipped
    and its place filled with silence. Without FINI, its samples were already handed out when chunk 3
    goes back: the jump was a wrong position, and chunks 3 on still decode where they belong."""
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    data = recrc_field(data, chunks[2].offset, 8, 1 << 62, 8)  # DATA body: track, flags, seq, start
    if not with_end:
        data = data[:_chunk_end(chunks[-1])]
    with pytest.raises(CorruptChunkError):
        nc.decode(data)
    decoded = nc.decode(data, ignore_errors=True)
    assert decoded.data.shape == tone.shape
    lost = slice(chunks[2].start, chunks[2].start + chunks[2].duration)
    if with_end:
        assert np.all(decoded.data[lost] == 0)
        clean[lost] = 0
    np.testing.assert_array_equal(decoded.data, clean)
    assert any("misplaced" in d for d in decoded.damage)


def test_truncated_file_gives_every_complete_chunk(tone):
    data = nc.encode(tone, **TOY)
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    cut = data[: chunks[5].offset + 100]
    with pytest.raises(TruncatedError):
        nc.decode(cut)
    decoded = nc.decode(cut, ignore_errors=True)
    assert len(decoded.data) == chunks[5].start
    np.testing.assert_array_equal(decoded.data, nc.decode(data).data[: chunks[5].start])


def test_a_file_cut_short_is_indexed_for_a_seek_and_a_stream_is_refused(tone):
    """A recording cut short has no index; a seek walks its chunks once to make one (it was refused)."""
    data = nc.encode(tone, **TOY)
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    cut = data[: chunks[5].offset + 100]
    whole = nc.decode(data).data
    reader = nc.open(io.BytesIO(cut), "rb", ignore_errors=True)
    reader.seek(0.2)
    np.testing.assert_array_equal(np.concatenate([a for _, a in reader]), whole[3200:chunks[5].start])

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self.f = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.f.readinto(b)

    with pytest.raises(UsageError, match="a stream .* has no index to seek with"):
        nc.open(io.BufferedReader(Pipe(cut)), "rb").seek(0.2)


def test_image_and_video_facts_follow_from_the_array():
    with pytest.raises(UsageError, match="sample_rate"):
        nc.encode(np.zeros((5, 4, 3, 2), np.float32))


def test_a_video_keeps_its_sample_aspect_ratio_and_square_pixels_go_unsaid():
    """Files written before nc kept the sample aspect ratio have no sar keys: they must read as square,
    and square video must still write none (the golden files' bytes)."""
    from fractions import Fraction

    from nc.errors import FormatError
    from nc.media.facts import VideoFacts, facts_from_json, facts_to_json

    frames = np.zeros((4, 16, 16, 3), np.uint8)
    for sar, keys in ((Fraction(1), set()), (Fraction(16, 15), {"sar_num", "sar_den"})):
        data = nc.encode(frames, codec="video/h264", fps=25, sar=sar)
        assert nc.open(io.BytesIO(data), "rb").tracks[0].facts.sar == sar
        square = facts_to_json(VideoFacts(16, 16, 25, 1))
        assert set(facts_to_json(VideoFacts(16, 16, 25, 1, sar.numerator, sar.denominator))) - set(square) == keys
    assert facts_from_json(square) == VideoFacts(16, 16, 25, 1)
    for num, den in ((0, 1), (2, 2), (1, 65536)):  # zero, not in lowest terms (2:2 would read back as 1:1), too long
        with pytest.raises(FormatError, match=f"sample aspect ratio {num}:{den} is out of the supported range"):
            facts_from_json({**square, "sar_num": num, "sar_den": den})
    with pytest.raises(FormatError, match="mistyped"):
        facts_from_json({**square, "sar_num": 1.5})
    with pytest.raises(UsageError, match="sample aspect ratio"):
        nc.encode(frames, codec="video/h264", fps=25, sar=-1)


def test_one_hour_streams_with_bounded_memory(tmp_path):
    """An hour of 16 kHz audio through the writer and reader; peak Python-side memory stays small."""
    path = tmp_path / "hour.ncb"
    second = (0.1 * np.sin(np.arange(16000) / 7)).astype(np.float32)[:, None]
    tracemalloc.start()
    with nc.open(path, "wb", **TOY) as w:
        for _ in range(3600 // 10):
            w.write(np.tile(second, (10, 1)))
    total = 0
    with nc.open(path, "rb") as r:
        for _, block in r:
            total += len(block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == 3600 * 16000
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB"  # the hour itself is 230 MiB as float32


class _OneBehind:
    """A decoder that holds one packet back (as nc's frame codecs and parallel GOP decoders do), and
    fails on packet number `fail_at` (from 1) if given."""

    def __init__(self, inner, calls: list, fail_at: int | None = None):
        self.inner, self.held, self.calls, self.fail_at = inner, None, calls, fail_at

    def decode(self, packet):
        self.calls.append(packet.start)
        if len(self.calls) == self.fail_at:
            raise ValueError("damaged on purpose")
        out, self.held = self.held, self.inner.decode(packet)
        return out

    def flush(self):
        out, self.held = self.held, None
        return out

    def reset(self):
        self.held = None
        self.inner.reset()


def _lagging_toy(monkeypatch, fail_at: int | None = None) -> list:
    from nc.plugins import registry

    toy, calls = registry().get(TOY["codec"]), []
    make_decoder = toy.decoder
    monkeypatch.setattr(toy, "decoder", lambda *args: _OneBehind(make_decoder(*args), calls, fail_at))
    return calls


def test_a_failed_chunk_costs_only_its_own_samples_when_the_decoder_lags(tone, monkeypatch):
    """A decoder that holds one packet back: when chunk 3's payload fails (its CRC intact), the reader
    still hands out chunk 2, which the decoder held (it flushes before the reset), and pads chunk 3 only."""
    data = nc.encode(tone, **TOY)
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    clean = nc.decode(data).data
    calls = _lagging_toy(monkeypatch, fail_at=4)
    decoded = nc.decode(data, ignore_errors=True)
    assert calls[3] == chunks[3].start and decoded.data.shape == tone.shape
    lost = slice(chunks[3].start, chunks[3].start + chunks[3].duration)
    assert np.all(decoded.data[lost] == 0)
    np.testing.assert_array_equal(decoded.data[:lost.start], clean[:lost.start])
    np.testing.assert_array_equal(decoded.data[lost.stop:], clean[lost.stop:])


def test_a_chunk_that_goes_back_keeps_what_the_lagging_decoder_held_before_it(tone, monkeypatch):
    """Chunk 2 says it starts inside chunk 1 (CRC intact): chunk 1's output, still held by the decoder,
    comes out whole; only what chunk 2 itself covers is in doubt."""
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    data = recrc_field(data, chunks[2].offset, 8, chunks[1].start + 100, 8)  # DATA body: start (u64) at 8
    _lagging_toy(monkeypatch)
    decoded = nc.decode(data, ignore_errors=True)
    np.testing.assert_array_equal(decoded.data[:chunks[2].start], clean[:chunks[2].start])
    assert any("jump" in d for d in decoded.damage)


def test_an_image_whose_chunk_fails_is_a_clean_error_even_ignoring_errors():
    data = nc.encode(np.full((16, 16, 3), 90, np.uint8), codec="image/jpeg", quality=50)
    chunk = next(iter(C.ContainerReader(io.BytesIO(data)).chunks()))
    data = recrc_field(data, chunk.offset, C.DATA_HEAD.size + 20, 0xFFFF, 2)  # inside the JPEG's headers
    with pytest.raises(CorruptChunkError, match="image could not be decoded"):
        nc.decode(data, ignore_errors=True)


def test_a_chunk_naming_a_track_the_file_lacks_is_damage(tone):
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    data = recrc_field(data, chunks[2].offset, 0, 7, 2)  # DATA body: track u16 first
    with pytest.raises(CorruptChunkError, match="chunk 2 .*names track 7"):
        nc.decode(data)
    decoded = nc.decode(data, ignore_errors=True)
    lost = slice(chunks[2].start, chunks[2].start + chunks[2].duration)
    assert np.all(decoded.data[lost] == 0)
    clean[lost] = 0
    np.testing.assert_array_equal(decoded.data, clean)


def test_api_misuse_is_a_usage_error(tone, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "t.wav", tone, 16000)
    with pytest.raises(UsageError, match="unknown arguments for a file: bitrat"):
        nc.encode(tmp_path / "t.wav", codec="audio/toy-mulaw", bitrat="6k")
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(UsageError, match="not int"):
            nc.decode(read_end)  # would read that file descriptor, and close it
        os.fstat(read_end)  # still open
    finally:
        os.close(read_end)
        os.close(write_end)
    reader = nc.open(io.BytesIO(nc.encode(tone, **TOY)), "rb")
    for bad in (float("nan"), "1", None):
        with pytest.raises(UsageError, match="finite number of seconds"):
            reader.seek(bad)
    reader.close()
    with pytest.raises(UsageError, match="closed"):
        list(reader)


@pytest.mark.parametrize("codec", ["audio/toy-mulaw", "audio/rvq"])
def test_empty_audio_round_trips(codec):
    decoded = nc.decode(nc.encode(np.zeros((0, 1), np.float32), codec=codec, sample_rate=16000, channels=1))
    assert decoded.data.shape == (0, 1) and not decoded.damage


def test_a_reader_read_twice_starts_over_and_checks_its_track(tone):
    reader = nc.open(io.BytesIO(nc.encode(tone, **TOY)), "rb")
    first = reader.read(0)
    np.testing.assert_array_equal(reader.read(0), first)  # a second pass, not a gap back to 0
    assert not reader.damage
    with pytest.raises(UsageError, match="track 1 does not exist"):
        reader.read(1)


def test_open_takes_the_image_mode_as_a_fact_and_refuses_facts_when_reading():
    out = io.BytesIO()
    with nc.open(out, "wb", codec="audio/toy-mulaw", sample_rate=16000) as w:
        w.write(np.zeros((160, 1), np.float32))
    with pytest.raises(UsageError, match="reading takes no codec"):
        nc.open(io.BytesIO(out.getvalue()), "rb", codec="audio/toy-mulaw")
    with pytest.raises(UsageError, match="sample_rate must be a whole number, not 'abc'"):
        nc.open(io.BytesIO(), "wb", codec="audio/toy-mulaw", sample_rate="abc")
    with pytest.raises(UsageError, match="mode: not facts of audio"):
        nc.open(io.BytesIO(), "wb", codec="audio/toy-mulaw", sample_rate=16000, mode="L")


def test_an_image_track_closed_without_its_image_is_refused():
    with pytest.raises(UsageError, match="none was written"):
        with nc.open(io.BytesIO(), "wb", codec="image/jpeg", width=8, height=8):
            pass


def test_a_rate_the_output_overshoots_is_warned_of_at_the_users_line():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flat = np.full((64, 64, 3), 128, np.uint8)
    with pytest.warns(RateWarning, match=r"came out at .* above the 0.01bpp asked") as caught:
        nc.encode(noise, codec="image/jpeg", bitrate="0.01bpp")  # quality 1 needs more on noise
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateWarning)
        nc.encode(noise, codec="image/jpeg", bitrate="2bpp")
        nc.encode(flat, codec="image/jpeg", bitrate="8bpp")  # quality 100 needs less: no news


def _chunk_end(chunk) -> int:
    return chunk.offset + 8 + C.DATA_HEAD.size + len(chunk.payload) + 4  # length, type, body, CRC


def test_chunks_lost_at_a_tracks_end_are_damage_not_silence(tone):
    """FINI says how far the track runs: a file missing its last DATA chunk is damaged, not short."""
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    last = list(C.ContainerReader(io.BytesIO(data)).chunks())[-1]
    data = data[:last.offset] + data[_chunk_end(last):]
    with pytest.raises(CorruptChunkError, match=f"track 0: its chunks stop at {last.start}, but the file says "
                                                f"it runs to {len(tone)}"):
        nc.decode(data)
    decoded = nc.decode(data, ignore_errors=True)
    np.testing.assert_array_equal(decoded.data[:last.start], clean[:last.start])
    assert decoded.data.shape == tone.shape and np.all(decoded.data[last.start:] == 0)
    assert len(decoded.damage) == 1 and "chunks missing at its end" in decoded.damage[0]


def test_a_fini_that_contradicts_the_header_costs_only_the_lengths(tone):
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    fini_at = _chunk_end(list(C.ContainerReader(io.BytesIO(data)).chunks())[-1])
    data = recrc_field(data, fini_at, 0, 5, C.FINI_COUNT.size)  # FINI body: its track count first
    with pytest.raises(CorruptChunkError, match="FINI chunk does not match the track count"):
        nc.decode(data)
    decoded = nc.decode(data, ignore_errors=True)
    np.testing.assert_array_equal(decoded.data, clean)
    assert decoded.damage == [f"the FINI chunk does not match the track count (byte {fini_at}): "
                              "the tracks' lengths are unknown"]


def test_an_image_chunk_that_claims_two_frames_is_misplaced():
    data = nc.encode(np.full((16, 16, 3), 90, np.uint8), codec="image/jpeg", quality=50)
    chunk = next(iter(C.ContainerReader(io.BytesIO(data)).chunks()))
    data = recrc_field(data, chunk.offset, 16, 2, 4)  # DATA body: duration (u32) at 16
    with pytest.raises(CorruptChunkError, match="is an image's, but starts at 0 lasting 2"):
        nc.decode(data)


def test_a_lost_chunk_is_reported_as_a_jump_not_as_a_decoding_failure(tone):
    data = nc.encode(tone, **TOY)
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    data = data[:chunks[2].offset] + data[chunks[3].offset:]
    with pytest.raises(CorruptChunkError) as e:
        nc.decode(data)
    assert str(e.value).startswith(f"track 0: chunk positions jump from {chunks[2].start} to {chunks[3].start}")


def test_filler_is_bounded_by_the_files_size_not_only_by_seconds(tone, monkeypatch):
    """A few hundred crafted bytes whose FINI claims 600 s of 64-channel 768 kHz audio must not decode to
    gigabytes of silence: filler is bounded in bytes, in proportion to the file's size."""
    from nc import stream

    data = nc.encode(tone, **TOY)
    monkeypatch.setattr(stream, "FILL_BYTES", 0)
    monkeypatch.setattr(stream, "FILL_PER_FILE_BYTE", len(tone) // len(data))  # len(tone) bytes: a quarter of its float32
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    lost = data[:chunks[1].offset] + data[chunks[-1].offset:]  # all but the first and last chunks
    decoded = nc.decode(lost, ignore_errors=True)
    assert any("was not filled" in d for d in decoded.damage)
    assert len(decoded.data) < len(tone) // 2


def test_a_track_that_lost_every_chunk_is_filled_to_its_length(tone):
    from nc.media.facts import AudioFacts

    out = io.BytesIO()
    with nc.open(out, "wb", tracks=[nc.TrackSpec(AudioFacts(16000, 1), "audio/toy-mulaw"),
                                    nc.TrackSpec(AudioFacts(8000, 1), "audio/toy-mulaw")]) as w:
        w.write(tone, track=0)
        w.write(tone[::2], track=1)
    data = out.getvalue()
    for c in reversed([c for c in C.ContainerReader(io.BytesIO(data)).chunks() if c.track == 1]):
        data = data[:c.offset] + data[_chunk_end(c):]
    decoded = nc.decode(data, ignore_errors=True)
    assert decoded[1].data.shape == (len(tone[::2]), 1) and not decoded[1].data.any()
    assert any("track 1: none of its chunks could be read" in d for d in decoded.damage)


def _decoder_failing_on(monkeypatch, packet_number: int, error: BaseException):
    """Make the toy codec's decoder raise `error` on its `packet_number`-th packet (from 0)."""
    from nc.plugins import registry

    decode_fails_at(monkeypatch, registry().get(TOY["codec"]), packet_number + 1, error)


def test_a_last_chunk_that_fails_is_one_damage_not_also_a_lost_end(tone, monkeypatch):
    data = nc.encode(tone, **TOY)
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    _decoder_failing_on(monkeypatch, len(chunks) - 1, ValueError("damaged on purpose"))
    decoded = nc.decode(data, ignore_errors=True)
    assert decoded.damage == [f"chunk {len(chunks) - 1} (track 0) could not be decoded: ValueError: damaged on purpose"]
    assert decoded.data.shape == tone.shape and not decoded.data[chunks[-1].start:].any()


def test_running_out_of_memory_in_a_decoder_is_not_damage(tone, monkeypatch):
    _decoder_failing_on(monkeypatch, 1, MemoryError("Unable to allocate 9 GiB"))
    with pytest.raises(MemoryError):
        nc.decode(nc.encode(tone, **TOY), ignore_errors=True)


def test_every_walk_through_a_file_has_the_whole_scan_budget(monkeypatch):
    """The scan's CRC budget counts candidates that were not chunks, per walk: reading a file again
    (a reader's second iteration) recovers what the first did."""
    data = nc.encode(np.zeros((16000 * 12, 1), np.float32), **TOY)
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    fake = C.CHUNK_HEAD.pack(100, b"DATA") + bytes(104)  # a plausible DATA header, CRC wrong
    absurd = C.CHUNK_HEAD.pack(0x7FFFFFFF, b"DATA") + bytes(4)
    data = data[:chunks[1].offset] + absurd + fake * 30 + data[chunks[2].offset:]
    monkeypatch.setattr(C, "SCAN_BUDGET", 100 * 45)  # one walk's 30 candidates cost 3000
    reader = C.ContainerReader(io.BytesIO(data))
    walks = [[c.start for c in reader.chunks() if isinstance(c, C.Chunk)] for _ in range(3)]
    assert walks[0] == walks[1] == walks[2] == [c.start for c in chunks if c.number != 1]


def test_on_a_pipe_a_failed_chunk_claiming_minutes_is_not_filled(tone, monkeypatch):
    """Read from a pipe, the track's length is unknown until FINI: a chunk that claims 300 s and fails
    to decode must not make the reader fill 300 s (a gap of over 64 chunks there is left unfilled, and
    undone when the next chunk goes back into it)."""
    from test_container import Pipe

    data = nc.encode(tone, **TOY)
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    data = recrc_field(data, chunks[1].offset, 16, 16000 * 300, 4)  # DATA body: duration (u32) at 16
    _decoder_failing_on(monkeypatch, 1, ValueError("damaged on purpose"))
    decoded = nc.decode(Pipe(data), ignore_errors=True)
    assert decoded.data.shape == tone.shape
    assert any("was not filled (more than 64 chunks' worth" in d for d in decoded.damage)


def test_on_a_pipe_a_fini_shorter_than_the_chunks_is_damage(tone):
    from test_container import Pipe

    data = nc.encode(tone, **TOY)
    fini_at = _chunk_end(list(C.ContainerReader(io.BytesIO(data)).chunks())[-1])
    data = recrc_field(data, fini_at, C.FINI_COUNT.size, len(tone) - 1000, 8)  # track 0's end (u64)
    with pytest.raises(CorruptChunkError, match=f"its chunks reach {len(tone)}, but the file says it ends at"):
        nc.decode(Pipe(data))
    assert any("but the file says it ends at" in d for d in nc.decode(Pipe(data), ignore_errors=True).damage)


@pytest.mark.parametrize("short", [1, 700, 2500])
def test_a_fini_shorter_than_the_chunks_keeps_what_fits(tone, short):
    """A CRC-valid FINI that says track 0 ends `short` samples before its chunks do: the chunk that runs
    past that end, following on from the ones before it, decodes and is trimmed to it (it was skipped: a FINI
    one sample short cost the whole last chunk); a chunk that starts past it is misplaced and skipped."""
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    chunks = list(C.ContainerReader(io.BytesIO(data)).chunks())
    length = len(tone) - short
    data = recrc_field(data, _chunk_end(chunks[-1]), C.FINI_COUNT.size, length, 8)  # track 0's end (u64)
    with pytest.raises(CorruptChunkError, match=f"past the track's end \\({length}\\)"):
        nc.decode(data)
    decoded = nc.decode(data, ignore_errors=True)
    np.testing.assert_array_equal(decoded.data, clean[:length])
    trimmed = [c for c in chunks if c.start < length < c.start + c.duration]
    skipped = [c for c in chunks if c.start >= length]
    assert len(decoded.damage) == len(trimmed) + len(skipped)
    assert all("what it holds past that is dropped" in d for d in decoded.damage[:len(trimmed)])
    assert all("misplaced, skipped" in d for d in decoded.damage[len(trimmed):])


def test_a_chunk_past_the_end_that_fails_to_decode_costs_only_itself(tone):
    """The last chunk claims to last far past the track's end and its payload does not fit that duration:
    it is skipped, not padded over, and its span is the lost end of the track."""
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    last = list(C.ContainerReader(io.BytesIO(data)).chunks())[-1]
    data = recrc_field(data, last.offset, 16, last.duration + 1000, 4)  # DATA body: duration (u32) at 16
    decoded = nc.decode(data, ignore_errors=True)
    np.testing.assert_array_equal(decoded.data[:last.start], clean[:last.start])
    assert decoded.data.shape == tone.shape and np.all(decoded.data[last.start:] == 0)
    assert "misplaced, skipped (ValueError: payload size does not match" in decoded.damage[0]
    assert "chunks missing at its end" in decoded.damage[1] and len(decoded.damage) == 2


def _toy_output_becomes(monkeypatch, transform) -> None:
    """Make the toy codec's decoders hand out `transform(what they decode)`."""
    from nc.plugins import registry

    codec = registry().get(TOY["codec"])
    make_decoder = codec.decoder

    def decoder(*args):
        inner = make_decoder(*args)
        decode = inner.decode
        inner.decode = lambda packet: transform(decode(packet))
        return inner

    monkeypatch.setattr(codec, "decoder", decoder)


@pytest.mark.parametrize("returned, said", [
    (lambda a: a[:, 0], "float32 (4000,), not float (samples, 1)"),
    (lambda a: a.tolist(), "list, not float (samples, 1)"),
    (lambda a: (a * 32767).astype(np.int16), "int16 (4000, 1), not float (samples, 1)"),
])
def test_a_decoder_that_breaks_the_output_contract_is_the_codecs_bug(tone, monkeypatch, returned, said):
    """Named as the codec's bug: not damage, and not a numpy error in nc's words."""
    from nc.errors import PluginError

    data = nc.encode(tone, **TOY)
    _toy_output_becomes(monkeypatch, returned)
    with pytest.raises(PluginError, match=f"audio/toy-mulaw's decoder returned {re.escape(said)} "
                                          f"\\(a bug in the codec\\)"):
        nc.decode(data, ignore_errors=True)


def test_a_decoders_float64_audio_is_handed_out_as_float32(tone, monkeypatch):
    data = nc.encode(tone, **TOY)
    clean = nc.decode(data).data
    _toy_output_becomes(monkeypatch, lambda a: a.astype(np.float64))
    decoded = nc.decode(data).data
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, clean)


@pytest.mark.parametrize("mistake", [dict(codec="audio/no-such"), dict(bitrate="fast"), dict(channels=0),
                                     dict(sample_rate="x"), dict(tracks=[]), dict(tracks=17)])
def test_a_writer_refused_for_its_arguments_leaves_the_file_that_was_there(tmp_path, mistake):
    from nc.errors import NCError
    from nc.media.facts import AudioFacts

    path = tmp_path / "x.ncb"
    path.write_bytes(b"the user's earlier output")
    if mistake.get("tracks") == 17:  # one more than a file holds
        mistake = dict(tracks=[nc.TrackSpec(AudioFacts(16000, 1), TOY["codec"])] * 17)
    with pytest.raises(NCError):
        nc.open(path, "wb", **(mistake if "tracks" in mistake else {**TOY, **mistake}))
    assert path.read_bytes() == b"the user's earlier output"


@pytest.mark.parametrize("call, message", [
    (lambda: nc.encode(np.zeros((3, 64, 48), np.uint8), codec="image/jpeg"), "channels-first one needs a.transpose"),
    (lambda: nc.encode(np.zeros((8, 2), np.float32), sample_rate=16000.5, channels=2), "sample_rate must be a whole"),
    (lambda: nc.encode(np.zeros((8, 2), np.float32), sample_rate="16000", channels=2), "sample_rate must be a whole"),
    (lambda: nc.encode(np.full(100, np.nan, np.float32), **TOY), "audio samples must be finite; .* at sample 0"),
    (lambda: nc.encode(np.full((8, 8, 3), 200.0), codec="image/jpeg"), "0-255 values: pass them as uint8"),
    (lambda: nc.encode(np.full((8, 8, 3), np.inf), codec="image/jpeg"), "float pixels .* NaN or infinity"),
    (lambda: nc.decode(np.zeros((3, 3))), "not a float64 array of shape"),
    (lambda: nc.decode(io.StringIO("text")), "open it in binary mode"),
    (lambda: nc.detokenize(np.zeros((1, 1, 5), np.int16), sample_rate=44100.5), "sample_rate must be a whole"),
])
def test_bad_arguments_are_usage_errors_not_pythons(call, message):
    with pytest.raises(UsageError, match=message):
        call()


def test_decode_takes_the_bytes_as_a_uint8_array(tone):
    data = nc.encode(tone, **TOY)
    np.testing.assert_array_equal(nc.decode(np.frombuffer(data, np.uint8)).data, nc.decode(data).data)


def test_a_reader_refuses_a_second_thread_while_one_reads_it(tone):
    import threading

    reader = nc.open(io.BytesIO(nc.encode(tone, **TOY)), "rb")
    started, release, pieces = threading.Event(), threading.Event(), []

    def read_slowly():
        for piece in reader:
            pieces.append(piece)
            started.set()
            release.wait(10)

    thread = threading.Thread(target=read_slowly)
    thread.start()
    started.wait(10)
    with pytest.raises(UsageError, match="being read in another thread"):
        next(iter(reader))
    release.set()
    thread.join(10)
    assert sum(len(a) for _, a in pieces) == len(tone)
    assert sum(len(a) for _, a in reader) == len(tone)  # the thread is done: any thread may read it now
    reader.close()
    with pytest.raises(UsageError, match="closed"):
        reader.seek(1.0)


def test_a_writer_never_closed_is_a_resource_warning(tone):
    import gc

    writer = nc.open(io.BytesIO(), "wb", **TOY)
    writer.write(tone)
    with pytest.warns(ResourceWarning, match="never closed, so its file ends without FINI"):
        del writer
        gc.collect()
    with warnings.catch_warnings():  # a with-block that raised left it unfinished on purpose: no warning
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(KeyError):
            with nc.open(io.BytesIO(), "wb", **TOY) as writer:
                raise KeyError("the user's")
        del writer
        gc.collect()


def test_a_video_seek_starts_at_the_frame_on_screen():
    """seek(1.51) at 25 fps: frame 37 is on screen from 1.48 s to 1.52 s; the nearest frame, 38, was given."""
    frames = np.repeat(np.arange(60, dtype=np.uint8)[:, None, None, None], 8, 1).repeat(8, 2).repeat(3, 3) * 4
    reader = nc.open(io.BytesIO(nc.encode(frames, codec="video/h264", quality=0, fps=25)), "rb")
    reader.seek(1.51)
    first = next(iter(reader))[1][0]
    assert abs(int(first.mean()) - 37 * 4) <= 2
