"""Checks the learned video codecs' tests share: writing frames in pieces through nc.open, a codec's
packets, GOPs as seek points, damaged payloads, parallel decoding, and a video with sound through
the CLI."""
import io
import json

import numpy as np
import pytest

import nc
from conftest import SAMPLES, panning_clip, run_nc


def write_in_pieces(codec_id: str, pieces: list, **rate) -> bytes:
    """An .ncb of the frames fed to nc.open piece by piece; pieces of one shape are copied into one
    buffer that is refilled for every piece, as a capture loop does."""
    out = io.BytesIO()
    with nc.open(out, "wb", codec=codec_id, width=pieces[0].shape[2], height=pieces[0].shape[1], fps=25,
                 **rate) as w:
        buffer = np.empty_like(pieces[0])
        for p in pieces:
            if p.shape == buffer.shape:
                buffer[:] = p
                p = buffer
            w.write(p)
    return out.getvalue()


def check_pieces_give_the_same_file(codec_id: str, **rate) -> None:
    x = panning_clip(70, 48, 64)
    whole = write_in_pieces(codec_id, [x], **rate)
    assert write_in_pieces(codec_id, np.split(x, [1, 4, 5, 17, 40, 41]), **rate) == whole
    assert write_in_pieces(codec_id, list(x[:, None]), **rate) == whole  # one frame at a time


def check_every_gop_is_a_seek_point(codec_id: str, gop: int, **rate) -> None:
    x = panning_clip(2 * gop + 10, 48, 64)
    reader = nc.open(io.BytesIO(nc.encode(x, fps=25, codec=codec_id, **rate)), "rb")
    full = reader.read()
    reader.seek((gop + 3) / 25)  # lands in the second GOP: decoding starts at its first frame
    tail = np.concatenate([a for _, a in reader])
    np.testing.assert_array_equal(tail, full[-len(tail):])
    assert len(tail) >= len(x) - gop - 3


def code_packets(codec, x: np.ndarray, effort: int = 0, **rate):
    """(facts, packets) of frames x coded by `codec` at 25 fps (at `effort`, where above 0)."""
    from nc.media.facts import VideoFacts

    facts = VideoFacts(x.shape[2], x.shape[1], 25, 1)
    rate_point = codec.descriptor.resolve(**rate)
    enc = codec.encoder(facts, rate_point, effort=effort) if effort else codec.encoder(facts, rate_point)
    return facts, [*enc.encode(x), *enc.flush()]


def decode_packets(codec, facts, packets, **rate) -> np.ndarray:
    """The frames of `packets` through a decoder of `codec`."""
    return run_decoder(codec.decoder(facts, codec.descriptor.resolve(**rate), {}), packets)


def run_decoder(dec, packets) -> np.ndarray:
    """Every frame `dec` gives for `packets`, with those it holds back until flush."""
    return np.concatenate([dec.decode(p) for p in packets] + [dec.flush()])


def check_video_with_sound_through_the_cli(codec_id: str, tmp_path, *rate) -> None:
    import av

    result = run_nc("encode", SAMPLES / "clip.mp4", tmp_path / "c.ncb", "--codec", codec_id, *rate,
                    "--audio-bitrate", "16k")
    assert result.returncode == 0, result.stderr.decode()
    info = json.loads(run_nc("info", "--json", tmp_path / "c.ncb").stdout)
    assert [(t["modality"], t["codec"]) for t in info["tracks"]][0] == ("video", codec_id)
    assert info["tracks"][0]["length"] == 50 and len(info["tracks"]) == 2
    assert run_nc("decode", tmp_path / "c.ncb", tmp_path / "c.mkv").returncode == 0
    with av.open(str(tmp_path / "c.mkv")) as f:
        assert len(f.streams.video) == 1 and len(f.streams.audio) == 1
        assert sum(1 for _ in f.decode(video=0)) == 50


def check_trainer_writes_weights_the_codec_loads_and_resumes(train_main, codec_class, codec_id: str, config: dict,
                                                             tmp_path) -> None:
    """Two short runs of a video trainer on 3 generated clips (the second resumes the first), then its
    weights code and decode a clip."""
    np.save(tmp_path / "train_clips.npy", np.stack([panning_clip(8, 64, 64, seed=s) for s in range(3)]))
    run = [codec_id, "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--batch", "2", "--frames", "8",
           "--crop", "64", "--log-every", "2", "--config", json.dumps(config)]
    train_main(run + ["--steps", "2"])
    train_main(run + ["--steps", "4"])  # resumes from the checkpoint
    log = (tmp_path / "run" / "train.log").read_text()
    assert "resumed from step 2" in log and '"step": 4' in log
    codec = codec_class(tmp_path / "run" / "weights.safetensors")
    facts, packets = code_packets(codec, panning_clip(12, 64, 64), quality=2)
    assert decode_packets(codec, facts, packets, quality=2).shape == (12, 64, 64, 3)


def check_damaged_payloads_are_clean_errors(codec, damaged) -> None:
    """Every payload in damaged(good payload) fails with an NCError, in `decode` itself although the
    decoder synthesizes two GOPs at once; so does a good one said to hold more frames than it does."""
    from nc.codecs.base import Packet
    from nc.codecs.learned_video import GopDecoder

    facts, packets = code_packets(codec, panning_clip(10, 40, 56), quality=3)
    dec = GopDecoder(codec.model, facts, workers=2)
    payload = packets[0].payload
    assert run_decoder(dec, [Packet(payload, 0, 10)]).shape == (10, 40, 56, 3)
    for bad in damaged(payload):
        with pytest.raises(nc.NCError):
            dec.decode(Packet(bad, 0, 10))
    with pytest.raises(nc.NCError):
        dec.decode(Packet(payload, 0, 20))  # more frames than the packet holds


def check_parallel_decoding(codec, gop: int, monkeypatch) -> None:
    """GOPs synthesized several at once (nc/codecs/learned_video.py GopDecoder): the frames of one at a
    time, at most PARALLEL_DECODE_PIXELS in flight, and a damaged GOP costs only its own frames."""
    check_more_decode_workers_give_the_same_frames(codec, gop)
    check_large_frames_decode_one_gop_at_a_time(codec)
    check_good_gops_survive_a_bad_one(codec, gop, monkeypatch)


def check_more_decode_workers_give_the_same_frames(codec, gop: int) -> None:
    """GOPs synthesized on 1, 2 or 3 threads at once: the same frames, in order, each GOP once."""
    from nc.codecs.learned_video import GopDecoder

    facts, packets = code_packets(codec, panning_clip(3 * gop + 5, 40, 56), quality=4)
    outputs = []
    for workers in (1, 2, 3):
        outputs.append(run_decoder(GopDecoder(codec.model, facts, workers), packets))
    assert outputs[0].shape == (3 * gop + 5, 40, 56, 3)
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])
    assert threads_of_a_new_thread() == codec.model.torch.get_num_threads()  # the workers' one thread did not leak


def check_large_frames_decode_one_gop_at_a_time(codec) -> None:
    """However many threads torch has, a decoder holds GOPs in flight only up to PARALLEL_DECODE_PIXELS
    of frame area (each synthesis holds its activations)."""
    from nc.codecs import learned_video
    from nc.media.facts import VideoFacts

    torch = codec.model.torch
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        workers = [codec.model.decode_workers(VideoFacts(w, h, 25, 1)) for w, h in ((320, 240), (854, 480), (1280, 720))]
        encoders = [codec.model.encode_workers(VideoFacts(w, h, 25, 1)) for w, h in ((320, 240), (416, 312), (640, 360))]
    finally:
        torch.set_num_threads(threads)
    assert workers == [learned_video.MAX_DECODE_WORKERS, 2, 1]
    assert encoders == [3, 2, 1]  # encoders only gain on small frames


def threads_of_a_new_thread() -> int:
    import threading

    import torch

    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def check_good_gops_survive_a_bad_one(codec, gop: int, monkeypatch) -> None:
    """With ignore_errors, a GOP whose payload fails (its CRC intact) costs its own frames only: the
    GOPs before it, which a decoder synthesizing two at once still holds when it fails, and after it
    come out as they are, and its place holds the last good frame."""
    x = panning_clip(3 * gop, 40, 56)
    data = nc.encode(x, fps=25, codec=codec.descriptor.id, quality=4)
    clean = nc.open(io.BytesIO(data), "rb").read()
    read, calls = codec.model.read, []

    def fail_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise nc.errors.CorruptChunkError("damaged on purpose")
        return read(*args)

    monkeypatch.setattr(codec.model, "read", fail_the_second)
    monkeypatch.setattr(codec.model, "decode_workers", lambda facts: 2)  # whatever this machine's thread count
    reader = nc.open(io.BytesIO(data), "rb", ignore_errors=True)
    damaged = reader.read()
    assert reader._states[0].decoder.workers == 2
    assert len(calls) == 3 and len(reader.damage) == 1, reader.damage  # the failed chunk pads its own span
    assert reader.damage[0].startswith("chunk 1 (track 0) could not be decoded: damaged on purpose")
    np.testing.assert_array_equal(damaged[:gop], clean[:gop])
    np.testing.assert_array_equal(damaged[gop:2 * gop], np.repeat(clean[gop - 1:gop], gop, axis=0))
    np.testing.assert_array_equal(damaged[2 * gop:], clean[2 * gop:])


def check_parallel_encoding(codec, gop: int, monkeypatch) -> None:
    """GOPs coded several at once (GopEncoder with a model), each on one thread: the same packets, in
    order, whatever torch's thread count (1: one GOP at a time); the workers' one thread does not leak,
    and a GOP that fails to code raises, then every later call: not a file with a hole."""
    from nc.media.facts import VideoFacts

    torch = codec.model.torch
    x = panning_clip(3 * gop + 5, 40, 56)
    threads, runs = torch.get_num_threads(), []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            runs.append([(p.payload, p.start, p.duration) for p in code_packets(codec, x, quality=4)[1]])
            assert threads_of_a_new_thread() == count
    finally:
        torch.set_num_threads(threads)
    assert [r[1:] for r in runs[0]] == [(0, gop), (gop, gop), (2 * gop, gop), (3 * gop, 5)] and runs[1] == runs[0]
    calls = []

    def fail_the_second(self, frames, duration):
        calls.append(duration)
        if len(calls) == 2:
            raise RuntimeError("failed on purpose")
        return b""

    monkeypatch.setattr(codec.encoder_class, "code_gop", fail_the_second)
    for workers in (2, 1):  # on the pool, and on the caller's threads
        calls.clear()
        monkeypatch.setattr(codec.model, "encode_workers", lambda facts: workers)
        encoder = codec.encoder(VideoFacts(56, 40, 25, 1), codec.descriptor.resolve(quality=4))
        with pytest.raises(RuntimeError, match="failed on purpose"):
            encoder.encode(x)
            encoder.flush()
        with pytest.raises(nc.errors.UsageError, match="stopped at a GOP it could not code"):
            encoder.flush()  # the file would close with a hole
