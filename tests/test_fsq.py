"""Residual FSQ: exact integer codes for large grids, stages that refine, inference equal to training."""
import pytest
import torch

from nc.quantization.fsq import ResidualFSQ, ScalarGrid


def test_index_round_trip_is_exact_for_a_2_to_the_40_grid():
    grid = ScalarGrid((32,) * 8)  # 2^40 codes per stage: float32 would lose digits
    digits = torch.randint(0, 32, (3, 8, 50))
    codes = grid.index(digits)
    assert codes.dtype == torch.int64 and int(codes.max()) < 2**40
    assert torch.equal(grid.unindex(codes), digits)


def test_stages_refine_and_decode_matches_training_values():
    torch.manual_seed(0)
    fsq = ResidualFSQ((8, 5, 5, 5), stages=4)
    x = torch.randn(4, 4, 100)
    target = torch.tanh(x)
    errors = [float((fsq.decode(fsq.encode(x, n)) - target).abs().max()) for n in range(1, 5)]
    assert all(b < a / 3 for a, b in zip(errors, errors[1:])), errors
    out = fsq(x, 3)
    assert torch.allclose(out.quantized, fsq.decode(out.codes), atol=1e-6)


def test_gradient_passes_straight_through():
    fsq = ResidualFSQ((5, 5), stages=2)
    x = torch.randn(2, 2, 10, requires_grad=True)
    fsq(x).quantized.sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2)  # d tanh, rounding passed through


def test_every_level_is_reachable():
    fsq = ResidualFSQ((7, 4), stages=1)
    x = torch.atanh(torch.linspace(-0.999, 0.999, 2000)).view(1, 1, -1).repeat(1, 2, 1)
    digits = fsq.stages[0].unindex(fsq.encode(x, 1)[:, 0])
    assert set(digits[0, 0].tolist()) == set(range(7)) and set(digits[0, 1].tolist()) == set(range(4))


def test_grids_that_int64_or_rounding_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        ScalarGrid((1, 5))
    with pytest.raises(ValueError, match="2\\^63"):
        ScalarGrid((2,) * 63)
    with pytest.raises(ValueError, match="n_stages"):
        ResidualFSQ((5, 5), stages=2)(torch.zeros(1, 2, 4), 0)
