"""Causal building blocks for frame-rate codecs.

Everything here is causal in time (output frame t sees inputs up to t), so a
model built from these can encode and decode a stream window by window with a
fixed left context and give exactly what it gives on the whole stream.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only: output t depends on inputs <= t (in stride units)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        self.left = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class ChannelNorm(nn.Module):
    """LayerNorm over channels of a (batch, channels, time) tensor: per frame, so causal."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise causal conv, per-frame norm, pointwise MLP, layer-scaled residual (Vocos / ConvNeXt)."""

    def __init__(self, channels: int, kernel_size: int = 7, expansion: int = 3):
        super().__init__()
        self.dwconv = CausalConv1d(channels, channels, kernel_size, groups=channels)
        self.norm = ChannelNorm(channels)
        self.pw1 = nn.Conv1d(channels, channels * expansion, 1)
        self.pw2 = nn.Conv1d(channels * expansion, channels, 1)
        self.scale = nn.Parameter(torch.full((channels, 1), 0.1))
        self.receptive = kernel_size - 1  # frames of left context this block adds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(F.gelu(self.pw1(self.norm(self.dwconv(x)))))
        return x + self.scale * y


class Backbone(nn.Module):
    """A stack of ConvNeXt blocks at frame rate, between an input and an output projection."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, blocks: int, kernel_size: int = 7):
        super().__init__()
        self.inp = nn.Conv1d(in_channels, channels, 1)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(channels, kernel_size) for _ in range(blocks)))
        self.norm = ChannelNorm(channels)
        self.out = nn.Conv1d(channels, out_channels, 1)
        self.receptive = sum(b.receptive for b in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.blocks(self.inp(x))))
