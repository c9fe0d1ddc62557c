"""Reconstruction losses: multi-scale log-mel L1 and waveform L1 for audio codecs, multi-scale SSIM for images."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MultiScaleMelLoss(nn.Module):
    """L1 between log-mel spectrograms at several window sizes (DAC's recipe, scaled to 16 kHz)."""

    def __init__(self, sample_rate: int, windows=(64, 128, 256, 512, 1024, 2048), mels=(5, 10, 20, 40, 80, 160)):
        super().__init__()
        import torchaudio

        self.windows = windows
        for w, m in zip(windows, mels):
            fb = torchaudio.functional.melscale_fbanks(w // 2 + 1, 0.0, sample_rate / 2, m, sample_rate,
                                                       norm="slaney", mel_scale="slaney")
            self.register_buffer(f"fb{w}", fb, persistent=False)
            self.register_buffer(f"win{w}", torch.hann_window(w), persistent=False)

    def log_mel(self, wav: torch.Tensor, w: int) -> torch.Tensor:
        spec = torch.stft(wav.float(), w, w // 4, window=getattr(self, f"win{w}"), return_complex=True).abs()
        mel = spec.transpose(1, 2) @ getattr(self, f"fb{w}")
        return torch.log10(mel.clamp(min=1e-5))

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum((self.log_mel(estimate, w) - self.log_mel(target, w)).abs().mean() for w in self.windows) / len(
            self.windows)


def stft_consistency(frames: torch.Tensor, wave: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
    """How far the decoder's frames are from the frames its own output waveform would give.

    The decoder predicts a magnitude and a phase per frame and overlap-adds them.
    Nothing in a magnitude (mel) loss asks those frames to agree where they
    overlap; when they do not, overlap-add smears them into a rough, phasey
    sound. Re-cutting the output waveform into frames (same window) and
    comparing is a cheap way to ask for agreement. `frames`: windowed frames
    (batch, F, 2 hop) as synthesized; `wave`: their overlap-add, (batch, (F-1) hop).
    """
    # A synthesized frame is w * y_t; it is consistent when y_t = w * (the output cut at frame t), i.e.
    # when the frame equals w^2 times that cut. Frame t of `wave` covers [(t-1) hop, (t+1) hop), so
    # cutting from sample 0 gives frames 1 .. F-2 (the complete interior ones).
    cut = wave.unfold(-1, 2 * hop, hop) * window.square()
    inner = frames[:, 1:1 + cut.shape[1]]
    return (cut - inner).abs().mean() / inner.abs().mean().clamp(min=1e-5)


def log_magnitude_loss(decoded: torch.Tensor, target: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """L1 between log magnitudes of two complex spectra, bin by bin (natural log, floored ~86 dB
    below a full-scale frame). Mel bands average harmonics away; this asks for each of them."""
    return (torch.log(decoded.abs() + floor) - torch.log(target.abs() + floor)).abs().mean()


def magnitude_losses(log_magnitude: torch.Tensor, target: torch.Tensor, floor: float = 1e-2):
    """(log L1, spectral convergence) of predicted log magnitudes against true magnitudes, same layout.

    The log L1 weighs every bin alike, so it is dominated by noise bins whose exact level no
    decoder can know; spectral convergence (relative Frobenius error of the linear magnitudes)
    weighs the loud bins, the pitch harmonics, where the perceived quality is."""
    magnitude = log_magnitude.exp()
    log_l1 = (torch.log(magnitude + floor) - torch.log(target + floor)).abs().mean()
    error = torch.linalg.vector_norm((magnitude - target).flatten(1), dim=1)
    convergence = error / torch.linalg.vector_norm(target.flatten(1), dim=1).clamp(min=1e-3)
    return log_l1, convergence.mean()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-t**2 / (2 * sigma**2))
    return g / g.sum()


def ms_ssim_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """1 - multi-scale SSIM of images (batch, channels, H, W) in [0, 1], the scales weighted equally
    (nc.metrics.ms_ssim's 11-tap Gaussian window, K1 0.01, K2 0.03, contrast-structure terms at every
    scale but the last, clamped at 1e-6 before the root); the short side must exceed 10 * 2^(scales - 1)
    pixels. Runs in float32 even under autocast: blur(x x) - blur(x)^2 in bf16 errs by more than K2^2."""
    with torch.autocast(x.device.type, enabled=False):
        return _ms_ssim_loss(x.float(), y.float(), scales)


def _ms_ssim_loss(x: torch.Tensor, y: torch.Tensor, scales: int) -> torch.Tensor:
    c = x.shape[1]
    g = _gaussian_window().to(x)
    kernels = (g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1))

    def blur(a):
        return F.conv2d(F.conv2d(a, kernels[0], groups=c), kernels[1], groups=c)

    c1, c2 = 0.01**2, 0.03**2
    value = x.new_ones(x.shape[0])
    for i in range(scales):
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov = blur(x * y) - mu_x * mu_y
        cs = (2 * cov + c2) / (var_x + var_y + c2)
        if i == scales - 1:
            cs = cs * (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
        value = value * cs.mean((1, 2, 3)).clamp(min=1e-6) ** (1 / scales)
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return 1 - value.mean()
