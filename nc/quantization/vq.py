"""One large VQ codebook kept fully used: k-means start, EMA updates, dead-code restarts (EnCodec's
EuclideanCodebook, as WavTokenizer uses it).

A single codebook is what generative models want to predict (one token per
frame, no stack of levels), but a large one collapses easily: most codes die
and the rest carry the bits. Three things keep every code alive:

- k-means initialisation on real latents (`kmeans_init`), so codes start where
  the data are rather than where a random draw put them;
- exponential moving averages instead of gradients for the code vectors: each
  code moves to the running mean of the latents assigned to it, which needs no
  learning rate and cannot push an unused code further away;
- dead-code restarts: a code whose running count falls below `dead_share` of an
  even share is moved onto a recent latent.

The codes live in the latent space itself, so the chosen vector is the
quantized latent; there is no projection to learn.
"""
from __future__ import annotations

import torch
from torch import nn

from nc.quantization.rvq import QuantizerOutput


def kmeans(x: torch.Tensor, k: int, iterations: int = 10, seed: int = 0) -> torch.Tensor:
    """k centroids (k, dim) of the rows of x (n, dim), n >= k: Lloyd's algorithm from a k-means++
    start (plain random starts leave clusters sharing a centroid); an emptied cluster takes a random row."""
    g = torch.Generator().manual_seed(seed)
    centroids = kmeans_plus_plus(x, k, g)
    for _ in range(iterations):
        assign = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1).unsqueeze(1)
        centroids[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=g)]
    return centroids


def kmeans_plus_plus(x: torch.Tensor, k: int, g: torch.Generator, pool: int = 4) -> torch.Tensor:
    """k rows of x drawn one by one, each with probability proportional to its squared distance from
    the rows already drawn (Arthur and Vassilvitskii 2007), from a random pool of pool * k rows
    (the draw is sequential: on all of a large x it takes minutes)."""
    x = x[torch.randperm(len(x), generator=g)[: pool * k]]
    picks = [0]
    distance = (x - x[0]).square().sum(1)
    for u in torch.rand(k - 1, generator=g, dtype=torch.float64):
        total = distance.double().cumsum(0)
        i = min(int(torch.searchsorted(total, u * total[-1], right=True)), len(x) - 1)
        picks.append(i)
        distance = torch.minimum(distance, (x - x[i]).square().sum(1))
    return x[picks].clone()


def rows(x: torch.Tensor) -> torch.Tensor:
    """(batch, dim, frames) -> one latent per row, (batch * frames, dim)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def nearest(x: torch.Tensor, codes: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest row of `codes` (k, dim) for each row of x (n, dim), in chunks of rows."""
    norms = codes.square().sum(1)
    return torch.cat([(norms - 2 * part @ codes.T).argmin(1) for part in x.split(chunk)])


class EmaCodebook(nn.Module):
    """The codebook (`embed`, (size, dim)) with its EMA statistics; `usage` is the running count
    of each code (the trainer's usage report reads it, as it does RVQ stages'); `recent` holds the
    latents of the last update, which dead codes restart onto."""

    def __init__(self, dim: int, size: int, decay: float = 0.99, epsilon: float = 1e-5):
        super().__init__()
        self.decay, self.epsilon = decay, epsilon
        self.register_buffer("embed", torch.randn(size, dim))
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("usage", torch.zeros(size))
        self.register_buffer("initialized", torch.zeros(()))  # 1 once k-means has run
        self.recent: torch.Tensor | None = None

    def set(self, vectors: torch.Tensor) -> None:
        """Start the codebook (and its statistics) at `vectors`, as if each had been seen once."""
        self.embed.copy_(vectors)
        self.embed_sum.copy_(vectors)
        self.usage.fill_(1.0)
        self.initialized.fill_(1.0)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """One EMA step from latents (n, dim) and their codes (n,): each code moves towards the
        mean of the latents it was chosen for (Laplace-smoothed counts, as in EnCodec)."""
        size = self.embed.shape[0]
        counts = torch.bincount(codes, minlength=size).to(flat.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.usage.sum()
        smoothed = (self.usage + self.epsilon) / (total + size * self.epsilon) * total
        self.embed.copy_(self.embed_sum / smoothed.unsqueeze(1))
        self.recent = flat

    @torch.no_grad()
    def restart_dead_codes(self, recent: torch.Tensor | None = None, dead_share: float = 0.03) -> int:
        """Move codes used less than `dead_share` of an even share onto random recent latents (the
        last update's by default), each onto a different one while there are enough: two codes on
        one latent tie, and the second never wins."""
        recent = self.recent if recent is None else recent
        dead = self.usage < dead_share * self.usage.sum() / self.usage.numel()
        n = int(dead.sum())
        if n and recent is not None and len(recent):
            pick = recent[torch.randperm(len(recent), device=recent.device)[:n]]
            if len(pick) < n:  # fewer latents than dead codes: the rest land near random ones
                extra = recent[torch.randint(len(recent), (n - len(pick),), device=recent.device)]
                pick = torch.cat([pick, extra + 1e-3 * recent.std() * torch.randn_like(extra)])
            self.embed[dead] = pick
            self.embed_sum[dead] = pick * 1.0
            self.usage[dead] = 1.0  # as though seen once: the next EMA steps decide
        return n


class EmaVQ(nn.Module):
    """A one-stage quantizer with ResidualVQ's calls (forward, encode, decode, relative_error,
    restart_dead_codes), so FrameCodec and its trainer treat it alike: codes are (batch, 1, frames)."""

    def __init__(self, dim: int, codebook_size: int = 4096, decay: float = 0.99):
        super().__init__()
        self.stages = nn.ModuleList([EmaCodebook(dim, codebook_size, decay)])
        self.codebook_size = codebook_size

    @property
    def codebook(self) -> EmaCodebook:
        return self.stages[0]

    @torch.no_grad()
    def kmeans_init(self, latents: torch.Tensor, iterations: int = 10) -> None:
        """Start the codebook at k-means centroids of latents (batch, dim, frames); needs at least
        codebook_size frames."""
        flat = rows(latents.float())
        if len(flat) < self.codebook_size:
            raise ValueError(f"k-means of {self.codebook_size} codes needs as many latent frames, got {len(flat)}")
        self.codebook.set(kmeans(flat.cpu(), self.codebook_size, iterations).to(latents.device))

    def forward(self, x: torch.Tensor, n_stages: torch.Tensor | int | None = None) -> QuantizerOutput:
        """Quantize (batch, dim, frames); n_stages is accepted for ResidualVQ's signature (one stage)."""
        flat = rows(x.detach())
        codes = nearest(flat, self.codebook.embed)
        q = self.codebook.embed[codes].view(x.shape[0], x.shape[2], -1).transpose(1, 2)
        if self.training and torch.is_grad_enabled():
            self.codebook.update(flat, codes)
        commitment = ((x - q.detach()) ** 2).mean()
        return QuantizerOutput(x + (q - x).detach(), codes.view(x.shape[0], 1, -1), commitment, x.new_zeros(()))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_stages: int = 1) -> torch.Tensor:
        return nearest(rows(x), self.codebook.embed).view(x.shape[0], 1, -1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codebook.embed[codes[:, 0]].transpose(1, 2)

    @torch.no_grad()
    def relative_error(self, x: torch.Tensor, n_stages: int = 1) -> float:
        return float((x - self.decode(self.encode(x))).norm() / x.norm().clamp(min=1e-9))

    def restart_dead_codes(self) -> int:
        return self.codebook.restart_dead_codes()


class ResidualEmaVQ(nn.Module):
    """EnCodec's residual VQ: `stages` EMA codebooks in the latent space, each quantizing what the
    stages before it left, with dead-code restarts; ResidualVQ's calls, so a model can take either.

    Unlike ResidualVQ's factorized codes, no projection is shared by all of a stage's codes: a
    gradient-trained shared projection can shrink every code onto the mean latent at once, which
    collapsed an image model to one code per stage within 50 steps. The commitment term is one, on
    the sum of the stages (EnCodec has one per stage). Under quantizer dropout an example's codes
    for the stages it skipped are still computed (on its unchanged residual) but neither used nor
    learned from."""

    def __init__(self, dim: int, stages: int, codebook_size: int = 1024, decay: float = 0.99):
        super().__init__()
        self.stages = nn.ModuleList(EmaCodebook(dim, codebook_size, decay) for _ in range(stages))
        self.codebook_size = codebook_size

    def forward(self, x: torch.Tensor, n_stages: torch.Tensor | int | None = None) -> QuantizerOutput:
        """Quantize (batch, dim, frames) with the first n_stages stages (per example when a tensor:
        quantizer dropout); EMA updates and restarts learn from the examples that use a stage."""
        b = x.shape[0]
        n = torch.full((b,), len(self.stages), device=x.device) if n_stages is None else (
            torch.full((b,), int(n_stages), device=x.device) if isinstance(n_stages, int) else n_stages)
        residual, quantized, codes = x.detach(), torch.zeros_like(x), []
        update = self.training and torch.is_grad_enabled()
        for i, stage in enumerate(self.stages):
            if int(n.max()) <= i:
                break
            keep = n > i
            flat = rows(residual)
            c = nearest(flat, stage.embed)
            q = stage.embed[c].view(b, x.shape[2], -1).transpose(1, 2)
            if update:
                used = keep.repeat_interleave(x.shape[2])
                stage.update(flat[used], c[used])
            q = q * keep.view(b, 1, 1)
            quantized, residual = quantized + q, residual - q
            codes.append(c.view(b, -1))
        commitment = ((x - quantized.detach()) ** 2).mean()
        return QuantizerOutput(x + (quantized - x).detach(), torch.stack(codes, 1), commitment, x.new_zeros(()))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_stages: int) -> torch.Tensor:
        residual, codes = x, []
        for stage in self.stages[:n_stages]:
            c = nearest(rows(residual), stage.embed).view(x.shape[0], -1)
            residual = residual - stage.embed[c].transpose(1, 2)
            codes.append(c)
        return torch.stack(codes, 1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(stage.embed[codes[:, i]].transpose(1, 2) for i, stage in enumerate(self.stages[:codes.shape[1]]))

    @torch.no_grad()
    def relative_error(self, x: torch.Tensor, n_stages: int) -> float:
        return float((x - self.decode(self.encode(x, n_stages))).norm() / x.norm().clamp(min=1e-9))

    def restart_dead_codes(self) -> int:
        return sum(stage.restart_dead_codes() for stage in self.stages)
