"""The `nc` command as a user runs it: real samples, real classical codecs, bad input."""
import json
import os
import re
import stat
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import nc

from conftest import SAMPLES, run_nc


def _ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


def _fails_cleanly(result, code: int, pattern: str):
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nc: error: "), err
    assert pattern in lines[0], err


def test_audio_round_trip_with_opus(tmp_path):
    out = _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "s.ncb", "--codec", "audio/opus", "--bitrate", "12k"))
    size = (tmp_path / "s.ncb").stat().st_size  # encode says the whole file's rate, info each track's payload's
    assert f"{size} bytes, {size * 8 / 6.125 / 1000:.2f} kbps in all (audio/opus @ 12k)" in out.stdout.decode()
    assert "kbps of payload" in _ok(run_nc("info", tmp_path / "s.ncb")).stdout.decode()
    _ok(run_nc("decode", tmp_path / "s.ncb", tmp_path / "s.wav"))
    original, rate = sf.read(SAMPLES / "speech.wav")
    decoded, decoded_rate = sf.read(tmp_path / "s.wav")
    assert decoded_rate == rate and decoded.shape == original.shape


def test_bpp_is_the_bitrate_in_bits_per_pixel(tmp_path):
    said = _ok(run_nc("encode", SAMPLES / "photo.png", tmp_path / "a.ncb", "--codec", "image/webp", "--bpp", "0.3"))
    size = (tmp_path / "a.ncb").stat().st_size  # the measured rate, not the target again
    assert f"{size} bytes, {size * 8 / 512 ** 2:.3f} bpp in all (image/webp @ 0.3bpp)" in said.stdout.decode()
    _ok(run_nc("encode", SAMPLES / "photo.png", tmp_path / "b.ncb", "--codec", "image/webp", "--bitrate", "0.3bpp"))
    assert (tmp_path / "a.ncb").read_bytes() == (tmp_path / "b.ncb").read_bytes()
    _fails_cleanly(run_nc("encode", SAMPLES / "photo.png", tmp_path / "c.ncb", "--bpp=-1"), 2, "positive number")
    assert not (tmp_path / "c.ncb").exists()


def test_a_bpp_the_codec_cannot_reach_is_coded_and_warned_of_in_one_line(tmp_path):
    result = _ok(run_nc("encode", SAMPLES / "photo.png", tmp_path / "p.ncb", "--codec", "image/jpeg", "--bpp", "0.01"))
    err = result.stderr.decode().strip()
    assert err.startswith("nc: warning: track 0 (image/jpeg) came out at ") and err.endswith("above the 0.01bpp asked")
    assert "\n" not in err and "RateWarning" not in err


def test_image_round_trip_with_bpp_request(tmp_path):
    _ok(run_nc("encode", SAMPLES / "photo.png", tmp_path / "p.ncb", "--codec", "image/webp", "--bitrate", "0.5bpp"))
    _ok(run_nc("decode", tmp_path / "p.ncb", tmp_path / "p.png"))
    original = np.asarray(Image.open(SAMPLES / "photo.png"))
    decoded = np.asarray(Image.open(tmp_path / "p.png"))
    assert decoded.shape == original.shape
    bpp = (tmp_path / "p.ncb").stat().st_size * 8 / (original.shape[0] * original.shape[1])
    assert bpp < 0.55  # the request is honoured, container included


def test_video_with_sound_becomes_two_tracks_and_plays_back(tmp_path):
    import av

    _ok(run_nc("encode", SAMPLES / "clip.mp4", tmp_path / "c.ncb", "--bitrate", "300k", "--audio-bitrate", "16k"))
    info = json.loads(_ok(run_nc("info", "--json", tmp_path / "c.ncb")).stdout)
    assert [t["modality"] for t in info["tracks"]] == ["video", "audio"]
    assert info["tracks"][0]["length"] == 50
    _ok(run_nc("decode", tmp_path / "c.ncb", tmp_path / "c.mkv"))
    with av.open(str(tmp_path / "c.mkv")) as f:
        assert len(f.streams.video) == 1 and len(f.streams.audio) == 1
        frames = sum(1 for _ in f.decode(video=0))
    assert frames == 50


def test_a_videos_sound_is_coded_with_opus_unless_asked_otherwise(tmp_path):
    """A film's sound is music and noise as often as speech: not the speech-trained audio file default."""
    def sound_codec(*options):
        _ok(run_nc("encode", SAMPLES / "clip.mp4", tmp_path / "c.ncb", "--codec", "video/h264", *options))
        return json.loads(_ok(run_nc("info", "--json", tmp_path / "c.ncb")).stdout)["tracks"][1]["codec"]

    assert sound_codec() == "audio/opus"
    assert sound_codec("--audio-bitrate", "6k") == "audio/rvq"  # a rate asked for picks as for an audio file
    assert sound_codec("--audio-codec", "audio/fsq") == "audio/fsq"


def test_stdin_to_stdout(tmp_path):
    wav = (SAMPLES / "speech.wav").read_bytes()
    encoded = _ok(run_nc("encode", "-", "-", "--codec", "audio/opus", stdin=wav)).stdout
    assert encoded.startswith(b"\x89NCB")
    decoded = _ok(run_nc("decode", "-", "-", "--format", "wav", stdin=encoded)).stdout
    assert decoded.startswith(b"RIFF")


def test_info_human_and_chunks(tmp_path):
    _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "s.ncb", "--codec", "audio/opus"))
    text = _ok(run_nc("info", "--chunks", tmp_path / "s.ncb")).stdout.decode()
    assert "track 0: audio/opus v1" in text and "sample_rate=16000" in text and "6.125 s" in text
    assert "keyframe=True" in text


@pytest.mark.parametrize("args, code, pattern", [
    (["encode", "missing.wav", "x.ncb"], 1, "missing.wav: no such file"),
    (["encode", "README_NOT_MEDIA", "x.ncb"], 1, "not a supported audio, image or video file"),
    (["encode", "SPEECH", "x.ncb", "--codec", "audio/nope"], 2, "codec 'audio/nope' is not installed"),
    (["encode", "SPEECH", "x.ncb", "--codec", "opus"], 2, "codec 'opus' is not installed; did you mean audio/opus?"),
    (["encode", "CLIP", "x.ncb", "--codec", "audio/opus"], 2, "the input is video (a video's sound takes --audio-codec)"),
    (["encode", "SPEECH", "x.ncb", "--codec", "image/jpeg"], 2, "image/jpeg is an image codec; the input is audio"),
    (["encode", "SPEECH", "x.ncb", "--codec", "audio/opus", "--bitrate", "2k"], 2, "accepts 5k to 510k"),
    (["encode", "SPEECH", "x.ncb", "--bitrate", "lots"], 2, "cannot read bitrate"),
    (["encode", "SPEECH", "x.ncb", "--bitrate", "0.5"], 2, "a bitrate of 0.5 bit/s is far below any audio codec's: "
                                                           "write 0.5k for kbit/s"),
    (["decode", "SPEECH", "x.wav"], 1, "speech.wav: not an .ncb file (bad signature)"),
    (["encode", "NCB", "y.ncb"], 1, "s.ncb: an .ncb file, which nc decode reads"),
    (["decode", "missing.ncb", "x.wav"], 1, "cannot open missing.ncb"),
    (["info", "SPEECH"], 1, "not an .ncb file"),
])
def test_bad_input_gives_one_line(tmp_path, args, code, pattern):
    (tmp_path / "README_NOT_MEDIA").write_text("hello")
    if "NCB" in args:
        _opus_file(tmp_path)
    args = [str(SAMPLES / {"SPEECH": "speech.wav", "CLIP": "clip.mp4"}[a]) if a in ("SPEECH", "CLIP") else
            str(tmp_path / "s.ncb") if a == "NCB" else a for a in args]
    args = [str(tmp_path / a) if a in ("README_NOT_MEDIA", "x.ncb", "x.wav") else a for a in args]
    _fails_cleanly(run_nc(*args), code, pattern)
    assert not (tmp_path / "x.ncb").exists()


def _opus_file(tmp_path) -> bytes:
    _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "s.ncb", "--codec", "audio/opus"))
    return (tmp_path / "s.ncb").read_bytes()


def test_corrupt_chunk_named_then_recovered(tmp_path):
    data = bytearray(_opus_file(tmp_path))
    info = json.loads(_ok(run_nc("info", "--json", "--chunks", tmp_path / "s.ncb")).stdout)
    data[info["chunks"][2]["offset"] + 50] ^= 0x10
    (tmp_path / "bad.ncb").write_bytes(bytes(data))
    _fails_cleanly(run_nc("decode", tmp_path / "bad.ncb", tmp_path / "o.wav"), 1, "chunk 2")
    result = _ok(run_nc("decode", "--ignore-errors", tmp_path / "bad.ncb", tmp_path / "o.wav"))
    assert "nc: warning: chunk 2" in result.stderr.decode()
    assert sf.info(tmp_path / "o.wav").frames == sf.info(SAMPLES / "speech.wav").frames


def test_truncated_file(tmp_path):
    data = _opus_file(tmp_path)
    (tmp_path / "cut.ncb").write_bytes(data[: len(data) * 2 // 3])
    _fails_cleanly(run_nc("decode", tmp_path / "cut.ncb", tmp_path / "o.wav"), 1, "nc: error: the file is truncated")
    result = _ok(run_nc("decode", "--ignore-errors", tmp_path / "cut.ncb", tmp_path / "o.wav"))
    info = sf.info(tmp_path / "o.wav")
    assert 0 < info.frames < sf.info(SAMPLES / "speech.wav").frames
    assert f"audio/opus audio {info.frames / info.samplerate:.2f} s decoded (length unknown)" in result.stdout.decode()


def test_weights_mismatch_is_refused(tmp_path):
    """A track header naming other weights than the installed codec's (header CRC fixed up)."""
    import io
    import zlib

    from nc.bitstream import container as C

    data = _opus_file(tmp_path)
    reader = C.ContainerReader(io.BytesIO(data))
    head_end = reader.data_at
    head = data[16 + 8:head_end - 4].replace(b'"weights_sha256":""', b'"weights_sha256":"' + b"ab" * 32 + b'"')
    chunk = C.CHUNK_HEAD.pack(len(head), b"HEAD") + head + C.CHUNK_CRC.pack(zlib.crc32(b"HEAD" + head))
    (tmp_path / "w.ncb").write_bytes(data[:16] + chunk + data[head_end:])
    _fails_cleanly(run_nc("decode", tmp_path / "w.ncb", tmp_path / "o.wav"), 1, "encoded with audio/opus weights abababababab")


def test_usage_errors_are_one_line_with_exit_code_2():
    _fails_cleanly(run_nc("encode"), 2, "the following arguments are required: input, output")
    _fails_cleanly(run_nc("encode", "a.wav", "b.ncb", "--bitrate", "-6k"), 2, "goes after '=', e.g. --bitrate=-6k")


def test_encode_never_destroys_files(tmp_path):
    wav = tmp_path / "same.wav"
    wav.write_bytes((SAMPLES / "speech.wav").read_bytes())
    _fails_cleanly(run_nc("encode", wav, wav), 2, "overwrite the input")
    assert wav.read_bytes() == (SAMPLES / "speech.wav").read_bytes()
    keep = tmp_path / "keep.ncb"
    keep.write_bytes(b"precious")
    _fails_cleanly(run_nc("encode", tmp_path / "missing.wav", keep), 1, "no such file")
    assert keep.read_bytes() == b"precious"
    other = tmp_path / "other.WAV"  # encode and decode swapped: a media file would become .ncb bytes
    other.write_bytes(b"a recording")
    _fails_cleanly(run_nc("encode", SAMPLES / "speech.wav", other), 2, "nc encode writes an .ncb file, not .wav")
    assert other.read_bytes() == b"a recording"
    _fails_cleanly(run_nc("encode", SAMPLES / "speech.wav", f"{tmp_path}/new/"), 2, "names a folder")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".nc-")] == []


def test_failed_decode_leaves_no_partial_file(tmp_path):
    data = bytearray(_opus_file(tmp_path))
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.ncb").write_bytes(bytes(data))
    (tmp_path / "o.wav").write_bytes(b"earlier result")
    _fails_cleanly(run_nc("decode", tmp_path / "bad.ncb", tmp_path / "o.wav"), 1, "corrupt")
    assert (tmp_path / "o.wav").read_bytes() == b"earlier result"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".nc-")] == []


def test_pipe_and_file_decode_to_the_same_length(tmp_path):
    data = _opus_file(tmp_path)
    piped = _ok(run_nc("decode", "-", "-", "--format", "wav", stdin=data)).stdout
    (tmp_path / "p.wav").write_bytes(piped)
    assert sf.info(tmp_path / "p.wav").frames == sf.info(SAMPLES / "speech.wav").frames


def test_damaged_image_fails_even_with_ignore_errors(tmp_path):
    _ok(run_nc("encode", SAMPLES / "photo.png", tmp_path / "p.ncb", "--codec", "image/jpeg"))
    data = bytearray((tmp_path / "p.ncb").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.ncb").write_bytes(bytes(data))
    _fails_cleanly(run_nc("decode", "--ignore-errors", tmp_path / "bad.ncb", tmp_path / "o.png"), 1,
                   "image could not be decoded")
    assert not (tmp_path / "o.png").exists()


def test_sixteen_bit_grey_png_keeps_its_tones(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    _ok(run_nc("encode", tmp_path / "g16.png", tmp_path / "g.ncb", "--codec", "image/webp", "--quality", "100"))
    _ok(run_nc("decode", tmp_path / "g.ncb", tmp_path / "g.png"))
    decoded = np.asarray(Image.open(tmp_path / "g.png")).astype(float)
    assert decoded.ndim == 2 and abs(decoded.mean() - (ramp >> 8).mean()) < 2


def test_images_are_read_as_viewers_show_them(tmp_path):
    """EXIF orientation applied (a phone photo came back sideways), float TIFFs in [0, 1] kept (they came
    out black), LAB not taken for RGBA (its a* band looked like alpha), several frames refused (only the
    first was kept, silently)."""
    from nc.errors import MediaError

    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif)
    upright = nc.decode(nc.encode(tmp_path / "phone.png", codec="image/webp", quality=100)).data
    assert upright.shape == (40, 30, 3)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    assert nc.decode(nc.encode(tmp_path / "f.tif", codec="image/webp", quality=100)).data.max() == 128
    Image.new("LAB", (4, 4), (50, 10, 10)).save(tmp_path / "lab.tif")
    assert nc.decode(nc.encode(tmp_path / "lab.tif", codec="image/webp", quality=100))[0].info.facts.mode == "RGB"
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    frames[0].save(tmp_path / "mpo.jpg", format="MPO", save_all=True, append_images=frames[1:2])  # a camera's
    assert nc.decode(nc.encode(tmp_path / "mpo.jpg", codec="image/webp", quality=100)).data[0, 0, 0] > 200  # red
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(MediaError, match="the image has 3 frames .* make it a video"):
        nc.encode(tmp_path / "a.gif", codec="image/webp")


def test_soundtrack_options_on_plain_audio_are_refused(tmp_path):
    _fails_cleanly(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "x.ncb", "--audio-bitrate", "6k"), 2,
                   "soundtrack")


def test_outputs_get_the_umask_mode_or_keep_the_replaced_files(tmp_path):
    old = os.umask(0o022)
    try:
        _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "s.ncb", "--codec", "audio/opus"))
        _ok(run_nc("decode", tmp_path / "s.ncb", tmp_path / "s.wav"))
        _ok(run_nc("tokens", SAMPLES / "speech.wav", "-o", tmp_path / "codes"))  # np.save's name: codes.npy
        for name in ("s.ncb", "s.wav", "codes.npy"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
        (tmp_path / "s.ncb").chmod(0o640)
        _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "s.ncb", "--codec", "audio/opus"))
        assert (tmp_path / "s.ncb").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_outputs_go_through_links_and_into_fifos(tmp_path):
    """A symlink stays and its target gets the file; a named pipe gets the bytes and stays a pipe (as a
    device such as /dev/null does)."""
    (tmp_path / "link.ncb").symlink_to(tmp_path / "target.ncb")
    _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "link.ncb", "--codec", "audio/opus"))
    assert (tmp_path / "link.ncb").is_symlink() and (tmp_path / "target.ncb").read_bytes().startswith(b"\x89NCB")
    os.mkfifo(tmp_path / "pipe")
    received = []
    reader = threading.Thread(target=lambda: received.append((tmp_path / "pipe").read_bytes()), daemon=True)
    reader.start()
    result = run_nc("decode", tmp_path / "target.ncb", tmp_path / "pipe", "--format", "wav")
    reader.join(timeout=60)
    if reader.is_alive():  # nc never opened the pipe: let the reader go
        try:
            os.close(os.open(tmp_path / "pipe", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    _ok(result)
    assert stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode) and received[0].startswith(b"RIFF")


def test_outputs_that_cannot_be_written_fail_in_one_line(tmp_path):
    (tmp_path / "adir").mkdir()
    _fails_cleanly(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "adir"), 1, "it is a directory")
    _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "s.ncb", "--codec", "audio/opus"))
    _fails_cleanly(run_nc("decode", tmp_path / "s.ncb", tmp_path / "adir" / "x" / "o.wav"), 1, "no such directory")
    (tmp_path / "s.wav").write_bytes((tmp_path / "s.ncb").read_bytes())  # an .ncb by another name
    _fails_cleanly(run_nc("decode", tmp_path / "s.wav", tmp_path / "s.wav"), 2, "would overwrite the input")
    assert (tmp_path / "s.wav").read_bytes() == (tmp_path / "s.ncb").read_bytes()


def test_image_files_that_are_not_images_or_are_cut(tmp_path):
    (tmp_path / "text.png").write_text("hello")
    _fails_cleanly(run_nc("encode", tmp_path / "text.png", tmp_path / "x.ncb"), 1, "not a supported")
    (tmp_path / "cut.png").write_bytes((SAMPLES / "photo.png").read_bytes()[:20000])
    _fails_cleanly(run_nc("encode", tmp_path / "cut.png", tmp_path / "x.ncb"), 1, "cut.png: the image is truncated")
    assert not (tmp_path / "x.ncb").exists()


def test_ignore_errors_fails_when_nothing_could_be_recovered(tmp_path):
    data = _opus_file(tmp_path)
    (tmp_path / "cut.ncb").write_bytes(data[:400])  # inside the first chunk
    _fails_cleanly(run_nc("decode", "--ignore-errors", tmp_path / "cut.ncb", tmp_path / "o.wav"), 1,
                   "nothing could be decoded: the file is truncated inside chunk 0")
    assert not (tmp_path / "o.wav").exists()


def test_tokens_pick_the_codec_by_the_inputs_kind_and_refuse_empty_media(tmp_path):
    """Without --codec, an image gets image/vqgan's tokens (not audio/rvq's refusal); an empty sound has no
    tokens to give, which `nc tokens` says itself instead of writing a file `nc detokenize` refuses."""
    import soundfile as sf

    _ok(run_nc("tokens", SAMPLES / "photo.png", "-o", tmp_path / "p.npz", "--quality", "1"))
    with np.load(tmp_path / "p.npz") as z:
        assert json.loads(str(z["meta"]))["codec"] == "image/vqgan"
    assert nc.tokens(np.zeros((32, 48, 3), np.uint8), quality=1).shape == (1, 2, 3)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    _fails_cleanly(run_nc("tokens", tmp_path / "empty.wav", "-o", tmp_path / "e.npz"), 2,
                   "no audio to make tokens of (it is empty)")
    np.save(tmp_path / "p.npy", np.zeros((1, 2, 3), np.int16))
    _fails_cleanly(run_nc("detokenize", tmp_path / "p.npy", tmp_path / "p.png"), 2,
                   "a .npy does not say which codec made its tokens: add --codec")


def test_detokenize_refuses_empty_codes_bad_files_and_frame_rates(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((1, 12, 0), np.int16))
    _fails_cleanly(run_nc("detokenize", tmp_path / "empty.npy", tmp_path / "o.wav"), 2, "no tokens")
    (tmp_path / "text.npy").write_text("hello")
    _fails_cleanly(run_nc("detokenize", tmp_path / "text.npy", tmp_path / "o.wav"), 1, "not a .npy of codes or an .npz from `nc tokens`")
    _fails_cleanly(run_nc("detokenize", tmp_path / "empty.npy", tmp_path / "o.mp4", "--codec", "video/bsqvit",
                          "--fps", "0"), 2, "--fps takes 1 to 1000")


def test_train_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    listed = run_nc("train")
    assert listed.returncode == 2 and b"image/hvae" in listed.stdout and b"video/wfvae" in listed.stdout
    _fails_cleanly(run_nc("train", "--data", tmp_path / "empty", "--out", tmp_path / "o"), 2, "needs one of the codecs")
    _fails_cleanly(run_nc("train", "image/hvae", "--data", tmp_path / "empty", "--out", tmp_path / "o", "--batch", "0"),
                   2, "--batch: must be above 0")
    _fails_cleanly(run_nc("train", "video/wfvae", "--data", tmp_path / "empty", "--out", tmp_path / "w", "--steps", "1"),
                   1, "no clips/ or photos/")  # at once: no clip-making processes left waiting
    _fails_cleanly(run_nc("train", "--data", tmp_path / "empty", "--out", tmp_path / "h", "image/hvae",
                          "--init", SAMPLES / "speech.wav"), 1, "cannot load weights")
    _fails_cleanly(run_nc("train", "image/hvae", "--data", tmp_path / "empty", "--out", tmp_path / "o",
                          "--config", "[1]"), 2, "--config: not a JSON object")
    _fails_cleanly(run_nc("train", "audio/rvq", "--data", tmp_path / "empty", "--out", tmp_path / "o",
                          "--config", '{"stages": "24", "dec_blok": 1}'), 1, "--config has 'dec_blok', which the")
    _fails_cleanly(run_nc("train", "audio/rvq", "--data", tmp_path / "empty", "--out", tmp_path / "o",
                          "--config", '{"stages": "24"}'), 1, "--config gives stages='24': not the kind")
    vqgan = Path(nc.__file__).parent / "codecs" / "weights" / "image_vqgan.safetensors"
    _fails_cleanly(run_nc("train", "image/hvae", "--data", tmp_path / "empty", "--out", tmp_path / "o",
                          "--init", vqgan), 1, "image_vqgan.safetensors has 'attention'")


def test_a_weights_variable_naming_a_missing_file_is_a_warning_when_nc_chooses(tmp_path):
    env = {**os.environ, "NC_RVQ_WEIGHTS": str(tmp_path / "weigths.safetensors")}
    result = subprocess.run([sys.executable, "-m", "nc", "encode", SAMPLES / "speech.wav", tmp_path / "s.ncb"],
                            env=env, capture_output=True, timeout=300)
    _ok(result)
    assert b"nc: warning: plugin 'nc': NC_RVQ_WEIGHTS names" in result.stderr and b"audio/fsq" in result.stdout


def test_surround_sound_keeps_its_channels_in_a_video_file_and_too_many_are_refused(tmp_path):
    import av

    from nc.media.facts import AudioFacts, VideoFacts

    for channels in (6, 8):
        with nc.open(tmp_path / f"{channels}.ncb", "wb", tracks=[
                nc.TrackSpec(VideoFacts(64, 48, 25, 1), "video/h264"),
                nc.TrackSpec(AudioFacts(48000, channels), "audio/opus", "64k")]) as w:
            w.write(np.full((25, 48, 64, 3), 100, np.uint8), track=0)
            w.write(np.zeros((48000, channels), np.float32), track=1)
    _ok(run_nc("decode", tmp_path / "6.ncb", tmp_path / "6.mkv"))
    with av.open(str(tmp_path / "6.mkv")) as f:
        assert f.streams.audio[0].codec_context.channels == 6
    _fails_cleanly(run_nc("decode", tmp_path / "8.ncb", tmp_path / "8.mkv"), 1,
                   "a .mkv file holds sound of 1 to 7 channels, not 8")
    assert not (tmp_path / "8.mkv").exists()


def test_running_out_of_memory_is_one_line_not_an_internal_error(monkeypatch, capsys):
    from nc import api
    from nc.cli.main import main

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.46 GiB")

    monkeypatch.setattr(api, "decode_file", too_big)
    assert main(["decode", str(SAMPLES / "speech.wav"), "/tmp/never.wav"]) == 1
    assert capsys.readouterr().err == "nc: error: out of memory: Unable to allocate 1.46 GiB\n"


def test_a_bug_inside_a_plugin_names_the_plugin(monkeypatch, capsys, tmp_path):
    """A third-party codec's crash is reported as that plugin's, so its user knows whom to tell."""
    import nc_toy

    from nc.cli.main import main

    monkeypatch.setattr(nc_toy, "mulaw_encode", None)  # the toy's encoder now fails in its own code
    assert main(["encode", str(SAMPLES / "speech.wav"), str(tmp_path / "x.ncb"), "--codec", "audio/toy-mulaw"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nc: internal error in plugin 'toy' (audio/toy-mulaw): TypeError: "), err
    monkeypatch.undo()

    def nc_bug(*args, **kwargs):
        raise AttributeError("nc's own")

    from nc import api

    monkeypatch.setattr(api, "decode_file", nc_bug)
    assert main(["decode", str(SAMPLES / "speech.wav"), str(tmp_path / "y.wav")]) == 1
    assert capsys.readouterr().err.startswith("nc: internal error: AttributeError: nc's own")


def _signal_mid_encode(tmp_path, signum, ignored: bool = False, seconds: int = 600) -> tuple[int, str]:
    """Send `signum` to an `nc encode` once its temporary output exists; (exit status, stderr)."""
    import signal
    import time

    t = np.arange(16000 * seconds) / 16000
    sf.write(tmp_path / "long.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    (tmp_path / "out.ncb").write_bytes(b"earlier output")
    process = subprocess.Popen([sys.executable, "-m", "nc", "encode", str(tmp_path / "long.wav"),
                                str(tmp_path / "out.ncb"), "--codec", "audio/opus"], stderr=subprocess.PIPE,
                               preexec_fn=(lambda: signal.signal(signum, signal.SIG_IGN)) if ignored else None)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".nc-") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    return process.returncode, err.decode().strip()


def test_sigterm_mid_encode_leaves_no_temporary_file_and_the_old_output(tmp_path):
    """A `kill` (or a closed terminal) unwinds like Ctrl-C: the hidden .part file went unremoved."""
    import signal

    assert _signal_mid_encode(tmp_path, signal.SIGTERM) == (128 + signal.SIGTERM, "nc: terminated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav", "out.ncb"]
    assert (tmp_path / "out.ncb").read_bytes() == b"earlier output"


def test_a_sighup_ignored_when_nc_starts_stays_ignored(tmp_path):
    """`nohup nc encode ...` must survive the terminal closing."""
    import signal

    status, _ = _signal_mid_encode(tmp_path, signal.SIGHUP, ignored=True, seconds=60)
    assert status == 0 and (tmp_path / "out.ncb").read_bytes()[:8] != b"earlier "


def test_a_full_stdout_is_one_line_not_an_internal_error(monkeypatch, capsys):
    import errno
    import io

    from nc.cli.main import main

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(Full()))
    assert main(["encode", str(SAMPLES / "speech.wav"), "-", "--codec", "audio/opus"]) == 1
    assert capsys.readouterr().err == "nc: error: cannot write to stdout: No space left on device\n"


def test_an_image_format_that_would_lose_part_of_the_image_is_refused(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    (tmp_path / "a.ncb").write_bytes(nc.encode(rgba, codec="image/webp", quality=100))
    _fails_cleanly(run_nc("decode", tmp_path / "a.ncb", tmp_path / "a.jpg"), 2,
                   "a.jpg: JPEG has no alpha channel and the image is RGBA")
    (tmp_path / "c.ncb").write_bytes(nc.encode(rgba[:, :, :3].copy(), codec="image/webp", quality=100))
    _fails_cleanly(run_nc("decode", tmp_path / "c.ncb", tmp_path / "c.pgm"), 2, "a .pgm is greyscale")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ncb", "c.ncb"]


def test_a_writers_error_names_the_output_not_its_temporary_file(tmp_path, monkeypatch):
    from nc.errors import MediaError
    from nc.media import files

    def fails(self, track, block):
        raise MediaError(f"cannot write {self.path}: the disk said no")

    monkeypatch.setattr(files._ImageFileWriter, "write", fails)
    sink = files.MediaSink(str(tmp_path / "out.png"), [files.ImageFacts(2, 2, "RGB")])
    with pytest.raises(MediaError, match=f"^cannot write {tmp_path / 'out.png'}: the disk said no$"):
        sink.write(0, np.zeros((2, 2, 3), np.uint8))
    sink.abort()


def test_tokens_can_go_to_stdout(tmp_path):
    import io

    result = run_nc("tokens", SAMPLES / "speech.wav", "-o", "-", "--codec", "audio/rvq", "--bitrate", "1.5k")
    assert result.returncode == 0, result.stderr
    assert np.load(io.BytesIO(result.stdout)).shape[:2] == (1, 3) and b"3 stages" in result.stderr
    assert not (tmp_path / "-.npy").exists() and not os.path.exists("-.npy")


def test_the_content_decides_what_a_file_is_not_its_extension(tmp_path):
    """A PNG named .wav became a one-frame H.264 video; a WAV named .png was refused."""
    import shutil

    shutil.copy(SAMPLES / "photo.png", tmp_path / "photo.wav")
    shutil.copy(SAMPLES / "speech.wav", tmp_path / "speech.png")
    assert nc.decode(nc.encode(tmp_path / "photo.wav", codec="image/webp"))[0].info.modality == "image"
    assert nc.decode(nc.encode(tmp_path / "speech.png", codec="audio/opus"))[0].info.modality == "audio"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="Python 3.11's argparse turns `-- --` into []")
def test_a_double_separator_is_a_usage_error_not_an_internal_one():
    _fails_cleanly(run_nc("encode", SAMPLES / "speech.wav", "--", "--"), 2,
                   "the following arguments are required: output")


def test_tokens_in_an_npz_carry_their_codec_facts_and_length(tmp_path):
    """A .npy holds bare codes (detokenize needs --codec and --sample-rate, and pads); an .npz from
    `nc tokens` says them, so the media comes back at its rate, size and length, and a contradicting
    option is refused."""
    _ok(run_nc("tokens", SAMPLES / "speech.wav", "-o", tmp_path / "s.npz", "--bitrate", "3k"))
    _ok(run_nc("detokenize", tmp_path / "s.npz", tmp_path / "s.wav"))
    assert sf.info(tmp_path / "s.wav").frames == sf.info(SAMPLES / "speech.wav").frames
    _fails_cleanly(run_nc("detokenize", tmp_path / "s.npz", tmp_path / "f.wav", "--codec", "audio/fsq"), 2,
                   "the tokens record --codec audio/rvq; --codec audio/fsq contradicts them")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    _ok(run_nc("tokens", tmp_path / "p.png", "-o", tmp_path / "p.npz", "--codec", "image/vqgan", "--quality", "1"))
    _ok(run_nc("detokenize", tmp_path / "p.npz", tmp_path / "back.png"))
    assert Image.open(tmp_path / "back.png").size == (50, 40)  # not the tokens' 64 x 48
    with np.load(tmp_path / "s.npz") as z:
        meta = json.loads(str(z["meta"]))
        np.savez(tmp_path / "neg.npz", codes=z["codes"], meta=np.array(json.dumps({**meta, "length": -8000})))
    _fails_cleanly(run_nc("detokenize", tmp_path / "neg.npz", tmp_path / "n.wav"), 1, "cannot read tokens from")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    _fails_cleanly(run_nc("detokenize", tmp_path / "junk.npz", tmp_path / "j.wav"), 1, "cannot read tokens from")


def test_a_variable_frame_rate_video_keeps_its_duration(tmp_path):
    """Frames at their timestamps become frames at the constant rate (a phone's video was shortened:
    every frame was taken as one period long)."""
    import av
    from fractions import Fraction

    times = [0, 0.04, 0.08, 0.2, 0.24, 0.56]  # 25 fps slots 0, 1, 2, 5, 6, 14
    with av.open(str(tmp_path / "vfr.mkv"), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.time_base = 16, 16, "yuv444p", Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    from nc.media.files import open_media

    frames = np.concatenate([b for _, b in open_media(str(tmp_path / "vfr.mkv")).blocks()])
    assert [int(f[0, 0, 0]) // 40 for f in frames] == [0, 1, 2, 2, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5]


def test_constant_rate_holds_no_gap_longer_than_ten_seconds():
    from fractions import Fraction

    from nc.media.files import _ConstantRate

    rate = _ConstantRate(Fraction(25))
    shown = [f for t, f in ((0.0, "a"), (1e9, "b"), (1e9 + 0.08, "c")) for f in rate.push(f, t)] + list(rate.flush())
    assert shown == ["a", "b", "b", "c"]  # a crafted jump of 30 years is a discontinuity, not 8e10 copies of "a"
    rate = _ConstantRate(Fraction(1000))  # gaps just under the limit, again and again
    shown = sum(1 for i in range(100) for _ in rate.push(i, i * 9.9))
    assert shown < 2 * 100 + 10 * 1000  # the frames out keep near the frames in


def _clip_with_late_sound(path, sound_at: float, frames: int = 25, rate: int = 16000):
    """An .mkv: `frames` frames at 25 fps from 0 s, and a 1 s tone whose first sample is at `sound_at` s."""
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as out:
        video = out.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv444p"
        sound = out.add_stream("pcm_s16le", rate=rate)
        sound.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 9 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 32767).astype(np.int16)
        for at in range(0, rate, 1000):
            frame = av.AudioFrame.from_ndarray(tone[None, at:at + 1000], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, round(sound_at * rate) + at, Fraction(1, rate)
            out.mux(sound.encode(frame))
        out.mux(sound.encode())


def test_sound_that_starts_after_the_video_keeps_its_place(tmp_path):
    """Both tracks were read from their own first sample: sound starting 0.5 s into the video came out
    0.5 s early (a stream cut, a capture whose sound came late)."""
    from nc.media.files import open_media

    _clip_with_late_sound(tmp_path / "late.mkv", sound_at=0.5)
    blocks = list(open_media(str(tmp_path / "late.mkv")).blocks())
    video = np.concatenate([b for t, b in blocks if t == 0])
    sound = np.concatenate([b for t, b in blocks if t == 1])
    assert len(video) == 25
    assert np.all(sound[:8000] == 0) and np.abs(sound[8000:8100]).max() > 0.01  # silence, then the tone at 0.5 s


def test_sound_timeline_fills_holes_and_drops_overlaps():
    from nc.media.files import _common_origin, _SoundTimeline

    line = _SoundTimeline(rate=1000, channels=1, origin=0.0)
    placed = [len(b) for t, n in ((0.1, 100), (0.2, 100), (0.6, 100), (0.65, 100), (0.7551, 10)) for b in
              line.place(np.ones((n, 1), np.float32), t)]
    # 100 silent, 100, 100, 300 silent (a hole), 100, the overlap of 50 dropped, 50; 5 ms of jitter let through
    assert placed == [100, 100, 100, 300, 100, 50, 10]
    line = _SoundTimeline(rate=1000, channels=1, origin=0.0)  # holes just under the limit, again and again
    assert sum(len(b) for i in range(100) for b in line.place(np.ones((10, 1), np.float32), i * 9.9)) < 3 * 1000 * 10
    assert _common_origin(video=10.0, audio=9.978, fps=Fraction(25)) == 10.0  # priming: trimmed, no frame added
    assert _common_origin(video=0.5, audio=0.0, fps=Fraction(25)) == pytest.approx(0.02)  # 12 frames held
    # starts read exactly (Fractions): 1.16 - 1.0 is 4 frames at 25 fps; in floats, 3.99 floored to 3
    assert _common_origin(video=Fraction(116, 100), audio=Fraction(1), fps=Fraction(25)) == 1.0
    from types import SimpleNamespace

    from nc.media.files import _start

    assert _start(SimpleNamespace(start_time=1160, time_base=Fraction(1, 1000))) == Fraction(116, 100)


def test_an_audio_files_cover_art_is_not_a_video(tmp_path):
    """An .m4a with cover art was taken for a video ("frame rate 90000/1 is out of the supported range")."""
    import av

    from nc.media.files import open_media

    with av.open(str(tmp_path / "song.m4a"), "w", format="mp4") as out:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 16, 16, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        picture = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        picture.pts = 0
        out.mux(cover.encode(picture) + cover.encode())
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        tone.sample_rate, tone.pts = 16000, 0
        out.mux(sound.encode(tone) + sound.encode())
    source = open_media(str(tmp_path / "song.m4a"))
    assert [f.modality for f in source.facts] == ["audio"]
    assert all(t == 0 for t, _ in source.blocks())


def test_decoded_images_are_saved_without_a_second_loss(tmp_path):
    """An RGBA image to .bmp or .gif lost its alpha silently; .webp was coded lossily a second time; a grey
    image's .npz tokens came back RGB."""
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    (tmp_path / "a.ncb").write_bytes(nc.encode(rgba, codec="image/webp", quality=100))
    for ext in (".bmp", ".gif"):
        _fails_cleanly(run_nc("decode", tmp_path / "a.ncb", tmp_path / f"a{ext}"), 2, "no alpha channel")
    _ok(run_nc("decode", tmp_path / "a.ncb", tmp_path / "a.webp"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.webp")), nc.decode(tmp_path / "a.ncb").data)
    Image.fromarray(rgba[:, :, 0]).save(tmp_path / "g.png")
    _ok(run_nc("tokens", tmp_path / "g.png", "-o", tmp_path / "g.npz", "--codec", "image/vqgan", "--quality", "1"))
    _ok(run_nc("detokenize", tmp_path / "g.npz", tmp_path / "g2.png"))
    assert Image.open(tmp_path / "g2.png").mode == "L"


def test_a_rotated_video_is_read_upright(tmp_path):
    """A phone's portrait video is stored landscape with a display rotation; it came back sideways."""
    import av

    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:4, :4] = 255  # a marker in the stored top-left corner
    with av.open(str(tmp_path / "rot.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv444p"
        stream.set_display_rotation(90)
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    from nc.media.files import open_media

    source = open_media(str(tmp_path / "rot.mp4"))
    frames = np.concatenate([b for _, b in source.blocks()])
    assert (source.facts[0].width, source.facts[0].height) == (16, 32) and frames.shape == (3, 32, 16, 3)
    # where `ffmpeg -i rot.mp4 x.png` (autorotate) puts the marker: bottom left
    np.testing.assert_array_equal(np.argwhere(frames[0, :, :, 0] > 128).mean(0), [29.5, 1.5])


def _anamorphic_mp4(path, rotation: int = 0) -> None:
    """3 frames of 64x48 whose pixels players show 32:27 wide (a 4:3 DVD frame stretched to 16:9)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(32, 27)
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 60 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def test_anamorphic_video_keeps_its_pixel_shape(tmp_path):
    """A DVD's 720x480 frames are shown 16:9 through their sample aspect ratio; nc dropped it, and the
    decoded video played squeezed to 3:2."""
    import av

    _anamorphic_mp4(tmp_path / "dvd.mp4")
    _ok(run_nc("encode", tmp_path / "dvd.mp4", tmp_path / "dvd.ncb", "--codec", "video/h264"))
    assert b"sar_num=32, sar_den=27" in run_nc("info", tmp_path / "dvd.ncb").stdout
    _ok(run_nc("decode", tmp_path / "dvd.ncb", tmp_path / "out.mp4"))
    with av.open(str(tmp_path / "out.mp4")) as f:
        assert f.streams.video[0].sample_aspect_ratio == Fraction(32, 27)
    result = run_nc("decode", tmp_path / "dvd.ncb", tmp_path / "out.mkv")  # Matroska's is out of PyAV's reach
    assert result.returncode == 0 and b"does not keep this video's sample aspect ratio 32:27: players show " \
        b"64x48, not 76x48" in result.stderr
    _ok(run_nc("tokens", tmp_path / "dvd.mp4", "-o", tmp_path / "t.npz", "--codec", "video/bsqvit", "--quality", "1"))
    _ok(run_nc("detokenize", tmp_path / "t.npz", tmp_path / "back.mp4"))  # its tokens make it anamorphic again
    with av.open(str(tmp_path / "back.mp4")) as f:
        assert f.streams.video[0].sample_aspect_ratio == Fraction(32, 27)
    from nc.media.files import open_media

    _anamorphic_mp4(tmp_path / "turned.mp4", rotation=90)  # turned upright, a wide pixel stands tall
    assert open_media(str(tmp_path / "turned.mp4")).facts[0].sar == Fraction(27, 32)


def test_video_written_as_yuv_says_its_colour_matrix(tmp_path):
    """Untagged, an HD .mp4 was read by players as BT.709 while nc converted with BT.601: colours shifted."""
    import av

    (tmp_path / "v.ncb").write_bytes(nc.encode(np.full((2, 32, 32, 3), 100, np.uint8), codec="video/h264", fps=25))
    for ext in (".mp4", ".webm"):
        _ok(run_nc("decode", tmp_path / "v.ncb", tmp_path / f"v{ext}"))
        with av.open(str(tmp_path / f"v{ext}")) as f:
            cc = f.streams.video[0].codec_context
            assert (int(cc.colorspace), int(cc.color_range)) == (6, 1)  # BT.601 (SMPTE 170M), limited range


def test_an_odd_size_padded_for_mp4_is_said(tmp_path):
    (tmp_path / "v.ncb").write_bytes(nc.encode(np.full((2, 9, 17, 3), 100, np.uint8), codec="video/h264", fps=25))
    result = run_nc("decode", tmp_path / "v.ncb", tmp_path / "v.mp4")
    assert result.returncode == 0 and b"nc: warning: a .mp4 file's 4:2:0 video needs even sides: 17x9 is written " \
        b"as 18x10" in result.stderr
    assert b"warning" not in run_nc("decode", tmp_path / "v.ncb", tmp_path / "v.mkv").stderr


def _rgb_icc_profile(red, green, blue, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB (matrix/TRC) display profile: primaries as D50 XYZ, one gamma for each channel."""
    import struct

    def s15(*values):
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    name = b"test wide gamut\0"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(4 + 4 + 2 + 1 + 67)),
            (b"wtpt", b"XYZ " + bytes(4) + s15(0.9642, 1.0, 0.8249)),
            (b"rXYZ", b"XYZ " + bytes(4) + s15(*red)), (b"gXYZ", b"XYZ " + bytes(4) + s15(*green)),
            (b"bXYZ", b"XYZ " + bytes(4) + s15(*blue))]
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    table, data, at = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, body in tags:
        table += signature + struct.pack(">II", at + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    size = at + len(data)
    header = struct.pack(">I4sI4s4s4s12s4s", size, bytes(4), 0x02100000, b"mntr", b"RGB ", b"XYZ ", bytes(12), b"acsp")
    header += bytes(4 + 4 + 4 + 4 + 8 + 4) + s15(0.9642, 1.0, 0.8249) + bytes(4 + 16 + 28)
    return header + struct.pack(">I", len(tags)) + table + data


def test_a_photo_in_another_colour_space_is_read_in_srgb(tmp_path):
    """A Display P3 photo (an iPhone's) was read as if its numbers were sRGB: its colours shifted."""
    from PIL import ImageCms

    p3 = _rgb_icc_profile((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
    photo = Image.new("RGB", (4, 4), (40, 200, 60))
    photo.save(tmp_path / "p3.png", icc_profile=p3)
    from nc.media.files import open_media

    pixel = next(open_media(str(tmp_path / "p3.png")).blocks())[1][0, 0]
    import io

    want = ImageCms.profileToProfile(photo, ImageCms.ImageCmsProfile(io.BytesIO(p3)), ImageCms.createProfile("sRGB"))
    assert tuple(pixel) == want.getpixel((0, 0)) and pixel[1] > 200 and pixel[0] < 40  # greener than sRGB can say


def test_info_gives_each_tracks_measured_rate(tmp_path):
    """`nc info` showed only the rate point's name; the bitrate a file has was nowhere but in `nc encode`'s line."""
    _ok(run_nc("encode", SAMPLES / "clip.mp4", tmp_path / "c.ncb", "--codec", "video/h264", "--audio-codec",
               "audio/opus"))
    info = json.loads(_ok(run_nc("info", "--json", "--chunks", tmp_path / "c.ncb")).stdout)
    for track in info["tracks"]:
        chunks = [c for c in info["chunks"] if c["track"] == track["index"]]
        assert track["bytes"] == sum(c["bytes"] + 12 + 20 for c in chunks)  # payload, chunk framing, DATA header
    plain = _ok(run_nc("info", tmp_path / "c.ncb")).stdout.decode()
    kbps = info["tracks"][1]["bytes"] * 8 / info["tracks"][1]["seconds"] / 1000
    assert f"s, {kbps:.2f} kbps" in plain


def test_effort_is_passed_to_codecs_that_offer_it_and_refused_by_others(tmp_path):
    _fails_cleanly(run_nc("encode", SAMPLES / "photo.png", tmp_path / "j.ncb", "--codec", "image/vqgan", "--effort", "1"),
                   2, "image/vqgan has no effort levels, not 1 (image/avif, image/hvae, image/jpeg, image/webp do")
    _fails_cleanly(run_nc("encode", SAMPLES / "photo.png", tmp_path / "h.ncb", "--codec", "image/hvae", "--effort", "7"),
                   2, "image/hvae takes --effort 0-1, not 7")
    assert not (tmp_path / "j.ncb").exists() and not (tmp_path / "h.ncb").exists()
    listing = _ok(run_nc("codecs")).stdout.decode()
    assert "efforts: 0-1" in next(line for line in listing.splitlines() if line.startswith("image/hvae"))


def test_effort_one_on_video_shows_progress_however_short_the_video(tmp_path, monkeypatch):
    """Refining every GOP codes a few frames a second, so a 2 s clip can take minutes: it gets a bar;
    effort 0 shows one only from a minute of media."""
    import io

    import nc.api as api

    asked = []
    real = api._progress
    monkeypatch.setattr(api, "_progress", lambda *a, **k: asked.append(k.get("min_seconds", 60)) or real(*a, **k))
    for effort in (0, 1):
        api.encode_file(str(SAMPLES / "clip.mp4"), io.BytesIO(), codec="video/h264", effort=effort, progress=True)
    assert asked == [60, 0]


def test_binary_output_is_not_sent_to_a_terminal(tmp_path):
    """`nc encode x.wav -` typed at a terminal would fill it with bytes; a pipe gets them as before."""
    import pty

    main_fd, terminal = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "nc", "encode", str(SAMPLES / "speech.wav"), "-", "--codec",
                                 "audio/opus"], stdout=terminal, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(terminal)
        os.close(main_fd)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == ("nc: error: the output is binary and stdout is a terminal: "
                                              "redirect it (> out) or pipe it")
    piped = run_nc("encode", SAMPLES / "speech.wav", "-", "--codec", "audio/opus")
    assert piped.returncode == 0 and piped.stdout.startswith(b"\x89NCB")


def test_sound_above_full_scale_is_warned_of_when_encoded_and_when_clipped(tmp_path):
    """A float WAV peaking at 3.0: encoding says the codecs are not made for it, and the 16-bit .wav it
    decodes to says how much it clipped (nc.decode keeps the peaks); sound within full scale says nothing."""
    t = np.arange(32000) / 16000
    sf.write(tmp_path / "hot.wav", (3.0 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="FLOAT")
    made = _ok(run_nc("encode", tmp_path / "hot.wav", tmp_path / "h.ncb", "--codec", "audio/opus", "--bitrate", "64k"))
    assert "nc: warning: the sound goes above full scale (to 3.00, +9.5 dBFS)" in made.stderr.decode()
    assert np.abs(nc.decode(str(tmp_path / "h.ncb")).data).max() > 2.5
    back = _ok(run_nc("decode", tmp_path / "h.ncb", tmp_path / "h.wav")).stderr.decode()
    assert re.search(r"h\.wav: \d+ sound samples above full scale \(peak 3\.\d\d, \+9\.\d dBFS\) were clipped", back)
    _ok(run_nc("encode", SAMPLES / "speech.wav", tmp_path / "s.ncb", "--codec", "audio/opus"))
    quiet = _ok(run_nc("decode", tmp_path / "s.ncb", tmp_path / "s.wav"))
    assert "warning" not in quiet.stderr.decode()
