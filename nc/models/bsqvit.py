"""video/bsqvit's network: a block-causal video ViT with binary spherical quantization (BSQ-ViT family).

Shapes: a clip x (batch, 3, T, H, W), T a multiple of TUBELET (4) and H, W multiples of ALIGN (32),
becomes tokens (batch, T/4, H/8, W/8): one token per 4 x 8 x 8 tubelet (BSQ-ViT's patch 8). Each
token is `bits` signs: the encoder's output projected to `bits` dimensions, normalized to the unit
sphere and quantized to sign(u) / sqrt(bits), an implicit 2^bits codebook with nothing to look up
and nothing to collapse (Zhao et al. 2024). A straight-through estimator trains through the signs.

Rates: the bits are nested. The decoder reads the first k bits of every token and sees zeros for the
rest; training draws k per clip (nc/train/bsqvit.py), so the first bits learn the coarse picture and
one set of weights serves every rate (`keep` in `forward` and `decode`).

Attention: every block attends inside windows of WINDOW x WINDOW tokens (32 x 32 pixels), over its own
tubelet and the one before (block-causal in time, looking one tubelet back, as a chunk attends only to
itself and earlier chunks). A depthwise 3 x 3 convolution before each attention (a conditional
position encoding, Chu et al. 2021) gives positions and mixes across windows. So the cost per pixel
and what a token sees are the same at any frame size, a network trained on small crops codes any
frame, and memory is bounded by one tubelet of frames: a CPU design. BSQ-ViT's global attention sees
the whole frame but costs the square of the frame size.

Streaming: the only memory across tubelets is each attention's keys and values of the previous
tubelet. `streaming(True)` keeps them between calls (a per-layer cache), so tubelet-by-tubelet calls
give exactly what one call over the clip gives; `reset()` forgets them. The first tubelet of a clip
(or of a reset stream) attends to itself twice, which is attending to itself once: a softmax over a
duplicated key set gives the same weights to the same values.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

TUBELET, PATCH, WINDOW = 4, 8, 4  # frames and pixels per token; tokens per attention window side
ALIGN = PATCH * WINDOW  # frame sides are padded to multiples of this
GROUP = 4  # bits per entropy-coded sub-code, and the step between rate points


@dataclass(frozen=True)
class BsqVitConfig:
    width: int = 192  # token channels
    heads: int = 4
    depth: int = 4  # transformer blocks in the encoder, and as many in the decoder
    mlp: int = 3  # MLP hidden channels = mlp * width
    bits: int = 64  # signs per token at the highest rate, a multiple of GROUP

    def __post_init__(self):
        if self.width % self.heads or self.bits % GROUP or not GROUP <= self.bits <= 64:
            raise ValueError(f"width must divide into heads and bits be a multiple of {GROUP} up to 64: {self}")

    @property
    def groups(self) -> int:
        return self.bits // GROUP

    def to_dict(self) -> dict:
        return asdict(self)


def patchify(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, T/4, H/8, W/8, 3 * 4 * 8 * 8): each tubelet's pixels as one vector."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // TUBELET, TUBELET, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, t // TUBELET, h // PATCH, w // PATCH, -1)


def unpatchify(p: torch.Tensor) -> torch.Tensor:
    """Inverse of `patchify`."""
    b, t, h, w, _ = p.shape
    x = p.reshape(b, t, h, w, 3, TUBELET, PATCH, PATCH).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, 3, t * TUBELET, h * PATCH, w * PATCH)


class WindowAttention(nn.Module):
    """Multi-head attention inside WINDOW x WINDOW token windows, over the token's tubelet and the one
    before; a cache of the last tubelet's keys and values when streaming."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.keep_cache = False
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _windows(self, a: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C) -> (B * windows, T, heads, WINDOW^2, C / heads)."""
        b, t, h, w, c = a.shape
        a = a.reshape(b, t, h // WINDOW, WINDOW, w // WINDOW, WINDOW, self.heads, c // self.heads)
        return a.permute(0, 2, 4, 1, 6, 3, 5, 7).reshape(-1, t, self.heads, WINDOW * WINDOW, c // self.heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        q, k, v = (self._windows(a) for a in self.qkv(x).chunk(3, -1))
        past_k, past_v = self.cache if self.cache is not None else (k[:, :1], v[:, :1])
        keys = torch.cat([torch.cat([past_k, k[:, :-1]], 1), k], 3)  # tubelet t sees t - 1 and t
        values = torch.cat([torch.cat([past_v, v[:, :-1]], 1), v], 3)
        if self.keep_cache:
            self.cache = (k[:, -1:], v[:, -1:])
        out = F.scaled_dot_product_attention(q.flatten(0, 1), keys.flatten(0, 1), values.flatten(0, 1))
        out = out.reshape(b, h // WINDOW, w // WINDOW, t, self.heads, WINDOW, WINDOW, c // self.heads)
        return self.proj(out.permute(0, 3, 1, 5, 2, 6, 4, 7).reshape(b, t, h, w, c))


class Block(nn.Module):
    """Position convolution, windowed block-causal attention, MLP; pre-norm residuals."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.position = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = WindowAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, mlp * width), nn.GELU(), nn.Linear(mlp * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        frames = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        x = x + self.position(frames).permute(0, 2, 3, 1).reshape(x.shape)
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: BsqVitConfig, inputs: int, outputs: int):
        super().__init__()
        self.embed = nn.Linear(inputs, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class VideoBsqVit(nn.Module):
    def __init__(self, cfg: BsqVitConfig = BsqVitConfig()):
        super().__init__()
        self.cfg = cfg
        pixels = 3 * TUBELET * PATCH * PATCH
        self.encoder = Transformer(cfg, pixels, cfg.bits)
        self.decoder = Transformer(cfg, cfg.bits, pixels)
        nn.init.zeros_(self.decoder.head.weight)  # start from a mid-grey picture
        nn.init.zeros_(self.decoder.head.bias)

    # ---- streaming state

    def streaming(self, on: bool = True) -> "VideoBsqVit":
        """Keep each attention's last keys and values between calls (on), or not (off); both reset."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.keep_cache, m.cache = on, None
        return self

    def reset(self) -> None:
        self.streaming(any(m.keep_cache for m in self.modules() if isinstance(m, WindowAttention)))

    # ---- the three verbs: training forward, encode to signs, decode from signs

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clip (B, 3, T, H, W) in [0, 1] -> u (B, T/4, H/8, W/8, bits) on the unit sphere."""
        return F.normalize(self.encoder(patchify(x * 2 - 1)), dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Clip -> bits (B, T/4, H/8, W/8, bits), uint8 0/1 (1 for a positive sign)."""
        return (self.project(x) >= 0).to(torch.uint8)

    def decode(self, bits: torch.Tensor, keep: int | torch.Tensor | None = None) -> torch.Tensor:
        """Bits (B, T/4, H/8, W/8, bits) 0/1 -> clip (B, 3, T, H, W), reading the first `keep` bits."""
        signs = bits.float() * 2 - 1
        return self.synthesize(signs * self._mask(keep, signs))

    def synthesize(self, signs: torch.Tensor) -> torch.Tensor:
        """Signs in {-1, 0, +1} (0: a bit not kept) -> clip; not clamped."""
        return unpatchify(self.decoder(signs)) * 0.5 + 0.5

    def _mask(self, keep, like: torch.Tensor) -> torch.Tensor:
        """1 for the first `keep` bits (an int, or one per clip), 0 after, broadcastable to `like`."""
        if keep is None:
            return torch.ones(like.shape[-1], device=like.device)
        keep = torch.as_tensor(keep, device=like.device).reshape(-1, 1, 1, 1, 1)
        return (torch.arange(like.shape[-1], device=like.device) < keep).float()

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> dict:
        """Training pass: quantize with a straight-through estimator, decode the first `keep` bits per clip."""
        u = self.project(x) * math.sqrt(self.cfg.bits)  # unit sphere scaled so signs are +-1
        signs = u + (torch.where(u >= 0, 1.0, -1.0) - u).detach()
        x_hat = self.synthesize(signs * self._mask(keep, signs))
        return {"x_hat": x_hat, "u": u}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
