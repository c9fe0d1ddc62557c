"""Training for video/bsqvit: `nc train video/bsqvit --data DIR --out DIR`.

Reconstruction training of one model for every rate (nc/models/bsqvit.py): each clip draws how many
bits per token the decoder reads (all of them half the time, else k in 4, 8, ..., bits), and the loss
is the MSE of its decoding (what the benchmark's PSNR measures) plus a small commitment term that keeps
every coordinate of the sphere point away from zero (`recon_loss`). The signs cost bits by construction,
so there is no rate term. The
run's setup, loop, checkpoints and resumption are nc/train/image.py's; the clips are video/wfvae's
(`--data` holds train_clips.npy from scripts/build_video_set.py, or a sources folder).

At the end the entropy model is fitted: the trained encoder codes the training clips and the
counts of every GROUP-bit sub-code in each of its contexts become the integer frequency tables
the codec codes with (nc/codecs/bsqvit.py), shipped in weights.safetensors beside the network.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from nc.models.bsqvit import ALIGN, GROUP, TUBELET, BsqVitConfig, VideoBsqVit
from nc.models.weights import save_weights
from nc.train.common import log_line, trainer_parser
from nc.train.image import add_run_options, start_run, train_loop
from nc.train.video import ClipBatches, add_clip_options, batch, log_progress, parse_clip_args


def keeps(cfg: BsqVitConfig, size: int, device) -> torch.Tensor:
    """Bits read per token, one per clip: all of them for half the clips, else uniform over GROUP,
    2 GROUP, ..., cfg.bits (so the last bits, read only at the highest rates, still train often)."""
    k = torch.randint(1, cfg.groups + 1, (size,), device=device) * GROUP
    return torch.where(torch.rand(size, device=device) < 0.5, cfg.bits, k)


def recon_loss(model: VideoBsqVit, x: torch.Tensor, keep: torch.Tensor, commit: float = 0.0) -> dict:
    """MSE of the decoding, plus `commit` x the mean squared distance of the scaled sphere point from its
    signs: it spreads the encoder's output over every dimension, where near-zero coordinates would make
    signs that flip with any change of the input and that the decoder learns to ignore."""
    out = model(x, keep)
    mse = (out["x_hat"] - x).square().mean((1, 2, 3, 4))
    u = out["u"]
    distance = (u - torch.where(u >= 0, 1.0, -1.0)).square().mean()
    return {"loss": mse.mean() + commit * distance, "psnr": (10 * torch.log10(1 / mse.clamp(min=1e-10))).mean(),
            "commit": distance, "near_zero": (u.abs() < 0.1).float().mean()}


@torch.no_grad()
def fit_priors(model: VideoBsqVit, clips: np.ndarray, limit: int = 400) -> dict[str, torch.Tensor]:
    """The codec's integer tables: sub-code counts per (group, context) over up to `limit` clips,
    nc/codecs/bsqvit.py's `contexts` defining the contexts."""
    from nc.codecs.bsqvit import count_subcodes

    model.eval()
    counts = None
    for k in range(0, min(len(clips), limit), 8):
        x = torch.from_numpy(np.array(clips[k:k + 8])).permute(0, 4, 1, 2, 3).float() / 255
        for bits in model.encode(x).numpy():
            c = count_subcodes(bits)
            counts = c if counts is None else counts + c
    model.train()
    return {"prior.counts": torch.from_numpy(counts.astype(np.int64))}


def train(args) -> None:
    run = start_run(args, BsqVitConfig, VideoBsqVit)
    model, cfg = run.model, run.model.cfg
    data = ClipBatches(args, args.seed + run.step, fixed_batches=8)  # the priors count these clips
    clips = data.clips

    def loss_of(x):
        losses = recon_loss(model, x, keeps(cfg, len(x), x.device), args.commit)
        return losses["loss"], losses

    def after_step(step, progress, losses, seconds):
        if step % args.log_every == 0:
            _log_step(run, clips, step, losses, seconds, args)

    try:
        seconds = train_loop(run, args, data.draw, 500, loss_of, after_step)
    finally:
        data.close()
    tables = fit_priors(model.cpu().float(), clips)
    meta = {"config": cfg.to_dict(), "codec": "video/bsqvit", "steps": run.step,
            "train_minutes": round(seconds / 60, 1), "device": str(run.device),
            "batch": args.batch, "frames": args.frames, "crop": args.crop}
    save_weights(run.out / "weights.safetensors", model, tables, meta)
    log_line(run.out, "wrote weights.safetensors: " + json.dumps(meta))


@torch.no_grad()
def _log_step(run, clips, step, losses, seconds, args) -> None:
    """Training losses, plus PSNR at 8, 16, 32 and all bits per token on fixed 16 x 128^2 clips."""
    model = run.model
    model.eval()
    x = batch(clips, 2, min(16, clips.shape[1]), min(128, clips.shape[2]), np.random.default_rng(12345))
    x = x.to(run.device)
    probe = {}
    for k in sorted({8, 16, 32, model.cfg.bits}):
        if k <= model.cfg.bits:
            probe[f"{k}b"] = round(float(recon_loss(model, x, torch.full((2,), k, device=run.device))["psnr"]), 2)
    model.train()
    log_progress(run, step, losses, {"probe_psnr": probe}, seconds, args.batch)


def build_parser() -> argparse.ArgumentParser:
    p = trainer_parser("nc train video/bsqvit", __doc__.split("\n\n")[0])
    p.add_argument("codec", choices=["video/bsqvit"])
    add_run_options(p, steps=100000, lr=4e-4, config='{"width": 96, "depth": 1}')
    add_clip_options(p, frames=8, crop=64, time=TUBELET, align=ALIGN)
    p.add_argument("--commit", type=float, default=0.005, help="weight of the commitment term (see recon_loss)")
    return p


def main(argv=None) -> None:
    train(parse_clip_args(build_parser(), argv, TUBELET, ALIGN))


if __name__ == "__main__":
    main()
