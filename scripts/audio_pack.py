"""Pack a slice of an audio training set small enough to carry to a GPU machine, and unpack it there.

The device tool carries at most 64 MiB with the code. Plain int16 at 16 kHz is
115 MB per hour; first differences split into low and high byte planes and
zlib-compressed are ~30 % smaller, losslessly, with nothing but numpy and zlib
on the other side (the GPU machine has no soundfile or FLAC decoder).

    python scripts/audio_pack.py pack --data data/audio16k --out data/gpu16k --hours speech=0.5,music=0.22
    python scripts/audio_pack.py unpack --pack data/gpu16k --out /tmp/gpu16k     # train*.npy, as the trainer reads

A pack takes evenly spaced segments across the whole shard, so it keeps the
variety of speakers and pieces rather than the first few files.
"""
from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np

SEGMENT_SECONDS = 8.0


def spread_segments(audio: np.ndarray, samples: int, segment: int) -> np.ndarray:
    """`samples` samples made of `segment`-long pieces taken evenly across `audio`."""
    count = max(1, samples // segment)
    if count * segment >= len(audio):
        return np.asarray(audio)
    starts = np.linspace(0, len(audio) - segment, count).astype(np.int64)
    return np.concatenate([audio[s:s + segment] for s in starts])


def encode(audio: np.ndarray) -> bytes:
    diff = np.diff(audio.astype(np.int16), prepend=np.int16(0))  # int16 arithmetic wraps; cumsum undoes it
    planes = diff.view(np.uint8).reshape(-1, 2).T
    return zlib.compress(planes.tobytes(), 9)


def decode(blob: bytes, samples: int) -> np.ndarray:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(blob, 2 * samples)  # bounded by the length the header states
    except zlib.error as e:
        raise SystemExit(f"pack is damaged: {e}") from None
    if len(raw) != 2 * samples or inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise SystemExit(f"pack is damaged: expected {2 * samples} bytes and the end of the stream, got {len(raw)}")
    diff = np.frombuffer(raw, np.uint8).reshape(2, samples).T.copy().view(np.int16)[:, 0]
    return np.cumsum(diff, dtype=np.int16)


def pack(args) -> None:
    src, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for item in args.hours.split(","):
        name, hours = item.split("=")
        audio = np.load(src / f"train_{name}.npy", mmap_mode="r", allow_pickle=False)
        rate = args.rate
        piece = spread_segments(audio, int(float(hours) * 3600 * rate), int(SEGMENT_SECONDS * rate))
        blob = encode(piece)
        (out / f"train_{name}.pack").write_bytes(blob)
        manifest[name] = {"samples": len(piece), "bytes": len(blob), "hours": round(len(piece) / rate / 3600, 3)}
        print(f"{name}: {len(piece) / rate / 3600:.2f} h -> {len(blob) / 1e6:.1f} MB ({len(blob) / 2 / len(piece):.0%})")
    (out / "pack.json").write_text(json.dumps({"rate": args.rate, "source": str(src), "tracks": manifest}, indent=1))


def unpack(args) -> None:
    src, out = Path(args.pack), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / "pack.json").read_text())
    if manifest.get("rate") not in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
        raise SystemExit(f"pack.json: implausible sample rate {manifest.get('rate')!r}")
    for name, info in manifest["tracks"].items():
        samples = int(info["samples"])
        if not 0 < samples <= 10 * 3600 * manifest["rate"]:
            raise SystemExit(f"pack.json: implausible length {samples} for {name}")
        np.save(out / f"train_{name}.npy", decode((src / f"train_{name}.pack").read_bytes(), samples))
        print(f"{name}: {samples / manifest['rate'] / 3600:.2f} h unpacked")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--data", required=True, help="folder with train_NAME.npy shards (scripts/build_audio_set.py)")
    a.add_argument("--out", required=True)
    a.add_argument("--hours", required=True, help="hours per shard, e.g. speech=0.5,music=0.22")
    a.add_argument("--rate", type=int, default=16000)
    b = sub.add_parser("unpack")
    b.add_argument("--pack", required=True)
    b.add_argument("--out", required=True)
    args = p.parse_args(argv)
    pack(args) if args.command == "pack" else unpack(args)


if __name__ == "__main__":
    main()
