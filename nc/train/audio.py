"""Training for nc's frame-rate audio codecs: `nc train audio/rvq --data DIR --out DIR` (or audio/fsq).

Runs on a CPU (small, resumable, in the background), on one GPU (bf16), or on
several with `torchrun --nproc-per-node N -m nc.train.audio ...` (DDP; gloo on
CPU, nccl on GPU). Every `--checkpoint-every` steps it writes `checkpoint.safetensors`
(model + Adam state, atomically) and appends to `train.log`; rerunning the same
command resumes. At the end it measures code usage, fits the entropy-coding
priors and writes `weights.safetensors` (fp16) for shipping.

audio/rvq trains FrameCodecConfig's quantizer "rvq" (dead-code restarts; logs
the share of codes in use), audio/fsq the quantizer "fsq" (no restarts; logs the
entropy of each dimension's level histogram in bits), audio/wavtokenizer the quantizer "vq" (one
4096-code EMA codebook started by k-means on the encoder's latents, dead-code
restarts); all have a commitment term, RVQ and FSQ a codebook ("match") term. Quantizer dropout draws the codec's own rate points' stage counts.

`--data` is a folder of int16 `.npy` shards (`scripts/build_audio_set.py`) or of
audio files (wav, flac, ogg, mp3, ...), which are decoded and resampled once.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from nc.models.frame_codec import FrameCodec, FrameCodecConfig
from nc.metrics import harmonic_match
from nc.models.weights import checkpoint_meta, load_checkpoint, load_weights, save_checkpoint, save_weights
from nc.train.common import build_config, json_object, learning_rate, log_line, positive, trainer_parser
from nc.train.discriminators import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from nc.train.losses import MultiScaleMelLoss, log_magnitude_loss, magnitude_losses, stft_consistency

QUANTIZER = {"audio/rvq": "rvq", "audio/fsq": "fsq", "audio/wavtokenizer": "vq"}  # the FrameCodecConfig.quantizer each codec ships
# config each codec's new models get beside FrameCodecConfig's defaults (and the --init weights' config)
CODEC_CONFIG = {"audio/wavtokenizer": {"codebook_size": 4096, "stages": 1}}
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff")


# ---------------------------------------------------------------- data


def load_corpus(folder: Path, rate: int) -> dict[str, np.ndarray]:
    """int16 arrays by name: every train_NAME.npy shard in the folder, else every audio file decoded to `rate` mono."""
    shards = sorted(folder.glob("train*.npy"))
    if shards:
        return {s.stem.removeprefix("train_"): np.load(s, mmap_mode="r", allow_pickle=False) for s in shards}
    from nc.media.files import open_media
    from nc.media.resample import resample

    arrays = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTS):
        source = open_media(str(path))
        facts = source.facts[-1]
        x = np.concatenate([b for _, b in source.blocks()]).mean(1, keepdims=True)
        x = resample(x.astype(np.float32), facts.sample_rate, rate)[:, 0]
        arrays.append((np.clip(x, -1, 1) * 32767).astype(np.int16))
    if not arrays:
        raise SystemExit(f"no train*.npy shards or audio files under {folder}")
    return {"files": np.concatenate(arrays)}


class CropSampler:
    """Random fixed-length crops from named sources (weighted by `mix`, else by size), random gain;
    silent crops are redrawn."""

    def __init__(self, arrays: dict[str, np.ndarray], samples: int, seed, mix: dict[str, float] | None = None,
                 sample_rate: int = 16000):
        names = [n for n, a in arrays.items() if len(a) > 2 * samples]
        self.arrays = [arrays[n] for n in names]
        weights = np.array([(mix or {}).get(n, 0.0) if mix else len(arrays[n]) for n in names], np.float64)
        if weights.sum() <= 0:
            raise SystemExit(f"--mix gives no weight to any of {names}")
        self.p = weights / weights.sum()
        self.samples = samples
        self.rate_units = sample_rate // 1000
        self.rng = np.random.default_rng(seed)

    def crop(self, samples: int | None = None) -> np.ndarray:
        samples = samples or self.samples
        for _ in range(10):
            a = self.arrays[self.rng.choice(len(self.arrays), p=self.p)]
            i = self.rng.integers(0, len(a) - samples)
            x = a[i:i + samples].astype(np.float32) / 32768
            if np.abs(x).max() > 1e-3:
                break
        peak = max(np.abs(x).max(), 1e-3)
        return x * min(self.rng.uniform(0.3, 1.0) / peak, 10.0)

    def batch(self, size: int, speeds=(1.0,)) -> torch.Tensor:
        """`size` crops; with several `speeds`, one is drawn per batch and the crops are played that
        much faster (longer crops resampled down to the crop length: pitch and tempo shift), which
        widens a small training set's range of voices."""
        speed = float(self.rng.choice(speeds))
        if speed == 1.0:
            return torch.from_numpy(np.stack([self.crop() for _ in range(size)]))
        import torchaudio

        source, target = round(self.rate_units * speed), self.rate_units  # e.g. 17 : 16 at 16 kHz
        longer = math.ceil(self.samples * source / target) + 64
        x = torch.from_numpy(np.stack([self.crop(longer) for _ in range(size)]))
        return torchaudio.functional.resample(x, source, target)[:, :self.samples].contiguous()


class Prefetcher:
    """Draws batches on background threads, a few ahead, so cropping and resampling on the CPU
    overlap the accelerator's work (on a GPU the sampler, not the model, sets the pace). One
    thread per sampler: each has its own random generator, which is not thread-safe."""

    def __init__(self, samplers, size: int, speeds, pin: bool, depth: int = 8):
        import queue
        import threading

        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()

        def work(sampler) -> None:
            try:
                while not self.stopped.is_set():
                    batch = sampler.batch(size, speeds)
                    self.queue.put(batch.pin_memory() if pin else batch)
            except BaseException as e:  # handed to the training loop, which raises it
                self.queue.put(e)

        samplers = samplers if isinstance(samplers, (list, tuple)) else [samplers]
        self.threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in samplers]
        for thread in self.threads:
            thread.start()

    def next(self, device) -> torch.Tensor:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item.to(device, non_blocking=True)

    def close(self) -> None:
        self.stopped.set()
        while any(t.is_alive() for t in self.threads):  # unblock workers waiting to put, then let them finish
            while not self.queue.empty():
                self.queue.get_nowait()
            for thread in self.threads:
                thread.join(timeout=0.05)


# ---------------------------------------------------------------- training


def rate_points(codec: str) -> dict[str, int]:
    """The codec's rate points: name -> quantizer stages (nc/codecs/rvq.py, fsq.py, wavtokenizer.py)."""
    from nc.codecs import fsq, rvq, wavtokenizer

    return {"audio/rvq": rvq.STAGES_FOR, "audio/fsq": fsq.STAGES_FOR,
            "audio/wavtokenizer": wavtokenizer.STAGES_FOR}[codec]


def _dropout_stages(batch: int, stages: int, rates, device) -> torch.Tensor:
    """Quantizer dropout (DAC): half the examples use every stage, the others one of the shipped
    rates' stage counts (`rates`; those beyond the model's `stages` are left out)."""
    rates = sorted(s for s in rates if s <= stages) or [stages]
    low = torch.tensor(rates, device=device)[torch.randint(len(rates), (batch,), device=device)]
    return torch.where(torch.rand(batch, device=device) < 0.5, torch.full_like(low, stages), low)


def usage_stats(model: FrameCodec) -> list[float]:
    """RVQ, per stage: fraction of codes with non-negligible recent use."""
    out = []
    for stage in model.quantizer.stages:
        u = stage.usage
        out.append(float((u > 1e-3 * u.sum() / u.numel()).float().mean()))
    return out


def level_counts(model: FrameCodec, codes: torch.Tensor) -> torch.Tensor:
    """FSQ: how often each level of each dimension occurs at each stage, (stages, dims, max level) int64,
    from codes (batch, stages, frames)."""
    digits = model.quantizer.digits(codes).transpose(0, 1).transpose(1, 2)  # (stages, dims, batch, frames)
    top = max(model.cfg.fsq_levels)
    offsets = torch.arange(digits.shape[0] * digits.shape[1], device=digits.device).view(digits.shape[:2] + (1, 1))
    flat = (digits + offsets * top).flatten()
    return torch.bincount(flat, minlength=offsets.numel() * top).view(digits.shape[0], digits.shape[1], top).cpu()


def level_entropy(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each (stage, dimension) level histogram, (stages, dims)."""
    p = counts.double() / counts.sum(-1, keepdim=True).clamp(min=1)
    return -(p * torch.log2(p.clamp(min=1e-300))).sum(-1) + 0.0  # + 0.0: no -0.0 in the log


def _code_losses(q, cfg: FrameCodecConfig) -> tuple[dict, torch.Tensor | float]:
    """Commitment (logged) and codebook terms; FSQ's "codebook" term pulls each stage's point onto
    its residual (nc/quantization/fsq.py), logged as "match"; VQ's EMA codebook has none (zero)."""
    logged = {"commit": q.commitment, **({"match": q.codebook} if cfg.quantizer == "fsq" else {})}
    return logged, 0.25 * q.commitment + q.codebook


def train(args) -> None:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if distributed:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ckpt = out / "checkpoint.safetensors"
    init = None if ckpt.exists() or not args.init else load_weights(args.init)
    quantizer = QUANTIZER[args.codec]
    overrides = args.config or {}
    if ckpt.exists():  # resuming: the checkpoint's config wins over --config
        cfg = build_config(FrameCodecConfig, checkpoint_meta(ckpt)["config"], str(ckpt))
    elif init:  # fine-tuning: the weights' config with the codec's quantizer and --config's overrides
        # (reshaped parts start fresh: an RVQ model's encoder and decoder initialise an FSQ one)
        build_config(FrameCodecConfig, init[2]["config"], f"--init {args.init}")
        cfg = build_config(FrameCodecConfig, {**init[2]["config"], "quantizer": quantizer,
                                              **CODEC_CONFIG.get(args.codec, {}), **overrides}, "--config")
    else:
        # new models: what the shipped weights use (the dataclass defaults are what older weights assumed)
        cfg = build_config(FrameCodecConfig, {"choose": "euclidean", "head": "magnitude", "quantizer": quantizer,
                                              **CODEC_CONFIG.get(args.codec, {}), **overrides}, "--config")
    if cfg.quantizer != quantizer:
        raise SystemExit(f"{args.codec} trains the {quantizer} quantizer, not {cfg.quantizer}"
                         + (f" ({ckpt} holds another codec's run)" if ckpt.exists() else ""))
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = FrameCodec(cfg)
    if init:  # parameters whose shapes differ (a new decoder head, say) keep their fresh values
        own = model.state_dict()
        matching = {k: v for k, v in init[0].items()  # code-usage counts start afresh (fp16 in shipped weights)
                    if k in own and own[k].shape == v.shape and not k.endswith(".usage")}
        model.load_state_dict(matching, strict=False)
        if cfg.quantizer == "vq" and model.quantizer.codebook.initialized:  # its own weights: the usage
            model.quantizer.codebook.set(model.quantizer.codebook.embed.clone())  # counts restart, so must the sums
        fresh = sorted(set(own) - set(matching))
        _log(out, rank, f"initialized from {args.init}" + (f"; fresh: {', '.join(fresh)}" if fresh else ""))
    model = model.to(device)
    # the magnitude head has no waveform to judge in training
    disc = MultiScaleSTFTDiscriminator().to(device) if args.adv_weight and cfg.head != "magnitude" else None
    modules = {"model": model, **({"disc": disc} if disc else {})}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=1e-4)
                  for name, m in (("opt", model), ("dopt", disc)) if m is not None}
    step, elapsed = 0, 0.0
    if ckpt.exists():
        meta = load_checkpoint(ckpt, modules, optimizers)
        step, elapsed = meta["step"], meta["elapsed"]
        _log(out, rank, f"resumed from step {step}")
    # quantizer dropout leaves the later stages unused in some steps
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if distributed else model
    dnet = torch.nn.parallel.DistributedDataParallel(disc) if distributed and disc else disc
    mel_loss = MultiScaleMelLoss(cfg.sample_rate).to(device)
    mix = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))} if args.mix else None
    speeds = tuple(float(v) for v in args.speeds.split(","))
    seeds = np.random.SeedSequence([args.seed, rank, step])  # distinct per rank and per resume
    torch.manual_seed(int(seeds.generate_state(1)[0]))
    corpus = load_corpus(Path(args.data), cfg.sample_rate)
    samplers = [CropSampler(corpus, int(args.seconds * cfg.sample_rate), seed, mix, cfg.sample_rate)
                for seed in seeds.spawn(max(1, args.loader_threads))]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or args.bf16)
    if cfg.quantizer == "vq" and not model.quantizer.codebook.initialized:
        _kmeans_start(model, samplers[0], args.kmeans_batches, device)
        if distributed:  # each rank drew its own crops: start everyone from rank 0's codebook
            for tensor in model.quantizer.codebook.buffers():
                torch.distributed.broadcast(tensor, 0)
        _log(out, rank, f"k-means start of the {cfg.codebook_size}-code codebook from {args.kmeans_batches} batches")
    if step == 0:
        _log(out, rank, f"model: {model.parameter_count() / 1e6:.2f} M parameters, config {cfg.to_dict()}"
             + (f"; discriminator {sum(p.numel() for p in disc.parameters()) / 1e6:.2f} M" if disc else ""))
    batches = Prefetcher(samplers, args.batch, speeds, pin=device.type == "cuda")
    start = time.time() - elapsed
    budget = args.max_minutes * 60 if args.max_minutes else float("inf")
    stop = False
    while step < args.steps and not stop:
        # progress by steps or by time, whichever is further: a time-boxed run still anneals
        progress = max(step / args.steps, (time.time() - start) / budget)
        for optimizer in optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, progress, args.lr)
        wav = batches.next(device)
        adversarial = disc is not None and step >= args.adv_start
        # the codec's step uses the bare discriminator (its gradients there are discarded, not synchronized)
        losses, loss = _generator_step(net, disc if adversarial else None, mel_loss, wav, cfg, args, autocast)
        optimizers["opt"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizers["opt"].step()
        if adversarial:
            losses["disc"] = _discriminator_step(dnet, optimizers["dopt"], wav, losses.pop("estimate"), autocast)
        losses.pop("estimate", None)
        step += 1
        if cfg.quantizer != "fsq" and step % 100 == 0 and progress < 0.9:  # FSQ's grids have no dead codes
            model.quantizer.restart_dead_codes()
            if distributed:  # restarts (and VQ's EMA) draw from each rank's own batch: make rank 0's codebooks everyone's
                for stage in model.quantizer.stages:
                    for tensor in ([stage.codebook.data, stage.usage] if cfg.quantizer == "rvq" else stage.buffers()):
                        torch.distributed.broadcast(tensor, 0)
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            _log_step(out, model, wav, step, losses, optimizers["opt"], time.time() - start, args)
        stop = time.time() - start >= budget
        if distributed:  # every rank must stop at the same step when time runs out
            flag = torch.tensor([float(stop and step % 50 == 0)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if rank == 0 and (step % args.checkpoint_every == 0 or step == args.steps or stop):
            save_checkpoint(ckpt, modules, optimizers, {"step": step, "elapsed": time.time() - start,
                                                       "config": cfg.to_dict()})
    batches.close()
    if rank == 0:
        finish(model, samplers[0], out, args, step, time.time() - start, device)
    if distributed:
        torch.distributed.destroy_process_group()


@torch.no_grad()
def _kmeans_start(model: FrameCodec, sampler: CropSampler, batches: int, device) -> None:
    """VQ: codebook = k-means centroids of the encoder's latents on `batches` training batches of 16 crops."""
    latents = [model.encode_latent(model.pad(sampler.batch(16).to(device))).float().cpu() for _ in range(batches)]
    model.quantizer.kmeans_init(torch.cat(latents, 2).to(device))


def _generator_step(net, disc, mel_loss, wav, cfg, args, autocast) -> tuple[dict, torch.Tensor]:
    """The codec's losses on one batch: (named values for the log, total). `disc` None: no adversary yet."""
    n_stages = _dropout_stages(wav.shape[0], cfg.quantizer_stages, rate_points(args.codec).values(), wav.device)
    if cfg.head == "magnitude":
        return _magnitude_step(net, wav, n_stages, args, autocast)
    with autocast:
        estimate, q, spec, frames, full = net(wav, n_stages, return_frames=True)
    code_logs, code_loss = _code_losses(q, cfg)
    losses = {"mel": mel_loss(estimate.float(), wav), "wave": F.l1_loss(estimate.float(), wav), **code_logs}
    loss = 15 * losses["mel"] + args.wave_weight * losses["wave"] + code_loss
    model = net.module if hasattr(net, "module") else net
    if args.magnitude_weight:  # the output's magnitudes, bin by bin: pitch harmonics, not just the envelope
        losses["magnitude"] = log_magnitude_loss(model.frame_spectrum(model.pad(estimate.float())),
                                                 model.frame_spectrum(model.pad(wav)))
        loss = loss + args.magnitude_weight * losses["magnitude"]
    if args.consistency_weight and frames is not None:  # spectral heads only
        losses["consistency"] = stft_consistency(frames.float(), full.float(), model.window, cfg.hop)
        loss = loss + args.consistency_weight * losses["consistency"]
    if disc is not None:
        with autocast:
            with torch.no_grad():
                real = disc(wav)
            fake = disc(estimate)
        losses["adv"], losses["fm"] = generator_losses(real, fake)
        loss = loss + args.adv_weight * losses["adv"] + args.fm_weight * losses["fm"]
    losses["loss"], losses["estimate"] = loss, estimate
    return losses, loss


def _magnitude_step(net, wav, n_stages, args, autocast) -> tuple[dict, torch.Tensor]:
    """The magnitude head's losses: a regression on log magnitudes, no waveform and no adversary
    (the phase is retrieved at decode time)."""
    model = net.module if hasattr(net, "module") else net
    with autocast:
        log_magnitude, q = net(wav, n_stages)
    target = model.sub_frame_spectrum(model.pad(wav))
    losses = dict(zip(("magnitude", "convergence"), magnitude_losses(log_magnitude, target)))
    code_logs, code_loss = _code_losses(q, model.cfg)
    losses.update(code_logs)
    loss = losses["magnitude"] + args.convergence_weight * losses["convergence"] + code_loss
    losses["loss"] = loss
    return losses, loss


def _discriminator_step(dnet, optimizer, wav, estimate, autocast) -> torch.Tensor:
    with autocast:
        loss = discriminator_loss(dnet(wav), dnet(estimate.detach()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _log_step(out, model, wav, step, losses, optimizer, seconds, args) -> None:
    cfg, rates = model.cfg, rate_points(args.codec)
    fewest, stages = min(rates.values()), cfg.quantizer_stages
    with torch.no_grad():
        latent = model.encode_latent(model.pad(wav[:4])).float()
        error = [round(model.quantizer.relative_error(latent, n), 3) for n in (fewest, stages)]
        model.eval()  # no code-usage bookkeeping for this probe
        decoded = model.reconstruct(wav[:4].float(), min(rates.get("6k", stages), stages)).cpu().numpy()  # at 6 kbps
        if cfg.quantizer == "fsq":  # level histograms over the whole batch, every stage
            codes = model.quantizer.encode(model.encode_latent(model.pad(wav)).float(), stages)
            counts = level_counts(model, codes)
            entropy = level_entropy(counts)
        model.train()
    if cfg.quantizer == "fsq":
        code_stats = {"level_entropy_first": [round(float(h), 2) for h in entropy[0]],
                      "levels_unused": int((counts == 0).sum() - (max(cfg.fsq_levels) - torch.tensor(
                          cfg.fsq_levels)).sum() * counts.shape[0]),
                      "level_entropy_mean": round(float(entropy.mean()), 3),
                      "level_entropy_kbps": {name: round(float(entropy[:n].sum()) * cfg.frame_rate / 1000, 2)
                                             for name, n in rates.items() if n <= stages}}
    else:
        usage = usage_stats(model)
        code_stats = {"usage_first": round(usage[0], 3), "usage_mean": round(float(np.mean(usage)), 3)}
    reference = wav[:4].float().cpu().numpy()
    harmonics = np.nanmean([harmonic_match(r[:, None], d[:, None], cfg.sample_rate)
                            for r, d in zip(reference, decoded)])
    _log(out, 0, json.dumps({
        "step": step, **{k: round(float(v.detach()), 4) for k, v in losses.items()}, **code_stats,
        f"latent_error_{fewest}_{stages}": error, "harmonics_6k": round(float(harmonics), 3),
        "lr": round(optimizer.param_groups[0]["lr"], 6),
        "audio_s_per_s": round(step * args.batch * args.seconds / max(seconds, 1e-9), 1),
        "minutes": round(seconds / 60, 2)}))
    if cfg.quantizer != "fsq" and step >= 500 and usage[0] < 0.02:
        raise SystemExit(f"codebook collapse: stage 1 uses {usage[0]:.1%} of its codes at step {step}; stopping")


@torch.no_grad()
def finish(model: FrameCodec, sampler: CropSampler, out: Path, args, steps: int, seconds: float, device) -> None:
    """Fit the code priors on training audio and write the shippable weights: per stage (RVQ, codes) or
    per stage and dimension (FSQ, level digits; see nc/codecs/fsq.py)."""
    model.eval()
    cfg, stages = model.cfg, model.cfg.quantizer_stages
    fsq = cfg.quantizer == "fsq"
    counts = torch.zeros((stages, len(cfg.fsq_levels), max(cfg.fsq_levels)) if fsq else (stages, cfg.codebook_size),
                         dtype=torch.int64)
    for _ in range(args.prior_batches):
        wav = sampler.batch(16).to(device)
        codes = model.quantizer.encode(model.encode_latent(model.pad(wav)), stages)
        if fsq:
            counts += level_counts(model, codes)
            continue
        codes = codes.cpu()
        for s in range(stages):
            counts[s] += torch.bincount(codes[:, s].flatten(), minlength=cfg.codebook_size)
    meta = {"config": cfg.to_dict(), "codec": args.codec, "steps": steps, "train_minutes": round(seconds / 60, 1),
            "device": str(device), "batch": args.batch, "crop_seconds": args.seconds}
    if fsq:  # what the fitted priors code the same audio in: the rate a file measures, less its container
        from nc.codecs.fsq import expected_bits

        bits = expected_bits(counts.numpy(), cfg.fsq_levels)  # (stages, dims)
        meta["level_entropy_per_stage"] = [[round(float(h), 3) for h in row] for row in level_entropy(counts)]
        meta["expected_kbps"] = {name: round(float(bits[:n].sum()) * cfg.frame_rate / 1000, 3)
                                 for name, n in rate_points(args.codec).items() if n <= stages}
    else:
        meta["code_usage_per_stage"] = [round(float(u), 3) for u in (counts > 0).float().mean(1)]
    priors = {"prior.counts": counts.clamp(max=2**31 - 1).to(torch.int32)}
    save_weights(out / "weights.safetensors", model, priors, meta)
    _log(out, 0, "wrote weights.safetensors: " + json.dumps(meta))


def _log(out: Path, rank: int, line: str) -> None:
    if rank == 0:
        log_line(out, line)


def build_parser() -> argparse.ArgumentParser:
    p = trainer_parser("nc train", __doc__.split("\n\n")[0])
    p.add_argument("codec", choices=sorted(QUANTIZER), help="which codec to train (its quantizer: rvq or fsq)")
    p.add_argument("--data", required=True, help="folder of train*.npy shards or audio files")
    p.add_argument("--out", required=True, help="folder for checkpoint, log and weights (rerun to resume)")
    p.add_argument("--steps", type=positive(int), default=20000)
    p.add_argument("--max-minutes", type=positive(float, zero_ok=True), default=0,
                   help="stop (and ship) after this much training time (0: no limit)")
    p.add_argument("--batch", type=positive(int), default=16)
    p.add_argument("--seconds", type=positive(float), default=1.0, help="crop length")
    p.add_argument("--lr", type=positive(float), default=1e-3)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--threads", type=positive(int, zero_ok=True), default=0,
                   help="CPU threads (default, 0: torch's choice)")
    p.add_argument("--loader-threads", type=positive(int), default=1,
                   help="threads drawing batches (a GPU outruns one; each has its own random stream)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too (always on for CUDA)")
    p.add_argument("--init", help="start from these weights (a weights.safetensors) instead of random ones")
    p.add_argument("--config", type=json_object, help="JSON overrides of FrameCodecConfig, e.g. '{\"dec_blocks\": 4}'")
    p.add_argument("--wave-weight", type=float, default=0.1,
                   help="weight of the waveform L1 loss (mel: 15; the phase is not predictable, so keep it small)")
    p.add_argument("--consistency-weight", type=float, default=2.0,
                   help="weight of the STFT consistency loss (overlapping frames must agree)")
    p.add_argument("--magnitude-weight", type=float, default=2.0,
                   help="weight of the L1 loss between decoded and true log magnitudes in the codec's own frames")
    p.add_argument("--convergence-weight", type=float, default=2.0,
                   help="magnitude head: weight of the spectral convergence loss (loud bins) beside the log L1")
    p.add_argument("--adv-weight", type=float, default=1.0,
                   help="weight of the adversarial loss (MS-STFT discriminator, hinge); 0 trains without one")
    p.add_argument("--fm-weight", type=float, default=2.0, help="weight of the feature-matching loss")
    p.add_argument("--adv-start", type=int, default=1000,
                   help="step at which the discriminator starts (the codec first learns the mel spectrum)")
    p.add_argument("--speeds", default="1",
                   help="speed/pitch factors drawn per batch for augmentation, e.g. 0.875,0.9375,1,1.0625,1.125")
    p.add_argument("--mix", help="source weights by shard name, e.g. speech=0.7,music=0.3 (default: by size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=positive(int), default=50)
    p.add_argument("--checkpoint-every", type=positive(int), default=200)
    p.add_argument("--kmeans-batches", type=int, default=100,
                   help="VQ: batches of 16 crops whose latents k-means starts the codebook from")
    p.add_argument("--prior-batches", type=int, default=20, help="batches of 16 crops for fitting code priors")
    return p


def main(argv=None) -> None:
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
