"""scripts/build_audio_set.py on a tiny fake package tree: split by file, held-out files never in
training, silence trimmed, int16 output, manifest totals. Needs no Debian package."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_audio_set.py"
RATE = 16000


@pytest.fixture(scope="module")
def bas():
    spec = importlib.util.spec_from_file_location("build_audio_set", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def _tone(seconds: float, rate: int, freq: float, channels: int = 1, pad: float = 0.0) -> np.ndarray:
    """A distinctive tone (its frequency tags the file) with `pad` s of digital silence at each end."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    z = np.zeros(int(pad * rate))
    x = np.concatenate([z, x, z]).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def _fake_tree(root: Path) -> dict[str, float]:
    """A miniature of the four packages' layouts; returns each file's tone frequency by relative path."""
    freqs, f = {}, 300.0

    def put(rel, seconds, rate, channels=1, pad=0.0, subtype=None):
        nonlocal f
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        fmt = "OGG" if subtype in ("VORBIS", "OPUS") else None
        sf.write(p, _tone(seconds, rate, f, channels, pad), rate, format=fmt, subtype=subtype)
        freqs[rel] = f
        f += 37.0

    ru = "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
    for i in range(1, 9):
        put(f"{ru}/ru_{i:04d}.wav", 12.0 if i == 3 else 1.5, 16000, pad=0.5)  # ru_0003: cut to 10 s in eval
    put(f"{ru}/ru_0100.wav", 0.6, 16000, pad=0.5)  # under 1 s once trimmed: dropped
    for room in ("cabin", "share/border"):
        for i in range(3):
            put(f"usr/share/games/fillets-ng/sound/{room}/cs/line{i}.ogg", 1.2, 22050, subtype="VORBIS")
    for i in range(4):
        put(f"usr/share/games/warzone2100/music/albums/a/track{i}.opus", 2.0, 48000, 2, subtype="OPUS")
    for i in range(3):
        put(f"usr/share/games/wesnoth/1.16/data/core/music/song{i}.ogg", 2.0, 44100, 2, subtype="VORBIS")
    return freqs


def _dominant(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(np.argmax(spec) * RATE / len(x))


def test_build_on_fake_tree(bas, tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    freqs = _fake_tree(root)
    manifest = bas.build(str(out), str(root), hours_speech=None, hours_music=None, rate=RATE, command="test")
    files = {e["path"]: e for e in manifest["files"]}
    assert set(files) == set(freqs)
    assert json.loads((out / "manifest.json").read_text())["totals_hours"] == manifest["totals_hours"]

    # Split by whole file, forced and minimum hold-outs honoured, too-short files dropped.
    ru3 = "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/ru_0003.wav"
    assert files[ru3]["split"] == "eval"
    assert files["usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/ru_0100.wav"]["split"] == "dropped"
    by_pkg = lambda pkg, split: [e for e in files.values() if e["package"] == pkg and e["split"] == split]
    assert len(by_pkg("warzone2100-music", "eval")) >= 2 and len(by_pkg("wesnoth-1.16-music", "eval")) >= 1
    for e in files.values():
        assert e["split"] in {"train", "eval", "dropped"}
        assert e["licence"] and e["duration_s"] > 0
    # fillets: same name in two rooms is one group, so both copies share a split
    for i in range(3):
        a, b = (files[f"usr/share/games/fillets-ng/sound/{room}/cs/line{i}.ogg"]["split"]
                for room in ("cabin", "share/border"))
        assert a == b

    for kind in ("speech", "music"):
        train = np.load(out / f"train_{kind}.npy", allow_pickle=False)
        assert train.dtype == np.int16 and train.ndim == 1
        entries = sorted((e for e in files.values() if e["kind"] == kind and e["split"] == "train"),
                         key=lambda e: e["train_offset"])
        assert entries
        gap = int(bas.GAP_SECONDS * RATE)
        assert len(train) == sum(e["kept_samples"] for e in entries) + gap * (len(entries) - 1)
        train_freqs = set()
        for e in entries:
            seg = train[e["train_offset"]:e["train_offset"] + e["kept_samples"]]
            assert abs(int(seg[0])) > 0 or abs(int(seg[1])) > 0  # starts with sound: silence was trimmed
            train_freqs.add(round(_dominant(seg)))
        # every held-out file's tone is absent from training
        for e in files.values():
            if e["kind"] == kind and e["split"] == "eval":
                assert not any(abs(f - freqs[e["path"]]) < 10 for f in train_freqs)
        # manifest totals agree with the arrays (trimmed durations, not header durations)
        t = manifest["totals_hours"][kind]
        assert t["train_samples"] == len(train)
        assert t["train"] == pytest.approx(sum(e["kept_samples"] for e in entries) / RATE / 3600, abs=1e-4)
        clips = sorted((out / f"eval_{kind}").glob("*.wav"))
        assert t["eval_clip_count"] == len(clips) > 0
        for c in clips:
            info = sf.info(c)
            assert info.samplerate == RATE and info.channels == 1 and info.subtype == "PCM_16"
            assert info.frames <= bas.EVAL_SECONDS * RATE
    assert sf.info(out / "eval_speech" / "festvox-ru__ru_0003.wav").frames == 10 * RATE

    # festvox files had 0.5 s of silence at each end: kept 1.5 s
    ru1 = files["usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/ru_0001.wav"]
    assert ru1["duration_s"] == pytest.approx(2.5) and ru1["kept_s"] == pytest.approx(1.5, abs=2e-3)


def test_helpers(bas):
    x = np.concatenate([np.zeros(10), [5e-5, 0.2, -0.3, 0.1], np.zeros(7)]).astype(np.float32)
    assert np.array_equal(bas.trim_silence(x), x[11:14])
    assert bas.trim_silence(np.zeros(5, np.float32)).size == 0
    quiet = np.array([0.5, -0.2], np.float32)
    assert bas.fix_clipping(quiet) is quiet  # no loudness games on files that do not clip
    assert np.abs(bas.fix_clipping(np.array([1.5, -0.3], np.float32))).max() == pytest.approx(0.95)
    assert bas.to_int16(np.array([1.0, -1.0, 0.0], np.float32)).tolist() == [32767, -32767, 0]
    # split is deterministic, by hash, roughly the fraction asked, and never cuts a file
    rels = [f"d/f{i}.wav" for i in range(200)]
    a, b = bas.held_out("pkg", rels), bas.held_out("pkg", list(reversed(rels)))
    assert a == b and len(a) == 10
    assert bas.group_key("p", "x/track3_enhanced.opus") == bas.group_key("p", "y/track3.opus")
    spans = bas.music_excerpts(100 * RATE, RATE)
    assert len(spans) == 3 and all(e - s == 10 * RATE for s, e in spans)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))
    assert bas.music_excerpts(5 * RATE, RATE) == [(0, 5 * RATE)]
    spans = bas.music_excerpts(25 * RATE, RATE)  # room for two only: they must not overlap
    assert len(spans) == 2 and spans[0][1] <= spans[1][0] and spans[1][1] <= 25 * RATE


def test_budget_spreads_over_sources(bas):
    cands = {"a": [{"idx": i, "path": f"a/{i}", "duration_s": 100.0} for i in range(3)],
             "b": [{"idx": 10 + i, "path": f"b/{i}", "duration_s": 50.0} for i in range(3)]}
    taken = bas.pick_by_budget(cands, 200.0)
    assert len([i for i in taken if i < 10]) == 1 and len([i for i in taken if i >= 10]) == 2
    assert bas.pick_by_budget(cands, None) == {0, 1, 2, 10, 11, 12}
