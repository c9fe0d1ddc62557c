"""The frame-rate codec's synthesis and its consistency loss, on signals with known answers."""
import torch

from nc.models.frame_codec import FrameCodec, FrameCodecConfig
from nc.train.losses import MultiScaleMelLoss, stft_consistency

HOP = 320


def _net():
    return FrameCodec(FrameCodecConfig(enc_channels=8, dec_channels=8, latent=4, enc_blocks=1, dec_blocks=1))


def _analysis_frames(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """What a perfectly consistent decoder would synthesize: w * (w * segment), frame t over [(t-1) hop, (t+1) hop)."""
    return torch.nn.functional.pad(x, (HOP, HOP)).unfold(-1, 2 * HOP, HOP) * window.square()


def test_overlap_add_reconstructs_analysed_frames_exactly():
    net, x = _net(), torch.randn(2, 16000)
    wave = net.frames_to_wave(_analysis_frames(x, net.window))
    torch.testing.assert_close(wave[:, :16000], x, atol=1e-5, rtol=0)


def test_consistency_is_zero_for_real_stfts_and_large_for_random_frames():
    net, x = _net(), torch.randn(1, 16000)
    frames = _analysis_frames(x, net.window)
    assert stft_consistency(frames, net.frames_to_wave(frames), net.window, HOP) < 1e-5
    noise = torch.randn_like(frames) * net.window
    assert stft_consistency(noise, net.frames_to_wave(noise), net.window, HOP) > 0.3


def test_mel_loss_is_zero_on_identity_and_grows_with_noise():
    loss, x = MultiScaleMelLoss(16000), 0.3 * torch.randn(1, 16000)
    assert loss(x, x) == 0
    assert loss(x + 0.01 * torch.randn_like(x), x) < loss(x + 0.3 * torch.randn_like(x), x)
