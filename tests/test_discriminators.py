"""The adversarial pieces: shapes, hinge losses at their known values, feature matching zero on equal input."""
import torch

from nc.train.discriminators import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses


def test_feature_matching_is_zero_for_identical_audio_and_positive_otherwise():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=(128, 256), channels=8)
    wav = 0.1 * torch.randn(2, 4000)
    real = disc(wav)
    assert len(real) == 2 and all(logits.dim() == 4 for logits, _ in real)
    _, same = generator_losses(real, disc(wav))
    _, different = generator_losses(real, disc(0.1 * torch.randn(2, 4000)))
    assert same.item() == 0.0 and different.item() > 0.1


def test_hinge_losses_at_known_logits():
    ones, minus = torch.ones(1, 1, 3, 3), -torch.ones(1, 1, 3, 3)
    assert float(discriminator_loss([(ones, [])], [(minus, [])])) == 0.0  # perfect discriminator
    assert float(discriminator_loss([(minus, [])], [(ones, [])])) == 4.0  # perfectly fooled
    adversarial, _ = generator_losses([(ones, [])], [(ones, [])])
    assert float(adversarial) == 0.0


def test_codec_gradient_flows_through_the_discriminator():
    disc = MultiScaleSTFTDiscriminator(n_ffts=(128,), channels=8)
    fake = (0.1 * torch.randn(1, 2000)).requires_grad_()
    adversarial, matching = generator_losses(disc(0.1 * torch.randn(1, 2000)), disc(fake))
    (adversarial + matching).backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
