#!/usr/bin/env python3
"""Build nc's audio training and evaluation sets from Debian packages.

    python scripts/build_audio_set.py --out DIR [--hours-speech H] [--hours-music H] [--rate 16000]

Sources (see shared/DATA.md; install with `apt-get install -y --no-install-recommends PKG`):
  speech: festvox-ru (16 kHz studio PCM, one speaker), fillets-ng-data-cs (22.05 kHz Vorbis, several actors)
  music:  warzone2100-music (48 kHz Opus), wesnoth-1.16-music (44.1 kHz Vorbis)

The 8 kHz asterisk-core-sounds-* prompts are deliberately left out: at a 16 kHz model
rate their 4-8 kHz band is empty, so they would teach the codec that the top half of
the spectrum is usually silent, and the two sources above already give ~3.3 h of
wideband speech.

Every file is decoded, downmixed to mono, resampled with nc's zero-delay resampler,
trimmed of leading/trailing digital silence, scaled down only if it would clip, and
dropped if under 1 s. Files are held out whole (never cut across the split): about
5 % of each source, chosen by a hash of the package and file name so the split is the
same on every machine and does not move when other files come or go. Writes

  DIR/train_speech.npy, DIR/train_music.npy   int16 1-D, files joined by 0.1 s of silence
  DIR/eval_speech/*.wav, DIR/eval_music/*.wav  held-out clips, 16-bit, at the model rate
  DIR/manifest.json                            every source file, its licence, duration and split
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from nc.media.files import open_media
from nc.media.resample import resample

SILENCE = 1e-4  # |x| below this at either end counts as digital silence
MIN_SECONDS = 1.0  # shorter files (after trimming) carry too little context to train or judge on
GAP_SECONDS = 0.1  # zeros between files in the training arrays, so no crop splices two files invisibly
CLIP_PEAK = 0.95  # peak after rescaling a file that would clip in int16
EVAL_FRACTION = 0.05
EVAL_SECONDS = 10.0  # longest eval clip / music excerpt
MAX_SPEECH_CLIPS = 40
MAX_MUSIC_CLIPS = 12
EXCERPTS_PER_TRACK = 3
MIN_EVAL_SPEECH_SECONDS = 2.0  # shorter held-out lines stay held out but are not written as benchmark clips
FORCED_EVAL = {("festvox-ru", "ru_0003.wav")}  # samples/speech.wav comes from it: never train on it


@dataclass(frozen=True)
class Source:
    """One Debian package and where its audio lies (a glob under the source root)."""

    package: str
    kind: str  # "speech" or "music"
    pattern: str
    licence: str
    min_eval: int = 1  # held-out files (groups) at least, however small the source


SOURCES = [
    Source("festvox-ru", "speech", "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/ru_*.wav",
           "BSD-like (c) 2005 Nickolay V. Shmyrev"),
    Source("fillets-ng-data-cs", "speech", "usr/share/games/fillets-ng/sound/**/cs/*.ogg", "GPL-2"),
    Source("warzone2100-music", "music", "usr/share/games/warzone2100/music/**/*.opus", "GPL-2+", min_eval=2),
    Source("wesnoth-1.16-music", "music", "usr/share/games/wesnoth/*/data/core/music/*.ogg", "GPL-2+"),
]


def licence_of(source: Source, rel: str) -> str:
    """Per-file licence: Warzone's two community albums are CC-BY-SA-3.0+ (or GPL-2+), per their
    license.txt, except track3_enhanced, which derives from the GPL-2+ original soundtrack."""
    if source.package == "warzone2100-music" and re.search(r"/(aftermath|legacy)_soundtrack/", "/" + rel) \
            and "track3_enhanced" not in rel:
        return "CC-BY-SA-3.0+ or GPL-2+"
    return source.licence


def find_files(root: str, source: Source) -> list[str]:
    """Sorted paths relative to `root`, so the manifest and the split do not depend on where the tree sits."""
    hits = glob.glob(os.path.join(root, source.pattern), recursive=True)
    return sorted(os.path.relpath(p, root) for p in hits if os.path.isfile(p))


def group_key(package: str, rel: str) -> str:
    """Files that are versions of one recording share a key and so a split: the folder is ignored
    (fillets-ng ships identical lines in several rooms) and a trailing `_enhanced` is dropped
    (Warzone's remasters of the original tracks)."""
    stem = os.path.splitext(os.path.basename(rel))[0]
    return f"{package}/{re.sub(r'_enhanced$', '', stem)}"


def stable_hash(key: str) -> int:
    """A hash that is the same in every process and on every machine (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")


def held_out(package: str, rels: list[str], fraction: float = EVAL_FRACTION, min_eval: int = 1) -> set[str]:
    """The files of one source to hold out: the groups with the smallest hashes, about `fraction`
    of them (at least `min_eval`), plus the forced ones. Ranking by hash rather than thresholding
    it gives a predictable count even for small sources."""
    groups: dict[str, list[str]] = {}
    for rel in rels:
        groups.setdefault(group_key(package, rel), []).append(rel)
    ranked = sorted(groups, key=stable_hash)
    n = min(len(ranked), max(min_eval, round(fraction * len(ranked))))
    chosen = set(ranked[:n])
    chosen |= {group_key(package, rel) for rel in rels if (package, os.path.basename(rel)) in FORCED_EVAL}
    return {rel for key in chosen for rel in groups[key]}


def probe_seconds(path: str) -> float:
    """Duration from the header (no decoding), used for the budget and the manifest."""
    try:
        info = sf.info(path)
        return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError):
        import av

        with av.open(path) as c:
            return (c.duration or 0) / 1e6


def file_digest(path: str) -> str:
    """Content hash, to drop byte-identical copies (fillets-ng repeats some lines in several rooms)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pick_by_budget(candidates: dict[str, list[dict]], budget_s: float | None) -> set[int]:
    """Indices (`idx`) of training files within the budget: a deterministic spread that takes the next
    file (in hash order) from whichever source has the fewest seconds so far, so a partial budget
    mixes the sources evenly instead of exhausting the first one."""
    queues = {k: sorted(v, key=lambda e: stable_hash(e["path"])) for k, v in candidates.items() if v}
    taken: set[int] = set()
    seconds = {k: 0.0 for k in queues}
    total = 0.0
    while queues and (budget_s is None or total < budget_s):
        k = min(queues, key=lambda q: (seconds[q], q))
        entry = queues[k].pop(0)
        if not queues[k]:
            del queues[k]
        taken.add(entry["idx"])
        seconds[k] += entry["duration_s"]
        total += entry["duration_s"]
    return taken


def decode_mono(path: str) -> tuple[np.ndarray, int]:
    """Float32 mono and its rate. nc's reader tries soundfile (wav, Ogg Vorbis/Opus) and falls back to
    PyAV; channels are averaged block by block so a stereo hour never sits in memory twice."""
    src = open_media(path)
    rate = src.facts[0].sample_rate
    blocks = [b.mean(axis=1, dtype=np.float32) for _, b in src.blocks()]
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), rate


def trim_silence(x: np.ndarray, threshold: float = SILENCE) -> np.ndarray:
    """Drop leading and trailing digital silence: it teaches a codec nothing and skews the loss."""
    loud = np.flatnonzero(np.abs(x) >= threshold)
    return x[loud[0]:loud[-1] + 1] if loud.size else x[:0]


def fix_clipping(x: np.ndarray, peak: float = CLIP_PEAK) -> np.ndarray:
    """Scale to `peak` only if int16 conversion would clip (lossy decoders overshoot 1.0); other files
    keep their level, since loudness is part of what the codec must reproduce."""
    top = float(np.abs(x).max()) if x.size else 0.0
    return x * np.float32(peak / top) if top > 1.0 else x


def to_int16(x: np.ndarray) -> np.ndarray:
    """Round to int16 as a 16-bit wav writer would."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def prepare(path: str, rate: int) -> np.ndarray:
    """One source file as the model sees it: mono float32 at `rate`, trimmed, not clipping."""
    x, rate_in = decode_mono(path)
    if rate_in != rate:
        x = resample(x, rate_in, rate)
    return fix_clipping(trim_silence(x))


def music_excerpts(n: int, rate: int, count: int = EXCERPTS_PER_TRACK, seconds: float = EVAL_SECONDS):
    """(start, end) sample spans of up to `count` excerpts, one centred in each of `count` equal parts
    of the track, so intro, middle and end are all judged and no two excerpts overlap."""
    w = int(seconds * rate)
    if n <= w:
        return [(0, n)]
    count = max(1, min(count, n // w))
    starts = [(2 * i + 1) * n // (2 * count) - w // 2 for i in range(count)]
    return [(a, a + w) for a in (min(max(0, a), n - w) for a in starts)]


def clip_name(package: str, rel: str, suffix: str = "") -> str:
    """A flat, readable wav name that still says where the clip came from (fillets-ng keeps its room
    folders: two rooms may hold different lines under one file name)."""
    parts = os.path.splitext(rel)[0].split("/")
    if package.startswith("fillets") and "sound" in parts:
        parts = [p for p in parts[parts.index("sound") + 1:] if p != "cs"]
    else:
        parts = parts[-1:]
    return f"{package}__{re.sub(r'[^A-Za-z0-9_.-]+', '_', '_'.join(parts))}{suffix}.wav"


def discover(root: str) -> tuple[list[dict], list[str]]:
    """Manifest entries for every file of every installed source, with split 'eval', 'candidate'
    or 'duplicate'; and the apt-get lines for sources that are missing."""
    entries, missing = [], []
    for source in SOURCES:
        rels = find_files(root, source)
        if not rels:
            missing.append(f"apt-get install -y --no-install-recommends {source.package}")
            continue
        evals = held_out(source.package, rels, min_eval=source.min_eval)
        seen: dict[str, str] = {}
        for rel in rels:
            path = os.path.join(root, rel)
            digest = file_digest(path)
            entry = {"path": rel, "package": source.package, "kind": source.kind,
                     "licence": licence_of(source, rel), "duration_s": round(probe_seconds(path), 3),
                     "split": "eval" if rel in evals else "candidate"}
            if digest in seen:
                entry["split"], entry["duplicate_of"] = "duplicate", seen[digest]
            seen.setdefault(digest, rel)
            entries.append(entry)
    for i, e in enumerate(entries):
        e["idx"] = i
    return entries, missing


def assign_train(entries: list[dict], hours: dict[str, float | None]) -> None:
    """Turn candidates into 'train' within each kind's budget (None: all), the rest into 'unused'."""
    for kind, budget_h in hours.items():
        cands: dict[str, list[dict]] = {}
        for e in entries:
            if e["kind"] == kind and e["split"] == "candidate":
                cands.setdefault(e["package"], []).append(e)
        taken = pick_by_budget(cands, None if budget_h is None else budget_h * 3600)
        for group in cands.values():
            for e in group:
                e["split"] = "train" if e["idx"] in taken else "unused"


def eval_order(entries: list[dict], kind: str) -> list[dict]:
    """Held-out files in the order their clips are written: forced ones first, then the sources
    taken in turn (hash order within each), so capped clip counts still cover every source."""
    per: dict[str, list[dict]] = {}
    for e in entries:
        if e["kind"] == kind and e["split"] == "eval":
            per.setdefault(e["package"], []).append(e)
    forced = [e for e in sum(per.values(), []) if (e["package"], os.path.basename(e["path"])) in FORCED_EVAL]
    queues = [sorted((e for e in v if e not in forced), key=lambda e: stable_hash(e["path"]))
              for _, v in sorted(per.items())]
    order = list(forced)
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order


def write_eval(entries: list[dict], root: str, out: str, rate: int, kind: str) -> None:
    """Prepare every held-out file (for its kept duration) and write the benchmark clips, within the caps."""
    folder = os.path.join(out, f"eval_{kind}")
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, "*.wav")):
        os.remove(old)  # a rebuild must not leave clips of an older split behind
    cap = MAX_SPEECH_CLIPS if kind == "speech" else MAX_MUSIC_CLIPS
    written = 0
    for e in eval_order(entries, kind):
        x = prepare(os.path.join(root, e["path"]), rate)
        e["kept_samples"], e["kept_s"] = len(x), round(len(x) / rate, 3)
        e["eval_clips"] = []
        if len(x) < MIN_SECONDS * rate:
            e["split"], e["note"] = "dropped", "shorter than 1 s after trimming"
            continue
        if kind == "speech":
            spans = [(0, min(len(x), int(EVAL_SECONDS * rate)))] if len(x) >= MIN_EVAL_SPEECH_SECONDS * rate else []
        else:
            spans = music_excerpts(len(x), rate)
        for a, b in spans:
            if written >= cap:
                break
            suffix = "" if kind == "speech" else f"__{a // rate:04d}s"
            name = clip_name(e["package"], e["path"], suffix)
            sf.write(os.path.join(folder, name), to_int16(x[a:b]), rate, subtype="PCM_16")
            e["eval_clips"].append(name)
            written += 1


def write_train(entries: list[dict], root: str, out: str, rate: int, kind: str) -> None:
    """Prepare the training files of one kind and save them as one int16 array with gaps between files;
    each entry records its `train_offset` so a loader can keep crops inside one file if it wants to."""
    gap = np.zeros(int(GAP_SECONDS * rate), np.int16)
    parts, offset = [], 0
    for e in sorted((e for e in entries if e["kind"] == kind and e["split"] == "train"),
                    key=lambda e: stable_hash(e["path"])):
        x = prepare(os.path.join(root, e["path"]), rate)
        e["kept_samples"], e["kept_s"] = len(x), round(len(x) / rate, 3)
        if len(x) < MIN_SECONDS * rate:
            e["split"], e["note"] = "dropped", "shorter than 1 s after trimming"
            continue
        if parts:
            parts.append(gap)
            offset += len(gap)
        e["train_offset"] = offset
        parts.append(to_int16(x))
        offset += len(x)
        print(f"  {kind}: {offset / rate / 3600:.2f} h", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    np.save(os.path.join(out, f"train_{kind}.npy"), np.concatenate(parts) if parts else np.zeros(0, np.int16))


def totals(entries: list[dict], rate: int, out: str) -> dict:
    """Hours per kind and split (kept audio after trimming), and of the written eval clips."""
    result: dict[str, dict] = {}
    for kind in ("speech", "music"):
        t = {"train": 0.0, "eval": 0.0}
        for e in entries:
            if e["kind"] == kind and e["split"] in t:
                t[e["split"]] += e.get("kept_samples", 0) / rate / 3600
        clips = glob.glob(os.path.join(out, f"eval_{kind}", "*.wav"))
        t["eval_clips"] = sum(sf.info(c).frames for c in clips) / rate / 3600
        t["eval_clip_count"] = len(clips)
        npy = os.path.join(out, f"train_{kind}.npy")
        t["train_samples"] = int(np.load(npy, mmap_mode="r").shape[0]) if os.path.exists(npy) else 0
        result[kind] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items()}
    return result


def build(out: str, root: str = "/", hours_speech: float | None = None, hours_music: float | None = 3.0,
          rate: int = 16000, command: str = "") -> dict:
    """The whole build; returns the manifest it wrote. `root` lets tests point it at a fake tree."""
    os.makedirs(out, exist_ok=True)
    entries, missing = discover(root)
    for line in missing:
        print(f"missing source, skipped; to add it run: {line}", file=sys.stderr)
    assign_train(entries, {"speech": hours_speech, "music": hours_music})
    for kind in ("speech", "music"):
        write_eval(entries, root, out, rate, kind)
        write_train(entries, root, out, rate, kind)
    for e in entries:
        e.pop("idx", None)
    manifest = {
        "command": command, "rate": rate, "source_root": root,
        "settings": {"silence_threshold": SILENCE, "min_seconds": MIN_SECONDS, "gap_seconds": GAP_SECONDS,
                     "clip_peak": CLIP_PEAK, "eval_fraction": EVAL_FRACTION, "hours_speech": hours_speech,
                     "hours_music": hours_music},
        "sources": [{"package": s.package, "kind": s.kind, "licence": s.licence,
                     "files": sum(e["package"] == s.package for e in entries)} for s in SOURCES],
        "missing": missing,
        "totals_hours": totals(entries, rate, out),
        "files": entries,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (keep it outside the repository)")
    ap.add_argument("--hours-speech", type=float, default=None, help="training speech budget (default: all)")
    ap.add_argument("--hours-music", type=float, default=3.0, help="training music budget (default: 3)")
    ap.add_argument("--rate", type=int, default=16000, help="model sample rate (default: 16000)")
    ap.add_argument("--source-root", default="/", help="where the packages' usr/ tree is (tests use a fake one)")
    args = ap.parse_args(argv)
    t0 = time.time()
    command = shlex.join([os.path.relpath(sys.argv[0]) if argv is None else "build_audio_set.py",
                          *(sys.argv[1:] if argv is None else argv)])
    manifest = build(args.out, args.source_root, args.hours_speech, args.hours_music, args.rate, command)
    print(json.dumps(manifest["totals_hours"], indent=1))
    print(f"built {args.out} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
