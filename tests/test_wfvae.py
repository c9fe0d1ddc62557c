"""video/wfvae on a small random-init model: the wavelet transform, causal streaming, the context
prior's integer network, container round trips, GOPs as seek points, chunked = whole, rates and
damaged payloads (quality is measured in bench/video.py, not here)."""
import io

import numpy as np
import pytest
import torch

import nc
from nc.codecs import hyper_deltas, wfvae as wfvae_codec
from nc.codecs.wfvae import GOP, WfvaeCodec
from nc.models.hyperprior import ACT_BITS, IntegerHyperSynthesis
from nc.models.weights import save_weights
from nc.models.wfvae import VideoWFVAE, WfvaeConfig, haar3d, ihaar3d
from nc.train.image import export_tables
from nc.train.video import rd_loss
from conftest import SAMPLES, panning_clip as clip
from latent_checks import check_version_1_files_still_decode, without_filter
from video_codec_checks import (check_damaged_payloads_are_clean_errors, check_every_gop_is_a_seek_point,
                                check_parallel_decoding, check_parallel_encoding,
                                check_pieces_give_the_same_file,
                                check_trainer_writes_weights_the_codec_loads_and_resumes,
                                check_video_with_sound_through_the_cli, code_packets, decode_packets)

TINY = dict(widths=(8, 16, 16), latent=16, hyper=8, channels=16)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = VideoWFVAE(WfvaeConfig(**TINY))
    path = tmp_path_factory.mktemp("wfvae") / "tiny.safetensors"
    save_weights(path, model, export_tables(model), {"config": model.cfg.to_dict()})
    return path


@pytest.fixture()
def codec(weights, monkeypatch):
    from nc.plugins import registry

    c = WfvaeCodec(weights)
    monkeypatch.setitem(registry().codecs, "video/wfvae", c)
    return c


def test_haar_transform_is_orthonormal_and_inverts():
    x = torch.randn(2, 3, 8, 16, 12, dtype=torch.float64)
    w = haar3d(x)
    assert w.shape == (2, 24, 4, 8, 6)
    torch.testing.assert_close(ihaar3d(w), x)
    torch.testing.assert_close(w.square().sum(), x.square().sum())  # energy kept
    # the first 3 channels are the all-low band: 2^1.5 times the mean of each 2x2x2 cube
    torch.testing.assert_close(w[:, :3], x.unflatten(2, (4, 2)).unflatten(4, (8, 2)).unflatten(6, (6, 2))
                               .mean((3, 5, 7)) * 8 ** 0.5)


def test_windows_with_caches_equal_the_whole_clip():
    torch.manual_seed(1)
    net = VideoWFVAE(WfvaeConfig(**TINY)).eval()
    x = torch.rand(1, 3, 16, 64, 64)
    with torch.no_grad():
        whole_y, whole_x = net.analysis(x), net.synthesis(net.analysis(x))
        net.streaming(True)
        y = torch.cat([net.analysis(x[:, :, t:t + 4]) for t in range(0, 16, 4)], 2)
        net.reset()
        pixels = torch.cat([net.synthesis(whole_y[:, :, t:t + 1]) for t in range(4)], 2)
        net.streaming(False)
    torch.testing.assert_close(y, whole_y, atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels, whole_x, atol=1e-5, rtol=0)
    # causal: the first frames' latent does not see later frames
    x2 = x.clone()
    x2[:, :, 8:] = 0
    with torch.no_grad():
        assert torch.equal(net.analysis(x2)[:, :, :2], whole_y[:, :, :2])


def test_context_prior_runs_as_an_exact_integer_network():
    torch.manual_seed(2)
    model = VideoWFVAE(WfvaeConfig(**TINY))
    z = torch.round(3 * torch.randn(1, 8, 2, 3))
    context = torch.randn(1, 16, 8, 12)
    mean, log_scale = model.hyper_parameters(z, context)
    net = IntegerHyperSynthesis.from_tensors(export_tables(model))
    fixed = torch.round(context.double() * 2**ACT_BITS)
    int_mean, int_log_scale = net(z, fixed)
    torch.testing.assert_close(int_mean / 2**ACT_BITS, mean.double(), atol=0.05, rtol=0)
    torch.testing.assert_close(int_log_scale / 2**ACT_BITS, log_scale.double(), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="context"):
        net(z)


@pytest.mark.parametrize("frames,height,width", [(45, 50, 70), (GOP, 64, 64), (3, 20, 30)])
def test_round_trip_restores_frames_size_and_rate(codec, frames, height, width):
    x = clip(frames, height, width)
    data = nc.encode(x, fps=30000 / 1001, codec="video/wfvae", quality=4)
    decoded = nc.decode(data)
    assert decoded.data.shape == x.shape and decoded.data.dtype == np.uint8
    reader = nc.open(io.BytesIO(data), "rb")
    assert reader.tracks[0].facts.fps == nc.open(io.BytesIO(nc.encode(x, fps=30000 / 1001, codec="video/h264")),
                                                 "rb").tracks[0].facts.fps


def test_feeding_frames_in_pieces_gives_the_same_file(codec):
    check_pieces_give_the_same_file("video/wfvae", quality=5)


def test_every_gop_is_a_seek_point(codec):
    check_every_gop_is_a_seek_point("video/wfvae", GOP, quality=6)


def test_quality_and_bitrate_control_the_size(codec):
    x = clip(GOP, 64, 96)
    sizes = [len(code_packets(codec, x, quality=q)[1][0].payload) for q in (1, 4.5, 8)]
    assert sizes[0] < sizes[1] < sizes[2]
    seconds = GOP / 25
    target = 8 * sizes[1] / seconds
    payload = code_packets(codec, x, bitrate=f"{target:.0f}")[1][0].payload
    assert 0.8 * sizes[1] <= len(payload) <= sizes[1]
    # unreachable: the smallest, quality 1 without its post-filter
    smallest = code_packets(codec, x, bitrate="1k")[1][0].payload
    assert len(smallest) <= sizes[0] and wfvae_codec.step_of(smallest) == 0 and not smallest[1] & 0x80


def test_files_from_before_gamma_escapes_still_decode(codec, monkeypatch):
    check_version_1_files_still_decode(codec, lambda: nc.encode(clip(12, 48, 64), fps=25, codec="video/wfvae", quality=6),
                                       monkeypatch)


def test_damaged_payloads_are_clean_errors(codec):
    def damaged(payload):
        assert payload[1] & 0x80  # a random-init network's frames: the post-filter pays for itself
        return (payload[:2], payload[:7], payload[:-3], payload + b"\0", b"\xff\xff" + payload[2:],
                payload[:2] + b"\x09" + payload[3:],
                payload[:3] + b"\x04" + payload[4:],  # a post-filter radius beyond 3
                payload[:1] + bytes([payload[1] & 0x7F]) + payload[2:])  # its filter read as the first z

    check_damaged_payloads_are_clean_errors(codec, damaged)


def _still_clip(frames: int = 16) -> np.ndarray:
    return np.repeat(clip(1, 64, 96), frames, 0)


def test_still_frames_code_in_copy_mode_and_plain_payloads_still_decode(codec):
    """Latent frames that repeat the one before code as changes from it (nc/codecs/copy_modes.py):
    the payload sets bit 14 and shrinks; one coded without copy modes (as before version 4) decodes too."""
    x = _still_clip()
    model, step = codec.model, codec.model.coder.step_of(5)
    latents = model.analyse(x)
    plain = model._coded(latents, step, None, None)[0]
    moded = model.code(latents, step)
    assert moded[1] & 0x40 and not plain[1] & 0x40 and len(moded) < 0.8 * len(plain)
    for payload in (plain, moded):
        frames = model.pixels(model.read(payload, 64, 96, 16), 64, 96)
        assert frames.shape == x.shape and 10 * np.log10(255**2 / np.mean((frames - x.astype(float)) ** 2)) > 8


def test_damaged_copy_modes_are_clean_errors(codec):
    model, step = codec.model, codec.model.coder.step_of(5)
    moded = model.code(model.analyse(_still_clip(8)), step)
    assert moded[1] & 0x40
    offsets_end = 3 + 4 + int.from_bytes(moded[3:7], "little") + codec.model.cfg.hyper * bool(moded[1] & 0x20)
    z_end = offsets_end + 4 + int.from_bytes(moded[offsets_end:offsets_end + 4], "little")
    # a copy-mode map follows the first latent frame: 2 x 3 blocks, one byte
    map_at = z_end + 4 + int.from_bytes(moded[z_end:z_end + 4], "little")
    assert model.read(moded, 64, 96, 8).y_hats
    for bad in (moded[:1] + bytes([moded[1] & ~0x40]) + moded[2:],  # read as a plain payload
                moded[:3] + (9999).to_bytes(4, "little") + moded[7:],  # offsets longer than the payload
                moded[:map_at] + bytes([moded[map_at] | 1]) + moded[map_at + 1:],  # a padding bit set
                moded[:map_at]):
        with pytest.raises(nc.NCError):
            model.read(bad, 64, 96, 8)


def test_a_still_clips_hyper_latents_code_as_changes_and_older_payloads_still_decode(codec):
    """Bitstream version 5 (nc/codecs/hyper_deltas.py): the later latent frames' z of a still clip
    code as changes from the one before; a payload with copy modes but without z modes (version 4)
    decodes to the same latents; a damaged map of z modes is a clean error."""
    model, step = codec.model, codec.model.coder.step_of(5)
    latents = model.analyse(_still_clip(16))
    offsets = model._choose_offsets(latents, step)
    modes = hyper_deltas.choose([z for _, z, _ in latents], model.coder.z_index, model.coder.coder)
    assert (modes > 0).all()  # z does not change: every channel codes its changes
    older, newer = (model._coded(latents, step, offsets, m)[0] for m in (None, modes))
    assert newer[1] & 0x20 and not older[1] & 0x20 and newer == model.code(latents, step)
    z_bytes = [sum(len(z) for z in _z_blocks(model, p)[1:]) for p in (older, newer)]
    assert z_bytes[1] < z_bytes[0] and len(newer) < len(older)
    plain, plain_with_z_modes = (model._coded(latents, step, None, m)[0] for m in (None, modes))
    assert plain_with_z_modes[1] & 0x20 and not plain_with_z_modes[1] & 0x40  # the map without copy modes
    for a, b in zip(*(model.read(p, 64, 96, 16).y_hats for p in (older, newer))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(*(model.read(p, 64, 96, 16).y_hats for p in (plain, plain_with_z_modes))):
        np.testing.assert_array_equal(a, b)
    map_at = 3 + 4 + int.from_bytes(newer[3:7], "little")
    for bad in (newer[:map_at] + bytes([65]) + newer[map_at + 1:],  # a scale beyond the 64
                newer[:map_at + 3],  # cut inside the map
                newer[:1] + bytes([newer[1] & ~0x20]) + newer[2:]):  # the map read as the first z's length
        with pytest.raises(nc.NCError):
            model.read(bad, 64, 96, 16)


def _z_blocks(model, payload: bytes) -> list[bytes]:
    """The z payloads of a GOP's latent frames (copy modes, offsets and z modes present or not)."""
    from nc.codecs.learned_image import take_block

    _, _, has_modes, has_z_modes = wfvae_codec.split_field(payload[0] | payload[1] << 8)
    pos = 3 + (4 + int.from_bytes(payload[3:7], "little") if has_modes else 0) + model.cfg.hyper * has_z_modes
    blocks = []
    for t in range(payload[2]):
        pos += (1 if has_modes and t else 0)  # a one-byte copy-mode map (2 x 3 blocks)
        z, pos = take_block(payload, pos, "video/wfvae")
        _, pos = take_block(payload, pos, "video/wfvae")
        blocks.append(z)
    return blocks


def test_a_gop_decodes_with_or_without_its_post_filter(codec):
    from nc.codecs.wfvae import HEADER

    facts, packets = code_packets(codec, clip(8, 48, 64), quality=5)
    payload = packets[0].payload
    gop = codec.model.read(payload, 48, 64, 8)
    assert gop.filter is not None
    plain = without_filter(payload, HEADER.size, 3)
    unfiltered = codec.model.pixels(codec.model.read(plain, 48, 64, 8), 48, 64)
    np.testing.assert_array_equal(codec.model.pixels(gop, 48, 64), gop.filter.apply(unfiltered))
    assert not np.array_equal(unfiltered, gop.filter.apply(unfiltered))


def test_gops_decode_in_parallel_as_they_do_one_at_a_time(codec, monkeypatch):
    check_parallel_decoding(codec, GOP, monkeypatch)


def test_gops_code_in_parallel_as_they_do_one_at_a_time(codec, monkeypatch):
    check_parallel_encoding(codec, GOP, monkeypatch)


def test_a_config_beyond_the_integer_networks_bounds_is_refused():
    with pytest.raises(ValueError, match="fan-in"):
        WfvaeConfig(latent=30000, channels=192)
    WfvaeConfig(latent=128, channels=192)  # over the 2^11 bound of earlier versions, exact under 2^19


def test_other_weights_are_refused(tmp_path):
    from nc.models.hvae import HvaeConfig, ImageHVAE

    model = ImageHVAE(HvaeConfig(channels=8, latent=8, hyper=4))
    path = tmp_path / "hvae.safetensors"
    save_weights(path, model, export_tables(model), {"config": model.cfg.to_dict()})
    with pytest.raises(nc.NCError, match="not video/wfvae weights"):
        WfvaeCodec(path).model


def test_video_with_sound_through_the_cli(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("NC_WFVAE_WEIGHTS", str(weights))
    check_video_with_sound_through_the_cli("video/wfvae", tmp_path, "--quality", "3")


def test_training_loss_falls_on_one_batch():
    torch.manual_seed(0)
    model = VideoWFVAE(WfvaeConfig(**TINY))
    x = torch.from_numpy(clip(8, 64, 64)).permute(3, 0, 1, 2)[None].float().repeat(2, 1, 1, 1, 1) / 255
    q = torch.tensor([0.0, 7.0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(rd_loss(model, x, q)["loss"].detach())
    for _ in range(30):
        loss = rd_loss(model, x, q)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(rd_loss(model, x, q)["loss"].detach()) < 0.5 * first


def test_trainer_writes_weights_the_codec_loads_and_resumes(tmp_path):
    from nc.train.video import main as train_main

    check_trainer_writes_weights_the_codec_loads_and_resumes(train_main, WfvaeCodec, "video/wfvae", TINY, tmp_path)


@pytest.fixture(scope="module")
def shipped():
    if not wfvae_codec.SHIPPED_WEIGHTS.exists():
        pytest.skip("no shipped video/wfvae weights")
    return WfvaeCodec(wfvae_codec.SHIPPED_WEIGHTS)


def test_shipped_weights_round_trip_at_every_quality(shipped):
    """A smooth pan (the material it was trained on): every quality decodes to the clip's size, the
    files grow with the quality, and the pictures are a trained model's, not noise."""
    from PIL import Image

    photo = np.asarray(Image.open(SAMPLES / "photo.png").convert("RGB"))
    x = np.stack([photo[100:164, 100 + 2 * t:196 + 2 * t] for t in range(12)])
    sizes = []
    for q in (1, 4, 8):
        facts, packets = code_packets(shipped, x, quality=q)
        y = decode_packets(shipped, facts, packets, quality=q)
        assert y.shape == x.shape
        assert 10 * np.log10(255**2 / np.mean((y.astype(float) - x) ** 2)) > 18
        sizes.append(len(packets[0].payload))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_training_clips_are_made_on_the_fly_from_sources(tmp_path):
    """nc/train/video_data.ClipSource: crops of real clips (skipping the frames skip.json names) and pans
    over photos, at the size asked for."""
    import av
    from PIL import Image

    from nc.train.video_data import ClipSource

    (tmp_path / "clips").mkdir()
    (tmp_path / "photos").mkdir()
    frames = clip(30, 96, 128)
    with av.open(str(tmp_path / "clips" / "c.mkv"), "w") as f:
        s = f.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "bgr0"
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                f.mux(p)
        for p in s.encode(None):
            f.mux(p)
    (tmp_path / "clips" / "skip.json").write_text('{"c.mkv": 10}')
    Image.fromarray(clip(1, 600, 800)[0]).save(tmp_path / "photos" / "p.png")
    source = ClipSource(str(tmp_path))
    assert len(source.clips) == 1 and len(source.clips[0]) == 20
    rng = np.random.default_rng(0)
    made = [source.clip(rng, 8, 64) for _ in range(6)]
    assert all(c.shape == (8, 64, 64, 3) and c.dtype == np.uint8 for c in made)
    assert any(not np.array_equal(c[0], c[-1]) for c in made)  # things move


# ---- --effort 1: encoder-side refinement of each GOP's y (nc/models/refine.py)


def _cost(codec, payload: bytes, x: np.ndarray, step: int) -> float:
    """What refinement lowers: bits + lambda x squared error (8-bit levels, the mean over R, G, B)."""
    h, w = x.shape[1:3]
    y = codec.model.pixels(codec.model.read(payload, h, w, len(x)), h, w)
    return 8 * len(payload) + codec.model.coder.lmbda(step) * float(np.sum((y.astype(float) - x) ** 2)) / 3


def test_effort_1_refines_tile_by_tile_reproducibly_and_meets_bitrates(codec, monkeypatch):
    monkeypatch.setattr(wfvae_codec, "REFINE_TILE", 4)  # 5 tiles of 4 x 4 latent cells
    monkeypatch.setattr(wfvae_codec, "REFINEMENT_ITERATIONS", (0, 4))
    x = clip(12, 64, 320)  # a GOP of 12 frames, coded as 3 latent frames of 4 x 20 cells
    windows, synthesis = [], type(codec.model.net).synthesis
    monkeypatch.setattr(type(codec.model.net), "synthesis",
                        lambda net, y: (y.requires_grad and windows.append(y.shape[-1])) or synthesis(net, y))
    refined = code_packets(codec, x, quality=5, effort=1)[1][0].payload
    # the synthesis sees each tile and at most 4 cells either side of it, not the whole frame
    iterations = wfvae_codec.REFINEMENT_ITERATIONS[1]
    assert windows == [w for w in (8, 12, 12, 12, 8) for _ in range(iterations)]
    assert refined != code_packets(codec, x, quality=5)[1][0].payload
    assert refined == code_packets(codec, x, quality=5, effort=1)[1][0].payload  # the annealing noise is seeded
    assert decode_packets(codec, *code_packets(codec, x, quality=5, effort=1), quality=5).shape == x.shape
    plain = code_packets(codec, x, quality=5)[1][0].payload
    target = 0.9 * 8 * len(plain) / (12 / 25)
    assert len(code_packets(codec, x, bitrate=f"{target:.0f}", effort=1)[1][0].payload) <= 0.9 * len(plain)


def test_effort_1_keeps_the_plain_payload_where_refinement_loses(shipped, monkeypatch):
    """Refinement optimises a relaxed rounding through a float twin of the filter: nothing made it
    win. Here it returns latents far from the analysis's (zeros: a grey clip, in fewer bits), which
    must not reach the file, at a quality (bits + lambda x error) or a bitrate (error)."""
    monkeypatch.setattr(wfvae_codec, "REFINEMENT_ITERATIONS", (0, 1))
    monkeypatch.setattr(type(shipped.model), "refine",
                        lambda m, frames, duration, latents, *a: [(0 * y, z, data) for y, z, data in latents])
    x = clip(8, 64, 64)
    for rate in ({"quality": 5}, {"bitrate": "400k"}):
        plain = code_packets(shipped, x, **rate)[1][0].payload
        assert code_packets(shipped, x, effort=1, **rate)[1][0].payload == plain


def test_effort_1_lowers_the_cost_of_shipped_weights_gops(shipped):
    """A pan over a photo (unseen material: samples/ is not in the training set) at quality 4."""
    from PIL import Image

    photo = np.asarray(Image.open(SAMPLES / "photo.png").convert("RGB"))
    x = np.stack([photo[120:184, 80 + 3 * t:208 + 3 * t] for t in range(8)])
    step = shipped.model.coder.step_of(4)
    plain, refined = (code_packets(shipped, x, quality=4, **e)[1][0].payload for e in ({}, {"effort": 1}))
    assert _cost(shipped, refined, x, step) < 0.97 * _cost(shipped, plain, x, step)


def test_copy_modes_shrink_a_still_camera_clip_with_shipped_weights(shipped):
    """samples/clip.mp4 (a fixed camera, people walking): a third fewer bits, the same quality."""
    import av

    with av.open(str(SAMPLES / "clip.mp4")) as container:
        x = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:32])
    model, step = shipped.model, shipped.model.coder.step_of(4)
    latents = model.analyse(x)
    psnr = lambda p: 10 * np.log10(255**2 / np.mean((model.pixels(model.read(p, 240, 320, 32), 240, 320) - x.astype(float)) ** 2))  # noqa: E731
    plain, moded = model._coded(latents, step, None, None)[0], model.code(latents, step)
    assert len(moded) < 0.75 * len(plain) and psnr(moded) > psnr(plain) - 0.1
    without_z_modes = model._coded(latents, step, model._choose_offsets(latents, step), None)[0]
    assert len(moded) < 0.985 * len(without_z_modes)  # 2.8 % smaller (by hand)


def test_the_post_filter_of_classes_pays_with_shipped_weights(shipped, monkeypatch):
    """Bitstream version 6: samples/clip.mp4's GOP gets a post-filter of several classes of activity,
    which brings its cost (bits + lambda x squared error) below one filter's; a version-5 GOP (one
    class) decodes as before."""
    import av

    from nc.codecs import postfilter

    with av.open(str(SAMPLES / "clip.mp4")) as container:
        x = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:32])
    step = shipped.model.coder.step_of(1)
    classed = code_packets(shipped, x, quality=1)[1][0].payload
    assert postfilter.unpack(classed, wfvae_codec.HEADER.size, 3)[0].classes > 1
    real = postfilter.choose
    monkeypatch.setattr(postfilter, "choose", lambda *a, max_classes=1: real(*a, max_classes=1))
    one = code_packets(shipped, x, quality=1)[1][0].payload
    assert postfilter.unpack(one, wfvae_codec.HEADER.size, 3)[0].classes == 1
    assert _cost(shipped, classed, x, step) < 0.99 * _cost(shipped, one, x, step)  # 0.981 (by hand)


def test_effort_1_refines_copied_cells_with_the_cells_they_copy(shipped):
    """samples/clip.mp4's still background codes in copy mode; refinement keeps it there (a copy cell's
    mean follows the refined value before it), so it still lowers the cost."""
    import av

    with av.open(str(SAMPLES / "clip.mp4")) as container:
        x = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:8])[:, 64:192, 96:224]
    step = shipped.model.coder.step_of(4)
    plain, refined = (code_packets(shipped, x, quality=4, **e)[1][0].payload for e in ({}, {"effort": 1}))
    assert plain[1] & 0x40 and refined[1] & 0x40
    assert _cost(shipped, refined, x, step) < 0.97 * _cost(shipped, plain, x, step)


def test_efforts_video_codecs_do_not_offer_are_refused(codec):
    assert codec.descriptor.efforts == 1
    x = clip(4, 64, 64)
    with pytest.raises(nc.NCError, match="takes --effort 0-1, not 2"):
        nc.encode(x, fps=25, codec="video/wfvae", effort=2)
    with pytest.raises(nc.NCError, match="video/bsqvit has no effort levels"):
        nc.encode(x, fps=25, codec="video/bsqvit", effort=1)
