"""Residual finite scalar quantization (FSQ, Mentzer et al. 2023) with exact integer code indices.

Each stage bounds every dimension of a projection of its input to (-1, 1) and
rounds it to one of `levels[i]` evenly spaced values (straight-through
gradient): a fixed grid, so there is no codebook to collapse and no dead codes
to restart. Stage k+1 quantizes what stage k left over, so one model serves
several rates by keeping the first few stages (quantizer dropout in training).

A stage's code is one integer, the mixed-radix number whose digits are the
per-dimension level indices; it is computed in int64 from integer digits, never
from floats, so large implicit codebooks cannot lose precision.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nc.quantization.rvq import QuantizerOutput

#: the standard deviation each stage's projected dimensions have before tanh. For Gaussian inputs
#: 0.7 fills an 8-level grid with a histogram entropy of 2.83 of 3 bits (5 levels: 2.13 of 2.32) and
#: every level above 3 %; 0.6-0.8 is what the unstandardized stages 2-8 had chosen themselves. Smaller
#: spreads starve the edge levels; larger ones fill the grid more evenly (1.0: 2.98 bits) but cost
#: more bits and put more of the values where tanh's gradient is small.
SPREAD = 0.7


def _follow(running: torch.Tensor, measured: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A running statistic's next value: the first measurement as it is, then 1 % of the way to each new one."""
    return torch.where(measured, 0.99 * running + 0.01 * value, value)


class ScalarGrid(nn.Module):
    """One FSQ stage: per-dimension grids of `levels` points spanning [-1, 1]."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        if any(n < 2 for n in levels):
            raise ValueError(f"every dimension needs at least 2 levels, not {levels}")
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        radix = [1]
        for n in levels[:-1]:
            radix.append(radix[-1] * n)
        self.register_buffer("radix", torch.tensor(radix, dtype=torch.int64), persistent=False)
        self.size = math.prod(levels)  # codes per stage
        if self.size >= 2**63:
            raise ValueError(f"levels {levels} give {self.size} codes per stage; int64 indices hold fewer than 2^63")
        self.bits = math.log2(self.size)

    def _half(self) -> torch.Tensor:
        return ((self.levels - 1) / 2).view(1, -1, 1)

    def digits(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest level index per dimension (batch, dim, frames) for inputs already in [-1, 1]."""
        half = self._half()
        return torch.round((x.clamp(-1, 1) + 1) * half).to(torch.int64)

    def value(self, digits: torch.Tensor) -> torch.Tensor:
        """Grid value in [-1, 1] of level indices."""
        half = self._half()
        return digits.to(torch.float32) / half - 1

    def index(self, digits: torch.Tensor) -> torch.Tensor:
        """Level indices (batch, dim, frames) -> one int64 code per frame (batch, frames)."""
        return (digits * self.radix.view(1, -1, 1)).sum(1)

    def unindex(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (batch, frames) -> level indices (batch, dim, frames)."""
        return (codes.unsqueeze(1) // self.radix.view(1, -1, 1)) % self.levels.view(1, -1, 1)


class FSQBottleneck(nn.Module):
    """Residual FSQ on a `dim`-wide latent with a projection per stage: stage k projects what the
    stages before it left of the latent down to len(levels) dimensions, bounds them (tanh), rounds
    them to its grid and projects the grid point back up. Each stage thus adds new directions, as
    RVQ's factorized stages do; one projection shared by every stage would keep every rate at rank
    len(levels), with extra stages only sharpening the same few numbers per frame.

    Called like ResidualVQ (forward, encode, decode, relative_error, restart_dead_codes), so
    FrameCodec and its trainer treat both alike. Nothing is learned in a grid, so there is no
    codebook to collapse; the `codebook` term of the output pulls each stage's projected-back
    point onto the residual it stands for (without it nothing makes later stages refine earlier
    ones, the failure tests/test_quantization.py guards against for RVQ); commitment, as RVQ's,
    keeps the encoder's latent within the stages' reach. Parameters and buffers are `inp.*`,
    `out.*`, `scale`, `center` and `spread`, so none collide with ResidualVQ's."""

    def __init__(self, dim: int, levels: tuple[int, ...], stages: int):
        super().__init__()
        self.levels = tuple(levels)
        self.grids = nn.ModuleList(ScalarGrid(self.levels) for _ in range(stages))
        self.inp = nn.ModuleList(nn.Conv1d(dim, len(levels), 1) for _ in range(stages))
        self.out = nn.ModuleList(nn.Conv1d(len(levels), dim, 1) for _ in range(stages))
        # Each stage sees its residual divided by that residual's typical size (a running RMS in
        # training, fixed in the weights) and scales its point back up. Without it a growing latent
        # drove the projections into tanh's flat ends: one level per dimension, no gradient, and
        # the first stages carried 0.01 kbps in our first fine-tune from RVQ weights.
        self.register_buffer("scale", torch.zeros(stages))  # 0: not yet measured (then 1 is used)
        # Each projected dimension is then standardized (a running mean and standard deviation, fixed
        # in the weights) to SPREAD before tanh, so every stage fills its whole grid. Without it the
        # first stage sat off-centre (per-dimension means of up to 0.96 against standard deviations
        # of 0.4-0.67) and left edge levels unused on held-out speech; the projection's own bias and
        # gain never re-centred it. Under DDP every rank's buffers are rank 0's, as for `scale`.
        self.register_buffer("center", torch.zeros(stages, len(levels)))
        self.register_buffer("spread", torch.zeros(stages, len(levels)))  # 0: not yet measured (then 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights from before standardization (a scale but no statistics) code as before: unmeasured;
        # any other dict missing them is left to load_state_dict to report
        if prefix + "scale" in state_dict and not {prefix + "center", prefix + "spread"} & state_dict.keys():
            for name in ("center", "spread"):
                state_dict[prefix + name] = torch.zeros_like(getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def stages(self) -> nn.ModuleList:
        return self.grids

    def forward(self, x: torch.Tensor, n_stages: torch.Tensor | int | None = None) -> QuantizerOutput:
        b = x.shape[0]
        if isinstance(n_stages, int) and not 1 <= n_stages <= len(self.grids):
            raise ValueError(f"n_stages must be 1-{len(self.grids)}, not {n_stages}")
        n = torch.full((b,), len(self.grids), device=x.device) if n_stages is None else (
            torch.full((b,), int(n_stages), device=x.device) if isinstance(n_stages, int) else n_stages)
        residual, quantized, codes, match = x, torch.zeros_like(x), [], x.new_zeros(())
        for i, grid in enumerate(self.grids):
            if int(n.max()) <= i:
                break
            keep = (n > i).to(x.dtype).view(b, 1, 1)
            if self.training and torch.is_grad_enabled():  # a training step, not encode()
                rms = residual.detach().square().mean().sqrt()
                self.scale[i] = _follow(self.scale[i], self.scale[i] > 0, rms)
            scale = self._scale(i)
            z = torch.tanh(self._standardize(i, self.inp[i](residual / scale)))
            digits = grid.digits(z)
            point = scale * self.out[i](z + (grid.value(digits) - z).detach())  # straight-through
            match = match + (((point - residual.detach()) ** 2) * keep).sum() / (keep.sum() * x[0].numel()).clamp(min=1)
            quantized = quantized + keep * point
            residual = residual - point
            codes.append(grid.index(digits))
        # as RVQ's commitment: keeps the encoder's latent where the stages can follow it
        commitment = ((x - quantized.detach()) ** 2).mean()
        return QuantizerOutput(quantized, torch.stack(codes, 1), commitment, match)

    def _standardize(self, i: int, u: torch.Tensor) -> torch.Tensor:
        """Stage i's projection (batch, dims, frames), centred and scaled to SPREAD per dimension.
        A training step uses this batch's statistics, with their gradient (as batch normalization
        does: dividing by a fixed running value instead let the projection grow unchecked, and the
        stages saturated within 300 steps), and moves the running ones that encoding uses."""
        if self.training and torch.is_grad_enabled():
            mean, std = u.mean((0, 2)), u.std((0, 2)).clamp(min=1e-6)  # measured spreads stay above 0
            measured = self.spread[i] > 0
            self.center[i] = _follow(self.center[i], measured, mean.detach())
            self.spread[i] = _follow(self.spread[i], measured, std.detach())
            return (u - mean.view(1, -1, 1)) * (SPREAD / std).view(1, -1, 1)
        # unmeasured (spread 0, center 0): u as it is
        gain = torch.where(self.spread[i] > 0, SPREAD / self.spread[i].clamp(min=1e-6), torch.ones_like(self.spread[i]))
        return (u - self.center[i].view(1, -1, 1)) * gain.view(1, -1, 1)

    def _scale(self, i: int) -> torch.Tensor:
        """Stage i's scale, a copy (the buffer changes in place at the next stage's update)."""
        return torch.where(self.scale[i] > 0, self.scale[i], torch.ones_like(self.scale[i]))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_stages: int) -> torch.Tensor:
        """Codes (batch, n_stages, frames) int64 for inference."""
        return self.forward(x, n_stages).codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent (batch, dim, frames) from codes (batch, stages, frames)."""
        return sum(self._scale(i) * self.out[i](grid.value(grid.unindex(codes[:, i])))
                   for i, grid in enumerate(self.grids[:codes.shape[1]]))

    def digits(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (batch, stages, frames) -> level indices (batch, stages, len(levels), frames)."""
        return torch.stack([grid.unindex(codes[:, i]) for i, grid in enumerate(self.grids[:codes.shape[1]])], 1)

    def index(self, digits: torch.Tensor) -> torch.Tensor:
        """Level indices (batch, stages, len(levels), frames) -> codes (batch, stages, frames)."""
        return torch.stack([grid.index(digits[:, i]) for i, grid in enumerate(self.grids[:digits.shape[1]])], 1)

    @torch.no_grad()
    def relative_error(self, x: torch.Tensor, n_stages: int) -> float:
        """|x - quantized x| / |x| in the latent, with n stages."""
        return float((x - self.decode(self.encode(x, n_stages))).norm() / x.norm().clamp(min=1e-9))

    def restart_dead_codes(self) -> int:
        return 0  # a fixed grid has no codes to die
