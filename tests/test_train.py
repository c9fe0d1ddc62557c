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


def _train(data, out, steps, launcher=(), extra=(), config=TINY, codec="audio/rvq"):
    cmd = [*launcher, "-m", "nc.train.audio", codec, "--data", str(data), "--out", str(out), *extra,
           "--steps", str(steps), "--batch", "2", "--seconds", "0.5", "--threads", "1", "--config", config,
           "--log-every", "1", "--checkpoint-every", "2", "--prior-batches", "1", "--mix", "speech=0.5,music=0.5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_train_resume_and_ship(data, tmp_path):
    out = tmp_path / "run"
    adversarial = ("--adv-start", "1", "--speeds", "0.9375,1.0625")  # discriminator and augmentation run too
    polar = json.dumps({**json.loads(TINY), "head": "polar"})  # a head with a waveform for the discriminator
    first = _train(data, out, 2, (sys.executable,), adversarial, config=polar)
    assert first.returncode == 0, first.stderr
    second = _train(data, out, 4, (sys.executable,), adversarial, config=polar)
    assert second.returncode == 0, second.stderr
    assert "resumed from step 2" in second.stdout
    log = (out / "train.log").read_text()
    assert '"step": 4' in log and '"usage_first"' in log and '"disc"' in log
    state, extra, meta = load_weights(out / "weights.safetensors")
    assert meta["steps"] == 4 and extra["prior.counts"].shape == (24, 64)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # fp16 on disk, fp32 loaded


def test_new_models_get_the_magnitude_head_and_train_without_a_discriminator(data, tmp_path):
    out = tmp_path / "magnitude"
    result = _train(data, out, 2, (sys.executable,))  # no head named: the shipped models' head
    assert result.returncode == 0, result.stderr
    log = (out / "train.log").read_text()
    assert '"convergence"' in log and '"disc"' not in log and '"harmonics_6k"' in log
    assert load_weights(out / "weights.safetensors")[2]["config"]["head"] == "magnitude"


def test_fsq_fine_tunes_from_rvq_weights_and_ships_digit_priors(data, tmp_path):
    """audio/fsq: the RVQ model's encoder and decoder load, the FSQ projections start fresh; no code
    losses; level-histogram entropies logged; the shipped weights carry per-(stage, dimension) digit
    counts and load in the codec."""
    from nc.codecs.fsq import FsqCodec
    from nc.media.facts import AudioFacts
    from nc.models.frame_codec import FrameCodec, FrameCodecConfig
    from nc.models.weights import save_weights

    config = {**json.loads(TINY), "head": "magnitude"}
    rvq = FrameCodec(FrameCodecConfig(**config, choose="euclidean"))
    save_weights(tmp_path / "rvq.safetensors", rvq, {"prior.counts": torch.ones(24, 64, dtype=torch.int32)},
                 {"config": rvq.cfg.to_dict()})
    out = tmp_path / "fsq"
    result = _train(data, out, 2, (sys.executable,), ("--init", str(tmp_path / "rvq.safetensors")),
                    config=json.dumps({"head": "magnitude"}), codec="audio/fsq")
    assert result.returncode == 0, result.stderr
    log = (out / "train.log").read_text()
    fresh = log.split("fresh: ", 1)[1].split("\n", 1)[0].split(", ")
    new = ("quantizer.inp.", "quantizer.out.", "quantizer.scale", "quantizer.center", "quantizer.spread")
    assert fresh and all(k.startswith(new) for k in fresh)
    steps = [json.loads(line.split("] ", 1)[1]) for line in log.splitlines() if '"step": ' in line]
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        assert "match" in s and "usage_first" not in s and len(s["level_entropy_first"]) == 6
        assert 0 <= min(s["level_entropy_first"]) and max(s["level_entropy_first"]) <= 3
        assert set(s["level_entropy_kbps"]) == {"1.5k", "3k", "6k"} and "latent_error_2_8" in s
    state, extra, meta = load_weights(out / "weights.safetensors")
    assert meta["config"]["quantizer"] == "fsq" and meta["codec"] == "audio/fsq"
    assert not any(k.startswith("quantizer.stages") for k in state)
    assert (state["quantizer.spread"] > 0).all()  # every stage measured its statistics
    counts = extra["prior.counts"]
    assert counts.shape == (8, 6, 8) and counts.dtype == torch.int32
    frames = 16 * (8000 // 320 + 1)  # one batch of 16 half-second crops
    assert (counts.sum(-1) == frames).all() and (counts[:, 2:, 5:] == 0).all()  # 5-level dimensions
    assert set(meta["expected_kbps"]) == {"1.5k", "3k", "6k"} and meta["expected_kbps"]["6k"] <= 6.2
    codec = FsqCodec(out / "weights.safetensors")
    tokens = codec.tokenize([np.zeros((8000, 1), np.float32)], AudioFacts(16000, 1), codec.descriptor.resolve("3k"))
    assert tokens.shape == (1, 4, 26) and tokens.dtype == np.int64


def test_each_codec_trains_its_own_quantizer_and_drops_out_to_its_own_rates(tmp_path):
    from nc.train.audio import _dropout_stages, build_parser, rate_points, train

    assert rate_points("audio/fsq") == {"1.5k": 2, "3k": 4, "6k": 8}
    torch.manual_seed(0)
    drawn = _dropout_stages(4000, 8, rate_points("audio/fsq").values(), "cpu")
    assert set(drawn.tolist()) == {2, 4, 8} and 0.6 < float((drawn == 8).float().mean()) < 0.75
    assert set(_dropout_stages(4000, 24, rate_points("audio/rvq").values(), "cpu").tolist()) == {3, 6, 12, 24}
    args = build_parser().parse_args(["audio/fsq", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                      "--config", '{"quantizer": "rvq"}'])
    with pytest.raises(SystemExit, match="audio/fsq trains the fsq quantizer"):
        train(args)


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
    seen, draws = set(), 0
    while seen != {0.0, 1.0} and draws < 5000:  # a loaded machine may let one thread fill the queue first
        seen.add(float(batches.next("cpu")[0, 0]))
        draws += 1
    batches.close()
    assert seen == {0.0, 1.0} and not any(t.is_alive() for t in batches.threads)


def test_wavtokenizer_starts_its_codebook_by_kmeans_and_fine_tunes_from_its_own_weights(data, tmp_path):
    """audio/wavtokenizer: one stage of a k-means-started EMA codebook; weights that load in the codec;
    fine-tuning those weights keeps the codebook where it was (the EMA sums restart with the counts)."""
    from nc.codecs.wavtokenizer import WavTokenizerCodec

    config = json.dumps({**json.loads(TINY), "head": "magnitude"})
    extra = ("--kmeans-batches", "4")
    first = _train(data, tmp_path / "a", 2, (sys.executable,), extra, config=config, codec="audio/wavtokenizer")
    assert first.returncode == 0, first.stderr
    log = (tmp_path / "a" / "train.log").read_text()
    assert "k-means start of the 64-code codebook" in log and '"usage_first"' in log
    weights = tmp_path / "a" / "weights.safetensors"
    state, extra_tensors, meta = load_weights(weights)
    assert meta["config"]["quantizer"] == "vq" and tuple(extra_tensors["prior.counts"].shape) == (1, 64)
    assert WavTokenizerCodec(weights).model.cfg.codebook_size == 64
    second = _train(data, tmp_path / "b", 1, (sys.executable,), ("--init", str(weights)), config=config,
                    codec="audio/wavtokenizer")
    assert second.returncode == 0, second.stderr
    assert "k-means" not in (tmp_path / "b" / "train.log").read_text()
    before = state["quantizer.stages.0.embed"].norm(dim=1)
    after = load_weights(tmp_path / "b" / "weights.safetensors")[0]["quantizer.stages.0.embed"].norm(dim=1)
    assert after.max() < 2 * before.max() + 1  # without the restart of the sums, one step blew them up 10^4 times
