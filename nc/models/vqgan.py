"""image/vqgan's network: a convolutional VQ autoencoder on a 1/16 grid with residual codebooks.

    encoder  pixels (3, H, W) -> residual blocks at 1/2 .. 1/16 -> attention -> latent (dim, H/16, W/16),
             normalized per position (zero mean, unit variance over channels)
    quantizer ResidualEmaVQ (nc/quantization/vq.py): `stages` codebooks of `codebook_size` codes in
             the latent space, EMA-updated (EnCodec), each coding what the stages before it left;
             dead codes restart onto recent latents, so the codebooks stay used
    decoder  latent -> attention -> residual blocks and transposed convolutions -> pixels

Each stage adds log2(codebook_size) bits per 16 x 16 pixels: 10 bits / 256 px =
0.039 bpp per stage before entropy coding, so 1-4 stages span 0.04-0.16 bpp.
Quantizer dropout (a random number of stages per example) trains one model for
every stage count; the first stage's codes are the tokens of the coarsest image.

Why these choices: the per-position normalization fixes the latent's scale,
which otherwise drifts faster than the codebooks follow and collapses them
(shared/ANCHORS.md, our audio RVQ run); EMA codebooks with restarts keep
1024-code books used (the factorized, gradient-trained codes of audio/rvq
collapsed to one code per stage here: their shared projection shrank every
code onto the mean latent); group norm and one attention block at the coarsest
grid are VQGAN's (Esser et al. 2021), kept small for CPU training and decoding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from nc.quantization.rvq import QuantizerOutput
from nc.quantization.vq import ResidualEmaVQ

FACTOR = 16  # pixels per latent position, each side


@dataclass(frozen=True)
class VqganConfig:
    widths: tuple = (32, 64, 128, 192)  # channels at 1/2, 1/4, 1/8, 1/16 of the image side
    dim: int = 32  # latent channels
    stages: int = 4
    codebook_size: int = 1024
    attention: bool = True

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 4 or min(self.widths) < 8 or any(w % _groups(w) for w in self.widths):
            raise ValueError(f"widths must be 4 numbers from 8 up, each a multiple of its group-norm groups "
                             f"min(32, width // 4) (1/2 .. 1/16), not {self.widths}")
        if not (1 <= self.stages <= 16 and 2 <= self.codebook_size <= 65536 and self.dim >= 1):
            raise ValueError(f"bad quantizer shape: {self.stages} stages of {self.codebook_size} codes, dim {self.dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(channels: int) -> int:
    return min(32, channels // 4)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels), channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Attention(nn.Module):
    """One-head self-attention over every position of the grid (VQGAN's AttnBlock)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # (b, hw, c) each
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


def _middle(cfg: VqganConfig) -> list[nn.Module]:
    top = cfg.widths[-1]
    return [ResBlock(top, top)] + ([Attention(top)] if cfg.attention else []) + [ResBlock(top, top)]


class Encoder(nn.Sequential):
    def __init__(self, cfg: VqganConfig):
        layers, cin = [], 3
        for w in cfg.widths:  # each level: halve the side (4x4 stride-2 conv), then a residual block
            layers += [nn.Conv2d(cin, w, 4, stride=2, padding=1), ResBlock(w, w)]
            cin = w
        super().__init__(*layers, *_middle(cfg), _norm(cin), nn.SiLU(), nn.Conv2d(cin, cfg.dim, 1))


class Decoder(nn.Sequential):
    def __init__(self, cfg: VqganConfig):
        top = cfg.widths[-1]
        layers = [nn.Conv2d(cfg.dim, top, 3, padding=1), *_middle(cfg)]
        outs = list(reversed(cfg.widths))[1:] + [cfg.widths[0] // 2]
        for cin, cout in zip(reversed(cfg.widths), outs):  # each level: a residual block, then double the side
            layers += [ResBlock(cin, cin), nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)]
        super().__init__(*layers, _norm(outs[-1]), nn.SiLU(), nn.Conv2d(outs[-1], 3, 3, padding=1))


def normalize(z: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over channels at each position: the latent's scale cannot drift."""
    return F.layer_norm(z.transpose(1, 3), z.shape[1:2]).transpose(1, 3)


class ImageVQGAN(nn.Module):
    def __init__(self, cfg: VqganConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = ResidualEmaVQ(cfg.dim, cfg.stages, cfg.codebook_size)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] (batch, 3, H, W), H and W multiples of 16 -> normalized latent (batch, dim, H/16, W/16)."""
        return normalize(self.encoder(x * 2 - 1))

    def pixels(self, latent: torch.Tensor) -> torch.Tensor:
        """Quantized latent -> pixels, about [0, 1] (unclamped, for the losses)."""
        return (self.decoder(latent) + 1) / 2

    def forward(self, x: torch.Tensor, n_stages: torch.Tensor | int | None = None) -> tuple[torch.Tensor, QuantizerOutput]:
        """Training pass: (reconstruction, quantizer output with codes (batch, stages, H/16 * W/16))."""
        z = self.latent(x)
        b, d, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):  # nearest codes in float32, as at inference
            q = self.quantizer(z.float().flatten(2), n_stages)
        return self.pixels(q.quantized.view(b, d, h, w)), q

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_stages: int) -> torch.Tensor:
        """Codes (batch, n_stages, H/16, W/16) of pixels (batch, 3, H, W) in [0, 1]."""
        z = self.latent(x)
        b, _, h, w = z.shape
        return self.quantizer.encode(z.flatten(2), n_stages).view(b, n_stages, h, w)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixels (batch, 3, 16 h, 16 w) in [0, 1] from codes (batch, stages, h, w)."""
        b, s, h, w = codes.shape
        latent = self.quantizer.decode(codes.flatten(2)).view(b, self.cfg.dim, h, w)
        return self.pixels(latent).clamp(0, 1)
