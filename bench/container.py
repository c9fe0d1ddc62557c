"""Container overhead and long-input streaming, measured; writes bench/results/container.md.

    .venv/bin/python bench/container.py [--hours 1] [--codec audio/rvq --bitrate 6k]

1. Overhead: 10 s of speech-like audio through audio/opus at 6 kbps; the file's
   bytes split into codec payload and everything the container adds.
2. Streaming: N hours of audio written through nc.open in 1 s pieces and read
   back chunk by chunk, each in a fresh process, reporting peak RSS and speed.
"""
import argparse
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import nc
from nc.bitstream import container as C

RESULTS = Path(__file__).resolve().parent / "results"


def speechlike(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise shaped by a slow syllable-rate envelope and a few formant-like tones."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate((180, 720, 1300, 2500), 1))
    return (0.2 * envelope * (tones + 0.3 * rng.standard_normal(t.size))).astype(np.float32)[:, None]


def overhead() -> dict:
    x = speechlike(10.0)
    data = nc.encode(x, codec="audio/opus", bitrate="6k", sample_rate=16000, channels=1)
    reader = C.ContainerReader(io.BytesIO(data))
    chunks = [c for c in reader.chunks() if isinstance(c, C.Chunk)]
    from nc_classical.opus import unpack_group

    payload = sum(len(c.payload) for c in chunks)
    opus_bytes = sum(len(p) for c in chunks for p in unpack_group(c.payload))
    return {
        "file_bytes": len(data),
        "opus_packet_bytes": opus_bytes,
        "opus_length_prefixes": payload - opus_bytes,
        "chunks": len(chunks),
        "preamble_and_head": reader.data_at,
        "data_chunk_framing": len(chunks) * (C.FRAMING + C.DATA_HEAD.size),
        "fini_index_tail": len(data) - reader.data_at - payload - len(chunks) * (C.FRAMING + C.DATA_HEAD.size),
        "kbps_file": len(data) * 8 / 10 / 1000,
        "kbps_opus_packets": opus_bytes * 8 / 10 / 1000,
    }


def peak_rss_mib() -> float:
    """This process's own peak resident memory. Not ru_maxrss: Linux carries that over from the
    parent across fork and exec, so a child of a big parent reports the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stream_child(mode: str, path: str, hours: float, codec: str, bitrate: str) -> None:
    """Runs in a fresh process so peak RSS belongs to this job alone."""
    piece = speechlike(1.0)
    start = time.perf_counter()
    if mode == "write":
        with nc.open(path, "wb", codec=codec, bitrate=bitrate, sample_rate=16000, channels=1) as w:
            for _ in range(int(hours * 3600)):
                w.write(piece)
        n = int(hours * 3600) * 16000
    else:
        n = 0
        with nc.open(path, "rb") as r:
            for _, block in r:
                n += len(block)
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": mode, "samples": n, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


def streaming(hours: float, codec: str, bitrate: str) -> list[dict]:
    path = "/tmp/nc-bench-long.ncb"
    rows = []
    for mode in ("write", "read"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, path, str(hours), codec, bitrate],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out))
    rows.append({"mode": "file", "bytes": Path(path).stat().st_size})
    Path(path).unlink()
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--codec", default="audio/opus", help="codec for the streaming run")
    p.add_argument("--bitrate", default="12k")
    p.add_argument("--child", nargs=5)
    args = p.parse_args()
    if args.child:
        mode, path, hours, codec, bitrate = args.child
        stream_child(mode, path, float(hours), codec, bitrate)
        return
    o = overhead()
    s = streaming(args.hours, args.codec, args.bitrate)
    base = subprocess.run([sys.executable, "-c", f"import nc, nc_classical.opus, av, numpy, torch, sys;"
                           f"sys.path.insert(0, {str(Path(__file__).parent)!r}); from container import peak_rss_mib;"
                           f"print(peak_rss_mib())"],
                          check=True, capture_output=True, text=True).stdout.strip()
    audio_s = args.hours * 3600
    lines = [
        "# Container benchmark", "",
        f"Machine: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs; "
        f"run with `bench/container.py --hours {args.hours:g}`.", "",
        "## Overhead: 10 s of speech-like audio, audio/opus at 6 kbps", "",
        "| part | bytes |", "|---|---|",
        *(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in o.items()), "",
        f"Container overhead (everything but the codec payloads): "
        f"{o['preamble_and_head'] + o['data_chunk_framing'] + o['fini_index_tail']} bytes "
        f"= {(o['preamble_and_head'] + o['data_chunk_framing'] + o['fini_index_tail']) * 8 / 10 / 1000:.3f} kbps "
        f"over 10 s; the Opus packet length prefixes add {o['opus_length_prefixes']} bytes.", "",
        f"## Streaming {args.hours:g} h of 16 kHz mono audio through nc.open ({args.codec}, {args.bitrate}, 1 s pieces)",
        "",
        "| step | peak RSS (MiB) | wall (s) | x real time |", "|---|---|---|---|",
        f"| import only, torch included (baseline) | {float(base):.0f} | | |",
        *(f"| {r['mode']} | {r['peak_rss_mib']:.0f} | {r['seconds']:.1f} | {audio_s / r['seconds']:.0f} |"
          for r in s if "peak_rss_mib" in r),
        "", f"File: {s[-1]['bytes']} bytes ({s[-1]['bytes'] * 8 / audio_s / 1000:.2f} kbps). "
        f"The decoded hour as float32 would be {audio_s * 16000 * 4 / 2**20:.0f} MiB.",
    ]
    RESULTS.mkdir(exist_ok=True)
    name = "container.md" if args.codec == "audio/opus" else f"container_{args.codec.replace('/', '_')}.md"
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
