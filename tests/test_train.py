"""The trainer end to end on a tiny model: single process with resume, and DDP with two gloo processes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nc.models.weights import load_weights

TINY = json.dumps({"enc_channels": 16, "enc_blocks": 1, "dec_channels": 16, "dec_blocks": 1, "latent": 8,
                   "codebook_size": 64})


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4)
    for name, x in (("speech", np.sin(t / 9) * 6000), ("music", rng.standard_normal(t.size) * 3000)):
        np.save(tmp_path / f"train_{name}.npy", x.astype(np.int16))
    return tmp_path


def _train(data, out, steps, launcher=(), extra=(), config=TINY):
    cmd = [*launcher, "-m", "nc.train.audio", "audio/rvq", "--data", str(data), "--out", str(out), *extra,
           "--steps", str(steps), "--batch", "2", "--seconds", "0.5", "--threads", "1", "--config", config,
           "--log-every", "1", "--checkpoint-every", "2", "--prior-batches", "1", "--mix", "speech=0.5,music=0.5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_train_resume_and_ship(data, tmp_path):
    out = tmp_path / "run"
    adversarial = ("--adv-start", "1", "--speeds", "0.9375,1.0625")  # discriminator and augmentation run too
    first = _train(data, out, 2, (sys.executable,), adversarial)
    assert first.returncode == 0, first.stderr
    second = _train(data, out, 4, (sys.executable,), adversarial)
    assert second.returncode == 0, second.stderr
    assert "resumed from step 2" in second.stdout
    log = (out / "train.log").read_text()
    assert '"step": 4' in log and '"usage_first"' in log and '"disc"' in log
    state, extra, meta = load_weights(out / "weights.safetensors")
    assert meta["steps"] == 4 and extra["prior.counts"].shape == (24, 64)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # fp16 on disk, fp32 loaded


def test_magnitude_head_trains_without_a_discriminator(data, tmp_path):
    out = tmp_path / "magnitude"
    result = _train(data, out, 2, (sys.executable,), config=json.dumps({**json.loads(TINY), "head": "magnitude"}))
    assert result.returncode == 0, result.stderr
    log = (out / "train.log").read_text()
    assert '"convergence"' in log and '"disc"' not in log and '"harmonics_6k"' in log
    assert load_weights(out / "weights.safetensors")[2]["config"]["head"] == "magnitude"


def test_ddp_two_processes_on_cpu(data, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = _train(data, tmp_path / "ddp", 2, torchrun)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "ddp" / "weights.safetensors").exists()


def test_a_failing_sampler_stops_training_with_its_error():
    from nc.train.audio import Prefetcher

    class Broken:
        def batch(self, size, speeds):
            raise OSError("shard unreadable")

    batches = Prefetcher(Broken(), 2, (1.0,), pin=False)
    with pytest.raises(OSError, match="shard unreadable"):
        batches.next("cpu")
    batches.close()


def test_prefetcher_threads_each_draw_from_their_own_sampler():
    from nc.train.audio import Prefetcher

    class Constant:
        def __init__(self, value):
            self.value = value

        def batch(self, size, speeds):
            return torch.full((size, 4), float(self.value))

    batches = Prefetcher([Constant(0), Constant(1)], 2, (1.0,), pin=False)
    seen = {float(batches.next("cpu")[0, 0]) for _ in range(40)}
    batches.close()
    assert seen == {0.0, 1.0} and not any(t.is_alive() for t in batches.threads)
