"""Encoder-side refinement of a hyperprior's latents: what `--effort 1` buys with image/hvae and
video/wfvae.

The analysis network computes y in one pass, trained to do well on average over images; for one
image (or GOP) the y that minimises that image's bits + lambda * distortion lies elsewhere (the amortization
gap, largest for a briefly trained model). Refinement searches for it by gradient descent through
the fixed synthesis, with the rounding relaxed by stochastic Gumbel annealing (SGA: Yang, Bamler and
Mandt, "Improving Inference for Neural Image Compression", NeurIPS 2020): each value is pulled
towards its floor or ceiling at random, more surely as the temperature falls, so that the synthesis
learns to live with the rounding the coder will do. The hyper latent, hence every mean and scale,
is kept: the rate term is the bits the coder will spend (a Gaussian's mass over each integer). The
file format does not change; a decoder cannot tell a refined file from another.
"""
from __future__ import annotations

import numpy as np
import torch

from nc.models.hyperprior import gaussian_bits

LEARNING_RATE = 0.05  # in coded symbols (the quantisation step is 1); tuned on held-out photos


def _annealed_round(u: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """SGA: floor(u) + a relaxed Bernoulli draw of the ceiling, likelier the nearer u is to it; as
    the temperature goes to 0 it becomes rounding to the nearest."""
    low = torch.floor(u)
    frac = (u - low).clamp(1e-4, 1 - 1e-4)
    logits = torch.stack([-torch.atanh(frac), -torch.atanh(1 - frac)], -1) / temperature
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator).clamp(1e-10, 1 - 1e-10)))
    return low + torch.softmax(logits + gumbel, -1)[..., 1]


def refine(decode, target: torch.Tensor, weight: torch.Tensor, u0: np.ndarray, scale: np.ndarray,
           lmbda: float, iterations: int, seed: int = 0) -> np.ndarray:
    """Refined continuous symbols u (the coder sends rint(u)), float64 like `u0`.

    decode: symbols (1, *u0.shape), torch float32 -> the pixels they give, shaped like `target`
    (1, K, ...) in [0, 1] (the codec places them among its fixed latents and synthesizes); weight:
    target[:, :1]'s shape, 1 where a pixel counts; scale: the Gaussian scale each symbol is coded
    with (mean 0: the symbols are already centred). The hyper latent is kept, so are the scales.
    Loss: bits per counted pixel + lmbda * 255^2 * their mean squared error (the training's)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.from_numpy(np.asarray(u0, dtype=np.float32))[None].requires_grad_(True)
    log_scale = torch.from_numpy(np.log(scale).astype(np.float32))[None]
    optimizer = torch.optim.Adam([u], lr=LEARNING_RATE)
    pixels = weight.sum()
    for it in range(iterations):
        temperature = 0.5 * max(1e-3, 1 - it / iterations)
        relaxed = _annealed_round(u, temperature, generator)
        error = ((decode(relaxed) - target) ** 2 * weight).sum() / (pixels * target.shape[1])
        bits = gaussian_bits(relaxed, torch.zeros_like(relaxed), log_scale).sum()  # what the coder will spend
        loss = bits / pixels + lmbda * 255**2 * error
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return u.detach()[0].double().numpy()
