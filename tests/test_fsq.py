"""Residual FSQ: exact integer codes for large grids, stages that refine, inference equal to training."""
import pytest
import torch

from nc.quantization.fsq import FSQBottleneck, ScalarGrid


def test_index_round_trip_is_exact_for_a_2_to_the_40_grid():
    grid = ScalarGrid((32,) * 8)  # 2^40 codes per stage: float32 would lose digits
    digits = torch.randint(0, 32, (3, 8, 50))
    codes = grid.index(digits)
    assert codes.dtype == torch.int64 and int(codes.max()) < 2**40
    assert torch.equal(grid.unindex(codes), digits)


def test_inference_decodes_what_training_quantized():
    torch.manual_seed(0)
    bottleneck = FSQBottleneck(16, (8, 5, 5, 5), 4).eval()
    x = torch.randn(4, 16, 100)
    out = bottleneck(x, 3)
    assert torch.allclose(out.quantized, bottleneck.decode(out.codes), atol=1e-6)
    assert torch.equal(bottleneck.encode(x, 3), out.codes)


def test_every_level_is_reachable():
    grid = ScalarGrid((7, 4))
    z = torch.linspace(-0.999, 0.999, 2000).view(1, 1, -1).repeat(1, 2, 1)
    digits = grid.digits(z)
    assert set(digits[0, 0].tolist()) == set(range(7)) and set(digits[0, 1].tolist()) == set(range(4))
    assert torch.allclose(grid.value(grid.digits(grid.value(digits))), grid.value(digits))  # grid points are fixed


def test_every_stage_fills_its_grid_even_when_its_projection_sits_off_centre():
    """Each stage standardizes its projection before tanh, so a projection far off-centre still
    uses every level of every dimension (the first shipped weights' stage 1 left edge levels unused)."""
    torch.manual_seed(0)
    bottleneck = FSQBottleneck(16, (8, 5), 2)
    with torch.no_grad():
        bottleneck.inp[0].bias.fill_(2.0)  # unstandardized, tanh stays above 0.2 for nearly every frame
    latent = torch.randn(8, 16, 200)
    trained = bottleneck(latent).codes  # a training pass measures the statistics that encoding uses
    codes = bottleneck.eval().encode(latent, 2)
    assert torch.equal(codes, trained)  # encoding quantizes as that training pass did
    digits = bottleneck.digits(codes)
    for d, levels in enumerate((8, 5)):
        assert set(digits[:, 0, d].flatten().tolist()) == set(range(levels))
        assert set(digits[:, 1, d].flatten().tolist()) == set(range(levels))


def test_weights_from_before_standardization_load_and_code_as_before():
    torch.manual_seed(0)
    trained = FSQBottleneck(16, (8, 5), 2)
    trained(torch.randn(4, 16, 50))  # measures scale, center and spread
    old = {k: v for k, v in trained.state_dict().items() if k not in ("center", "spread")}
    loaded = FSQBottleneck(16, (8, 5), 2)
    loaded.load_state_dict(old)
    assert not loaded.spread.any() and not loaded.center.any()
    loaded.eval()
    x = torch.randn(2, 16, 30)
    scale = loaded._scale(0)
    expected = loaded.grids[0].index(loaded.grids[0].digits(torch.tanh(loaded.inp[0](x / scale))))
    assert torch.equal(loaded.encode(x, 1)[:, 0], expected)
    with pytest.raises(RuntimeError, match="spread"):  # a newer dict that lost a statistic is reported
        FSQBottleneck(16, (8, 5), 2).load_state_dict({k: v for k, v in trained.state_dict().items() if k != "spread"})


def test_grids_that_int64_or_rounding_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        ScalarGrid((1, 5))
    with pytest.raises(ValueError, match="2\\^63"):
        ScalarGrid((2,) * 63)
    with pytest.raises(ValueError, match="n_stages"):
        FSQBottleneck(4, (5, 5), 2)(torch.zeros(1, 4, 4), 0)


def test_frame_codec_bottleneck_keeps_the_rvq_models_shapes_and_interface():
    """quantizer="fsq" swaps only the bottleneck: every other parameter has the RVQ model's name and
    shape (so RVQ weights initialise it), and the quantizer answers the calls the RVQ one does."""
    from nc.models.frame_codec import FrameCodec, FrameCodecConfig

    tiny = dict(enc_channels=16, enc_blocks=1, dec_channels=16, dec_blocks=1, latent=8, head="magnitude")
    rvq, fsq = FrameCodec(FrameCodecConfig(**tiny)), FrameCodec(FrameCodecConfig(**tiny, quantizer="fsq"))
    shapes = {name: {k: v.shape for k, v in m.state_dict().items() if not k.startswith("quantizer.")}
              for name, m in (("rvq", rvq), ("fsq", fsq))}
    assert shapes["rvq"] == shapes["fsq"] and len(shapes["fsq"]) > 10
    assert sorted(k for k in fsq.state_dict() if k.startswith("quantizer.")) == sorted(
        [f"quantizer.{side}.{i}.{p}" for side in ("inp", "out") for i in range(8) for p in ("bias", "weight")]
        + ["quantizer.center", "quantizer.scale", "quantizer.spread"])
    torch.manual_seed(0)
    wav = torch.randn(2, 3200)
    latent = fsq.encode_latent(fsq.pad(wav)).detach()
    out = fsq.quantizer(latent, torch.tensor([2, 8]))
    assert out.quantized.shape == latent.shape and out.codes.shape == (2, 8, 11) and out.codes.dtype == torch.int64
    assert float(out.commitment.detach()) > 0 and float(out.codebook.detach()) > 0 and fsq.quantizer.restart_dead_codes() == 0
    fsq.quantizer.eval()  # a training pass also updates the stages' scales
    codes, inference = fsq.quantizer.encode(latent, 4), fsq.quantizer(latent, 4)
    assert torch.equal(codes, inference.codes) and int(codes.max()) < 40000
    assert torch.allclose(fsq.quantizer.decode(codes), inference.quantized, atol=1e-6)
    fsq.quantizer.train()
    assert torch.equal(fsq.quantizer.index(fsq.quantizer.digits(codes)), codes)
    out.quantized.sum().backward()  # straight through to the stages' projections
    assert fsq.quantizer.inp[0].weight.grad.abs().sum() > 0 and fsq.quantizer.inp[7].weight.grad.abs().sum() > 0


def test_fsq_stages_refine_once_their_points_match_the_residuals():
    """The match term makes every stage stand for what the stages before it left over, so the
    latent error falls with every stage (a shared projection, or none, would not: rank stays 6)."""
    torch.manual_seed(0)
    latent = torch.randn(4, 32, 50)
    bottleneck = FSQBottleneck(32, (8, 8, 5, 5, 5, 5), 8)
    optimizer = torch.optim.Adam(bottleneck.parameters(), lr=3e-3)
    for _ in range(300):
        loss = bottleneck(latent).codebook
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    errors = [bottleneck.relative_error(latent, n) for n in (1, 2, 4, 8)]
    assert all(b < 0.9 * a for a, b in zip(errors, errors[1:])) and errors[-1] < 0.5, errors


def test_configs_without_the_quantizer_fields_load_as_before():
    from nc.models.frame_codec import FrameCodecConfig

    old = {k: v for k, v in FrameCodecConfig().to_dict().items() if not k.startswith(("quantizer", "fsq_"))}
    cfg = FrameCodecConfig(**{**old, "up_strides": [4, 4, 4, 5]})  # as JSON metadata gives it
    assert cfg == FrameCodecConfig() and cfg.quantizer == "rvq"
    assert cfg.quantizer_stages == 24 and cfg.codes_per_stage == 1024
    with pytest.raises(ValueError, match="quantizer"):
        FrameCodecConfig(quantizer="pq")
