"""Residual VQ: stages refine, dropout uses exactly the asked stages, inference matches training, restarts revive codes."""
import pytest
import torch

from nc.quantization.rvq import ResidualVQ


def _fit(q: ResidualVQ, x: torch.Tensor, steps: int = 150) -> None:
    """A few steps of the code and commitment losses alone (no encoder or decoder)."""
    opt = torch.optim.Adam(q.parameters(), lr=3e-2)
    q.train()
    for step in range(steps):
        out = q(x)
        opt.zero_grad()
        (out.codebook + 0.25 * out.commitment).backward()
        opt.step()
        if step % 25 == 24:
            q.restart_dead_codes()
    q.eval()


@pytest.fixture
def data():
    torch.manual_seed(0)
    return torch.randn(8, 16, 64) * torch.linspace(0.2, 3, 16)[None, :, None]  # uneven channel scales


def test_euclidean_stages_refine_monotonically(data):
    q = ResidualVQ(16, 6, 64, 4, "euclidean")
    _fit(q, data)
    errors = [q.relative_error(data, n) for n in range(1, 7)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.6


def test_dropout_uses_exactly_the_asked_stages_per_example(data):
    for choose in ("cosine", "euclidean"):
        q = ResidualVQ(16, 4, 32, 4, choose).eval()
        n = torch.tensor([1, 2, 4, 3, 1, 4, 2, 3])
        out = q(data, n)
        for i, k in enumerate(n.tolist()):
            alone = q.decode(q.encode(data[i:i + 1], k))
            assert torch.allclose(out.quantized[i:i + 1], alone, atol=1e-5), (choose, i, k)


def test_restarts_revive_dead_codes(data):
    for choose in ("cosine", "euclidean"):
        q = ResidualVQ(16, 2, 256, 4, choose)
        q.train()
        q(data)
        revived = q.restart_dead_codes()
        assert revived > 0
        q(data)
        assert q.restart_dead_codes() < revived  # revived codes now sit on data and get used


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="cosine or euclidean"):
        ResidualVQ(16, 2, 8, 4, "manhattan")
