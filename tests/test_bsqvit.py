"""video/bsqvit on a small random-init model: block-causal streaming, BSQ's signs and nested bits,
the context-coded sub-codes, container round trips, GOPs as seek points, chunked = whole, rates,
tokens of videos and images, and damaged payloads (quality is measured in bench/video.py, not here)."""

import numpy as np
import pytest
import torch

import nc
from nc.bitstream.entropy import CategoricalReader, FrequencyTable, encode_categorical_pieces
from nc.codecs import bsqvit as bsqvit_codec
from nc.codecs.bsqvit import ALPHABET, GOP, PER_GROUP, BsqVitCodec, context_rows, count_subcodes, subcodes
from nc.models.bsqvit import BsqVitConfig, VideoBsqVit, patchify, unpatchify
from nc.models.weights import save_weights
from nc.train.bsqvit import fit_priors, recon_loss
from conftest import SAMPLES, panning_clip as clip, run_nc
from video_codec_checks import (check_damaged_payloads_are_clean_errors, check_every_gop_is_a_seek_point,
                                check_parallel_decoding, check_parallel_encoding,
                                check_pieces_give_the_same_file,
                                check_trainer_writes_weights_the_codec_loads_and_resumes,
                                check_video_with_sound_through_the_cli, code_packets)

TINY = dict(width=32, heads=2, depth=1, mlp=2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = VideoBsqVit(BsqVitConfig(**TINY))
    torch.nn.init.normal_(model.decoder.head.weight, std=0.05)  # a decoder whose pictures depend on the bits
    clips = np.stack([clip(8, 64, 64, seed=s) for s in range(2)])
    path = tmp_path_factory.mktemp("bsqvit") / "tiny.safetensors"
    save_weights(path, model, fit_priors(model, clips), {"config": model.cfg.to_dict()})
    return path


@pytest.fixture()
def codec(weights, monkeypatch):
    from nc.plugins import registry

    c = BsqVitCodec(weights)
    monkeypatch.setitem(registry().codecs, "video/bsqvit", c)
    return c


def test_patches_invert():
    x = torch.rand(2, 3, 8, 32, 64)
    assert patchify(x).shape == (2, 2, 4, 8, 3 * 4 * 8 * 8)
    assert torch.equal(unpatchify(patchify(x)), x)


def test_tubelets_with_caches_equal_the_whole_clip_and_do_not_see_the_future():
    torch.manual_seed(1)
    net = VideoBsqVit(BsqVitConfig(**TINY)).eval()
    x = torch.rand(1, 3, 16, 64, 96)
    with torch.no_grad():
        whole = net.project(x)
        net.streaming(True)
        pieces = torch.cat([net.project(x[:, :, t:t + 4]) for t in range(0, 16, 4)], 1)
        net.reset()
        signs = (whole >= 0).float() * 2 - 1
        pixels = torch.cat([net.synthesize(signs[:, t:t + 1]) for t in range(4)], 2)
        net.streaming(False)
        torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)
        torch.testing.assert_close(pixels, net.synthesize(signs), atol=1e-5, rtol=0)
        x2 = x.clone()
        x2[:, :, 8:] = 0
        assert torch.equal(net.project(x2)[:, :2], whole[:, :2])  # tubelets 0-1 do not see frames 8+
    torch.testing.assert_close(whole.norm(dim=-1), torch.ones(whole.shape[:-1]))  # on the unit sphere


def test_the_decoder_reads_only_the_bits_kept():
    torch.manual_seed(2)
    net = VideoBsqVit(BsqVitConfig(**TINY)).eval()
    torch.nn.init.normal_(net.decoder.head.weight, std=0.05)
    bits = net.encode(torch.rand(1, 3, 4, 32, 32))
    flipped = bits.clone()
    flipped[..., 8:] ^= 1
    with torch.no_grad():
        assert torch.equal(net.decode(bits, 8), net.decode(flipped, 8))
        assert not torch.equal(net.decode(bits, 12), net.decode(flipped, 12))


def test_subcodes_and_their_contexts():
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 1], np.uint8)
    assert subcodes(bits).tolist() == [11, 1]  # first bit most significant
    codes = np.array([[[[3, 5]]], [[[3, 7]]]])  # 2 tubelets of one token, 2 groups
    none = ALPHABET
    assert context_rows(codes, 0, 0).tolist() == [(none * (ALPHABET + 1) + none)]
    assert context_rows(codes, 1, 1).tolist() == [PER_GROUP + 5 * (ALPHABET + 1) + 3]
    counts = count_subcodes(np.unpackbits(np.array([[[[0x35]]], [[[0x37]]]], np.uint8), axis=-1))
    assert counts.sum() == 4 and counts[PER_GROUP + 5 * (ALPHABET + 1) + 3, 7] == 1


def test_pieces_read_back_one_at_a_time():
    rng = np.random.default_rng(0)
    table = FrequencyTable(rng.integers(1, 50, (3, 16)))
    first = rng.integers(0, 16, 100)
    second = rng.integers(0, 16, 100)
    data = encode_categorical_pieces([(first, np.zeros(100, int)), (second, first % 3)], table)
    reader = CategoricalReader(data, table, 200)
    assert np.array_equal(reader.read(np.zeros(100, int)), first)
    assert np.array_equal(reader.read(first % 3), second)  # contexts from the piece just read
    reader.close()
    with pytest.raises(nc.NCError):
        CategoricalReader(data, table, 150).read(np.zeros(200, int))  # more than the bound
    reader = CategoricalReader(data, table)
    reader.read(np.zeros(100, int))
    with pytest.raises(nc.NCError):
        reader.close()  # symbols left unread


@pytest.mark.parametrize("frames,height,width", [(45, 50, 70), (GOP, 64, 64), (3, 20, 30)])
def test_round_trip_restores_frames_and_size(codec, frames, height, width):
    x = clip(frames, height, width)
    decoded = nc.decode(nc.encode(x, fps=30000 / 1001, codec="video/bsqvit", quality=8))
    assert decoded.data.shape == x.shape and decoded.data.dtype == np.uint8


def test_feeding_frames_in_pieces_gives_the_same_file(codec):
    check_pieces_give_the_same_file("video/bsqvit", quality=5)


def test_every_gop_is_a_seek_point(codec):
    check_every_gop_is_a_seek_point("video/bsqvit", GOP, quality=6)


def test_quality_and_bitrate_control_the_size(codec):
    x = clip(GOP, 64, 96)
    sizes = [len(code_packets(codec, x, quality=q)[1][0].payload) for q in (1, 8, 16)]
    assert sizes[0] < sizes[1] < sizes[2]
    target = 8 * sizes[1] / (GOP / 25) + 1  # bits per second: a budget of sizes[1] bytes, rounded up
    payload = code_packets(codec, x, bitrate=f"{target:.0f}")[1][0].payload
    assert payload[0] == 8 and len(payload) == sizes[1]  # the largest kept groups that fit: quality 8's
    assert len(code_packets(codec, x, bitrate="1k")[1][0].payload) == sizes[0]  # unreachable: the smallest


def test_damaged_payloads_are_clean_errors(codec):
    # (the header alone is not among them: an empty ANS stream is valid and decodes to the likeliest codes)
    check_damaged_payloads_are_clean_errors(codec, lambda payload: (
        payload[:1], payload[:-4], payload[:-1], payload + b"\0\0\0\0", b"\x00" + payload[1:],
        b"\x11" + payload[1:], payload[:1] + b"\x09" + payload[2:]))


def test_gops_decode_in_parallel_as_they_do_one_at_a_time(codec, monkeypatch):
    check_parallel_decoding(codec, GOP, monkeypatch)


def test_gops_code_in_parallel_as_they_do_one_at_a_time(codec, monkeypatch):
    check_parallel_encoding(codec, GOP, monkeypatch)


def test_other_weights_are_refused(tmp_path):
    from nc.models.wfvae import VideoWFVAE, WfvaeConfig

    model = VideoWFVAE(WfvaeConfig(widths=(8, 16, 16), latent=16, hyper=8, channels=16))
    path = tmp_path / "wfvae.safetensors"
    save_weights(path, model, {}, {"config": model.cfg.to_dict()})
    with pytest.raises(nc.NCError, match="not video/bsqvit weights"):
        BsqVitCodec(path).model
    model = VideoBsqVit(BsqVitConfig(**TINY))
    save_weights(path, model, {}, {"config": model.cfg.to_dict()})
    with pytest.raises(nc.NCError, match="prior table"):
        BsqVitCodec(path).model


def test_tokens_of_a_video_and_of_an_image(codec, tmp_path):
    x = clip(GOP + 6, 40, 72)
    codes = nc.tokens(x, codec="video/bsqvit", quality=5, fps=25)  # its size from the array
    assert codes.shape == (GOP // 4 + 2, 8, 12, 5) and codes.dtype == np.uint8 and codes.max() < ALPHABET
    facts, packets = code_packets(codec, x, quality=5)  # the tokens are what the file holds
    held = np.concatenate([codec.model.read(p.payload, 40, 72, p.duration)[0] for p in packets])
    assert np.array_equal(held[..., :5], codes)
    frames = nc.detokenize(codes, codec="video/bsqvit")
    assert frames.shape == (4 * len(codes), 64, 96, 3)
    decoded = nc.decode(nc.encode(x, codec="video/bsqvit", quality=5, fps=25)).data  # GOP by GOP, as the file
    np.testing.assert_array_equal(frames[:len(x), :40, :72], decoded)
    image = nc.tokens(x[0], codec="video/bsqvit", quality=16)
    assert image.shape == (1, 8, 12, 16)


def test_video_with_sound_and_tokens_through_the_cli(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("NC_BSQVIT_WEIGHTS", str(weights))
    check_video_with_sound_through_the_cli("video/bsqvit", tmp_path, "--bitrate", "200k")
    assert run_nc("tokens", SAMPLES / "photo.png", "-o", tmp_path / "p.npy", "--codec", "video/bsqvit",
                  "--quality", "4").returncode == 0
    assert np.load(tmp_path / "p.npy").shape == (1, 64, 64, 4)
    result = run_nc("detokenize", tmp_path / "p.npy", tmp_path / "p.png", "--codec", "video/bsqvit")
    assert result.returncode == 0 and b"512x512" in result.stdout
    assert run_nc("tokens", SAMPLES / "clip.mp4", "-o", tmp_path / "v.npy", "--codec", "video/bsqvit",
                  "--quality", "2").returncode == 0
    assert np.load(tmp_path / "v.npy").shape == (13, 32, 40, 2)  # GOPs of 8 tubelets and 5; 320x240 -> 320x256
    result = run_nc("detokenize", tmp_path / "v.npy", tmp_path / "v.mkv", "--codec", "video/bsqvit")
    assert result.returncode == 0 and b"52 frames of 320x256" in result.stdout
    result = run_nc("tokens", SAMPLES / "speech.wav", "-o", tmp_path / "s.npy", "--codec", "video/bsqvit")
    assert result.returncode == 2 and b"video/bsqvit makes tokens of video and image, not audio (for audio: audio/rvq)" in result.stderr


def test_training_loss_falls_on_one_batch():
    torch.manual_seed(0)
    model = VideoBsqVit(BsqVitConfig(**TINY))
    x = torch.from_numpy(clip(8, 32, 32)).permute(3, 0, 1, 2)[None].float().repeat(2, 1, 1, 1, 1) / 255
    keep = torch.tensor([16, 64])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(recon_loss(model, x, keep)["loss"].detach())
    for _ in range(40):
        loss = recon_loss(model, x, keep)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(recon_loss(model, x, keep)["loss"].detach()) < 0.5 * first


def test_trainer_writes_weights_the_codec_loads_and_resumes(tmp_path):
    from nc.train.bsqvit import main as train_main

    check_trainer_writes_weights_the_codec_loads_and_resumes(train_main, BsqVitCodec, "video/bsqvit", TINY, tmp_path)


@pytest.fixture(scope="module")
def shipped():
    if not bsqvit_codec.SHIPPED_WEIGHTS.exists():
        pytest.skip("no shipped video/bsqvit weights")
    return BsqVitCodec(bsqvit_codec.SHIPPED_WEIGHTS)


def test_shipped_weights_round_trip_at_every_quality(shipped, monkeypatch):
    """A smooth pan over a photo through nc.encode / nc.decode at every quality: each decodes to the clip's
    size, the files and the pictures' quality grow with the quality, and the pictures are a trained
    model's, not noise."""
    from PIL import Image

    from nc.plugins import registry

    monkeypatch.setitem(registry().codecs, "video/bsqvit", shipped)
    photo = np.asarray(Image.open(SAMPLES / "photo.png").convert("RGB"))
    x = np.stack([photo[100:164, 100 + 2 * t:196 + 2 * t] for t in range(12)])
    sizes, psnrs = [], []
    for q in range(1, 17):
        data = nc.encode(x, fps=25, codec="video/bsqvit", quality=q)
        y = nc.decode(data).data
        assert y.shape == x.shape
        psnrs.append(10 * np.log10(255**2 / np.mean((y.astype(float) - x) ** 2)))
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert psnrs[-1] > psnrs[0] + 2 and min(psnrs) > 18
