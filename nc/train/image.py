"""Training for image/hvae: `nc train image/hvae --data DIR --out DIR`.

Rate-distortion training of one model for every quality (nc/models/hvae.py):
each example draws a quality q uniformly from [0, Q - 1] and the loss is
bits per pixel + lambda(q) 255^2 MSE (CompressAI's scale), so one set of weights
serves every rate. Runs on a CPU (small, resumable, in the background) or one
GPU. Every `--checkpoint-every` steps it writes `checkpoint.safetensors` and
appends to `train.log`; rerunning the same command resumes. At the end it
writes `weights.safetensors`: fp16 networks plus the integer tables the codec
decodes with (integer hyper-synthesis, gain tables, hyper-latent scale indices).

`--data` is a folder holding `train_256.npy`, uint8 crops (N, 256, 256, 3)
built by scripts/build_image_set.py, or a folder of photos (png, jpg, ...; e.g.
the shrunk training photos `build_image_set.py --photos` writes), decoded once
and cropped at random positions.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nc.models.hvae import LEVELS_BELOW, HvaeConfig, ImageHVAE
from nc.models.hyperprior import ACT_BITS, IntegerHyperSynthesis, gain_tables
from nc.models.weights import checkpoint_meta, load_checkpoint, load_weights, save_checkpoint, save_weights
from nc.errors import one_line
from nc.train.common import build_config, json_object, learning_rate, log_line, positive, trainer_parser

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")


def load_crops(folder: Path) -> np.ndarray | list[np.ndarray]:
    """What training crops are cut from: train_256.npy, uint8 (N, 256, 256, 3), if the folder holds
    one; else every photo under it, whole (uint8 (H, W, 3) arrays), so each crop is cut at a fresh
    random position. 23 photos give a GPU run's 10^5 crops more variety than a few hundred fixed ones."""
    shard = folder / "train_256.npy"
    if shard.exists():
        crops = np.load(shard, mmap_mode="r", allow_pickle=False)
        if crops.ndim != 4 or crops.shape[1:] != (256, 256, 3) or crops.dtype != np.uint8:
            raise SystemExit(f"{shard}: expected uint8 (N, 256, 256, 3), got {crops.dtype} {crops.shape}")
        return crops
    from PIL import Image

    photos = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        with Image.open(path) as im:
            photos.append(np.asarray(im.convert("RGB")))
    photos = [a for a in photos if min(a.shape[:2]) >= 256]
    if not photos:
        raise SystemExit(f"no train_256.npy or photos of at least 256 x 256 under {folder}")
    return photos


def grid_crops(images: np.ndarray | list[np.ndarray], size: int = 256) -> np.ndarray:
    """uint8 (N, size, size, 3): the shard as it is, or photos cut on a grid (a trainer that
    indexes fixed crops, e.g. to fit code priors over all of them)."""
    if isinstance(images, np.ndarray):
        return images
    return np.stack([a[t:t + size, l:l + size] for a in images for t in range(0, a.shape[0] - size + 1, size)
                     for l in range(0, a.shape[1] - size + 1, size)])


def batch(images: np.ndarray | list[np.ndarray], size: int, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """`size` random crop x crop patches with random flips, float (size, 3, crop, crop) in [0, 1].
    Images are drawn in proportion to the crops they hold (a big photo more often than a small one)."""
    if isinstance(images, np.ndarray):  # a shard: crops of one size
        picks = rng.integers(len(images), size=size)
    else:
        areas = np.array([(a.shape[0] - crop + 1) * (a.shape[1] - crop + 1) for a in images], float)
        picks = rng.choice(len(images), size=size, p=areas / areas.sum())
    out = np.empty((size, crop, crop, 3), np.uint8)
    for k, i in enumerate(picks):
        a = images[i]
        t, l = rng.integers(0, a.shape[0] - crop + 1), rng.integers(0, a.shape[1] - crop + 1)
        p = a[t:t + crop, l:l + crop]
        if rng.random() < 0.5:
            p = p[:, ::-1]
        if rng.random() < 0.5:
            p = p[::-1]
        out[k] = p
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


def rd_loss(model: ImageHVAE, x: torch.Tensor, q: torch.Tensor) -> dict:
    out = model(x, q)
    pixels = x.shape[2] * x.shape[3]
    mse = (out["x_hat"] - x).square().mean((1, 2, 3))
    bpp = (out["y_bits"] + out["z_bits"]) / pixels
    loss = (bpp + model.lmbda(q) * 255**2 * mse).mean()
    return {"loss": loss, "bpp": bpp.mean(), "z_bpp": (out["z_bits"] / pixels).mean(),
            "psnr": (10 * torch.log10(1 / mse.clamp(min=1e-10))).mean()}


def export_tables(model: ImageHVAE, levels_below: int = 0) -> dict[str, torch.Tensor]:
    """The integer tensors image/hvae (and video/wfvae) decode with (nc/codecs/hyperprior.py);
    levels_below: extrapolated quality levels below the trained ones (`gain_tables`)."""
    from nc.codecs.hyperprior import log_scale_thresholds

    thresholds = log_scale_thresholds(ACT_BITS)
    z_log = torch.round(model.z_log_scale.detach().double() * 2.0**ACT_BITS).numpy().astype(np.int64)
    z_index = np.minimum(np.searchsorted(thresholds, z_log, side="left"), len(thresholds) - 1)
    return {**IntegerHyperSynthesis.from_float(model.h_s).tensors(), **gain_tables(model, levels_below),
            "z.scale_index": torch.from_numpy(z_index.astype(np.int32))}


@dataclass
class Run:
    """A training run's state: where it writes, its network and optimizer, and how far it got."""

    out: Path
    ckpt: Path
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    elapsed: float = 0.0


def start_run(args, config_class, model_class, betas=(0.9, 0.999)) -> Run:
    """Set up or resume a run in args.out: the checkpoint's config when resuming, else the --init
    weights' config (fine-tuning: their network, a fresh optimizer) with the --config overrides."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.safetensors"
    overrides = args.config or {}
    init = None if ckpt.exists() or not args.init else load_weights(args.init)
    if ckpt.exists():
        cfg = build_config(config_class, checkpoint_meta(ckpt)["config"], str(ckpt))
    else:
        if init:
            build_config(config_class, init[2]["config"], f"--init {args.init}")
        cfg = build_config(config_class, {**(init[2]["config"] if init else {}), **overrides}, "--config")
    torch.manual_seed(args.seed)
    model = model_class(cfg).to(device)
    run = Run(out, ckpt, device, model, torch.optim.Adam(model.parameters(), lr=args.lr, betas=betas))
    if init:
        state, _, meta = init
        if build_config(config_class, meta["config"], f"--init {args.init}") != cfg:
            raise SystemExit(f"{args.init} holds a network of config {meta['config']}, not {cfg.to_dict()}")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # another kind of network whose config happens to fit
            raise SystemExit(f"--init {args.init}: its tensors do not fit this network ({one_line(e)})") from None
        log_line(out, f"initialized from {args.init}")
    if ckpt.exists():
        meta = load_checkpoint(ckpt, {"model": model}, {"opt": run.optimizer})
        run.step, run.elapsed = meta["step"], meta["elapsed"]
        log_line(out, f"resumed from step {run.step}")
    else:
        log_line(out, f"model: {model.parameter_count() / 1e6:.2f} M parameters, config {cfg.to_dict()}")
    return run


def train_loop(run: Run, args, draw, warmup: int, loss_of, after_step) -> float:
    """What the image and video trainers run until args.steps or args.max_minutes: the learning-rate
    schedule, a batch draw(rng) (random crops or clips), one clipped Adam step on loss_of(x) -> (loss, logged), then
    after_step(step, progress, logged, seconds) (logging, restarts, ...), and checkpoints. Returns the
    seconds trained, this run's and those it resumed."""
    model, optimizer = run.model, run.optimizer
    rng = np.random.default_rng([args.seed, run.step])
    start = time.time() - run.elapsed
    budget = args.max_minutes * 60 if args.max_minutes else float("inf")
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.device.type == "cuda")
    stop, skipped = False, 0
    torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its fastest convolutions
    while run.step < args.steps and not stop:
        progress = max(run.step / args.steps, (time.time() - start) / budget)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(run.step, progress, args.lr, warmup=warmup)
        x = draw(rng).to(run.device)
        with autocast:
            loss, logged = loss_of(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        run.step += 1
        if torch.isfinite(norm):  # one bad batch must not poison the weights of an unattended run
            optimizer.step()
            after_step(run.step, progress, logged, time.time() - start)
        else:
            skipped += 1
            log_line(run.out, f"step {run.step}: non-finite gradient, step skipped ({skipped} so far)")
            if skipped > 100:
                raise SystemExit(f"{skipped} non-finite gradients: the run diverged")
        stop = time.time() - start >= budget
        if run.step % args.checkpoint_every == 0 or run.step == args.steps or stop:
            save_checkpoint(run.ckpt, {"model": model}, {"opt": optimizer},
                            {"step": run.step, "elapsed": time.time() - start, "config": model.cfg.to_dict()})
    return time.time() - start


def train(args) -> None:
    run = start_run(args, HvaeConfig, ImageHVAE)
    model, cfg = run.model, run.model.cfg
    crops = load_crops(Path(args.data))

    def loss_of(x):  # every crop at its own quality
        losses = rd_loss(model, x, torch.rand(len(x), device=x.device) * (cfg.qualities - 1))
        return losses["loss"], losses

    def after_step(step, progress, losses, seconds):
        if step % args.log_every == 0:
            _log_step(run.out, model, crops, step, losses, run.optimizer, seconds, args, run.device)

    seconds = train_loop(run, args, lambda rng: batch(crops, args.batch, args.crop, rng), 500, loss_of, after_step)
    meta = {"config": cfg.to_dict(), "codec": "image/hvae", "steps": run.step,
            "train_minutes": round(seconds / 60, 1), "device": str(run.device),
            "batch": args.batch, "crop": args.crop}
    save_weights(run.out / "weights.safetensors", model.cpu().float(), export_tables(model, LEVELS_BELOW), meta)
    log_line(run.out, "wrote weights.safetensors: " + json.dumps(meta))


@torch.no_grad()
def _log_step(out, model, crops, step, losses, optimizer, seconds, args, device) -> None:
    """Training losses, plus bpp / PSNR at the lowest and highest quality on fixed crops (rounded latents)."""
    model.eval()
    x = batch(crops, 4, args.crop, np.random.default_rng(12345)).to(device)
    probe = {}
    for q in (0, model.cfg.qualities - 1):
        r = rd_loss(model, x, torch.full((4,), float(q), device=device))
        probe[f"q{q + 1}"] = [round(float(r["bpp"]), 3), round(float(r["psnr"]), 2)]
    model.train()
    log_line(out, json.dumps({"step": step, **{k: round(float(v), 4) for k, v in losses.items()},
                          "probe_bpp_psnr": probe, "lr": round(optimizer.param_groups[0]["lr"], 7),
                          "crops_per_s": round(step * args.batch / max(seconds, 1e-9), 1),
                          "minutes": round(seconds / 60, 2)}))


def add_run_options(p: argparse.ArgumentParser, steps: int, lr: float, config: str) -> None:
    """The options every image trainer takes: data, run folder, budget, batch, device and resumption."""
    p.add_argument("--data", required=True, help="folder with train_256.npy or photos")
    p.add_argument("--out", required=True, help="folder for checkpoint, log and weights (rerun to resume)")
    p.add_argument("--steps", type=positive(int), default=steps)
    p.add_argument("--max-minutes", type=positive(float, zero_ok=True), default=0,
                   help="stop (and ship) after this much training time (0: no limit)")
    p.add_argument("--batch", type=positive(int), default=8)
    p.add_argument("--lr", type=positive(float), default=lr)
    p.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    p.add_argument("--threads", type=positive(int, zero_ok=True), default=0,
                   help="CPU threads (default, 0: torch's choice)")
    p.add_argument("--config", type=json_object, help=f"JSON overrides of the network's config, e.g. '{config}'")
    p.add_argument("--init", help="start from these weights (a weights.safetensors) instead of random ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=positive(int), default=100)
    p.add_argument("--checkpoint-every", type=positive(int), default=200)


def build_parser() -> argparse.ArgumentParser:
    p = trainer_parser("nc train image/hvae", __doc__.split("\n\n")[0])
    p.add_argument("codec", choices=["image/hvae"])
    add_run_options(p, steps=200000, lr=2e-4, config='{"channels": 64, "latent": 96, "hyper": 48}')
    p.add_argument("--crop", type=positive(int), default=128, help="patch side, a multiple of 64 up to 256")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.crop % 64 or not 64 <= args.crop <= 256:
        raise SystemExit(f"--crop must be a multiple of 64 from 64 to 256, not {args.crop}")
    train(args)


if __name__ == "__main__":
    main()
