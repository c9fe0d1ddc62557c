"""The rate half of nc's learned image and video codecs: a mean-scale hyperprior with gain units.

A transform (image/hvae's 2-D one, video/wfvae's wavelet one) maps pixels to a latent y,
`latent` channels at 1/16 of the frame side. Its coding is shared:

    z: hyper latent, `hyper` channels at 1/64 of the side; integers coded with a
       zero-mean Gaussian per channel (a learned scale, fixed at export)
    y: integers coded with a Gaussian whose mean and scale the hyper-synthesis h_s
       computes from z

Training uses additive uniform noise for the rate terms and rounding (with a
straight-through gradient) for what the synthesis sees; coding rounds.

One model, every rate (gain units, Cui et al. 2021): quality q in [0, Q - 1] picks
a per-channel gain g(q) (log-linear between Q learned gain vectors); the encoder
codes round(y * g - mu * g), so a larger gain spends more bits. Training draws q
uniformly and weighs distortion by lambda(q), log-linear between the config's `lambdas`.
The exported tables may also hold levels below q = 0, the gains extrapolated along the
first level's slope (`extend_below`): image/hvae's quality 0-1, smaller files than any
trained level at a smoothly falling quality.

Decodable everywhere: h_s, the only network whose output the entropy coder
depends on, also runs as an integer network (`IntegerHyperSynthesis`): weights
and activations are fixed-point integers held in float64, and every sum of
integer products stays below 2^53, so each conv is exact in any summation
order, on any thread count or device. The gains the coder needs are integer
tables as well (`gain_tables`). Only the synthesis runs in float, and it
shapes pixels, not the bitstream.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SCALE_MIN = 0.11  # the entropy coder's smallest scale (nc/bitstream/entropy.SCALES)
STEPS_PER_QUALITY = 16  # the coder's quality grid: q = step / 16 - levels_below, step in [0, 16 (Q - 1 + levels_below)]
MAX_LEVELS_BELOW = 4  # extrapolated quality levels a weights file may add below its trained range


def down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


def hyper_mid_width(latent: int, channels: int) -> int:
    """Channels between h_s's second up layer and its last convolution: halfway to 2 * latent."""
    return (channels + 2 * latent) // 2


class HyperSynthesis(nn.Sequential):
    """h_s: z (hyper, H/64) -> mean and log-scale of y (2 * latent, H/16); ReLU between layers,
    which the integer version reproduces exactly."""

    def __init__(self, latent: int, hyper: int, channels: int):
        mid = hyper_mid_width(latent, channels)
        super().__init__(up(hyper, channels), nn.ReLU(), up(channels, mid), nn.ReLU(),
                         nn.Conv2d(mid, 2 * latent, 3, padding=1))


class ContextHyperSynthesis(nn.Module):
    """h_s with a second input: the previous latent frame's dequantized y (a conditional prior for
    video). The hyper latent goes through h_s's two up layers; the last convolution sees their
    output beside that context, so a still or slowly moving scene is predicted from its past."""

    def __init__(self, latent: int, hyper: int, channels: int):
        super().__init__()
        mid = hyper_mid_width(latent, channels)
        self.body = nn.Sequential(up(hyper, channels), nn.ReLU(), up(channels, mid), nn.ReLU())
        self.head = nn.Conv2d(mid + latent, 2 * latent, 3, padding=1)

    def forward(self, z_hat: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.body(z_hat), context], 1))


class GainedHyperprior(nn.Module):
    """The hyperprior's networks and gains, as attributes of the model that mixes it in (so their
    weights are named h_a.*, h_s.*, log_gains, z_log_scale at the model's top level). The model's
    config supplies `latent`, `hyper`, `channels` (h_a / h_s width) and `lambdas`."""

    def build_prior(self, cfg, context: bool = False) -> None:
        """context: h_s also sees the previous latent frame (ContextHyperSynthesis)."""
        n, m = cfg.channels, cfg.latent
        self.h_a = nn.Sequential(nn.Conv2d(m, n, 3, padding=1), nn.ReLU(), down(n, n), nn.ReLU(),
                                 down(n, cfg.hyper))
        self.h_s = (ContextHyperSynthesis if context else HyperSynthesis)(m, cfg.hyper, n)
        self.log_gains = nn.Parameter(torch.linspace(-1.5, 1.5, len(cfg.lambdas)).view(-1, 1).repeat(1, m))
        self.z_log_scale = nn.Parameter(torch.zeros(cfg.hyper))

    def log_gain(self, q: torch.Tensor) -> torch.Tensor:
        """Per-channel log gain (batch, latent) at qualities q (batch,) in [0, Q - 1], log-linear between levels."""
        q = q.clamp(0, self.cfg.qualities - 1)
        i = q.floor().long().clamp(max=self.cfg.qualities - 2)
        f = (q - i).unsqueeze(1)
        return (1 - f) * self.log_gains[i] + f * self.log_gains[i + 1]

    def lmbda(self, q: torch.Tensor) -> torch.Tensor:
        lam = torch.log(torch.tensor(self.cfg.lambdas, device=q.device))
        q = q.clamp(0, self.cfg.qualities - 1)
        i = q.floor().long().clamp(max=self.cfg.qualities - 2)
        f = q - i
        return torch.exp((1 - f) * lam[i] + f * lam[i + 1])

    def hyper_parameters(self, z_hat: torch.Tensor, context: torch.Tensor | None = None):
        """(mean, log scale) of y, each (batch, latent, H/16, W/16), from the rounded hyper latent
        (and, with a context prior, the previous latent frame's y_hat)."""
        out = self.h_s(z_hat) if context is None else self.h_s(z_hat, context)
        mean, log_scale = out.chunk(2, dim=1)
        return mean, log_scale

    def quantize(self, y: torch.Tensor, q: torch.Tensor, context: torch.Tensor | None = None):
        """Training pass of y (batch, latent, h, w), h and w multiples of 4, at qualities q (batch,):
        (y_hat as the synthesis sees it, bits of y per item, bits of z per item), noise-relaxed.
        `context`: the previous latent frame's y_hat, for a context prior."""
        y = y.float()
        with torch.autocast(y.device.type, enabled=False):  # what the coder sees stays float32 under bf16
            z = self.h_a(y)
            z_hat = z + (torch.round(z) - z).detach()
            z_bits = gaussian_bits(z + torch.empty_like(z).uniform_(-0.5, 0.5), torch.zeros_like(z),
                                    self.z_log_scale.view(1, -1, 1, 1).expand_as(z))
            mean, log_scale = self.hyper_parameters(z_hat, None if context is None else context.float())
            gain = self.log_gain(q).exp()[:, :, None, None]
            centred = (y - mean) * gain  # what the coder codes, rounded
            y_bits = gaussian_bits(centred + torch.empty_like(centred).uniform_(-0.5, 0.5),
                                    torch.zeros_like(centred), log_scale + gain.log())
            rounded = centred + (torch.round(centred) - centred).detach()
            y_hat = rounded / gain + mean
        return y_hat, y_bits.sum((1, 2, 3)), z_bits.sum((1, 2, 3))


def gaussian_bits(value: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(value rounded) under N(mean, exp(log_scale)) integrated over [value - 0.5, value + 0.5]."""
    scale = log_scale.exp().clamp(min=SCALE_MIN)
    d = (value - mean).abs()
    upper = torch.special.ndtr((0.5 - d) / scale)  # symmetric form: accurate in the tails
    lower = torch.special.ndtr((-0.5 - d) / scale)
    return -torch.log2((upper - lower).clamp(min=1e-9))


# ------------------------------------------------------------------ integer hyper-synthesis

ACT_BITS = 8  # fractional bits of the integer network's activations
ACT_LIMIT = 2.0**22  # activations are clamped to +-2^22 (values +-16384)
WEIGHT_LIMIT = 2.0**11  # integer weights of a layer lie within +-2^11
# inputs per output of a layer: with the two limits above every product is at most 2^33 and every
# partial sum, with the bias (< 2^31) and the rounding offset (<= 2^29), below 2^52 + 2^32 < 2^53,
# so float64 adds them exactly
FAN_IN_LIMIT = 2**19
GAIN_BITS = 16  # fractional bits of the integer gains


def check_integer_fan_in(latent: int, hyper: int, channels: int, context: bool = False) -> None:
    """Refuses, with a ValueError naming the sizes, an h_s whose integer version would not be exact
    (a layer's fan-in over FAN_IN_LIMIT), so a config fails when it is built, not at export."""
    mid = hyper_mid_width(latent, channels)
    fan_in = max(hyper * 9, channels * 9, (mid + (latent if context else 0)) * 9)
    if fan_in > FAN_IN_LIMIT:
        raise ValueError(f"latent {latent}, hyper {hyper} and channels {channels} give the hyper-synthesis "
                         f"a fan-in of {fan_in}, over the integer network's {FAN_IN_LIMIT}")


class IntegerHyperSynthesis:
    """h_s in integer arithmetic (Balle et al. 2019, "Integer networks"), run as float64 convolutions
    of integer-valued tensors. Bound: |activation| <= 2^22, |weight| <= 2^11, fan-in <= 2^19 (asserted),
    so every partial sum is an integer below 2^52 + 2^32 < 2^53 and exact whatever the summation order.

    The fan-in of a 5x5 stride-2 transposed conv ("up") is in_channels x 3 x 3: each output pixel
    meets ceil(5/2)^2 input pixels. |bias| < 2^31 (int32 storage) adds less than 2^31 to a sum.

    Built from a trained HyperSynthesis by `from_float` (or from the integer tensors stored in the
    weights file); `__call__` maps the rounded hyper latent (integers) to the fixed-point mean and
    log scale of y, integers with ACT_BITS fractional bits. Layers run in order; "up" is PyTorch's
    conv_transpose2d (weight (in, out, 5, 5), stride 2, padding 2, output padding 1), "conv" its
    conv2d (weight (out, in, k, k), stride 1, padding k // 2), both cross-correlations."""

    def __init__(self, layers: list[tuple[str, torch.Tensor, torch.Tensor, int]]):
        # (kind "up" or "conv", integer weight, integer bias at scale 2^(shift + ACT_BITS), shift)
        for kind, w, b, shift in layers:
            if kind not in ("up", "conv") or w.dim() != 4 or b.dim() != 1:
                raise ValueError(f"integer hyper-synthesis layer of unknown kind {kind!r} or shape")
            if kind == "up" and tuple(w.shape[2:]) != (5, 5):
                raise ValueError("integer hyper-synthesis up layers are 5x5")
            fan_in = w[0].numel() if kind == "conv" else w.shape[0] * 9
            if (fan_in > FAN_IN_LIMIT or w.abs().max() > WEIGHT_LIMIT or b.abs().max() >= 2**31
                    or not 0 <= shift <= 30):
                raise ValueError("integer hyper-synthesis layer outside its exactness bounds")
        self.layers = layers

    @classmethod
    def from_float(cls, h_s: nn.Module) -> "IntegerHyperSynthesis":
        layers = []
        for module in h_s.modules():  # the convolutions in order (HyperSynthesis or ContextHyperSynthesis)
            if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            w, b = module.weight.detach().double(), module.bias.detach().double()
            # the finest weight step that keeps |weight| <= 2^11 and the bias (at 2^(shift + 8)) in int32
            shift = min(30, math.floor(math.log2((WEIGHT_LIMIT - 1) / max(float(w.abs().max()), 1e-12))),
                        math.floor(math.log2((2**31 - 1) / max(float(b.abs().max()), 1e-12))) - ACT_BITS)
            shift = max(0, shift)
            w_int = torch.round(w * 2.0**shift)
            b_int = torch.round(b * 2.0 ** (shift + ACT_BITS))
            layers.append(("up" if isinstance(module, nn.ConvTranspose2d) else "conv", w_int, b_int, shift))
        return cls(layers)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The integer weights as tensors to store beside the float network: weights as int16 (they lie
        within +-2^11; half the bytes of int32, which a wide model's 16 MiB file needs), biases int32."""
        out = {}
        for i, (kind, w, b, shift) in enumerate(self.layers):
            out[f"int_h_s.{i}.{kind}.weight"] = w.to(torch.int16)
            out[f"int_h_s.{i}.{kind}.bias"] = b.to(torch.int32)  # within int32: __init__ checks
            out[f"int_h_s.{i}.{kind}.shift"] = torch.tensor([shift], dtype=torch.int32)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "IntegerHyperSynthesis":
        layers, i = [], 0
        while True:
            found = [k for k in tensors if k.startswith(f"int_h_s.{i}.") and k.endswith(".weight")]
            if not found:
                break
            kind = found[0].split(".")[2]
            prefix = f"int_h_s.{i}.{kind}"
            layers.append((kind, tensors[f"{prefix}.weight"].double(), tensors[f"{prefix}.bias"].double(),
                           int(tensors[f"{prefix}.shift"][0])))
            i += 1
        if not layers:
            raise ValueError("no integer hyper-synthesis tensors")
        return cls(layers)

    def __call__(self, z_hat: torch.Tensor, context: torch.Tensor | None = None):
        """Rounded hyper latent (batch, hyper, h, w), integer-valued -> (mean, log scale) of y as
        float64 integers with ACT_BITS fractional bits. `context` (a context prior's previous y_hat,
        fixed point with ACT_BITS fractional bits, integers) joins the activations before the last layer."""
        a = z_hat.double().clamp(-ACT_LIMIT, ACT_LIMIT) * 2.0**ACT_BITS
        a = a.clamp(-ACT_LIMIT, ACT_LIMIT)
        for i, (kind, w, b, shift) in enumerate(self.layers):
            if context is not None and i == len(self.layers) - 1:
                a = torch.cat([a, context.double().clamp(-ACT_LIMIT, ACT_LIMIT)], 1)
            if a.shape[1] != w.shape[1 if kind == "conv" else 0]:
                raise ValueError(f"integer hyper-synthesis layer {i} takes {w.shape[1 if kind == 'conv' else 0]} "
                                 f"channels, not {a.shape[1]} (a context prior needs its context)")
            if kind == "up":
                acc = F.conv_transpose2d(a, w, b, stride=2, padding=2, output_padding=1)
            else:
                acc = F.conv2d(a, w, b, padding=w.shape[-1] // 2)
            a = torch.floor((acc + 2.0 ** (shift - 1) if shift else acc) / 2.0**shift)  # round half up, exact
            if i < len(self.layers) - 1:
                a = a.clamp(0, ACT_LIMIT)  # ReLU
            else:
                a = a.clamp(-ACT_LIMIT, ACT_LIMIT)
        mean, log_scale = a.chunk(2, dim=1)
        return mean, log_scale


def gain_tables(model: "GainedHyperprior", levels_below: int = 0) -> dict[str, torch.Tensor]:
    """Integer gains for every quality step (q = step / STEPS_PER_QUALITY - levels_below): `gain.log`
    (log gain with ACT_BITS fractional bits) and `gain.value` (gain with GAIN_BITS fractional bits), int32
    (steps, latent), and `gain.levels_below`. Computed once at export, so coder and decoder look them up,
    never compute them. levels_below: extra levels below the lowest trained one (`extend_below`)."""
    steps = STEPS_PER_QUALITY * (model.cfg.qualities - 1) + 1
    q = torch.arange(steps, dtype=torch.float64) / STEPS_PER_QUALITY
    with torch.no_grad():
        log_gain = model.log_gain(q.float()).double()
    return extend_below(torch.round(log_gain * 2.0**ACT_BITS), levels_below)


def extend_below(log_int: torch.Tensor, levels: int) -> dict[str, torch.Tensor]:
    """Gain tables from the integer log gains of the trained range (rows q = 0, 1/16, ...), with
    `levels` quality levels added below it, log-linear along the first trained level's slope.
    The transforms never saw those gains, but gain units extrapolate smoothly a level or so
    (image/hvae's model card measures it); the trained rows are kept bit for bit."""
    if not 0 <= levels <= MAX_LEVELS_BELOW:
        raise ValueError(f"levels below the trained range must be 0-{MAX_LEVELS_BELOW}, not {levels}")
    log_int = log_int.to(torch.float64)
    k = torch.arange(-STEPS_PER_QUALITY * levels, 0, dtype=torch.float64)[:, None]
    slope = log_int[STEPS_PER_QUALITY] - log_int[0]  # per level
    log_int = torch.cat([torch.round(log_int[0] + k * slope / STEPS_PER_QUALITY), log_int])
    value = torch.round(torch.exp(log_int / 2.0**ACT_BITS) * 2.0**GAIN_BITS)
    if value.max() >= 2**31 or value.min() < 1:  # gains within [2^-16, 2^15): far beyond what training gives
        raise ValueError("gains outside what the integer tables hold")
    return {"gain.log": log_int.to(torch.int32), "gain.value": value.to(torch.int32),
            "gain.levels_below": torch.tensor([levels], dtype=torch.int32)}
