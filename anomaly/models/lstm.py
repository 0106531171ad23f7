"""LSTM forecaster (LSTM-AD style): the previous `window` rows predict the next row; a row's error is how far
its forecast missed (squared or absolute, per feature)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError


@dataclass
class Config:
    n_features: int
    window: int = 1  # rows of history per forecast
    hidden: int | None = None  # LSTM state size
    layers: int = 1  # one layer keeps training on CPU under a minute for 10,000 rows x 25 columns (bench)
    dropout: float = 0.1  # between stacked LSTM layers
    error: str = "mse"  # mse or mae

    def __post_init__(self):
        if isinstance(self.hidden, (list, tuple)):  # the CLI's --hidden is a list; an LSTM has one state size
            self.hidden = self.hidden[0] if self.hidden else None
        if self.hidden is None:
            self.hidden = min(128, max(32, 2 * self.n_features))
        self.hidden, self.layers = int(self.hidden), int(self.layers)
        if self.error not in ("mse", "mae"):
            raise DataError(f"--error must be mse or mae, got {self.error!r}")
        if self.hidden < 1 or self.layers < 1:
            raise DataError("--hidden and --layers must be at least 1")


class Model(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.span, self.scored = config.window + 1, 1  # history + the row it forecasts; only that row is scored
        self.lstm = nn.LSTM(config.n_features, config.hidden, config.layers, batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.head = nn.Linear(config.hidden, config.n_features)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """(batch, window, features) -> forecast of the next row, (batch, features)."""
        out, _ = self.lstm(history)
        return self.head(out[:, -1])

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        miss = self(x[:, :-1]) - x[:, -1]
        return (miss.square() if self.config.error == "mse" else miss.abs()).unsqueeze(1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.errors(x).mean()
