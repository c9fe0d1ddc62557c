"""Training for video/wfvae: `nc train video/wfvae --data DIR --out DIR`.

Rate-distortion training of one model for every quality (nc/models/wfvae.py), as image/hvae's
trainer does for stills: each clip draws a quality q uniformly from [0, Q - 1] and the loss is
bits per pixel (of every frame) + lambda(q) 255^2 MSE. The run's setup, loop, checkpoints,
resumption and exported integer tables are nc/train/image.py's.

`--data` is a folder holding `train_clips.npy`, uint8 (N, frames, side, side, 3), built by
scripts/build_video_set.py: a batch is `--batch` random `--frames` x `--crop`^2 windows of those
clips, mirrored left-right half of the time and played backwards a quarter of the time. Or it is a
folder of sources (clips/, photos/; `build_video_set.py --export-sources`): then `--workers`
processes make every batch afresh (nc/train/video_data.py), as a GPU run needs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nc.models.weights import save_weights
from nc.models.wfvae import ALIGN, TIME, VideoWFVAE, WfvaeConfig
from nc.train.common import log_line, positive, trainer_parser
from nc.train.image import add_run_options, export_tables, start_run, train_loop


def load_clips(folder: Path) -> np.ndarray:
    shard = folder / "train_clips.npy"
    if not shard.exists():
        raise SystemExit(f"{shard} not found: build it with scripts/build_video_set.py --out {folder}")
    clips = np.load(shard, mmap_mode="r", allow_pickle=False)
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
        raise SystemExit(f"{shard}: expected uint8 (N, frames, side, side, 3), got {clips.dtype} {clips.shape}")
    return clips


def window(clip: np.ndarray, frames: int, crop: int, rng: np.random.Generator) -> np.ndarray:
    """A random frames x crop^2 window of one clip, mirrored half the time and reversed a quarter."""
    t, h, w, _ = clip.shape
    s, top, left = rng.integers(0, t - frames + 1), rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    p = clip[s:s + frames, top:top + crop, left:left + crop]
    if rng.random() < 0.5:
        p = p[:, :, ::-1]
    if rng.random() < 0.25:
        p = p[::-1]
    return p


def as_batch(windows: list[np.ndarray]) -> torch.Tensor:
    """uint8 windows -> float (size, 3, frames, crop, crop) in [0, 1]."""
    return torch.from_numpy(np.stack(windows)).permute(0, 4, 1, 2, 3).float() / 255


def batch(clips: np.ndarray, size: int, frames: int, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """`size` random windows of random clips."""
    return as_batch([window(clips[rng.integers(len(clips))], frames, crop, rng) for _ in range(size)])


def rd_loss(model: VideoWFVAE, x: torch.Tensor, q: torch.Tensor) -> dict:
    out = model(x, q)
    pixels = x.shape[2] * x.shape[3] * x.shape[4]
    mse = (out["x_hat"] - x).square().mean((1, 2, 3, 4))
    bpp = (out["y_bits"] + out["z_bits"]) / pixels
    loss = (bpp + model.lmbda(q) * 255**2 * mse).mean()
    return {"loss": loss, "bpp": bpp.mean(), "z_bpp": (out["z_bits"] / pixels).mean(),
            "psnr": (10 * torch.log10(1 / mse.clamp(min=1e-10))).mean()}


class ClipBatches:
    """Where a video trainer's batches come from: `--data`'s train_clips.npy, or, for a folder of sources,
    ClipStream's worker processes making clips of max(frames, 16) x max(crop, 128)^2 afresh. `clips` are
    fixed clips for probes (the shard, or the stream's first `fixed_batches` batches); `draw(rng)` is a batch of random
    `--frames` x `--crop`^2 windows, flipped or reversed at random."""

    def __init__(self, args, seed: int, fixed_batches: int = 1):
        self.args, self.stream = args, None
        if (Path(args.data) / "train_clips.npy").exists():
            self.clips = load_clips(Path(args.data))
            if args.frames > self.clips.shape[1] or args.crop > min(self.clips.shape[2:4]):
                raise SystemExit(f"--frames {args.frames} / --crop {args.crop} exceed the clips' {self.clips.shape[1:4]}")
        else:
            from nc.train.video_data import ClipStream

            self.stream = ClipStream(args.data, seed, max(args.frames, 16), max(args.crop, 128), args.batch,
                                     args.workers)
            self.clips = np.stack([c for _ in range(fixed_batches) for c in self.stream.next()])

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        a = self.args
        if self.stream is None:
            return batch(self.clips, a.batch, a.frames, a.crop, rng)
        return as_batch([window(c, a.frames, a.crop, rng) for c in self.stream.next()])

    def close(self) -> None:
        if self.stream:
            self.stream.close()


def add_clip_options(p: argparse.ArgumentParser, frames: int, crop: int, time: int, align: int) -> None:
    p.add_argument("--frames", type=positive(int), default=frames, help=f"frames per clip, a multiple of {time}")
    p.add_argument("--crop", type=positive(int), default=crop, help=f"clip side, a multiple of {align}")
    p.add_argument("--workers", type=positive(int), default=4, help="processes making clips from a sources folder")


def parse_clip_args(p: argparse.ArgumentParser, argv, time: int, align: int) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.frames % time or args.frames < time or args.crop % align or args.crop < align:
        raise SystemExit(f"--frames must be a multiple of {time} and --crop of {align}")
    return args


def train(args) -> None:
    run = start_run(args, WfvaeConfig, VideoWFVAE)
    model, cfg = run.model, run.model.cfg
    data = ClipBatches(args, args.seed + run.step)
    clips = data.clips

    def loss_of(x):  # every clip at its own quality
        losses = rd_loss(model, x, torch.rand(len(x), device=x.device) * (cfg.qualities - 1))
        return losses["loss"], losses

    def after_step(step, progress, losses, seconds):
        if step % args.log_every == 0:
            _log_step(run, clips, step, losses, seconds, args)

    try:
        seconds = train_loop(run, args, data.draw, 500, loss_of, after_step)
    finally:
        data.close()
    meta = {"config": cfg.to_dict(), "codec": "video/wfvae", "steps": run.step,
            "train_minutes": round(seconds / 60, 1), "device": str(run.device),
            "batch": args.batch, "frames": args.frames, "crop": args.crop}
    save_weights(run.out / "weights.safetensors", model.cpu().float(), export_tables(model), meta)
    log_line(run.out, "wrote weights.safetensors: " + json.dumps(meta))


@torch.no_grad()
def _log_step(run, clips, step, losses, seconds, args) -> None:
    """Training losses, plus bpp / PSNR at the lowest and highest quality on fixed clips (rounded latents)."""
    model = run.model
    model.eval()
    x = batch(clips, 2, args.frames, args.crop, np.random.default_rng(12345)).to(run.device)
    probe = {}
    for q in (0, model.cfg.qualities - 1):
        r = rd_loss(model, x, torch.full((2,), float(q), device=run.device))
        probe[f"q{q + 1}"] = [round(float(r["bpp"]), 4), round(float(r["psnr"]), 2)]
    model.train()
    log_progress(run, step, losses, {"probe_bpp_psnr": probe}, seconds, args.batch)


def log_progress(run, step: int, losses: dict, probe: dict, seconds: float, batch_size: int) -> None:
    """One train.log line of a video trainer: the step's losses, the probe's numbers, lr and speed."""
    log_line(run.out, json.dumps({"step": step, **{k: round(float(v), 4) for k, v in losses.items()}, **probe,
                                  "lr": round(run.optimizer.param_groups[0]["lr"], 7),
                                  "clips_per_s": round(step * batch_size / max(seconds, 1e-9), 2),
                                  "minutes": round(seconds / 60, 2)}))


def build_parser() -> argparse.ArgumentParser:
    p = trainer_parser("nc train video/wfvae", __doc__.split("\n\n")[0])
    p.add_argument("codec", choices=["video/wfvae"])
    add_run_options(p, steps=100000, lr=2e-4, config='{"widths": [16, 32, 64], "latent": 32}')
    add_clip_options(p, frames=16, crop=128, time=TIME, align=ALIGN)
    return p


def main(argv=None) -> None:
    train(parse_clip_args(build_parser(), argv, TIME, ALIGN))


if __name__ == "__main__":
    main()
