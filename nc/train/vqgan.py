"""Training for image/vqgan: `nc train image/vqgan --data DIR --out DIR`.

Reconstruction training of the VQ autoencoder (nc/models/vqgan.py) on random
crops of the photo shard (nc/train/image.py's `load_crops`): L1 + `--ssim` x
(1 - 3-scale SSIM) + COMMITMENT x commitment (the EMA codebooks need no codebook
term). Quantizer dropout: half the examples use every stage, the others
1 .. stages-1, so one model serves every rate. Dead codes restart at the first
step (onto real latents) and every 100 steps until 90 % of the run; the log
reports each stage's share of codes in use from the first steps, and the run
stops if stage 1 collapses. Resumable like the other trainers
(`checkpoint.safetensors`, `train.log`). At the end it fits the code priors (per
stage code counts over every training crop, whole 256 x 256 crops) and writes
`weights.safetensors` (fp16 networks + `prior.counts`).

No adversarial stage: on two CPU cores every step goes to reconstruction
(the model card says so).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nc.models.vqgan import ImageVQGAN, VqganConfig
from nc.models.weights import save_weights
from nc.train.common import log_line, trainer_parser
from nc.train.image import add_run_options, batch, grid_crops, load_crops, start_run, train_loop
from nc.train.losses import ms_ssim_loss

PROBE_CROPS = 16  # whole training crops whose codes the log's usage counts (16 x 256 positions)
COLLAPSE_SHARE = 0.1  # stage 1 using fewer of its codes than this after the warm-up stops the run
# EnCodec's 0.25 is for latents as large as its losses; against a per-pixel L1 on a normalized latent it
# won: the encoder made every position the same latent (zero commitment, one code) within 50 steps
COMMITMENT = 0.02


def dropout_stages(size: int, stages: int, device) -> torch.Tensor:
    """Half the examples use every stage, the others a uniform 1 .. stages - 1."""
    low = torch.randint(1, max(stages, 2), (size,), device=device).clamp(max=stages)
    return torch.where(torch.rand(size, device=device) < 0.5, torch.full_like(low, stages), low)


def losses_of(model: ImageVQGAN, x: torch.Tensor, n_stages, ssim_weight: float) -> tuple[torch.Tensor, dict]:
    x_hat, q = model(x, n_stages)
    l1 = (x_hat - x).abs().mean()
    structure = ms_ssim_loss(x_hat.clamp(0, 1), x)
    loss = l1 + ssim_weight * structure + COMMITMENT * q.commitment
    psnr = 10 * torch.log10(1 / (x_hat.clamp(0, 1) - x).square().mean().clamp(min=1e-10))
    return loss, {"loss": loss, "l1": l1, "ssim": 1 - structure, "commit": q.commitment, "psnr": psnr}


@torch.no_grad()
def usage(model: ImageVQGAN, probe: torch.Tensor) -> list[float]:
    """Per stage: the share of its codes that the probe crops' latents use (restarted codes count
    only once something picks them)."""
    codes = model.encode(probe, model.cfg.stages)
    return [round(len(torch.unique(codes[:, s])) / model.cfg.codebook_size, 3) for s in range(model.cfg.stages)]


def train(args) -> None:
    run = start_run(args, VqganConfig, ImageVQGAN, betas=(0.5, 0.9))  # VQGAN's Adam betas
    model = run.model
    crops = grid_crops(load_crops(Path(args.data)))

    def loss_of(x):
        return losses_of(model, x, dropout_stages(len(x), model.cfg.stages, x.device), args.ssim)

    def after_step(step, progress, logged, seconds):
        if step % args.log_every == 0:
            used = _log_step(run.out, model, crops, step, logged, run.optimizer, seconds, args, run.device)
            if step >= 1000 and used[0] < COLLAPSE_SHARE:
                raise SystemExit(f"codebook collapse: stage 1 uses {used[0]:.1%} of its codes at step {step}")
        if (step == 1 or step % 100 == 0) and progress < 0.9:
            model.quantizer.restart_dead_codes()

    seconds = train_loop(run, args, lambda rng: batch(crops, args.batch, args.crop, rng), 300, loss_of, after_step)
    finish(model, crops, run.out, args, run.step, seconds, run.device)


@torch.no_grad()
def fit_priors(model: ImageVQGAN, crops: np.ndarray, device, chunk: int = 16) -> torch.Tensor:
    """Code counts (stages, codebook_size) over every training crop, all stages."""
    cfg = model.cfg
    counts = torch.zeros(cfg.stages, cfg.codebook_size, dtype=torch.int64)
    for i in range(0, len(crops), chunk):
        x = torch.from_numpy(np.array(crops[i:i + chunk])).permute(0, 3, 1, 2).float().div(255)
        codes = model.encode(x.to(device), cfg.stages).cpu()
        for s in range(cfg.stages):
            counts[s] += torch.bincount(codes[:, s].flatten(), minlength=cfg.codebook_size)
    return counts


def finish(model: ImageVQGAN, crops, out: Path, args, step: int, seconds: float, device) -> None:
    model.eval()
    counts = fit_priors(model, crops, device)
    p = counts.double() / counts.sum(1, keepdim=True)
    entropy = -(p * torch.log2(p.clamp(min=1e-300))).sum(1)
    meta = {"config": model.cfg.to_dict(), "codec": "image/vqgan", "steps": step,
            "train_minutes": round(seconds / 60, 1), "device": str(device), "batch": args.batch,
            "crop": args.crop, "ssim_weight": args.ssim,
            "codes_used": [int(c) for c in (counts > 0).sum(1)],
            "bits_per_code": [round(float(e), 3) for e in entropy]}
    save_weights(out / "weights.safetensors", model.cpu().float(),
                 {"prior.counts": counts.clamp(max=2**31 - 1).to(torch.int32)}, meta)
    log_line(out, "wrote weights.safetensors: " + json.dumps(meta))


@torch.no_grad()
def _log_step(out, model, crops, step, logged, optimizer, seconds, args, device) -> list[float]:
    """Training losses, PSNR with 1 and every stage on fixed crops, and each stage's code usage on
    PROBE_CROPS whole crops (16 x 16 positions each); returns the usage."""
    model.eval()
    x = batch(crops, 4, args.crop, np.random.default_rng(12345)).to(device)
    probe = {}
    for n in sorted({1, model.cfg.stages}):
        x_hat = model.decode(model.encode(x, n))
        probe[f"{n}st"] = round(float(10 * torch.log10(1 / (x_hat - x).square().mean())), 2)
    picks = np.random.default_rng(54321).choice(len(crops), min(PROBE_CROPS, len(crops)), replace=False)
    used = usage(model, torch.from_numpy(np.array(crops[np.sort(picks)])).permute(0, 3, 1, 2).float().div(255).to(device))
    model.train()
    log_line(out, json.dumps({"step": step, **{k: round(float(v), 4) for k, v in logged.items()},
                              "probe_psnr": probe, "usage": used,
                              "lr": round(optimizer.param_groups[0]["lr"], 7),
                              "crops_per_s": round(step * args.batch / max(seconds, 1e-9), 1),
                              "minutes": round(seconds / 60, 2)}))
    return used


def build_parser() -> argparse.ArgumentParser:
    p = trainer_parser("nc train image/vqgan", __doc__.split("\n\n")[0])
    p.add_argument("codec", choices=["image/vqgan"])
    add_run_options(p, steps=100000, lr=4e-4, config='{"widths": [32, 64, 96, 128]}')
    p.add_argument("--crop", type=int, default=128, help="patch side, a multiple of 16 up to 256")
    p.add_argument("--ssim", type=float, default=0.5, help="weight of the multi-scale SSIM loss")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.crop % 16 or not 48 <= args.crop <= 256:
        raise SystemExit(f"--crop must be a multiple of 16 from 48 to 256, not {args.crop}")
    train(args)


if __name__ == "__main__":
    main()
