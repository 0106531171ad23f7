"""Dense autoencoder: each row (or a flattened window of rows) is encoded to a bottleneck and decoded back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Config:
    n_features: int
    window: int = 1
    hidden: list[int] | None = None  # encoder layer sizes; the decoder mirrors them
    encoding_dim: int | None = None
    dropout: float = 0.0

    def __post_init__(self):
        width = self.n_features * self.window
        if self.encoding_dim is None:
            self.encoding_dim = max(1, min(32, width // 4))
        if self.hidden is None:
            first = min(256, max(16, width))
            self.hidden = [first, max(2 * self.encoding_dim, first // 2)]
        self.hidden = [int(h) for h in self.hidden]


def _stack(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:  # no activation on the bottleneck or the output
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Model(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.span = self.scored = config.window
        sizes = [config.n_features * config.window, *config.hidden, config.encoding_dim]
        self.encoder = _stack(sizes, config.dropout)
        self.decoder = _stack(sizes[::-1], config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return self.decoder(self.encoder(flat)).reshape(x.shape)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self(x), x)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        return (self(x) - x).square()
