"""Residual vector quantization with factorized codes: each stage adds one code's vector.

Every stage holds a codebook of small (`code_dim`) vectors and a projection
back to the latent; a stage's code is the vector it contributes. Two rules
pick the code:

- "euclidean" (default for new models): the code whose latent-space vector is
  nearest the residual. The code loss pulls each chosen vector onto the
  residual it replaced, so every stage refines the last (the residual shrinks
  stage by stage; tests/test_quantization.py checks it) and more bits give a
  better latent.
- "cosine" (DAC's rule, kept to load older weights): the code whose direction
  is nearest after a learned projection to `code_dim` dimensions. Scale drift
  cannot starve it, but nothing ties the projected-back vector to the
  residual: in our runs later stages made the latent error *larger*
  (3 stages 0.9, 24 stages 1.1), so rates beyond the first few stages bought
  nothing.

Unused codes are restarted onto recent inputs. Quantizer dropout (a random
number of stages per example) makes one model serve every rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (batch, dim, frames), straight-through
    codes: torch.Tensor  # (batch, stages, frames) int64
    commitment: torch.Tensor  # scalar
    codebook: torch.Tensor  # scalar


def _vq_losses(z: torch.Tensor, q: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(commitment, codebook) squared errors between inputs and chosen codes, over the kept examples:
    the first moves the inputs towards the codes, the second the codes towards the inputs."""
    weight = keep.expand_as(z)
    denominator = weight.sum().clamp(min=1)
    commitment = ((z - q.detach()) ** 2 * weight).sum() / denominator
    codebook = ((q - z.detach()) ** 2 * weight).sum() / denominator
    return commitment, codebook


class FactorizedVQ(nn.Module):
    """One stage: a codebook of `code_dim` vectors and their projection back to the latent, with
    codes chosen by the `choose` rule (module docstring). `inp` serves only the cosine rule."""

    def __init__(self, dim: int, codebook_size: int, code_dim: int, choose: str = "cosine"):
        super().__init__()
        if choose not in ("cosine", "euclidean"):
            raise ValueError(f"choose must be cosine or euclidean, not {choose!r}")
        self.choose = choose
        self.inp = nn.Conv1d(dim, code_dim, 1)
        self.out = nn.Conv1d(code_dim, dim, 1)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("usage", torch.zeros(codebook_size))  # decayed counts, for restarts

    def vectors(self) -> torch.Tensor:
        """Every code as the latent-space vector it contributes, (codebook_size, dim)."""
        return self.codebook @ self.out.weight[:, :, 0].T + self.out.bias

    def codes_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected latent, nearest code index) for x (batch, dim, frames)."""
        if self.choose == "euclidean":  # the code that leaves the smallest residual: every stage refines
            v = self.vectors()
            xt = x.transpose(1, 2)
            distance = v.square().sum(1) - 2 * xt @ v.T  # |x|^2 is the same for every code
            return x, distance.argmin(-1)
        z = self.inp(x)  # (b, c, t)
        zn = F.normalize(z, dim=1).transpose(1, 2)  # (b, t, c)
        cb = F.normalize(self.codebook, dim=1)
        return z, (zn @ cb.T).argmax(-1)  # max cosine similarity

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors for indices (b, t) -> (b, code_dim, t)."""
        return self.codebook[codes].transpose(1, 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor):
        """Quantize x; `keep` (b, 1, 1) marks the examples that use this stage (quantizer dropout)."""
        z, codes = self.codes_of(x)
        if self.choose == "euclidean":
            return self._forward_euclidean(x, codes, keep)
        q = self.lookup(codes)
        commitment, codebook = _vq_losses(z, q, keep)
        q = z + (q - z).detach()  # straight-through
        self._track(codes, z, keep)
        return self.out(q), codes, commitment, codebook

    def _forward_euclidean(self, x: torch.Tensor, codes: torch.Tensor, keep: torch.Tensor):
        """VQ in the latent space itself (codes are a rank-`code_dim` family of latent vectors): the
        code loss pulls each chosen vector onto the residual it replaced, so stages really refine."""
        q = self.vectors()[codes].transpose(1, 2)  # (b, dim, t)
        commitment, codebook = _vq_losses(x, q, keep)
        self._track(codes, x, keep)
        return x + (q - x).detach(), codes, commitment, codebook

    def _track(self, codes: torch.Tensor, inputs: torch.Tensor, keep: torch.Tensor) -> None:
        """Decayed usage counts and a sample of recent inputs, for dead-code restarts."""
        if self.training:
            with torch.no_grad():
                used = keep.view(-1) > 0
                counts = torch.bincount(codes[used].flatten(), minlength=self.codebook.shape[0]).float()
                self.usage.mul_(0.99).add_(counts)
                self._last_inputs = inputs[used].detach().transpose(1, 2).reshape(-1, inputs.shape[1])

    def _code_for(self, inputs: torch.Tensor) -> torch.Tensor:
        """Code vectors that reproduce `inputs` (n, input dim) as well as a code can."""
        if self.choose == "cosine":
            return inputs
        w = self.out.weight[:, :, 0]  # (dim, code_dim): least squares for out(c) = input
        return torch.linalg.lstsq(w, (inputs - self.out.bias).T).solution.T

    @torch.no_grad()
    def restart_dead_codes(self, threshold: float = 1e-3) -> int:
        """Move codes whose decayed usage is tiny onto random recent inputs; returns how many."""
        dead = self.usage < threshold * self.usage.sum().clamp(min=1) / self.usage.numel()
        n = int(dead.sum())
        inputs = getattr(self, "_last_inputs", None)
        if n and inputs is not None and len(inputs):
            pick = torch.randint(0, len(inputs), (n,), device=inputs.device)
            target = self._code_for(inputs[pick])
            self.codebook.data[dead] = target + 1e-3 * torch.randn_like(target)
            self.usage[dead] = self.usage.sum() / self.usage.numel()
        return n


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, stages: int, codebook_size: int = 1024, code_dim: int = 8, choose: str = "cosine"):
        super().__init__()
        self.stages = nn.ModuleList(FactorizedVQ(dim, codebook_size, code_dim, choose) for _ in range(stages))
        self.codebook_size = codebook_size

    def forward(self, x: torch.Tensor, n_stages: torch.Tensor | int | None = None) -> QuantizerOutput:
        """Quantize with the first n_stages stages (per example when a tensor: quantizer dropout)."""
        b = x.shape[0]
        n = torch.full((b,), len(self.stages), device=x.device) if n_stages is None else (
            torch.full((b,), int(n_stages), device=x.device) if isinstance(n_stages, int) else n_stages)
        residual, quantized = x, torch.zeros_like(x)
        codes, commit, book = [], x.new_zeros(()), x.new_zeros(())
        for i, stage in enumerate(self.stages):
            if int(n.max()) <= i:
                break
            keep = (n > i).float().view(b, 1, 1)
            q, c, lc, lb = stage(residual, keep)
            quantized = quantized + keep * q
            residual = residual - keep * q
            codes.append(c)
            commit, book = commit + lc, book + lb
        return QuantizerOutput(quantized, torch.stack(codes, 1), commit, book)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_stages: int) -> torch.Tensor:
        """Codes (batch, n_stages, frames) for inference."""
        residual, codes = x, []
        for stage in self.stages[:n_stages]:
            _, c = stage.codes_of(residual)
            residual = residual - stage.out(stage.lookup(c))  # equals stage.vectors()[c] for either rule
            codes.append(c)
        return torch.stack(codes, 1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent (batch, dim, frames) from codes (batch, stages, frames)."""
        return sum(stage.out(stage.lookup(codes[:, i])) for i, stage in enumerate(self.stages[:codes.shape[1]]))

    @torch.no_grad()
    def relative_error(self, x: torch.Tensor, n_stages: int) -> float:
        """|x - quantized| / |x| with n stages: must fall as stages are added, or the RVQ is not residual."""
        q = self.decode(self.encode(x, n_stages))
        return float((x - q).norm() / x.norm().clamp(min=1e-9))

    def restart_dead_codes(self) -> int:
        return sum(stage.restart_dead_codes() for stage in self.stages)
