"""audio/fsq: the frame-rate neural audio codec with residual FSQ (nc/models/frame_codec.py, quantizer "fsq").

The network is audio/rvq's; its bottleneck is residual finite scalar
quantization (nc/quantization/fsq.py): stage k projects what the stages before
it left of the latent to D = len(fsq_levels) dimensions and rounds dimension d
to one of L_d levels, so a stage's code is D level digits, one int64
mixed-radix number. The streaming machinery (windows, packets, decoder
history, phase retrieval) is audio/rvq's, shared in nc/codecs/frame.py.

Rate points, with the shipped grid fsq_levels = (8, 8, 5, 5, 5, 5): 40,000 codes a
stage, log2(40000) = 15.2877 raw bits a stage, 764.39 bps a stage at 50 frames/s:

    point  stages  raw bps (50 x stages x log2 40000)
    1.5k   2       1528.77
    3k     4       3057.54
    6k     8       6115.08

The entropy coder writes fewer bits than raw (per-digit priors; residual digits
are not uniform), and every 5 s packet costs ~60 bytes of container (~0.1
kbps), so files measure close to the names. Weights whose grid puts a point's
raw rate more than 10 % from its name are refused.

Packet payload (one per 5 s of input, the last one shorter):

    offset  size  field
    0       2     frames: u16 LE, frames in this packet (250; the last one up to 251)
    2       ...   categorical ANS payload (nc/bitstream/entropy.py) of the level digits
                  in (channel, frame, stage, dimension) order; symbol = digit of
                  that dimension at that stage, in [0, L_d); context = stage * D + d

The frequency table has fsq_stages * D contexts (rows) and max(L) symbols.
Its row for (stage s, dimension d) comes from the weights' `prior.counts`, an
int32 tensor (fsq_stages, D, max(L)) of level counts seen in training:
with c_i = prior.counts[s, d, i] + 1 for i < L_d, m = max(1, ceil(2^24 /
sum_i<L_d c_i)), the frequency of symbol i is c_i * m for i < L_d and 1 for i >=
L_d (unreachable levels keep the nonzero frequency the coder needs, which costs each
reachable one about (max L - L_d) 2^-24 / ln 2 bits). A decoded digit >= L_d is a corrupt packet.

A stage's code (the token) is sum_d digit_d * prod_{j<d} L_j (dimension 0 least
significant): in [0, prod L), exact in int64 for any grid FSQ allows.

Track params: {"stages": FSQ stages used}. Tokens: the codes, int64.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nc.codecs.frame import FrameCodecBase, FrameModel
from nc.errors import CorruptChunkError, PluginError

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "audio_fsq.safetensors"
#: NC_FSQ_WEIGHTS points nc at weights you trained yourself (files record the weights' hash, so they
#: decode only where the same weights are installed)
WEIGHTS = Path(os.environ.get("NC_FSQ_WEIGHTS", SHIPPED_WEIGHTS))
STAGES_FOR = {"1.5k": 2, "3k": 4, "6k": 8}
RATE_TOLERANCE = 0.1  # a point's raw rate may be this far from its name


def raw_bps(levels: tuple[int, ...], stages: int, frame_rate: float = 50.0) -> float:
    """Bits per second of `stages` stages' codes before entropy coding."""
    return stages * math.log2(math.prod(levels)) * frame_rate


def digit_table(counts: np.ndarray, levels: tuple[int, ...]):
    """The entropy coder's table (module docstring) from level counts (stages, D, max(levels))."""
    from nc.bitstream.entropy import FrequencyTable

    counts = np.asarray(counts).astype(np.int64)
    stages, dims, alphabet = counts.shape
    valid = np.arange(alphabet)[None, None, :] < np.asarray(levels, np.int64)[None, :, None]
    c = np.where(valid, counts + 1, 0)
    m = np.maximum(1, -(-(1 << 24) // c.sum(-1, keepdims=True)))  # ceil(2^24 / row sum)
    return FrequencyTable(np.where(valid, c * m, 1).reshape(stages * dims, alphabet))


def expected_bits(counts: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Mean bits per digit, (stages, D), that `digit_table(counts)` spends on digits distributed as `counts`."""
    counts = np.asarray(counts).astype(np.float64)
    freqs = digit_table(counts.astype(np.int64), levels).freqs.reshape(counts.shape).astype(np.float64)
    bits = -np.log2(freqs / freqs.sum(-1, keepdims=True))
    return (counts * bits).sum(-1) / np.maximum(counts.sum(-1), 1)


class FsqModel(FrameModel):
    """The loaded network, its digit priors and its grid, shared by every encoder and decoder."""

    codec_id = "audio/fsq"
    quantizer = "fsq"

    def __init__(self, path: Path):
        super().__init__(path)
        self.levels = np.asarray(self.cfg.fsq_levels, np.int64)
        self.radix = np.cumprod(np.concatenate([[1], self.levels[:-1]]))  # dimension 0 least significant

    def load_priors(self, path: Path, extra: dict):
        cfg = self.cfg
        counts = extra.get("prior.counts")
        shape = (cfg.fsq_stages, len(cfg.fsq_levels), max(cfg.fsq_levels))
        if counts is None or tuple(counts.shape) != shape or counts.is_floating_point() or int(counts.min()) < 0:
            raise PluginError(f"{path}: audio/fsq weights need prior.counts, non-negative integers of shape {shape}")
        return digit_table(counts.numpy(), cfg.fsq_levels)

    def digits(self, codes: np.ndarray) -> np.ndarray:
        """Codes (channels, stages, frames) -> level digits (channels, stages, D, frames)."""
        return codes[:, :, None, :] // self.radix[None, None, :, None] % self.levels[None, None, :, None]

    def pack(self, codes: np.ndarray) -> bytes:
        from nc.bitstream.entropy import encode_categorical

        channels, stages, frames = codes.shape
        dims = len(self.levels)
        symbols = self.digits(codes.astype(np.int64)).transpose(0, 3, 1, 2).reshape(-1)  # (channel, frame, stage, d)
        contexts = np.tile(np.arange(stages * dims, dtype=np.int32), channels * frames)
        return encode_categorical(symbols, self.priors, contexts)

    def unpack(self, data: bytes, channels: int, frames: int, stages: int) -> np.ndarray:
        from nc.bitstream.entropy import decode_categorical

        dims = len(self.levels)
        count = channels * frames * stages * dims
        contexts = np.tile(np.arange(stages * dims, dtype=np.int32), channels * frames)
        digits = decode_categorical(data, self.priors, count, contexts).astype(np.int64)
        digits = digits.reshape(channels, frames, stages, dims)
        if (digits >= self.levels).any():
            raise CorruptChunkError("audio/fsq packet holds a level beyond its dimension's grid")
        return (digits * self.radix).sum(-1).transpose(0, 2, 1)


class FsqCodec(FrameCodecBase):
    model_class = FsqModel
    stages_for = STAGES_FOR
    token_dtype = np.int64  # mixed-radix stage codes; large grids exceed int16 and int32

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(
            weights, rank=40,
            summary="neural, 16 kHz, 50 frames/s, residual FSQ 2-8 stages of a 6-dim grid (40,000 codes), "
                    "entropy-coded level digits; per channel")

    def check_model(self, model: FsqModel) -> None:
        """Each rate point's stages must exist and its raw rate lie within RATE_TOLERANCE of its name."""
        cfg = model.cfg
        for point in self.descriptor.points:
            stages = self.stages_for[point.name]
            raw = raw_bps(cfg.fsq_levels, stages, cfg.frame_rate)
            if stages > cfg.fsq_stages or abs(raw / point.value - 1) > RATE_TOLERANCE:
                raise PluginError(f"{self.weights}: audio/fsq's {point.name} point needs {stages} of the weights' "
                                  f"{cfg.fsq_stages} stages at about {point.value:g} bps; their levels "
                                  f"{cfg.fsq_levels} give {raw:.0f} bps")
