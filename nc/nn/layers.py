"""Causal building blocks for frame-rate codecs.

Everything here is causal in time (output frame t sees inputs up to t), so a
model built from these can encode and decode a stream window by window with a
fixed left context and give exactly what it gives on the whole stream.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only: output t depends on inputs <= t (in stride units)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, dilation=dilation)
        self.left = (kernel_size - 1) * dilation + 1 - stride

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


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Upsample by `stride` with kernel 2*stride, trimmed so output block t depends on inputs t-1 and t."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., : x.shape[-1] * self.stride[0]]


class ResidualUnit(nn.Module):
    """SEANet's residual unit: a dilated causal conv and a pointwise conv around a skip connection."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 7):
        super().__init__()
        self.conv = CausalConv1d(channels, channels, kernel_size, dilation=dilation)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.receptive = (kernel_size - 1) * dilation  # samples of left context, at this unit's rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(F.elu(self.conv(F.elu(x))))


class WaveUpsampler(nn.Module):
    """Frame-rate features -> waveform through a few causal upsampling stages (SEANet's decoder, but
    fed by a frame-rate backbone, so only thin layers run at the higher rates).

    A time-domain decoder draws a periodic waveform, whose spectrum has exact pitch harmonics and
    coherent phase for free; a spectral head has to place every harmonic and phase itself."""

    def __init__(self, in_channels: int, strides=(4, 4, 4, 5), channels: int = 128, dilations=(1, 3)):
        super().__init__()
        layers, frames_of_context, rate = [], 0.0, 1
        for stride in strides:
            out = channels
            layers += [nn.ELU(), CausalConvTranspose1d(in_channels, out, stride)]
            rate *= stride
            frames_of_context += 1 / (rate // stride)  # one input step of the transposed conv
            for d in dilations:
                unit = ResidualUnit(out, d)
                layers.append(unit)
                frames_of_context += unit.receptive / rate
            in_channels, channels = out, max(out // 2, 8)
        layers += [nn.ELU(), CausalConv1d(in_channels, 1, 7)]
        frames_of_context += 6 / rate
        self.layers = nn.Sequential(*layers)
        self.receptive = math.ceil(frames_of_context)  # frames of left context the output needs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, frames) -> (batch, frames * prod(strides)), float32 even under bf16 autocast
        (the losses must not see audio rounded to 8 bits of mantissa)."""
        x = self.layers[:-1](x)
        with torch.autocast(x.device.type, enabled=False):
            return self.layers[-1](x.float())[:, 0]
