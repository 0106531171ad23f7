"""Variational autoencoder scored by reconstruction probability (An & Cho, 2015).

The encoder maps a row (or a flattened window of rows) to a Gaussian over the latent space; the decoder maps a
latent point to a Gaussian over the input: a mean and a variance per feature. The anomaly score is the negative
log-likelihood of the input under the decoded Gaussian, averaged over `samples` latent draws: a row the model
finds improbable, either far from the mean or where the model is confident, scores high.

Per-feature errors are the per-feature terms of that negative log-likelihood, shifted by a constant so they are
never negative: the variance is bounded below by `min_variance`, and with it each term
    0.5 * log(2*pi*var) + 0.5 * (x - mean)**2 / var
is at least 0.5 * log(2*pi*min_variance); that constant is subtracted, leaving
    0.5 * log(var / min_variance) + 0.5 * (x - mean)**2 / var  >= 0.
The shift is the same for every feature and row, so rankings and per-feature shares stay meaningful.

The latent draws used for scoring are fixed by `seed` and shared by every sample, so scores do not depend on
batching or chunking and a saved model reloads to identical scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError
from .dense import _stack


@dataclass
class Config:
    n_features: int
    window: int = 1
    hidden: list[int] | None = None  # encoder layer sizes; the decoder mirrors them
    encoding_dim: int | None = None  # latent size
    dropout: float = 0.0
    samples: int = 10  # latent draws averaged for the reconstruction probability
    min_variance: float = 1e-3  # lower bound of the decoder's variance (keeps the likelihood finite)
    seed: int = 0  # fixes the latent draws used for scoring

    def __post_init__(self):
        width = self.n_features * self.window
        if self.encoding_dim is None:
            self.encoding_dim = max(1, min(16, width // 4))
        if self.hidden is None:
            first = min(128, max(16, width))
            self.hidden = [first, max(2 * self.encoding_dim, first // 2)]
        self.hidden = [int(h) for h in self.hidden]
        if int(self.samples) < 1:
            raise DataError(f"--samples must be at least 1, got {self.samples}")
        self.samples, self.encoding_dim = int(self.samples), int(self.encoding_dim)


class Model(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.span = self.scored = config.window
        width = config.n_features * config.window
        self.encoder = nn.Sequential(_stack([width, *config.hidden], config.dropout), nn.ReLU(),
                                     nn.Linear(config.hidden[-1], 2 * config.encoding_dim))  # latent mean, log-variance
        self.decoder = nn.Sequential(_stack([config.encoding_dim, *config.hidden[::-1]], config.dropout), nn.ReLU(),
                                     nn.Linear(config.hidden[0], 2 * width))  # input mean, raw variance
        eps = torch.randn(config.samples, config.encoding_dim, generator=torch.Generator().manual_seed(config.seed))
        self.register_buffer("scoring_eps", eps, persistent=False)  # recreated from the seed, not saved

    def encode(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(flat).chunk(2, dim=-1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.decoder(z).chunk(2, dim=-1)
        return mean, self.config.min_variance + nn.functional.softplus(raw)

    def nll_terms(self, flat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Shifted per-element negative log-likelihood of `flat` under the decoder's Gaussian at `z` (>= 0)."""
        mean, var = self.decode(z)
        return 0.5 * torch.log(var / self.config.min_variance) + 0.5 * (flat - mean).square() / var

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        mu, logvar = self.encode(flat)
        eps = torch.randn_like(mu) if self.training else self.scoring_eps[0].expand_as(mu)  # fixed when validating
        z = mu + torch.exp(0.5 * logvar) * eps
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(-1)
        # The negative ELBO per input value (the constant shift does not change the gradients).
        return (self.nll_terms(flat, z).sum(-1) + kl).mean() / flat.shape[1]

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        # Decoding holds (batch, samples, width) values: split big batches to bound memory.
        rows = max(1, 2**22 // (self.config.samples * flat.shape[1]))
        return torch.cat([self._errors(part) for part in flat.split(rows)]).reshape(x.shape)

    def _errors(self, flat: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(flat)
        z = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * self.scoring_eps  # (batch, samples, latent)
        return self.nll_terms(flat[:, None], z).mean(1)

