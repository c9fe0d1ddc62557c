"""audio/rvq: the frame-rate neural audio codec with residual VQ (nc/models/frame_codec.py).

One model serves 1.5, 3, 6 and 12 kbps per channel (3, 6, 12 or 24 codebooks of
1024 codes at 50 frames/s). Input at any rate is resampled to 16 kHz and back;
channels are coded independently.

Streaming is exact: the encoder and the decoder always run on windows of
WINDOW frames plus a fixed left context, aligned to frame 0 of the track, so
feeding a file in any pieces gives the same codes as feeding it whole.

Packet payload (one per 5 s of input, the last one shorter):

    offset  size  field
    0       2     frames: u16 LE, frames in this packet (250; the last one up to 251)
    2       ...   categorical ANS payload (nc/bitstream/entropy.py) of the codes in
                  (channel, frame, stage) order; the context of each symbol is its
                  stage, whose prior is the frequency table shipped with the weights

Track params: {"stages": codebooks used}.
"""
from __future__ import annotations

import os
import struct
from functools import cached_property
from pathlib import Path

import numpy as np

from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint
from nc.errors import CorruptChunkError, PluginError, UsageError
from nc.media.facts import AudioFacts
from nc.media.resample import StreamResampler

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "audio_rvq.safetensors"
#: NC_RVQ_WEIGHTS points nc at weights you trained yourself (files record the weights' hash, so they
#: decode only where the same weights are installed)
WEIGHTS = Path(os.environ.get("NC_RVQ_WEIGHTS", SHIPPED_WEIGHTS))
WINDOW = 50  # frames per inference window (1 s)
PACKET_SECONDS = 5  # per packet: ~60 bytes of container per packet cost 0.1 kbps
PREROLL_SECONDS = 1.0  # covers the decoder's left context (0.72 s spectral head, 0.94 s wave head)
STAGES_FOR = {"1.5k": 3, "3k": 6, "6k": 12, "12k": 24}
_FRAMES = struct.Struct("<H")


def _point(name: str) -> RatePoint:
    return RatePoint(name, float(name[:-1]) * 1000, "bps")


class RvqModel:
    """The loaded network and its code priors, shared by every encoder and decoder."""

    def __init__(self, path: Path):
        import torch

        from nc.bitstream.entropy import FrequencyTable
        from nc.models.frame_codec import FrameCodec, FrameCodecConfig
        from nc.models.weights import load_weights

        state, extra, meta = load_weights(path)
        cfg = FrameCodecConfig(**meta["config"])
        self.net = FrameCodec(cfg)
        self.net.load_state_dict(state)
        self.net.eval()
        if self.net.decoder_context * cfg.hop > PREROLL_SECONDS * cfg.sample_rate:  # seeks would not be exact
            raise PluginError(f"{path}: the decoder needs {self.net.decoder_context} frames of context, more "
                              f"than audio/rvq's {PREROLL_SECONDS} s seek pre-roll")
        self.cfg = self.net.cfg
        self.priors = FrequencyTable.from_counts(extra["prior.counts"].numpy().astype(np.int64), floor=1)
        self.torch = torch


class RvqCodec(Codec):
    def __init__(self, weights: Path = WEIGHTS):
        from nc.models.weights import sha256_of

        self.weights = weights
        self.descriptor = CodecDescriptor(
            id="audio/rvq", version=1, modality="audio",
            summary="neural, 16 kHz, 50 frames/s, residual VQ 1024 codes x 3-24 stages, entropy-coded; per channel",
            points=tuple(_point(n) for n in STAGES_FOR), default=_point("6k"),
            streaming=True, deterministic=True, weights_sha256=sha256_of(weights), rank=50,
            preroll=PREROLL_SECONDS)

    @cached_property
    def model(self) -> RvqModel:
        return RvqModel(self.weights)

    def check(self, facts: AudioFacts) -> None:
        super().check(facts)
        if facts.channels > 8:
            raise UsageError(f"audio/rvq codes 1-8 channels, not {facts.channels}")

    def encoder(self, facts: AudioFacts, rate: RatePoint) -> Encoder:
        self.check(facts)
        return RvqEncoder(self.model, facts, STAGES_FOR[rate.name])

    def tokenize(self, blocks, facts: AudioFacts, rate: RatePoint) -> np.ndarray:
        """The codes a file would hold, (channels, stages, frames) int16, for generative models."""
        encoder = self.encoder(facts, rate)
        decoder = self.decoder(facts, rate, encoder.params)
        packets = [p for b in blocks for p in encoder.encode(b)] + list(encoder.flush())
        codes = [decoder.unpack(p.payload) for p in packets]
        return np.concatenate(codes, axis=2).astype(np.int16) if codes else np.zeros((facts.channels, 0, 0), np.int16)

    def detokenize(self, codes: np.ndarray, sample_rate: int) -> np.ndarray:
        """Audio (samples, channels) at `sample_rate` from codes (channels, stages, frames)."""
        codes = np.asarray(codes)
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= self.model.cfg.stages:
            raise UsageError(f"audio/rvq tokens must have shape (channels, 1-{self.model.cfg.stages}, frames), "
                             f"not {codes.shape}")
        if codes.min(initial=0) < 0 or codes.max(initial=0) >= self.model.cfg.codebook_size:
            raise UsageError(f"audio/rvq tokens must lie in [0, {self.model.cfg.codebook_size})")
        facts = AudioFacts(sample_rate, codes.shape[0]).validate()
        decoder = RvqDecoder(self.model, facts, codes.shape[1])
        out = np.concatenate([decoder.decode_codes(codes.astype(np.int64)), decoder.flush()])
        samples = (codes.shape[2] - 1) * self.model.cfg.hop * sample_rate // self.model.cfg.sample_rate
        return out[:samples]

    def decoder(self, facts: AudioFacts, rate: RatePoint, params: dict) -> Decoder:
        stages = params.get("stages")
        if not isinstance(stages, int) or not 1 <= stages <= self.model.cfg.stages:
            raise CorruptChunkError(f"audio/rvq track declares {stages!r} stages")
        return RvqDecoder(self.model, facts, stages)


class RvqEncoder(Encoder):
    def __init__(self, model: RvqModel, facts: AudioFacts, stages: int):
        self.m, self.stages, self.channels, self.rate = model, stages, facts.channels, facts.sample_rate
        self.params = {"stages": stages}
        hop = model.cfg.hop
        self.resampler = StreamResampler(facts.sample_rate, model.cfg.sample_rate, facts.channels)
        self.context = model.net.encoder_context * hop
        self.buffer = np.zeros((self.context, facts.channels), np.float32)  # left context, then new samples
        self.codes: list[np.ndarray] = []  # (channels, stages, frames) per window, not yet packed
        self.frames_done = 0  # frames coded so far
        self.frames_packed = 0
        self.n_in = 0
        self.packet_frames = int(PACKET_SECONDS * model.cfg.frame_rate)

    def encode(self, block: np.ndarray):
        self.n_in += len(block)
        self._push(self.resampler.process(block))
        yield from self._packets(final=False)

    def flush(self):
        self._push(self.resampler.flush())
        cfg = self.m.cfg
        total = cfg.frames_for(int(np.ceil(self.n_in * cfg.sample_rate / self.rate)))
        while self.frames_done < total:  # zero-pad to whole windows; extra frames are dropped below
            self._push(np.zeros((WINDOW * cfg.hop, self.channels), np.float32))
        codes = np.concatenate(self.codes, axis=2)[:, :, : total - self.frames_packed] if self.codes else None
        self.codes = [codes] if codes is not None else []
        yield from self._packets(final=True)

    def _push(self, x16: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, x16])
        hop, need = self.m.cfg.hop, WINDOW * self.m.cfg.hop
        while len(self.buffer) >= self.context + need:
            window = self.buffer[: self.context + need]
            self.codes.append(self._encode_window(window))
            self.buffer = self.buffer[need:]
            self.frames_done += WINDOW

    def _encode_window(self, window: np.ndarray) -> np.ndarray:
        torch, net = self.m.torch, self.m.net
        with torch.inference_mode():
            latent = net.encode_latent(torch.from_numpy(np.ascontiguousarray(window.T)))
            codes = net.quantizer.encode(latent[:, :, -WINDOW:], self.stages)
        return codes.numpy().astype(np.int32)

    def _packets(self, final: bool):
        """Full packets while encoding (only once input goes beyond them); at the end, the rest.

        The last packet takes whatever frames remain (up to one packet plus the extra frame that
        closes the overlap-add), so no packet claims samples that do not exist.
        """
        while True:
            available = sum(c.shape[2] for c in self.codes)
            index = self.frames_packed // self.packet_frames
            start = index * PACKET_SECONDS * self.rate
            full = PACKET_SECONDS * self.rate
            if final:
                last = available <= self.packet_frames + 1
            elif available < self.packet_frames or self.n_in <= start + full:
                return
            else:
                last = False
            if not available:
                return
            codes = np.concatenate(self.codes, axis=2)
            take = available if last else self.packet_frames
            self.codes = [codes[:, :, take:]]
            self.frames_packed += take
            # a packet that is not the last has input beyond it, so it covers exactly `full` samples
            yield Packet(self._pack(codes[:, :, :take]), start, max(0, self.n_in - start) if last else full)
            if last:
                return

    def _pack(self, codes: np.ndarray) -> bytes:
        from nc.bitstream.entropy import encode_categorical

        symbols = codes.transpose(0, 2, 1).reshape(-1)  # (channel, frame, stage)
        contexts = np.tile(np.arange(self.stages, dtype=np.int32), codes.shape[0] * codes.shape[2])
        return _FRAMES.pack(codes.shape[2]) + encode_categorical(symbols, self.m.priors, contexts)


class RvqDecoder(Decoder):
    def __init__(self, model: RvqModel, facts: AudioFacts, stages: int):
        self.m, self.stages, self.channels, self.rate = model, stages, facts.channels, facts.sample_rate
        self.reset()

    def reset(self) -> None:
        cfg = self.m.cfg
        self.history = np.zeros((self.channels, cfg.latent, self.m.net.decoder_context), np.float32)
        self.pending = np.zeros((self.channels, cfg.latent, 0), np.float32)
        self.half = np.zeros((self.channels, cfg.hop), np.float32)  # second half of the last frame
        self.skip = cfg.hop  # the first block after a reset lies before the packet's start
        if cfg.head == "magnitude":  # phase retrieval, whose output starts at the packet's start
            from nc.dsp.phase import PhaseRetriever

            self.retriever = PhaseRetriever(self.channels, 2 * cfg.hop, cfg.hop // 2)
            self.skip, self.first_window = 0, True
        self.resampler = StreamResampler(cfg.sample_rate, self.rate, self.channels)

    def decode(self, packet: Packet) -> np.ndarray:
        return self.decode_codes(self.unpack(packet.payload))

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        torch = self.m.torch
        with torch.inference_mode():
            latent = self.m.net.quantizer.decode(torch.from_numpy(codes.astype(np.int64))).numpy()
        self.pending = np.concatenate([self.pending, latent], axis=2)
        return self._drain(final=False)

    def flush(self) -> np.ndarray:
        out = self._drain(final=True)
        if self.m.cfg.head == "magnitude":  # the samples the last frames' windows still cover
            out = np.concatenate([out, self.resampler.process(np.ascontiguousarray(self.retriever.flush().numpy().T))])
        tail = self.resampler.flush()
        self.reset()
        return np.concatenate([out, tail])

    def _drain(self, final: bool) -> np.ndarray:
        blocks = []
        while self.pending.shape[2] >= WINDOW or (final and self.pending.shape[2] > 0):
            n = min(WINDOW, self.pending.shape[2])
            new = np.pad(self.pending[:, :, :n], ((0, 0), (0, 0), (0, WINDOW - n)))
            blocks.append(self._decode_window(new, n))
            self.pending = self.pending[:, :, n:]
        if not blocks:
            return np.zeros((0, self.channels), np.float32)
        wave = np.concatenate(blocks, axis=1)
        drop, self.skip = min(self.skip, wave.shape[1]), self.skip - min(self.skip, wave.shape[1])
        return self.resampler.process(np.ascontiguousarray(wave[:, drop:].T))

    def _decode_window(self, latent: np.ndarray, n: int) -> np.ndarray:
        """The samples of the first `n` frames of `latent` (WINDOW frames; the rest is padding)."""
        torch, net = self.m.torch, self.m.net
        window = np.concatenate([self.history, latent], axis=2)
        self.history = window[:, :, -self.history.shape[2]:]
        with torch.inference_mode():
            if self.m.cfg.head == "magnitude":  # two sub-frames per frame; a reset's first lies before it
                log_mag = net.sub_frame_magnitudes(torch.from_numpy(window))[:, 2 * (window.shape[2] - WINDOW):]
                log_mag, self.first_window = log_mag[:, int(self.first_window): 2 * n], False
                return self.retriever.push(log_mag.exp()).numpy()
            wave, half = net.synthesize_stream(torch.from_numpy(window), WINDOW, torch.from_numpy(self.half))
            wave, self.half = wave.numpy(), half.numpy()
        return wave[:, : n * self.m.cfg.hop]

    def unpack(self, payload: bytes) -> np.ndarray:
        """Codes (channels, stages, frames) of one packet."""
        from nc.bitstream.entropy import decode_categorical

        if len(payload) < _FRAMES.size:
            raise CorruptChunkError("audio/rvq packet is too short")
        (frames,) = _FRAMES.unpack_from(payload)
        if frames > 10 * PACKET_SECONDS * self.m.cfg.frame_rate:
            raise CorruptChunkError(f"audio/rvq packet claims {frames} frames")
        count = self.channels * frames * self.stages
        contexts = np.tile(np.arange(self.stages, dtype=np.int32), self.channels * frames)
        symbols = decode_categorical(payload[_FRAMES.size:], self.m.priors, count, contexts)
        return symbols.reshape(self.channels, frames, self.stages).transpose(0, 2, 1)
