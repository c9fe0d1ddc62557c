"""audio/wavtokenizer: one token per frame from one 4096-code codebook, 50 tokens/s, under 1 kbps.

The network is audio/rvq's frame-rate codec (nc/models/frame_codec.py) with the
quantizer "vq" (nc/quantization/vq.py): one EMA codebook of 4096 latent
vectors, k-means initialised, with dead-code restarts. Each 20 ms frame becomes
a single integer in [0, 4096), the sequence generative models want (no stack of
RVQ levels to predict). The decoder is the magnitude head with phase retrieval
at decode time, as for audio/rvq (bench/results/audio_oracles.md says why, not
a learned phase as in WavTokenizer's Vocos head). The streaming machinery is
audio/rvq's, shared in nc/codecs/frame.py.

Rate point:

    point  tokens/s  raw bps (50 x log2 4096)
    0.6k   50        600

The entropy coder writes fewer bits than raw (a prior over the 4096 codes,
fitted on training data), and every 5 s packet costs ~60 bytes of container
(~0.1 kbps).

Packet payload: audio/rvq's (nc/codecs/rvq.py) with one stage: a u16 LE frame
count, then the categorical ANS payload of the codes in (channel, frame) order
under the single prior row shipped with the weights (`prior.counts`, (1, 4096)).

Track params: {"stages": 1}. Tokens: the codes, int16, (channels, 1, frames), 50 per second.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nc.codecs.frame import FrameCodecBase
from nc.codecs.rvq import RvqModel
from nc.errors import PluginError

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "audio_wavtokenizer.safetensors"
#: NC_WAVTOKENIZER_WEIGHTS points nc at weights you trained yourself (files record the weights' hash)
WEIGHTS = Path(os.environ.get("NC_WAVTOKENIZER_WEIGHTS", SHIPPED_WEIGHTS))
STAGES_FOR = {"0.6k": 1}
TOKENS_PER_SECOND = 50


class WavTokenizerModel(RvqModel):
    """audio/rvq's packing and priors with one stage of the "vq" quantizer."""

    codec_id = "audio/wavtokenizer"
    quantizer = "vq"


class WavTokenizerCodec(FrameCodecBase):
    model_class = WavTokenizerModel
    stages_for = STAGES_FOR
    token_dtype = np.int16  # codes < 4096

    def __init__(self, weights: Path = WEIGHTS):
        super().__init__(
            weights, rank=30, default="0.6k",
            summary="neural, 16 kHz, one token per 20 ms frame from one 4096-code codebook (0.6 kbps raw), "
                    "entropy-coded; per channel")

    def check_model(self, model: WavTokenizerModel) -> None:
        if model.cfg.frame_rate != TOKENS_PER_SECOND:
            raise PluginError(f"{self.weights}: audio/wavtokenizer promises {TOKENS_PER_SECOND} tokens/s, "
                              f"these weights make {model.cfg.frame_rate:g}")
