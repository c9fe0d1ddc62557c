"""image/hvae's network: a two-level hierarchical VAE (mean-scale hyperprior) with one model for every rate.

The 2-D transform: g_a maps pixels to y (`latent` channels at 1/16 of the side) through four
5x5 stride-2 convolutions with GDN between them; g_s mirrors it. The latent's coding (hyper
latent z at 1/64, gains for every rate, the integer hyper-synthesis that makes files portable)
is nc/models/hyperprior.py's, shared with video/wfvae.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from nc.models.hyperprior import GainedHyperprior, check_integer_fan_in, down, up

# CompressAI's MSE lambdas for its 8 qualities (distortion = lambda * 255^2 * MSE of [0, 1] pixels)
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)


# Quality levels the exported gain tables add below the trained ones: image/hvae's quality 0-1
# (nc/codecs/hvae.py), extrapolated along the first level's slope (nc.models.hyperprior.extend_below)
LEVELS_BELOW = 1


@dataclass(frozen=True)
class HvaeConfig:
    # the shipped network (CompressAI's high-rate models use 192 / 320)
    channels: int = 128  # N: transform width
    latent: int = 160  # M: channels of y
    hyper: int = 64  # channels of z
    lambdas: tuple = LAMBDAS

    def __post_init__(self):
        object.__setattr__(self, "lambdas", tuple(float(v) for v in self.lambdas))
        if len(self.lambdas) < 2 or any(b <= a for a, b in zip(self.lambdas, self.lambdas[1:])):
            raise ValueError(f"lambdas must be at least 2 increasing values, not {self.lambdas}")
        check_integer_fan_in(self.latent, self.hyper, self.channels)

    @property
    def qualities(self) -> int:
        return len(self.lambdas)

    def to_dict(self) -> dict:
        return asdict(self)


class GDN(nn.Module):
    """Simplified generalized divisive normalization (Johnston et al. 2019): x / (beta + gamma |x|),
    or x * (beta + gamma |x|) inverted; the normalization learned image codecs rely on."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x.abs(), self.gamma.abs(), self.beta.abs() + 1e-6)
        return x * norm if self.inverse else x / norm


class ImageHVAE(GainedHyperprior):
    def __init__(self, cfg: HvaeConfig):
        super().__init__()
        self.cfg = cfg
        n, m = cfg.channels, cfg.latent
        self.g_a = nn.Sequential(down(3, n), GDN(n), down(n, n), GDN(n), down(n, n), GDN(n), down(n, m))
        self.g_s = nn.Sequential(up(m, n), GDN(n, True), up(n, n), GDN(n, True), up(n, n), GDN(n, True),
                                 up(n, 3))
        self.build_prior(cfg)

    # ---- the pieces the codec calls

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] (batch, 3, H, W) -> y; centred on grey, so an untrained model starts near it."""
        return self.g_a(x - 0.5)

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.g_s(y_hat) + 0.5

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> dict:
        """Training pass on x (batch, 3, H, W) in [0, 1], H and W multiples of 64, qualities q (batch,).
        Returns the reconstruction and the bits of y and z per image (noise-relaxed)."""
        y_hat, y_bits, z_bits = self.quantize(self.analysis(x), q)
        return {"x_hat": self.synthesis(y_hat).float(), "y_bits": y_bits, "z_bits": z_bits}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
