"""A frame-rate neural audio codec: learned analysis, ConvNeXt encoder, quantizer, ConvNeXt decoder, iSTFT.

All the network's work happens at 50 frames/s (hop 320 at 16 kHz), not per
sample, which is what makes it cheap enough to train and run on a CPU (the
Vocos idea, applied to both sides). Three decoder heads:

- "magnitude": the decoder predicts only log magnitudes, of 640-sample frames
  every hop/2 (two per latent frame, a 4x-overlapped STFT), and the phase is
  retrieved at decode time (nc/dsp/phase.py). Training is a plain regression
  on magnitudes, so it learns pitch harmonics far sooner than a decoder that
  must also get phase right (bench/results/audio_oracles.md: exact magnitudes
  with retrieved phase score PESQ 3.07, a decoder with learned phase 1.2).
- "polar": a log-magnitude and a phase per bin of the hop-spaced frames;
  frames are overlap-added with a square-root Hann window, whose squares sum
  to one at 50 % overlap, so no normalisation is needed.
- "wave": causal upsampling convolutions draw the waveform.

Quantizer ("quantizer" in the config): "rvq", residual VQ over the whole latent
(nc/quantization/rvq.py); "fsq", residual finite scalar quantization
(nc/quantization/fsq.py): each stage rounds a len(fsq_levels)-dimensional
projection of the residual to a fixed grid and projects it back up
(FSQBottleneck); or "vq", one large EMA codebook, one token per frame
(nc/quantization/vq.py, audio/wavtokenizer). All take the same calls:
quantizer(latent, n_stages) -> QuantizerOutput, encode(latent, n_stages) ->
int64 codes (batch, stages, frames), decode(codes) -> latent; FSQ's fixed grids
have no dead codes to restart. The encoder and decoder have the same shapes
either way, so FSQ and VQ models can start from trained RVQ weights.

Timing: frame t's analysis window and synthesis window both cover samples
[(t-1) hop, (t+1) hop). Output samples [(k-1) hop, k hop) are the overlap of
frames k-1 and k, so a signal of T samples needs ceil(T / hop) + 1 frames.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from nc.nn.layers import Backbone, CausalConv1d, WaveUpsampler
from nc.quantization.fsq import FSQBottleneck
from nc.quantization.rvq import ResidualVQ
from nc.quantization.vq import EmaVQ


@dataclass(frozen=True)
class FrameCodecConfig:
    sample_rate: int = 16000
    hop: int = 320
    enc_channels: int = 192
    enc_blocks: int = 4
    dec_channels: int = 256
    dec_blocks: int = 6
    latent: int = 128
    stages: int = 24
    codebook_size: int = 1024
    code_dim: int = 8
    choose: str = "cosine"  # how a quantizer stage picks its code (nc/quantization/rvq.py); "euclidean" for new models
    # decoder output (module docstring): "magnitude", "polar" or "wave" (up_strides multiply to hop)
    head: str = "polar"
    up_strides: tuple = (4, 4, 4, 5)
    up_channels: int = 128
    # "rvq" (stages x codebook_size codes), "fsq" (fsq_stages x the grid fsq_levels; module docstring)
    # or "vq" (one EMA codebook of codebook_size codes, nc/quantization/vq.py).
    # (8, 8, 5, 5, 5, 5): 40,000 codes, log2 = 15.29 bits a stage, 764.4 bps a stage at 50 frames/s
    quantizer: str = "rvq"
    fsq_levels: tuple = (8, 8, 5, 5, 5, 5)
    fsq_stages: int = 8

    def __post_init__(self):
        # JSON (weights metadata) gives lists; keep the config hashable and equal to the one saved
        object.__setattr__(self, "up_strides", tuple(self.up_strides))
        object.__setattr__(self, "fsq_levels", tuple(int(n) for n in self.fsq_levels))
        if self.quantizer not in ("rvq", "fsq", "vq"):
            raise ValueError(f"quantizer must be rvq, fsq or vq, not {self.quantizer!r}")
        if self.quantizer == "fsq" and (not self.fsq_levels or self.fsq_stages < 1):
            raise ValueError(f"FSQ needs levels and at least one stage, not {self.fsq_levels} x {self.fsq_stages}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def quantizer_stages(self) -> int:
        """Stages the quantizer has: the most a rate point can use."""
        return {"fsq": self.fsq_stages, "vq": 1}.get(self.quantizer, self.stages)

    @property
    def codes_per_stage(self) -> int:
        """Distinct codes one stage can emit (its int64 codes lie in [0, codes_per_stage))."""
        return math.prod(self.fsq_levels) if self.quantizer == "fsq" else self.codebook_size

    @property
    def stage_bits(self) -> float:
        """Raw bits of one stage's code, log2(codes_per_stage)."""
        return math.log2(self.codes_per_stage)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def frames_for(self, samples: int) -> int:
        return math.ceil(samples / self.hop) + 1


class FrameCodec(nn.Module):
    def __init__(self, cfg: FrameCodecConfig):
        super().__init__()
        self.cfg = cfg
        n_fft = 2 * cfg.hop
        self.analysis = CausalConv1d(1, cfg.enc_channels, n_fft, stride=cfg.hop)
        # the encoder also sees each frame's log magnitude spectrum: a phase-free view where pitch
        # harmonics are explicit (the learned conv alone lost them)
        self.encoder = Backbone(cfg.enc_channels + cfg.hop + 1, cfg.enc_channels, cfg.latent, cfg.enc_blocks)
        if cfg.quantizer == "fsq":
            self.quantizer = FSQBottleneck(cfg.latent, cfg.fsq_levels, cfg.fsq_stages)
        elif cfg.quantizer == "vq":
            self.quantizer = EmaVQ(cfg.latent, cfg.codebook_size)
        else:
            self.quantizer = ResidualVQ(cfg.latent, cfg.stages, cfg.codebook_size, cfg.code_dim, cfg.choose)
        if cfg.head not in ("magnitude", "polar", "wave"):
            raise ValueError(f"head must be magnitude, polar or wave, not {cfg.head!r}")
        if cfg.head == "wave":
            if math.prod(cfg.up_strides) != cfg.hop:
                raise ValueError(f"up_strides {cfg.up_strides} must multiply to the hop {cfg.hop}")
            self.decoder = Backbone(cfg.latent, cfg.dec_channels, cfg.dec_channels, cfg.dec_blocks)
            self.upsampler = WaveUpsampler(cfg.dec_channels, tuple(cfg.up_strides), cfg.up_channels)
        else:  # polar: magnitude and phase of one frame; magnitude: magnitudes of two frames
            self.decoder = Backbone(cfg.latent, cfg.dec_channels, n_fft + 2, cfg.dec_blocks)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True).sqrt(), persistent=False)
        # frames of left context a window needs so its outputs equal the whole-signal outputs
        self.encoder_context = self.encoder.receptive + 1
        self.decoder_context = self.decoder.receptive + (self.upsampler.receptive + 1 if cfg.head == "wave" else 0)

    def pad(self, wav: torch.Tensor) -> torch.Tensor:
        """Zero-pad (batch, samples) to exactly frames_for(samples) * hop samples."""
        frames = self.cfg.frames_for(wav.shape[-1])
        return nn.functional.pad(wav, (0, frames * self.cfg.hop - wav.shape[-1]))

    def frame_spectrum(self, wav: torch.Tensor) -> torch.Tensor:
        """Complex spectrum (batch, bins, frames) of the square-root-Hann frames the codec works in;
        a decoder predicting exactly this reconstructs `wav` perfectly. `wav` as for encode_latent."""
        hop = self.cfg.hop
        frames = nn.functional.pad(wav, (hop, 0)).unfold(-1, 2 * hop, hop) * self.window  # same framing as analysis
        with torch.autocast(wav.device.type, enabled=False):
            return torch.fft.rfft(frames.float()).transpose(1, 2)

    def encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """(batch, samples), samples a multiple of hop -> latent (batch, latent, frames)."""
        log_mag = torch.log(self.frame_spectrum(wav).abs() + 1e-5)
        return self.encoder(torch.cat([self.analysis(wav.unsqueeze(1)), log_mag.to(wav.dtype)], dim=1))

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (batch, latent, frames) -> waveform (batch, (frames - 1) * hop), from frame 0's centre."""
        if self.cfg.head == "magnitude":
            from nc.dsp.phase import PhaseRetriever

            retriever = PhaseRetriever(latent.shape[0], 2 * self.cfg.hop, self.cfg.hop // 2)
            magnitudes = self.sub_frame_magnitudes(latent)[:, 1:].exp()  # sub-frame 0 lies before sample 0
            wave = torch.cat([retriever.push(magnitudes), retriever.flush()], dim=1)
            return wave[:, : (latent.shape[-1] - 1) * self.cfg.hop]
        # the stream pass over every frame from a reset; block 0 lies before frame 0's centre
        start = torch.zeros(latent.shape[0], self.cfg.hop, device=latent.device)
        return self.synthesize_stream(latent, latent.shape[-1], start)[0][:, self.cfg.hop:]

    def synthesize_stream(self, latent: torch.Tensor, new: int, half: torch.Tensor):
        """Streaming synthesis: the samples of the last `new` frames of `latent` (earlier frames are
        context), frame t giving the hop samples that end at t * hop. `half` is what the previous
        call returned (the spectral heads' overlap-add tail; zeros after a reset).
        Returns (waveform (batch, new * hop), half for the next call). Not for the magnitude head,
        whose phase retrieval carries its own state (nc/codecs/rvq.py drives it)."""
        if self.cfg.head == "magnitude":
            raise ValueError("the magnitude head streams through sub_frame_magnitudes and a PhaseRetriever")
        if self.cfg.head == "wave":
            return self.upsampler(self.decoder(latent))[:, -new * self.cfg.hop:], half
        frames = self.spectral_frames(self.decode_spectrum(latent))[:, -new:]
        return self.frames_to_wave(frames, half), frames[:, -1, self.cfg.hop:]

    def sub_frame_magnitudes(self, latent: torch.Tensor) -> torch.Tensor:
        """The magnitude head's log magnitudes (batch, 2 frames, bins), float32. Latent frame t gives
        sub-frames 2t and 2t + 1: the 2 hop-sample frames centred at t hop - hop/2 and t hop, so
        sub-frame 0 lies before sample 0 (callers starting there drop it). Causal like the polar
        head: the last of them ends where latent frame t's analysis window ends."""
        out = self.decoder(latent)
        with torch.autocast(out.device.type, enabled=False):
            b, c, f = out.shape
            out = out.float().view(b, 2, c // 2, f).permute(0, 3, 1, 2).reshape(b, 2 * f, c // 2)
            return out.clamp(max=8.0)

    def sub_frame_spectrum(self, wav: torch.Tensor) -> torch.Tensor:
        """|STFT| (batch, 2 frames - 1, bins) the magnitude head should predict: frames of 2 hop
        samples every hop/2, centred at 0, hop/2, ... (sub-frames 1, 2, ... of sub_frame_magnitudes).
        `wav` as for encode_latent."""
        hop = self.cfg.hop
        frames = wav.shape[-1] // hop
        cut = nn.functional.pad(wav, (hop, hop)).unfold(-1, 2 * hop, hop // 2)[:, : 2 * frames - 1] * self.window
        with torch.autocast(wav.device.type, enabled=False):
            return torch.fft.rfft(cut.float()).abs()

    def decode_spectrum(self, latent: torch.Tensor) -> torch.Tensor:
        """The decoder's complex spectrum (batch, bins, frames), float32: magnitude and phase per bin."""
        out = self.decoder(latent)
        with torch.autocast(out.device.type, enabled=False):  # FFTs of size 640 need float32
            out = out.float()
            bins = self.cfg.hop + 1
            log_mag, phase = out[:, :bins], out[:, bins:]
            return torch.polar(torch.exp(log_mag.clamp(max=6.0)), phase)

    def spectral_frames(self, spec: torch.Tensor) -> torch.Tensor:
        """Windowed time-domain frames (batch, frames, 2 hop) of a spectrum (batch, bins, frames)."""
        with torch.autocast(spec.device.type, enabled=False):
            return torch.fft.irfft(spec.transpose(1, 2), n=2 * self.cfg.hop) * self.window

    def frames_to_wave(self, frames: torch.Tensor, previous_half: torch.Tensor | None = None) -> torch.Tensor:
        """Overlap-add: sample block k = second half of frame k-1 + first half of frame k.

        Without `previous_half` the first frame only completes the next block, so
        F frames give F - 1 blocks; with it (streaming), F frames give F blocks.
        """
        hop = self.cfg.hop
        first, second = frames[..., :hop], frames[..., hop:]
        if previous_half is None:
            return (second[:, :-1] + first[:, 1:]).reshape(frames.shape[0], -1)
        prev = torch.cat([previous_half.unsqueeze(1), second[:, :-1]], dim=1)
        return (prev + first).reshape(frames.shape[0], -1)

    def forward(self, wav: torch.Tensor, n_stages: torch.Tensor | int | None = None,
                return_frames: bool = False):
        """Training pass: wav (batch, samples) -> reconstruction of the same length, quantizer output
        (and, with `return_frames`, the decoded spectrum, its frames and their full overlap-add).
        The magnitude head returns (log magnitudes as sub_frame_spectrum lays them out, quantizer output)."""
        latent = self.encode_latent(self.pad(wav))
        with torch.autocast(latent.device.type, enabled=False):  # nearest-code search in float32
            q = self.quantizer(latent.float(), n_stages)
        if self.cfg.head == "magnitude":  # no waveform in training: sub-frames 1.. of the log magnitudes
            return self.sub_frame_magnitudes(q.quantized)[:, 1:], q
        if self.cfg.head == "wave":
            full, spec, frames = self.synthesize(q.quantized), None, None
        else:
            spec = self.decode_spectrum(q.quantized)
            frames = self.spectral_frames(spec)
            full = self.frames_to_wave(frames)
        if return_frames:
            return full[:, : wav.shape[-1]], q, spec, frames, full
        return full[:, : wav.shape[-1]], q

    @torch.no_grad()
    def reconstruct(self, wav: torch.Tensor, n_stages: int) -> torch.Tensor:
        """Encode, quantize with `n_stages` and decode (batch, samples) -> the same length; for evaluation."""
        codes = self.quantizer.encode(self.encode_latent(self.pad(wav)), n_stages)
        return self.synthesize(self.quantizer.decode(codes))[:, : wav.shape[-1]]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
