"""image/vqgan on a small random-init model: code grids, container round trips, rates, tiles, tokens,
modes, damaged payloads and the trainer (quality is measured in bench/image.py, not here)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import nc
from image_codec_checks import decode_on_one_and_two_threads, photo
from nc.codecs import vqgan as vqgan_codec
from nc.codecs.learned_image import even_tiles
from nc.codecs.vqgan import VqganCodec
from nc.media.facts import ImageFacts
from nc.models.vqgan import ImageVQGAN, VqganConfig, normalize
from nc.models.weights import save_weights
from nc.train.vqgan import dropout_stages, fit_priors, losses_of

TINY = dict(widths=(8, 8, 16, 16), dim=8, codebook_size=32)


def _tiny_weights(path, counts=None, **overrides):
    torch.manual_seed(0)
    model = ImageVQGAN(VqganConfig(**{**TINY, **overrides}))
    if counts is None:
        counts = torch.arange(model.cfg.stages * model.cfg.codebook_size).view(model.cfg.stages, -1) % 7
    save_weights(path, model, {"prior.counts": counts.to(torch.int32)}, {"config": model.cfg.to_dict()})
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _tiny_weights(tmp_path_factory.mktemp("vqgan") / "tiny.safetensors")


@pytest.fixture()
def codec(weights, monkeypatch):
    from nc.plugins import registry

    c = VqganCodec(weights)
    monkeypatch.setitem(registry().codecs, "image/vqgan", c)
    return c


def _payload(codec, x, **rate):
    enc = codec.encoder(ImageFacts(x.shape[1], x.shape[0], "RGB"), codec.descriptor.resolve(**rate))
    return enc.encode(x)[0].payload


def test_latent_is_normalized_and_codes_nest_by_stage():
    torch.manual_seed(1)
    model = ImageVQGAN(VqganConfig(**TINY)).eval()
    x = torch.rand(2, 3, 48, 64)
    z = model.latent(x)
    assert z.shape == (2, 8, 3, 4)
    torch.testing.assert_close(z.mean(1), torch.zeros(2, 3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalize(5 * z + 3), z, atol=1e-3, rtol=0)  # scale and offset cannot drift
    four, two = model.encode(x, 4), model.encode(x, 2)
    assert four.shape == (2, 4, 3, 4) and torch.equal(four[:, :2], two)  # a stage count is a prefix
    assert model.decode(two).shape == (2, 3, 48, 64)


@pytest.mark.parametrize("shape", [(70, 100, 3), (64, 64, 3), (33, 47, 1)])
def test_round_trip_restores_size_and_mode(codec, shape):
    x = photo(*shape)
    data = nc.encode(x if shape[2] == 3 else x[:, :, 0], codec="image/vqgan", quality=2)
    y = nc.decode(data).data
    assert y.shape == shape and y.dtype == np.uint8


def test_stages_and_bpp_control_the_size(codec):
    x = photo(128, 192)
    sizes = [len(_payload(codec, x, quality=q)) for q in (1, 2, 3, 4)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[3]
    pixels = 128 * 192
    assert len(_payload(codec, x, bitrate=f"{8 * sizes[2] / pixels + 1e-7:.7f}bpp")) == sizes[2]
    assert len(_payload(codec, x, bitrate=f"{8 * (sizes[2] - 1) / pixels + 1e-7:.7f}bpp")) == sizes[1]
    assert len(_payload(codec, x, bitrate="0.01bpp")) == sizes[0]  # unreachable: the smallest file
    assert len(_payload(codec, x, quality=2.5)) == sizes[2]  # halves round up, not to even
    target = f"{8 * sizes[1] / pixels + 1e-7:.7f}bpp"
    assert nc.tokens(x, codec="image/vqgan", bitrate=target).shape[0] == 2  # the stages a file would keep


def test_payload_costs_what_the_priors_say(codec):
    """The ANS payload is within a few bytes of the priors' cross-entropy of the codes."""
    x = photo(128, 128)
    codes = codec.model.image_codes(x)
    from nc.codecs.vqgan import _stage_of

    ideal = codec.model.prior.cross_entropy_bits(codes.ravel(), _stage_of(codes.shape)) / 8
    assert abs(len(_payload(codec, x, quality=4)) - 1 - 4 - ideal) < 8


def test_tokens_are_the_files_codes_and_detokenize_draws_them(codec, tmp_path):
    x = photo(70, 100)
    codes = nc.tokens(x, codec="image/vqgan", quality=3)
    assert codes.dtype == np.int16 and codes.shape == (3, 5, 7)
    decoded = nc.decode(nc.encode(x, codec="image/vqgan", quality=3)).data
    drawn = nc.detokenize(codes, codec="image/vqgan")
    assert drawn.shape == (80, 112, 3) and np.array_equal(drawn[:70, :100], decoded)
    for bad in (np.full_like(codes, 32), codes[0], codes.astype(np.float32), np.concatenate([codes] * 2)):
        with pytest.raises(nc.NCError):
            nc.detokenize(bad, codec="image/vqgan")


def test_tokens_cli_round_trip(codec, tmp_path):
    from PIL import Image

    from nc.cli.main import main

    Image.fromarray(photo(40, 56)).save(tmp_path / "in.png")
    assert main(["tokens", str(tmp_path / "in.png"), "-o", str(tmp_path / "codes.npy"), "--codec", "image/vqgan",
                 "--quality", "2"]) == 0
    assert np.load(tmp_path / "codes.npy").shape == (2, 3, 4)
    assert main(["detokenize", str(tmp_path / "codes.npy"), str(tmp_path / "back.png"), "--codec", "image/vqgan"]) == 0
    assert Image.open(tmp_path / "back.png").size == (64, 48)
    with pytest.raises(nc.NCError, match="image"):
        nc.tokens(np.zeros((16000, 1), np.float32), codec="image/vqgan", sample_rate=16000)


def test_tiles_are_as_equal_as_the_grid_allows():
    # 150 px = 10 cells in tiles of at most 4 cells: 4, 3, 3 cells (the last cropped); 130 px = 9: 3, 3, 3
    assert [(t, h) for t, _, h, _ in even_tiles(150, 16, 64, 16)] == [(0, 64), (64, 48), (112, 38)]
    assert [(l, w) for _, l, _, w in even_tiles(16, 130, 64, 16)] == [(0, 48), (48, 48), (96, 34)]
    assert list(even_tiles(33, 47, 512, 16)) == [(0, 0, 33, 47)]
    for side in (1, 15, 16, 17, 1030, 8000):  # tiles cover the side exactly, none empty, none over 512
        spans = [(t, h) for t, _, h, _ in even_tiles(side, 1, 512, 16)]
        assert spans[0][0] == 0 and sum(h for _, h in spans) == side and 0 < min(h for _, h in spans)
        assert max(h for _, h in spans) <= 512 and all(t % 16 == 0 for t, _ in spans)


def test_large_images_are_coded_in_tiles(codec, monkeypatch):
    monkeypatch.setattr(vqgan_codec, "TILE", 64)
    x = photo(150, 130)
    data = nc.encode(x, codec="image/vqgan", quality=4)
    assert nc.decode(data).data.shape == x.shape
    tokens = nc.tokens(x, codec="image/vqgan", quality=4)
    assert tokens.shape == (4, 10, 9)
    assert np.array_equal(tokens[:, :4, :3], nc.tokens(x[:64, :48], codec="image/vqgan", quality=4))
    assert np.array_equal(tokens[:, 7:, 6:], nc.tokens(x[112:, 96:], codec="image/vqgan", quality=4))  # padded corner
    monkeypatch.setattr(vqgan_codec, "TILE", 1024)  # the tiling is part of the format: other tiles do not parse
    with pytest.raises(nc.NCError):
        nc.decode(data)


def test_decoding_is_identical_on_one_and_two_threads(codec):
    one, two = decode_on_one_and_two_threads(nc.encode(photo(96, 128), codec="image/vqgan", quality=4))
    assert np.array_equal(one, two)


def test_rgba_is_refused_with_a_reason(codec):
    with pytest.raises(nc.NCError, match="alpha"):
        nc.encode(photo(32, 32, 4), codec="image/vqgan", quality=2)


def test_damaged_payloads_are_clean_errors(codec):
    from nc.codecs.base import Packet

    facts = ImageFacts(80, 60, "RGB")
    payload = _payload(codec, photo(60, 80), quality=3)
    dec = codec.decoder(facts, codec.descriptor.resolve(quality=3), {})
    assert dec.decode(Packet(payload, 0, 1)).shape == (60, 80, 3)
    flipped = bytearray(payload)
    flipped[len(payload) // 2] ^= 0xFF
    for bad in (b"", payload[:3], payload[:-3], payload + b"\0", b"\x00" + payload[1:], b"\x09" + payload[1:],
                b"\x02" + payload[1:], bytes(flipped)):
        with pytest.raises(nc.NCError):
            dec.decode(Packet(bad, 0, 1))


def test_mismatched_weights_are_refused(tmp_path):
    path = _tiny_weights(tmp_path / "three.safetensors", stages=3,
                         counts=torch.ones(3, 32, dtype=torch.int32))
    with pytest.raises(nc.NCError, match="stages"):
        VqganCodec(path).model
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(nc.NCError):
        VqganCodec(tmp_path / "junk.safetensors").model


def test_training_loss_falls_on_one_batch():
    torch.manual_seed(0)
    model = ImageVQGAN(VqganConfig(**TINY))
    x = torch.from_numpy(photo(64, 64)).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1) / 255
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(losses_of(model, x, 4, 0.5)[0].detach())
    for _ in range(40):
        loss, _ = losses_of(model, x, 4, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(losses_of(model, x, 4, 0.5)[0].detach()) < 0.5 * first


def test_dropout_keeps_every_stage_for_half_the_crops():
    torch.manual_seed(0)
    n = dropout_stages(4000, 4, "cpu")
    assert set(n.tolist()) == {1, 2, 3, 4}
    assert abs(float((n == 4).float().mean()) - 0.5) < 0.05  # the other half draw 1-3


def test_priors_count_every_stage_of_every_crop():
    model = ImageVQGAN(VqganConfig(**TINY)).eval()
    crops = np.stack([photo(64, 64, seed=s) for s in range(3)])
    counts = fit_priors(model, crops, torch.device("cpu"), chunk=2)
    assert counts.shape == (4, 32) and (counts.sum(1) == 3 * 4 * 4).all()


def test_trainer_writes_weights_the_codec_loads_and_resumes(tmp_path):
    from nc.train.vqgan import main as train_main

    np.save(tmp_path / "train_256.npy", np.stack([photo(256, 256, seed=s) for s in range(3)]))
    run = ["image/vqgan", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--batch", "2", "--crop", "64",
           "--log-every", "2", "--config", '{"widths": [8, 8, 16, 16], "dim": 8, "codebook_size": 32}']
    train_main(run + ["--steps", "2"])
    train_main(run + ["--steps", "4"])  # resumes from the checkpoint
    log = (tmp_path / "run" / "train.log").read_text()
    assert "resumed from step 2" in log and '"step": 4' in log and '"usage"' in log
    codec = VqganCodec(tmp_path / "run" / "weights.safetensors")
    with pytest.raises(SystemExit, match="holds a network of config"):  # --init weights keep their network
        train_main(["image/vqgan", "--data", str(tmp_path), "--out", str(tmp_path / "tuned"), "--steps", "1",
                    "--init", str(tmp_path / "run" / "weights.safetensors"), "--config", '{"stages": 3}'])
    facts = ImageFacts(64, 64, "RGB")
    packet = codec.encoder(facts, codec.descriptor.resolve(quality=4)).encode(photo(64, 64))[0]
    assert codec.decoder(facts, codec.descriptor.resolve(quality=4), {}).decode(packet).shape == (64, 64, 3)


def test_nc_train_dispatches_to_the_image_vqgan_trainer():
    r = subprocess.run([sys.executable, "-m", "nc", "train", "image/vqgan", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "image/vqgan" in r.stdout and "--ssim" in r.stdout


def test_shipped_weights_load_and_decode_identically_on_one_and_two_threads(monkeypatch):
    if not vqgan_codec.SHIPPED_WEIGHTS.exists():
        pytest.skip("no shipped image/vqgan weights")
    from nc.plugins import registry

    shipped = VqganCodec(vqgan_codec.SHIPPED_WEIGHTS)
    monkeypatch.setitem(registry().codecs, "image/vqgan", shipped)
    assert shipped.model.cfg.stages == 4 and shipped.model.cfg.codebook_size == 1024
    one, two = decode_on_one_and_two_threads(nc.encode(photo(96, 160), codec="image/vqgan", quality=4))
    assert np.array_equal(one, two)
