"""What nc's frame-rate neural audio codecs share (nc/models/frame_codec.py): audio/rvq and audio/fsq.

Input at any rate is resampled to the model's rate (16 kHz) and back; channels
are coded independently. The codecs differ only in their quantizer and in how a
packet's codes become bytes: a `FrameModel` subclass supplies `pack` and
`unpack`, and everything else (windowed streaming, packets, the decoder's
history and phase retrieval, tokens) is here.

Streaming is exact: the encoder and the decoder always run on windows of
WINDOW frames plus a fixed left context, aligned to frame 0 of the track, so
feeding a file in any pieces gives the same codes as feeding it whole.

Every packet covers PACKET_SECONDS of input (the last one shorter) and its
payload starts with the same header, `frames: u16 LE`, the frames in this packet
(250; the last one up to 251); what follows is the codec's (its module docstring).

Track params: {"stages": quantizer stages used}.
"""
from __future__ import annotations

import struct
from functools import cached_property
from pathlib import Path

import numpy as np

from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint
from nc.codecs.learned_image import one_thread
from nc.errors import CorruptChunkError, PluginError, UsageError
from nc.media.facts import AudioFacts
from nc.media.resample import StreamResampler

WINDOW = 50  # frames per inference window (1 s)
PACKET_SECONDS = 5  # per packet: ~60 bytes of container per packet cost 0.1 kbps
PREROLL_SECONDS = 1.0  # covers the decoder's left context (0.72 s spectral head, 0.94 s wave head)
FRAMES = struct.Struct("<H")


def rate_point(name: str, rank: int | None = None) -> RatePoint:
    """"6k" -> RatePoint("6k", 6000.0, "bps")."""
    return RatePoint(name, float(name[:-1]) * 1000, "bps", rank)


class FrameModel:
    """A loaded network and its code priors, shared by every encoder and decoder of one codec.
    Subclasses name their codec and quantizer and turn a packet's codes into bytes and back."""

    codec_id = ""
    quantizer = ""  # the FrameCodecConfig.quantizer the weights must have

    def __init__(self, path: Path):
        import torch

        from nc.models.frame_codec import FrameCodec, FrameCodecConfig
        from nc.models.weights import load_weights

        state, extra, meta = load_weights(path)
        try:
            cfg = FrameCodecConfig(**meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise PluginError(f"{path}: not {self.codec_id} weights ({e})") from None
        if cfg.quantizer != self.quantizer:
            raise PluginError(f"{path}: {self.codec_id} needs weights with the {self.quantizer} quantizer, "
                              f"these have {cfg.quantizer}")
        self.net = FrameCodec(cfg)
        try:
            self.net.load_state_dict(state)
        except RuntimeError as e:  # tensors missing or of other shapes than the config says
            raise PluginError(f"{path}: the tensors do not match the network its config describes "
                              f"({str(e).splitlines()[0]})") from None
        self.net.eval()
        if self.net.decoder_context * cfg.hop > PREROLL_SECONDS * cfg.sample_rate:  # seeks would not be exact
            raise PluginError(f"{path}: the decoder needs {self.net.decoder_context} frames of context, more "
                              f"than {self.codec_id}'s {PREROLL_SECONDS} s seek pre-roll")
        self.cfg = self.net.cfg
        self.torch = torch
        self.priors = self.load_priors(path, extra)
        self._silence: dict[int, np.ndarray] = {}  # stages -> silence_latent

    def window_codes(self, window: np.ndarray, stages: int) -> np.ndarray:
        """int64 codes (channels, stages, WINDOW) of a window's last WINDOW frames; `window` is
        (channels, samples at the model's rate), the encoder's left context first."""
        torch, net = self.torch, self.net
        with torch.inference_mode(), one_thread(torch):  # the same codes, so the same file, on any machine
            latent = net.encode_latent(torch.from_numpy(np.ascontiguousarray(window)))
            return net.quantizer.encode(latent[:, :, -WINDOW:], stages).numpy().astype(np.int64)

    def silence_latent(self, stages: int) -> np.ndarray:
        """The decoded latent (latent,) of coded silence with `stages` stages: what a decoder's history
        holds before a packet, as the encoder saw silence before it. (Zeros are not silence to every
        bottleneck: FSQ's made a 25 ms burst, up to 0.3 peak, at the start of every decode.)"""
        if stages not in self._silence:
            codes = self.window_codes(np.zeros((1, (self.net.encoder_context + WINDOW) * self.cfg.hop), np.float32),
                                      stages)
            with self.torch.inference_mode(), one_thread(self.torch):
                self._silence[stages] = self.net.quantizer.decode(self.torch.from_numpy(codes))[0, :, -1].numpy()
        return self._silence[stages]

    def load_priors(self, path: Path, extra: dict):
        """The entropy coder's tables, from the tensors shipped beside the network."""
        raise NotImplementedError

    def pack(self, codes: np.ndarray) -> bytes:
        """Codes (channels, stages, frames) of one packet -> its payload after the frame count."""
        raise NotImplementedError

    def unpack(self, data: bytes, channels: int, frames: int, stages: int) -> np.ndarray:
        """Inverse of `pack`: int64 codes (channels, stages, frames); CorruptChunkError (an NCError) for bad data."""
        raise NotImplementedError


class FrameCodecBase(Codec):
    """A frame-rate neural audio codec: `model_class` loads the weights, `stages_for` maps rate-point
    names to quantizer stages, tokens are `token_dtype`."""

    model_class: type[FrameModel] = FrameModel
    stages_for: dict[str, int] = {}
    #: rate points that rank below the codec (see RatePoint.rank)
    point_ranks: dict[str, int] = {}
    token_dtype = np.int64

    def __init__(self, weights: Path, summary: str, rank: int, default: str = "6k"):
        from nc.models.weights import sha256_of

        codec_id = self.model_class.codec_id
        if not Path(weights).is_file():
            raise PluginError(f"{codec_id} has no weights at {weights}")
        self.weights = weights
        self.descriptor = CodecDescriptor(
            id=codec_id, version=1, modality="audio", summary=summary,
            points=tuple(rate_point(n, self.point_ranks.get(n)) for n in self.stages_for), default=rate_point(default),
            streaming=True, deterministic=True, weights_sha256=sha256_of(weights), rank=rank,
            preroll=PREROLL_SECONDS)

    @cached_property
    def model(self) -> FrameModel:
        model = self.model_class(self.weights)
        self.check_model(model)
        return model

    def check_model(self, model: FrameModel) -> None:
        """Raise PluginError if the loaded weights cannot serve this codec's rate points."""

    def check(self, facts: AudioFacts) -> None:
        super().check(facts)
        if facts.channels > 8:
            raise UsageError(f"{self.descriptor.id} codes 1-8 channels, not {facts.channels}")

    def encoder(self, facts: AudioFacts, rate: RatePoint) -> Encoder:
        self.check(facts)
        return FrameEncoder(self.model, facts, self.stages_for[rate.name])

    def decoder(self, facts: AudioFacts, rate: RatePoint, params: dict) -> Decoder:
        stages = params.get("stages")
        if not isinstance(stages, int) or not 1 <= stages <= self.model.cfg.quantizer_stages:
            raise CorruptChunkError(f"{self.descriptor.id} track declares {stages!r} stages")
        return FrameDecoder(self.model, facts, stages)

    def tokenize(self, blocks, facts: AudioFacts, rate: RatePoint) -> np.ndarray:
        """The codes a file would hold, (channels, stages, frames) of `token_dtype`, for generative models."""
        encoder = self.encoder(facts, rate)
        decoder = self.decoder(facts, rate, encoder.params)
        packets = [p for b in blocks for p in encoder.encode(b)] + list(encoder.flush())
        codes = [decoder.unpack(p.payload) for p in packets]
        dtype = self.token_dtype
        return np.concatenate(codes, axis=2).astype(dtype) if codes else np.zeros((facts.channels, 0, 0), dtype)

    def detokenize(self, codes: np.ndarray, sample_rate: int) -> np.ndarray:
        """Audio (samples, channels) at `sample_rate` from codes (channels, stages, frames)."""
        cfg, name = self.model.cfg, self.descriptor.id
        codes = np.asarray(codes)
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= cfg.quantizer_stages:
            raise UsageError(f"{name} tokens must have shape (channels, 1-{cfg.quantizer_stages}, frames), "
                             f"not {codes.shape}")
        if codes.dtype.kind not in "iu" and not (codes.dtype.kind == "f" and np.array_equal(codes, np.trunc(codes))):
            raise UsageError(f"{name} tokens must be integers, not {codes.dtype}")
        if codes.min(initial=0) < 0 or codes.max(initial=0) >= cfg.codes_per_stage:
            raise UsageError(f"{name} tokens must lie in [0, {cfg.codes_per_stage})")
        facts = AudioFacts(sample_rate, codes.shape[0]).validate()
        decoder = FrameDecoder(self.model, facts, codes.shape[1])
        out = np.concatenate([decoder.decode_codes(codes.astype(np.int64)), decoder.flush()])
        samples = (codes.shape[2] - 1) * cfg.hop * sample_rate // cfg.sample_rate
        return out[:samples]


class FrameEncoder(Encoder):
    def __init__(self, model: FrameModel, facts: AudioFacts, stages: int):
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
        need = WINDOW * self.m.cfg.hop
        while len(self.buffer) >= self.context + need:
            window = self.buffer[: self.context + need]
            self.codes.append(self.m.window_codes(window.T, self.stages))
            self.buffer = self.buffer[need:]
            self.frames_done += WINDOW

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
        return FRAMES.pack(codes.shape[2]) + self.m.pack(codes)


class FrameDecoder(Decoder):
    def __init__(self, model: FrameModel, facts: AudioFacts, stages: int):
        self.m, self.stages, self.channels, self.rate = model, stages, facts.channels, facts.sample_rate
        self.reset()

    def reset(self) -> None:
        cfg = self.m.cfg
        silence = self.m.silence_latent(self.stages).astype(np.float32)
        self.history = np.tile(silence[None, :, None], (self.channels, 1, self.m.net.decoder_context))
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
        with torch.inference_mode(), one_thread(torch):  # (channels are a batch: its sums round by thread count)
            latent = self.m.net.quantizer.decode(torch.from_numpy(codes.astype(np.int64))).numpy()
        self.pending = np.concatenate([self.pending, latent], axis=2)
        return self._drain(final=False)

    def flush(self) -> np.ndarray:
        out = self._drain(final=True)
        if self.m.cfg.head == "magnitude":  # the samples the last frames' windows still cover
            with one_thread(self.m.torch):
                covered = self.retriever.flush().numpy()
            out = np.concatenate([out, self.resampler.process(np.ascontiguousarray(covered.T))])
        elif self.skip == 0:  # the last frame's overlap-add tail (polar; zeros for wave): the hop the
            # next packet's first frame would complete, which faded out beats silence before a gap
            out = np.concatenate([out, self.resampler.process(np.ascontiguousarray(self.half.T))])
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
        # on one thread: other counts move the magnitudes by rounding, and the phase retrieval's peak
        # picking turns that into audibly different phases (RMS -17 dB of the signal, 1 against 2 threads)
        with torch.inference_mode(), one_thread(torch):
            if self.m.cfg.head == "magnitude":  # two sub-frames per frame; a reset's first lies before it
                log_mag = net.sub_frame_magnitudes(torch.from_numpy(window))[:, 2 * (window.shape[2] - WINDOW):]
                log_mag, self.first_window = log_mag[:, int(self.first_window): 2 * n], False
                return self.retriever.push(log_mag.exp()).numpy()
            wave, half = net.synthesize_stream(torch.from_numpy(window), WINDOW, torch.from_numpy(self.half))
            wave, self.half = wave.numpy(), half.numpy()
        return wave[:, : n * self.m.cfg.hop]

    def unpack(self, payload: bytes) -> np.ndarray:
        """Codes (channels, stages, frames) int64 of one packet."""
        name = self.m.codec_id
        if len(payload) < FRAMES.size:
            raise CorruptChunkError(f"{name} packet is too short")
        (frames,) = FRAMES.unpack_from(payload)
        if frames > PACKET_SECONDS * self.m.cfg.frame_rate + 1:  # a packet's frames and the one closing its overlap
            raise CorruptChunkError(f"{name} packet claims {frames} frames")
        return self.m.unpack(payload[FRAMES.size:], self.channels, frames, self.stages)
