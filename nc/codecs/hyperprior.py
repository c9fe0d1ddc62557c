"""The integer half of nc/models/hyperprior.py: codes one latent map y and its hyper latent z.

Shared by image/hvae (one map per tile) and video/wfvae (one map per latent frame). The
tables come from the weights file (written by nc.train.image.export_tables):

    int_h_s.*       the integer hyper-synthesis (nc.models.hyperprior.IntegerHyperSynthesis)
    gain.log        (steps, latent) int32: log gain per quality step, ACT_BITS fractional bits
    gain.value      (steps, latent) int32: gain per quality step, GAIN_BITS fractional bits
    gain.levels_below  (1,) int32, optional (0 if absent): extrapolated quality levels below the
                    trained ones at the table's start (steps = 16 (qualities - 1 + levels_below) + 1)
    z.scale_index   (hyper,) int32: the scale index of each hyper channel

Payloads are nc/bitstream/entropy.ScaleTableCoder("gaussian") ones:
    z: (hyper, h/4, w/4) in C order, mean 0, scale index per channel from `z.scale_index`
    y: s = rint(y g - M g), (latent, h, w) in C order, coded with mean 0 and the scale indices
       from the integer side information (docs/FORMAT.md, image/hvae)
"""
from __future__ import annotations

import math

import numpy as np

from nc.codecs import scale_offsets
from nc.errors import CorruptChunkError, FormatError, PluginError, UsageError


def log_scale_thresholds(act_bits: int) -> np.ndarray:
    """Fixed-point log scale l (integers, act_bits fractional bits) maps to scale index
    searchsorted(T, l, "left"): std exp(l / 2^act_bits) <= SCALES[i] iff l <= floor(log(SCALES[i]) 2^act_bits).
    Refuses a libm whose log puts an entry within 1e-9 of a rounding edge (never seen)."""
    from nc.bitstream.entropy import SCALES

    exact = np.log(SCALES) * 2.0**act_bits
    if np.any(np.abs(exact - np.round(exact)) < 1e-9):
        raise RuntimeError("a scale threshold lies on a fixed-point edge; the tables would not be portable")
    return np.floor(exact).astype(np.int64)


def _levels_below(tensor) -> int:
    """`gain.levels_below` of a weights file: absent is 0; else it must be int32 of shape (1,)."""
    import torch

    if tensor is None:
        return 0
    if tensor.dtype != torch.int32 or tuple(tensor.shape) != (1,):
        raise ValueError(f"gain.levels_below must be int32 of shape (1,), not {tensor.dtype} {tuple(tensor.shape)}")
    return int(tensor[0])


def lambda_at(lambdas, level: float) -> float:
    """The distortion weight at a (fractional) trained level, log-linear between the training's
    `lambdas` and extended along the first or last segment's line outside them (the extrapolated
    qualities below the trained ones)."""
    logs = np.log(np.asarray(lambdas, dtype=np.float64))
    i = min(max(math.floor(level), 0), len(logs) - 2)
    f = level - i
    return float(math.exp((1 - f) * logs[i] + f * logs[i + 1]))


class LatentCoder:
    """The integer tables of one set of weights, and the coding of y and z with them."""

    def __init__(self, extra: dict, cfg, path, codec_id: str, context: bool = False):
        """context: the weights' h_s is a context prior's (it also takes the previous y_hat)."""
        import torch

        from nc.bitstream.entropy import ScaleTableCoder
        from nc.models.hyperprior import ACT_BITS, MAX_LEVELS_BELOW, STEPS_PER_QUALITY, IntegerHyperSynthesis

        try:
            self.int_h_s = IntegerHyperSynthesis.from_tensors(extra)
            self.gain_log = extra["gain.log"].numpy().astype(np.int64)  # (steps, latent)
            self.gain_value = extra["gain.value"].numpy().astype(np.int64)
            self.z_index = extra["z.scale_index"].numpy().astype(np.int64)  # (hyper,)
            self.levels_below = _levels_below(extra.get("gain.levels_below"))
            probe = torch.zeros(1, cfg.latent, 4, 4, dtype=torch.float64) if context else None
            mean, log_scale = self.int_h_s(torch.zeros(1, cfg.hyper, 1, 1, dtype=torch.float64), probe)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise PluginError(f"{path}: not {codec_id} weights ({str(e).splitlines()[0]})") from None
        steps = self.gain_log.shape[0]
        if (mean.shape != (1, cfg.latent, 4, 4) or log_scale.shape != mean.shape
                or self.gain_log.shape != (steps, cfg.latent) or self.gain_value.shape != (steps, cfg.latent)
                or not 0 <= self.levels_below <= MAX_LEVELS_BELOW
                or steps != STEPS_PER_QUALITY * (cfg.qualities - 1 + self.levels_below) + 1
                or self.z_index.shape != (cfg.hyper,)
                or (self.gain_value <= 0).any() or self.z_index.min() < 0 or self.z_index.max() >= 64):
            raise PluginError(f"{path}: {codec_id} tables do not match the network's config")
        self.cfg, self.steps, self.torch, self.codec_id = cfg, steps, torch, codec_id
        self.act_bits = ACT_BITS
        self.thresholds = log_scale_thresholds(ACT_BITS)
        self.coder = ScaleTableCoder("gaussian")

    def step_of(self, quality: float) -> int:
        """The table row of `quality` on the codecs' scale (the trained levels are qualities 1, 2, ...,
        16 steps each; extrapolated levels lie below 1); UsageError for a quality below the table."""
        from nc.models.hyperprior import STEPS_PER_QUALITY

        if quality < 1 - self.levels_below:
            raise UsageError(f"{self.codec_id}: quality {quality:g} is below these weights' lowest, "
                             f"{1 - self.levels_below}")
        return min(round((quality - 1 + self.levels_below) * STEPS_PER_QUALITY), self.steps - 1)

    def hyper_side(self, z: np.ndarray, context: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Integer hyper-synthesis of z (and a context prior's `context`, from `fixed_point`):
        fixed-point (mean, log scale) of y, int64, act_bits fractional bits."""
        torch = self.torch
        ctx = None if context is None else torch.from_numpy(context)[None].double()
        mean, log_scale = self.int_h_s(torch.from_numpy(z)[None].double(), ctx)
        return mean[0].numpy().astype(np.int64), log_scale[0].numpy().astype(np.int64)

    def side_info(self, side: tuple[np.ndarray, np.ndarray], step: int, offsets: np.ndarray | None = None):
        """(mean of y g as float64, scale indices) of y at quality `step`, from integers only; the
        indices moved by the channels' `offsets` (nc/codecs/scale_offsets.py), where given."""
        from nc.models.hyperprior import GAIN_BITS

        mean, log_scale = side
        gain_value = self.gain_value[step][:, None, None]
        mean_g = (mean * gain_value + (1 << (GAIN_BITS - 1))) >> GAIN_BITS  # fixed point, act_bits
        index = np.searchsorted(self.thresholds, log_scale + self.gain_log[step][:, None, None], side="left")
        index = np.minimum(index, len(self.thresholds) - 1).astype(np.int32)
        return mean_g / 2.0**self.act_bits, index if offsets is None else scale_offsets.shifted(index, offsets)

    def lmbda(self, step: int) -> float:
        """The distortion weight (bits + lambda x 255^2 x MSE) the network was trained with at quality
        `step`, extrapolated below the trained levels."""
        from nc.models.hyperprior import STEPS_PER_QUALITY

        return lambda_at(self.cfg.lambdas, step / STEPS_PER_QUALITY - self.levels_below)

    def gain(self, step: int) -> np.ndarray:
        from nc.models.hyperprior import GAIN_BITS

        return (self.gain_value[step] / 2.0**GAIN_BITS)[:, None, None]

    def code_y(self, y: np.ndarray, side, step: int, offsets: np.ndarray | None = None) -> bytes:
        return self.quantize(y, side, step, offsets)[0]

    def quantize(self, y: np.ndarray, side, step: int, offsets: np.ndarray | None = None) -> tuple[bytes, np.ndarray]:
        """y's payload at quality `step` (its channels' scale indices moved by `offsets`, nc/codecs/
        scale_offsets.py), and y_hat exactly as `decode_y` will return it."""
        return self.quantize_at(y, *self.side_info(side, step, offsets), step)

    def quantize_at(self, y: np.ndarray, mean_g: np.ndarray, index: np.ndarray, step: int) -> tuple[bytes, np.ndarray]:
        """`quantize` with each value's mean (of y g) and scale index given: a codec's own choice of
        them (video/wfvae's copy mode)."""
        symbols = self.symbols(y, mean_g, step)
        return self.coder.encode(symbols, np.zeros_like(mean_g), index), self.dequantize(symbols, mean_g, step)

    def choose_y_offsets(self, y: np.ndarray, side, step: int) -> tuple[np.ndarray, float]:
        """The scale offsets (nc/codecs/scale_offsets.py) that code y at `step` in the fewest bits, and
        the bits they save (estimated, their own counted)."""
        mean_g, index = self.side_info(side, step)
        return scale_offsets.choose(self.symbols(y, mean_g, step), index, self.coder)

    def choose_z_offsets(self, z: np.ndarray) -> tuple[np.ndarray, float]:
        """`choose_y_offsets` for a hyper latent (hyper, h, w)."""
        return scale_offsets.choose(z, self._z_index(z.shape), self.coder)

    def symbols(self, y: np.ndarray, mean_g: np.ndarray, step: int) -> np.ndarray:
        """The integers coded for y at quality `step` around the means mean_g (of y g)."""
        return np.rint(y * self.gain(step) - mean_g).astype(np.int64)

    def dequantize(self, symbols: np.ndarray, mean_g: np.ndarray, step: int) -> np.ndarray:
        # a damaged file can escape to any int32: keep the synthesis finite (trained latents are far smaller)
        return np.clip((symbols + mean_g) / self.gain(step), -2.0**15, 2.0**15)

    def fixed_point(self, y_hat: np.ndarray) -> np.ndarray:
        """A context prior's input: y_hat in fixed point (act_bits fractional bits), int64. IEEE
        arithmetic rounds (s + mean) / gain the same everywhere, so encoder and decoder agree."""
        from nc.models.hyperprior import ACT_LIMIT

        return np.clip(np.rint(y_hat * 2.0**self.act_bits), -ACT_LIMIT, ACT_LIMIT).astype(np.int64)

    def _z_index(self, shape: tuple[int, int, int], offsets: np.ndarray | None = None) -> np.ndarray:
        index = np.broadcast_to(self.z_index[:, None, None], shape)
        return index if offsets is None else scale_offsets.shifted(index, offsets)

    def code_z(self, z: np.ndarray, offsets: np.ndarray | None = None) -> bytes:
        return self.code_z_at(z, np.zeros(z.shape), self._z_index(z.shape, offsets))

    def code_z_at(self, z: np.ndarray, means: np.ndarray, index: np.ndarray) -> bytes:
        """`code_z` with each value's integer mean and scale index given (video/wfvae's changes of z,
        nc/codecs/hyper_deltas.py)."""
        return self.coder.encode(z, means, index)

    def decode_z(self, z_data: bytes, shape: tuple[int, int, int], offsets: np.ndarray | None = None) -> np.ndarray:
        """The hyper latent, int64 of `shape` (hyper, h, w), from its payload (its channels' scale
        indices moved by `offsets`, where given)."""
        return self.decode_z_at(z_data, np.zeros(shape), self._z_index(shape, offsets))

    def decode_z_at(self, z_data: bytes, means: np.ndarray, index: np.ndarray) -> np.ndarray:
        """`decode_z` with each value's integer mean and scale index given (`code_z_at`'s)."""
        try:
            z = self.coder.decode(z_data, means, index)
        except (FormatError, ValueError) as e:
            raise CorruptChunkError(f"{self.codec_id}: {e}") from None
        return z.astype(np.int64)

    def decode_s(self, y_data: bytes, side, step: int, offsets: np.ndarray | None = None) -> np.ndarray:
        """The dequantized y, float64, from its payload and its side information (`hyper_side`), its
        channels' scale indices moved by `offsets` where given."""
        return self.decode_at(y_data, *self.side_info(side, step, offsets), step)

    def decode_at(self, y_data: bytes, mean_g: np.ndarray, index: np.ndarray, step: int) -> np.ndarray:
        """`decode_s` with each value's mean (of y g) and scale index given (`quantize_at`'s)."""
        try:
            s = self.coder.decode(y_data, np.zeros(mean_g.shape), index)
        except (FormatError, ValueError) as e:
            raise CorruptChunkError(f"{self.codec_id}: {e}") from None
        return self.dequantize(s, mean_g, step)

    def decode_y(self, z_data: bytes, y_data: bytes, h: int, w: int, step: int,
                 context: np.ndarray | None = None) -> np.ndarray:
        """The dequantized y (latent, h, w), float64, from its two payloads; h and w multiples of 4.
        `context`: a context prior's previous y_hat, from `fixed_point`."""
        z = self.decode_z(z_data, (self.cfg.hyper, h // 4, w // 4))
        return self.decode_s(y_data, self.hyper_side(z, context), step)
