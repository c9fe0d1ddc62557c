"""Adversarial training for audio codecs: EnCodec's multi-scale STFT discriminator, hinge losses,
feature matching.

A mel loss says nothing about phase, and a decoder that predicts phase per
frame then gives a rough, phasey sound (high mel agreement, low PESQ). A
discriminator that looks at the complex STFT (real and imaginary parts) at
several resolutions does notice, and its feature-matching loss is a learned
perceptual distance. Only training uses this module; nothing of it is shipped.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm


class STFTDiscriminator(nn.Module):
    """2-D convolutions over one resolution's complex spectrogram, (batch, 2, frames, bins)."""

    def __init__(self, n_fft: int, channels: int = 32, dilations=(1, 2, 4)):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [nn.Conv2d(2, channels, (3, 9), padding=(1, 4))]
        for d in dilations:  # dilated in time, strided in frequency
            layers.append(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        layers.append(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))
        self.layers = nn.ModuleList(weight_norm(layer) for layer in layers)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (batch, samples) -> (logits, feature maps of every layer)."""
        with torch.autocast(wav.device.type, enabled=False):
            spec = torch.stft(wav.float(), self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3).to(wav.dtype)  # (b, 2, frames, bins)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.post(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One STFT discriminator per window size (EnCodec uses 3 at 24 kHz; these are the 16 kHz equivalents)."""

    def __init__(self, n_ffts=(256, 512, 1024), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(wav) for d in self.discriminators]


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge loss: real logits pushed above 1, fake below -1 (fake computed from a detached estimate)."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake)) / len(real)


def generator_losses(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial hinge loss, feature matching loss) for the generator.

    Feature matching is the L1 distance between the discriminator's feature maps
    on real and decoded audio, each layer divided by the mean magnitude of its
    real features (EnCodec's relative form) so that no layer dominates."""
    adversarial = sum(F.relu(1 - f).mean() for f, _ in fake) / len(fake)
    matching, layers = 0.0, 0
    for (_, real_features), (_, fake_features) in zip(real, fake):
        for r, f in zip(real_features, fake_features):
            r = r.detach()
            matching = matching + (f - r).abs().mean() / r.abs().mean().clamp(min=1e-5)
            layers += 1
    return adversarial, matching / max(layers, 1)
