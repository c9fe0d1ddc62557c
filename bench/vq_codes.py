"""The codes of a VQ audio codec (audio/rvq, audio/wavtokenizer) on held-out audio: bits written per
code vs raw log2(K), and codebook usage.

    .venv/bin/python bench/vq_codes.py --data /work/data/audio16k [--codec audio/wavtokenizer]

Writes bench/results/rvq_codes.md (wavtokenizer_codes.md, ...).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from nc.media.facts import AudioFacts
from nc.plugins import registry

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--max-clips", type=int, default=40)
    p.add_argument("--codec", default="audio/rvq", help="audio/rvq or audio/wavtokenizer")
    args = p.parse_args()
    codec = registry().get(args.codec)
    stages_for = codec.stages_for
    k = codec.model.cfg.codebook_size
    short = args.codec.split("/")[1]
    clips = {kind: sorted((args.data / f"eval_{kind}").glob("*.wav"))[: args.max_clips] for kind in ("speech", "music")}
    lines = [f"# {args.codec} codes on held-out audio", "",
             f"Weights `{codec.weights.name}` (sha256 {codec.descriptor.weights_sha256[:12]}); raw cost log2({k}) = "
             f"{np.log2(k):.0f} bits per code. 'bits/code' counts every payload byte (the 2-byte frame count included).",
             "", "| kind | rate | stages | bits/code written | saving vs raw |", "|---|---|---|---|---|"]
    usage = {}
    for kind, paths in clips.items():
        for name, stages in stages_for.items():
            bits = codes = 0
            for path in paths:
                x, sr = sf.read(path, dtype="float32", always_2d=True)
                facts = AudioFacts(sr, x.shape[1])
                point = codec.descriptor.resolve(name)
                enc = codec.encoder(facts, point)
                packets = list(enc.encode(x)) + list(enc.flush())
                bits += 8 * sum(len(pk.payload) for pk in packets)
                c = codec.tokenize([x], facts, point)
                codes += c.size
                if stages == max(stages_for.values()):
                    for s in range(stages):
                        usage.setdefault((kind, s), []).append(c[:, s].ravel())
            per = bits / max(codes, 1)
            lines.append(f"| {kind} | {name} | {stages} | {per:.2f} | {1 - per / np.log2(k):.1%} |")
    most = max(stages_for.values())
    trained = codec.model.priors.freqs  # counts + 1 from the training audio, one row per stage
    lines += ["", f"Codebook usage at {most} stages (distinct codes seen, and perplexity = 2^entropy, out of "
              f"{k}); 'in training' counts the codes the priors saw at least once:", "",
              "| kind | stage | distinct | perplexity | in training |", "|---|---|---|---|---|"]
    for (kind, s), parts in sorted(usage.items()):
        if s in (0, 1, 2, 5, 11, 23):
            c = np.concatenate(parts)
            p_ = np.bincount(c, minlength=k) / len(c)
            ent = -(p_[p_ > 0] * np.log2(p_[p_ > 0])).sum()
            seen = int((trained[s] > 1).sum())
            lines.append(f"| {kind} | {s + 1} | {len(np.unique(c))} | {2 ** ent:.0f} | {seen} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{short}_codes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
