"""The codes of image/vqgan on held-out photos: codebook usage per stage and bits written per code.

    .venv/bin/python bench/image_codes.py --data /work/data/images

Photos: DATA/eval/*.png (held out from training by scripts/build_image_set.py). Per stage: how many of
its codes occur on the photos (and on the training crops, from the weights' fitted priors), the
perplexity of their histogram, and what the shipped priors spend per code against raw log2(K).
Writes bench/results/vqgan_codes.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from nc.plugins import registry

RESULTS = Path(__file__).resolve().parent / "results"


def perplexity(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder made by scripts/build_image_set.py")
    p.add_argument("--out", type=Path, default=RESULTS / "vqgan_codes.md")
    args = p.parse_args()
    codec = registry().get("image/vqgan")
    model = codec.model
    k, stages = model.cfg.codebook_size, model.cfg.stages
    paths = sorted((args.data / "eval").glob("*.png"))
    codes = [model.image_codes(np.asarray(Image.open(path).convert("RGB"))) for path in paths]
    trained = model.prior.freqs.astype(np.int64) - 1  # prior.counts: the training crops' codes
    lines = [f"# image/vqgan codes on {len(paths)} held-out photos", "",
             f"Weights `{codec.weights.name}` (sha256 {codec.descriptor.weights_sha256[:12]}); {stages} stages of "
             f"{k} codes, raw log2({k}) = {np.log2(k):.0f} bits per code; "
             f"{sum(c[0].size for c in codes)} grid positions per stage on the photos. 'bits/code' is the "
             "ideal code length under the shipped priors (the ANS payload is within a few bytes of it).", "",
             "| stage | codes used (photos) | codes used (training crops) | perplexity (photos) | bits/code | saving vs raw |",
             "|---|---|---|---|---|---|"]
    for s in range(stages):
        symbols = np.concatenate([c[s].ravel() for c in codes])
        counts = np.bincount(symbols, minlength=k)
        bits = model.prior.cross_entropy_bits(symbols, np.full(symbols.size, s)) / symbols.size
        lines.append(f"| {s + 1} | {int((counts > 0).sum())} ({(counts > 0).mean():.1%}) | "
                     f"{int((trained[s] > 0).sum())} ({(trained[s] > 0).mean():.1%}) | {perplexity(counts):.0f} | "
                     f"{bits:.2f} | {1 - bits / np.log2(k):.1%} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
