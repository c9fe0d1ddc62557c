"""audio/rvq: the frame-rate neural audio codec with residual VQ (nc/models/frame_codec.py).

One model serves 1.5, 3, 6 and 12 kbps per channel (3, 6, 12 or 24 codebooks of
1024 codes at 50 frames/s). Input at any rate is resampled to 16 kHz and back;
channels are coded independently. The streaming machinery, shared with
audio/fsq, is in nc/codecs/frame.py.

Streaming is exact: the encoder and the decoder always run on windows of
WINDOW frames plus a fixed left context, aligned to frame 0 of the track, so
feeding a file in any pieces gives the same codes as feeding it whole.

Packet payload (one per 5 s of input, the last one shorter):

    offset  size  field
    0       2     frames: u16 LE, frames in this packet (250; the last one up to 251)
    2       ...   categorical ANS payload (nc/bitstream/entropy.py) of the codes in
                  (channel, frame, stage) order; the context of each symbol is its
                  stage, whose prior is the frequency table shipped with the weights

Track params: {"stages": codebooks used}. Tokens: the codes, int16.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nc.codecs.frame import FrameCodecBase, FrameModel
from nc.errors import PluginError

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "audio_rvq.safetensors"
#: NC_RVQ_WEIGHTS points nc at weights you trained yourself (files record the weights' hash, so they
#: decode only where the same weights are installed)
WEIGHTS = Path(os.environ.get("NC_RVQ_WEIGHTS", SHIPPED_WEIGHTS))
STAGES_FOR = {"1.5k": 3, "3k": 6, "6k": 12, "12k": 24}


class RvqModel(FrameModel):
    """The loaded network and its code priors, shared by every encoder and decoder."""

    codec_id = "audio/rvq"
    quantizer = "rvq"

    def load_priors(self, path: Path, extra: dict):
        from nc.bitstream.entropy import FrequencyTable

        counts = extra.get("prior.counts")
        shape = (self.cfg.quantizer_stages, self.cfg.codebook_size)
        if counts is None or tuple(counts.shape) != shape:
            raise PluginError(f"{path}: {self.codec_id} weights need prior.counts of shape {shape}")
        return FrequencyTable.from_counts(counts.numpy().astype(np.int64), floor=1)

    def pack(self, codes: np.ndarray) -> bytes:
        from nc.bitstream.entropy import encode_categorical

        stages = codes.shape[1]
        symbols = codes.transpose(0, 2, 1).reshape(-1)  # (channel, frame, stage)
        contexts = np.tile(np.arange(stages, dtype=np.int32), codes.shape[0] * codes.shape[2])
        return encode_categorical(symbols, self.priors, contexts)

    def unpack(self, data: bytes, channels: int, frames: int, stages: int) -> np.ndarray:
        from nc.bitstream.entropy import decode_categorical

        count = channels * frames * stages
        contexts = np.tile(np.arange(stages, dtype=np.int32), channels * frames)
        symbols = decode_categorical(data, self.priors, count, contexts)
        return symbols.reshape(channels, frames, stages).transpose(0, 2, 1).astype(np.int64)


class RvqCodec(FrameCodecBase):
    model_class = RvqModel
    stages_for = STAGES_FOR
    # at 12k Opus is better (PESQ 3.77 against 2.95 on held-out speech, bench/results/audio.md), so a
    # plain `--bitrate 12k` gets Opus (rank 10) where it is installed; 1.5k-6k are rvq's (rank 50)
    point_ranks = {"12k": 5}
    token_dtype = np.int16  # codes < 1024

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(
            weights, rank=50,
            summary="neural, 16 kHz, 50 frames/s, residual VQ 1024 codes x 3-24 stages, entropy-coded; per channel")
