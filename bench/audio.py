"""Audio benchmark: every installed audio codec at each rate point, beside Opus, in one run.

    .venv/bin/python bench/audio.py --data /work/data/audio16k [--max-clips 20]

Evaluation clips: DATA/eval_speech/*.wav and DATA/eval_music/*.wav, held out from
training by scripts/build_audio_set.py (without --data: the two bundled samples).
For each codec and rate: the real bitrate from the .ncb file size (container
included), wideband PESQ (speech), a log-mel distance, SI-SDR, and encode /
decode speed as x real time on one CPU thread. Writes bench/results/audio.md
and bench/results/audio_rd.png.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

import nc  # noqa: E402
from nc.metrics import harmonic_match, pesq_wb, si_sdr  # noqa: E402
from nc.plugins import registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OPUS_RATES = ("6k", "8k", "12k", "16k")


def clips(data: Path | None, max_clips: int) -> list[tuple[str, str, np.ndarray, int]]:
    """(kind, name, float32 (n, ch), rate) for each evaluation clip."""
    if data is None:
        found = [("speech", ROOT / "samples" / "speech.wav"), ("music", ROOT / "samples" / "music.wav")]
    else:
        found = [(k, p) for k in ("speech", "music") for p in sorted((data / f"eval_{k}").glob("*.wav"))[:max_clips]]
    out = []
    for kind, path in found:
        x, rate = sf.read(path, dtype="float32", always_2d=True)
        out.append((kind, path.name, x, rate))
    return out


_MEL = {}


def mel_distance(reference: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """Mean L1 between log10 mel spectrograms at 5 window sizes (first channel)."""
    from nc.train.losses import MultiScaleMelLoss

    if rate not in _MEL:
        _MEL[rate] = MultiScaleMelLoss(rate, windows=(128, 256, 512, 1024, 2048), mels=(10, 20, 40, 80, 160))
    with torch.no_grad():
        ref, deg = (torch.from_numpy(np.ascontiguousarray(a[:, 0]))[None] for a in (reference, decoded))
        return float(_MEL[rate](deg, ref))


def run_one(codec: str, rate: str, x: np.ndarray, sr: int, kind: str) -> dict:
    t0 = time.perf_counter()
    data = nc.encode(x, codec=codec, bitrate=rate, sample_rate=sr, channels=x.shape[1])
    t1 = time.perf_counter()
    y = nc.decode(data).data
    t2 = time.perf_counter()
    seconds = len(x) / sr
    row = {"kbps": len(data) * 8 / seconds / 1000, "enc_x": seconds / (t1 - t0), "dec_x": seconds / (t2 - t1),
           "mel": mel_distance(x, y, sr), "si_sdr": si_sdr(x, y), "harmonics": harmonic_match(x, y, sr)}
    if kind == "speech":
        row["pesq"] = pesq_wb(x, y, sr)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder made by scripts/build_audio_set.py")
    p.add_argument("--max-clips", type=int, default=20, help="per kind")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--note", help="a paragraph for the top of the report (what the measured weights are)")
    args = p.parse_args()
    torch.set_num_threads(1)
    reg = registry()
    runs = [(d.id, pt.name) for d in reg.descriptors() if d.modality == "audio" and d.id != "audio/opus"
            and d.rank >= 0 for pt in d.points]
    runs += [("audio/opus", r) for r in OPUS_RATES]
    table: dict[tuple, list[dict]] = defaultdict(list)
    for kind, name, x, sr in clips(args.data, args.max_clips):
        for codec, rate in runs:
            table[(kind, codec, rate)].append(run_one(codec, rate, x, sr, kind))
        print(f"{kind}/{name} done", flush=True)
    write_report(table, args)


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def write_report(table, args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    source = f"`{args.data}` (held-out clips, max {args.max_clips} per kind)" if args.data else "the bundled samples"
    lines = ["# Audio benchmark", "", *([args.note, ""] if args.note else []),
             f"Clips: {source}. One CPU thread. Bitrate is measured from the .ncb file (container included).",
             "PESQ is wideband (P.862.2) at 16 kHz on speech; mel is a log-mel L1 distance (lower is better); "
             "harmonics is `nc.metrics.harmonic_match` (1: every pitch harmonic in place, ~0: smeared).", ""]
    for d in registry().descriptors():
        if d.modality == "audio" and d.weights_sha256:
            weights = getattr(registry().get(d.id), "weights", "")
            lines.append(f"- {d.id}: weights `{weights}` (sha256 {d.weights_sha256[:16]})")
    lines.append("")
    for kind in ("speech", "music"):
        keys = sorted((k for k in table if k[0] == kind), key=lambda k: (k[1], _mean(table[k], "kbps")))
        if not keys:
            continue
        n = len(table[keys[0]])
        lines += [f"## {kind} ({n} clips)", "",
                  "| codec | rate | kbps | PESQ-WB | mel | harmonics | SI-SDR (dB) | encode x RT | decode x RT |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for k in keys:
            rows = table[k]
            pesq = f"{_mean(rows, 'pesq'):.2f}" if kind == "speech" else "-"
            lines.append(f"| {k[1]} | {k[2]} | {_mean(rows, 'kbps'):.2f} | {pesq} | {_mean(rows, 'mel'):.3f} | "
                         f"{_mean(rows, 'harmonics'):.2f} | {_mean(rows, 'si_sdr'):.1f} | {_mean(rows, 'enc_x'):.0f} | {_mean(rows, 'dec_x'):.0f} |")
        lines.append("")
    (args.out / "audio.md").write_text("\n".join(lines))
    print("\n".join(lines))
    plot(table, args.out / "audio_rd.png")


def plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (kind, metric, label) in zip(axes, (("speech", "pesq", "PESQ-WB (speech)"),
                                                ("music", "mel", "log-mel distance (music, lower is better)"))):
        for codec in sorted({k[1] for k in table if k[0] == kind}):
            pts = sorted((_mean(v, "kbps"), _mean(v, metric)) for k, v in table.items() if k[0] == kind and k[1] == codec)
            ax.plot(*zip(*pts), marker="o", label=codec)
        ax.set_xlabel("kbps (measured, container included)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
