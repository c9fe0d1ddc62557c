"""nc/quantization/vq.py: k-means start, EMA updates and dead-code restarts of the one-codebook quantizer, and
the residual EMA quantizer built from the same codebooks."""
import copy

import pytest
import torch

from nc.quantization.vq import EmaVQ, ResidualEmaVQ, kmeans, nearest, rows


def _blobs(centres: torch.Tensor, per: int, spread: float = 0.01, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (centres.repeat_interleave(per, 0) + spread * torch.randn(len(centres) * per, centres.shape[1], generator=g))


def test_kmeans_finds_separated_clusters():
    centres = 3 * torch.eye(8)  # 8 far-apart points
    found = kmeans(_blobs(centres, 50), 8, iterations=20)
    # every true centre has a centroid next to it (random starts left two centroids in one blob here)
    assert torch.cdist(centres, found).min(1).values.max() < 0.1


def test_nearest_in_chunks_equals_one_pass():
    x, codes = torch.randn(1000, 16), torch.randn(64, 16)
    assert torch.equal(nearest(x, codes, chunk=97), torch.cdist(x, codes).argmin(1))


def test_kmeans_init_puts_codes_on_the_data_and_needs_enough_frames():
    vq = EmaVQ(dim=4, codebook_size=16)
    with pytest.raises(ValueError, match="needs as many"):
        vq.kmeans_init(torch.randn(1, 4, 10))
    latents = _blobs(4 * torch.randn(16, 4), 40).T.reshape(1, 4, -1)
    vq.kmeans_init(latents)
    assert bool(vq.codebook.initialized)
    assert vq.relative_error(latents) < 0.05


def test_forward_is_straight_through_and_matches_encode_decode():
    vq = EmaVQ(dim=4, codebook_size=32).eval()
    x = torch.randn(2, 4, 30, requires_grad=True)
    out = vq(x)
    assert out.codes.shape == (2, 1, 30)
    assert torch.equal(out.codes, vq.encode(x))
    torch.testing.assert_close(out.quantized, vq.decode(out.codes))
    out.quantized.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # the gradient passes the rounding unchanged


def test_ema_moves_used_codes_to_their_inputs_and_leaves_unused_ones():
    torch.manual_seed(0)
    vq = EmaVQ(dim=2, codebook_size=2, decay=0.5)
    vq.codebook.set(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    target = torch.tensor([1.0, -1.0])
    x = (target.view(1, 2, 1) + 0.001 * torch.randn(1, 2, 64)).requires_grad_()
    for _ in range(20):
        vq.train()(x)
    torch.testing.assert_close(vq.codebook.embed[0], target, atol=0.01, rtol=0)
    assert vq.codebook.usage[1] < 1e-3 * vq.codebook.usage[0]  # unused: the next restart moves it


def test_dead_codes_restart_onto_recent_inputs():
    torch.manual_seed(0)
    vq = EmaVQ(dim=2, codebook_size=8, decay=0.5)
    vq.codebook.set(torch.cat([torch.zeros(1, 2), torch.full((7, 2), 100.0)]))
    x = torch.randn(1, 2, 200, requires_grad=True)
    for _ in range(10):
        vq.train()(x)  # every input goes to code 0: seven dead codes
    assert vq.restart_dead_codes() == 7
    assert torch.cdist(vq.codebook.embed[1:], x[0].detach().T).min(1).values.max() < 1e-6
    vq.train()(x)
    assert len(vq.encode(x).unique()) > 4  # the restarted codes now take inputs
    assert vq.restart_dead_codes() == 0 or len(vq.encode(x).unique()) > 4


def _trained_residual_vq(x: torch.Tensor, stages: int = 3, steps: int = 30) -> ResidualEmaVQ:
    vq = ResidualEmaVQ(dim=x.shape[1], stages=stages, codebook_size=32)
    vq.train()
    with torch.enable_grad():
        for step in range(steps):
            vq(x)
            if step in (0, 10):
                assert vq.restart_dead_codes() > 0  # random codes far from the data die and move onto it
    return vq.eval()


def test_residual_ema_stages_refine_and_codes_nest():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 200)
    vq = _trained_residual_vq(x)
    errors = [vq.relative_error(x, n) for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]  # every stage codes what the stages before it left
    codes = vq.encode(x, 3)
    assert codes.shape == (4, 3, 200) and torch.equal(vq.encode(x, 2), codes[:, :2])
    out = vq(x, 3)
    torch.testing.assert_close(out.quantized, vq.decode(codes))
    y = x.clone().requires_grad_()
    vq(y, 2).quantized.sum().backward()
    torch.testing.assert_close(y.grad, torch.ones_like(y))  # straight-through


def test_residual_ema_dropped_stages_learn_nothing_from_those_examples():
    torch.manual_seed(1)
    vq = ResidualEmaVQ(dim=3, stages=2, codebook_size=8).train()
    before = vq.stages[1].embed.clone()
    with torch.enable_grad():
        out = vq(torch.randn(2, 3, 50), torch.tensor([1, 1]))  # every example stops after stage 1
    assert out.codes.shape == (2, 1, 50)
    assert torch.equal(vq.stages[1].embed, before)
    # a mixed batch: stage 2 learns from the second example's residual only
    x = torch.randn(2, 3, 50)
    reference = copy.deepcopy(vq)
    with torch.enable_grad():
        out = vq(x, torch.tensor([1, 2]))
    first = reference.stages[0]
    residual = x[1:] - first.embed[nearest(rows(x[1:]), first.embed)].view(1, 50, 3).transpose(1, 2)
    flat = rows(residual)
    reference.stages[1].update(flat, nearest(flat, reference.stages[1].embed))
    torch.testing.assert_close(vq.stages[1].embed, reference.stages[1].embed)
    torch.testing.assert_close(out.quantized[0], first.embed[out.codes[0, 0]].T)  # example 1: stage 1 alone
