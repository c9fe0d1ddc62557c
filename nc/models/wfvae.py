"""video/wfvae's network: a wavelet-driven causal video VAE (WF-VAE family) with a mean-scale hyperprior.

Shapes: a clip x (batch, 3, T, H, W), T a multiple of 4 and H, W multiples of 64, maps to a
latent y (batch, latent, T/4, H/16, W/16): one latent frame per 4 frames.

Wavelets carry the low frequencies around the backbone (WF-VAE, Li et al. 2024). The encoder
takes a 3-D Haar transform of the clip (8 subbands at half the frame rate and half the side)
and a second one of its all-low band (quarter rate and side); the backbone sees the first, and
the second joins it where the backbone reaches that scale. The decoder predicts the level-2
subbands, inverts them into a low band at half scale, and predicts the level-1 subbands as
corrections around that band, then inverts the Haar transform: what the network does not learn,
the wavelet pyramid still carries.

Causal in time: frames are grouped in fours and every temporal convolution looks only at its own
and earlier latent frames, so the network can run window by window. `streaming(True)` makes each
temporal convolution keep the last frames of its input between calls (a per-layer cache);
`reset()` empties the caches (the state at the start of a clip, which training sees as zero padding).
Running windows aligned to the 4-frame groups then gives what the whole clip gives.

The latent's coding, one latent frame at a time, is nc/models/hyperprior.py's (gain units for
every rate, integer hyper-synthesis), as for image/hvae, with one addition: a conditional prior.
The hyper-synthesis also sees the previous latent frame's y_hat, so what stays (a still
background, a slow pan) is predicted from the past and costs few bits.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from nc.models.hyperprior import GainedHyperprior, check_integer_fan_in

# distortion = lambda * 255^2 * MSE per pixel, rate in bits per pixel of every frame: video needs
# fewer bits per frame than a still, so the scale starts one step below CompressAI's image lambdas
LAMBDAS = (0.0009, 0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932)
TIME, SPACE = 4, 16  # frames per latent frame; pixels per latent position (side)
ALIGN = 64  # the hyper latent is at 1/64 of the side


@dataclass(frozen=True)
class WfvaeConfig:
    widths: tuple = (32, 64, 128)  # backbone channels at 1/2, 1/4 and 1/8 of the side
    latent: int = 80  # channels of y
    hyper: int = 64  # channels of z
    channels: int = 96  # width of the hyper networks
    lambdas: tuple = LAMBDAS

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(v) for v in self.widths))
        object.__setattr__(self, "lambdas", tuple(float(v) for v in self.lambdas))
        if len(self.widths) != 3:
            raise ValueError(f"widths must be 3 channel counts, not {self.widths}")
        if len(self.lambdas) < 2 or any(b <= a for a, b in zip(self.lambdas, self.lambdas[1:])):
            raise ValueError(f"lambdas must be at least 2 increasing values, not {self.lambdas}")
        check_integer_fan_in(self.latent, self.hyper, self.channels, context=True)

    @property
    def qualities(self) -> int:
        return len(self.lambdas)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ 3-D Haar transform

def haar3d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, 8C, T/2, H/2, W/2), orthonormal; channels [all-low band, 7 high bands],
    C each, so [:, :C] is the all-low band (2.83 x the 2x2x2 mean)."""
    for dim in (2, 3, 4):
        a, b = x.unflatten(dim, (-1, 2)).unbind(dim + 1)
        x = torch.cat([(a + b) / math.sqrt(2), (a - b) / math.sqrt(2)], 1)
    return x


def ihaar3d(x: torch.Tensor) -> torch.Tensor:
    """Inverse of haar3d."""
    for dim in (4, 3, 2):
        lo, hi = x.chunk(2, 1)
        x = torch.stack([(lo + hi) / math.sqrt(2), (lo - hi) / math.sqrt(2)], dim + 1).flatten(dim, dim + 1)
    return x


# ------------------------------------------------------------------ causal layers

class CausalConv3d(nn.Conv3d):
    """Kernel (kt, k, k), stride 1 in time: pads kt - 1 frames in front, zeros at the start of a clip
    or, when streaming, the frames its previous call ended with. Spatial 'same' padding, zeros."""

    def __init__(self, cin: int, cout: int, kt: int = 3, k: int = 3):
        super().__init__(cin, cout, (kt, k, k), padding=(0, k // 2, k // 2))
        self.stream, self.cache = False, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kt = self.kernel_size[0]
        if kt > 1:
            past = self.cache if self.stream and self.cache is not None else x.new_zeros(
                (*x.shape[:2], kt - 1, *x.shape[3:]))
            x = torch.cat([past, x], 2)
            if self.stream:
                self.cache = x[:, :, -(kt - 1):].clone()  # not a view: it would keep the whole window alive
        return super().forward(x)


class ResBlock(nn.Module):
    """x + conv(SiLU(conv(SiLU(x)))): a spatial 3x3 convolution, then a causal (kt, 3, 3) one."""

    def __init__(self, channels: int, kt: int):
        super().__init__()
        self.spatial = CausalConv3d(channels, channels, 1)
        self.temporal = CausalConv3d(channels, channels, kt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.temporal(F.silu(self.spatial(F.silu(x))))


def _down(cin: int, cout: int, time: int = 1) -> nn.Conv3d:
    """Halve the side (and the frame rate when time == 2; kernel 2 in time covers one frame pair)."""
    return nn.Conv3d(cin, cout, (time, 4, 4), stride=(time, 2, 2), padding=(0, 1, 1))


def _up(cin: int, cout: int, time: int = 1) -> nn.ConvTranspose3d:
    return nn.ConvTranspose3d(cin, cout, (time, 4, 4), stride=(time, 2, 2), padding=(0, 1, 1))


class Encoder(nn.Module):
    def __init__(self, cfg: WfvaeConfig):
        super().__init__()
        c1, c2, c3 = cfg.widths
        self.inp = CausalConv3d(24, c1, 1)  # level-1 subbands at 1/2
        self.block1 = ResBlock(c1, 1)
        self.down1 = _down(c1, c2, time=2)  # -> 1/4 side, 1/4 rate
        self.fuse2 = nn.Conv3d(c2 + 24, c2, 1)  # + the level-2 subbands: the energy flow
        self.block2 = ResBlock(c2, 3)
        self.down2 = _down(c2, c3)  # -> 1/8
        self.block3 = ResBlock(c3, 3)
        self.out = _down(c3, cfg.latent)  # -> 1/16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1 = haar3d(x)
        w2 = haar3d(w1[:, :3])
        h = self.block1(self.inp(w1))
        h = self.block2(self.fuse2(torch.cat([self.down1(h), w2], 1)))
        return self.out(self.block3(self.down2(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: WfvaeConfig):
        super().__init__()
        c1, c2, c3 = cfg.widths
        self.inp = _up(cfg.latent, c3)  # -> 1/8
        self.block3 = ResBlock(c3, 3)
        self.up2 = _up(c3, c2)  # -> 1/4
        self.block2 = ResBlock(c2, 3)
        self.head2 = CausalConv3d(c2, 24, 1)  # level-2 subbands
        self.up1 = _up(c2, c1, time=2)  # -> 1/2 side, 1/2 rate
        self.fuse1 = nn.Conv3d(c1 + 3, c1, 1)
        self.block1 = ResBlock(c1, 1)
        self.head1 = CausalConv3d(c1, 24, 1)  # level-1 subbands, as corrections around the low band

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.up2(self.block3(self.inp(y))))
        low = ihaar3d(self.head2(h))  # the level-1 all-low band, from the level-2 subbands
        h = self.block1(self.fuse1(torch.cat([self.up1(h), low], 1)))
        w1 = self.head1(h) + F.pad(low, (0, 0, 0, 0, 0, 0, 0, 21))
        return ihaar3d(w1)


class VideoWFVAE(GainedHyperprior):
    def __init__(self, cfg: WfvaeConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.build_prior(cfg, context=True)

    # ---- streaming state

    def streaming(self, on: bool = True) -> "VideoWFVAE":
        for m in self.modules():
            if isinstance(m, CausalConv3d):
                m.stream, m.cache = on, None
        return self

    def reset(self) -> None:
        """Forget the past: the next window starts a clip."""
        for m in self.modules():
            if isinstance(m, CausalConv3d):
                m.cache = None

    # ---- the pieces the codec calls

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """Frames in [0, 1] (batch, 3, T, H, W) -> y (batch, latent, T/4, H/16, W/16); centred on grey."""
        return self.encoder(x - 0.5)

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(y_hat) + 0.5

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> dict:
        """Training pass on x (batch, 3, T, H, W) in [0, 1], qualities q (batch,). Latent frames are
        coded in order, as the codec does, each with the previous one's y_hat as its prior's context
        (zeros for the first); bits are summed over them per clip."""
        y = self.analysis(x)
        context, frames, y_bits, z_bits = torch.zeros_like(y[:, :, 0]).float(), [], 0, 0
        for t in range(y.shape[2]):
            context, y_b, z_b = self.quantize(y[:, :, t], q, context)
            frames.append(context)
            y_bits, z_bits = y_bits + y_b, z_bits + z_b
        return {"x_hat": self.synthesis(torch.stack(frames, 2)).float(), "y_bits": y_bits, "z_bits": z_bits}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
