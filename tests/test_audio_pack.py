"""scripts/audio_pack.py: the carry format for GPU runs is lossless, bounded, and keeps variety."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "audio_pack.py"


@pytest.fixture(scope="module")
def ap():
    spec = importlib.util.spec_from_file_location("audio_pack", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_unpack_is_lossless_including_wraparound(ap, tmp_path):
    rng = np.random.default_rng(0)
    speech = rng.integers(-32768, 32767, 16000 * 30, dtype=np.int16)  # full-scale jumps overflow int16 diffs
    speech[:5] = [32767, -32768, 32767, 0, -32768]
    np.save(tmp_path / "train_speech.npy", speech)
    ap.main(["pack", "--data", str(tmp_path), "--out", str(tmp_path / "pack"), "--hours", f"speech={20 / 3600}"])
    ap.main(["unpack", "--pack", str(tmp_path / "pack"), "--out", str(tmp_path / "out")])
    got = np.load(tmp_path / "out" / "train_speech.npy")
    assert np.array_equal(got, ap.spread_segments(speech, 16000 * 20, 16000 * 8))
    assert len(got) == 16000 * 16  # two whole 8 s segments


def test_segments_are_spread_over_the_whole_shard(ap):
    audio = np.arange(1000, dtype=np.int16)
    piece = ap.spread_segments(audio, 300, 100)
    assert list(piece[::100]) == [0, 450, 900]


def test_damaged_pack_is_refused(ap):
    blob = ap.encode(np.arange(100, dtype=np.int16))
    with pytest.raises(SystemExit, match="damaged"):
        ap.decode(blob, 200)
    with pytest.raises(SystemExit, match="damaged"):
        ap.decode(blob, 50)


def test_truncated_or_corrupted_packs_and_bad_rates_are_refused(ap, tmp_path):
    blob = ap.encode(np.arange(1000, dtype=np.int16))
    with pytest.raises(SystemExit, match="damaged"):
        ap.decode(blob[:-4], 1000)  # checksum cut off: the stream never ends
    with pytest.raises(SystemExit, match="damaged"):
        ap.decode(blob[:2] + bytes([blob[2] ^ 0xFF]) + blob[3:], 1000)
    (tmp_path / "pack.json").write_text('{"rate": 10000000000, "tracks": {}}')
    with pytest.raises(SystemExit, match="sample rate"):
        ap.main(["unpack", "--pack", str(tmp_path), "--out", str(tmp_path / "out")])
