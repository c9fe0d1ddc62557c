"""Residual vector quantization with factorized, L2-normalized codes (DAC's recipe).

Each stage projects the residual to a few dimensions and picks the code whose
direction is nearest (cosine similarity of L2-normalized vectors: the offset and
scale drift that made plain EMA codebooks collapse cannot starve it, see
ANCHORS.md), then adds that code's raw vector, projected back, so the residual
shrinks stage by stage. Unused codes are restarted from recent inputs. Quantizer dropout (a random number of stages per example) makes
one model serve every rate.
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


class FactorizedVQ(nn.Module):
    """One stage. Codes are *chosen* by cosine similarity in a few dimensions (so scale drift
    cannot starve the codebook) but *used* as raw vectors, so a stage can match the size of
    its residual and the residual shrinks from stage to stage."""

    def __init__(self, dim: int, codebook_size: int, code_dim: int):
        super().__init__()
        self.inp = nn.Conv1d(dim, code_dim, 1)
        self.out = nn.Conv1d(code_dim, dim, 1)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("usage", torch.zeros(codebook_size))  # decayed counts, for restarts

    def codes_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected latent, nearest code index) for x (batch, dim, frames)."""
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
        q = self.lookup(codes)
        weight = keep.expand_as(z)
        denominator = weight.sum().clamp(min=1)
        commitment = ((z - q.detach()) ** 2 * weight).sum() / denominator
        codebook = ((q - z.detach()) ** 2 * weight).sum() / denominator
        q = z + (q - z).detach()  # straight-through
        if self.training:
            with torch.no_grad():
                used = keep.view(-1) > 0
                counts = torch.bincount(codes[used].flatten(), minlength=self.codebook.shape[0]).float()
                self.usage.mul_(0.99).add_(counts)
                self._last_inputs = z[used].detach().transpose(1, 2).reshape(-1, z.shape[1])
        return self.out(q), codes, commitment, codebook

    @torch.no_grad()
    def restart_dead_codes(self, threshold: float = 1e-3) -> int:
        """Move codes whose decayed usage is tiny onto random recent inputs; returns how many."""
        dead = self.usage < threshold * self.usage.sum().clamp(min=1) / self.usage.numel()
        n = int(dead.sum())
        inputs = getattr(self, "_last_inputs", None)
        if n and inputs is not None and len(inputs):
            pick = torch.randint(0, len(inputs), (n,), device=inputs.device)
            self.codebook.data[dead] = inputs[pick] + 1e-3 * torch.randn_like(inputs[pick])
            self.usage[dead] = self.usage.sum() / self.usage.numel()
        return n


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, stages: int, codebook_size: int = 1024, code_dim: int = 8):
        super().__init__()
        self.stages = nn.ModuleList(FactorizedVQ(dim, codebook_size, code_dim) for _ in range(stages))
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
            residual = residual - stage.out(stage.lookup(c))
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
