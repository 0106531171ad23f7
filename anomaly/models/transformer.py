"""Transformer reconstruction over windows, scored by masked reconstruction.

Each time step is projected to `d_model`, a learned positional embedding is added, `layers` encoder blocks mix
the steps, and a linear head maps back to the features. A plain reconstruction transformer can learn to copy
its input (no bottleneck), and copying scores anomalies as normal. So a step is always reconstructed while it is
hidden: the window is cut into `blocks` contiguous blocks, and a hidden block's steps are replaced by a learned
mask token. Training hides one random block per window; scoring runs one pass per block, so every step gets the
error of a reconstruction made from the rest of its window. With window 1 the step is reconstructed from
nothing: the model learns the training mean and the error becomes a squared z-score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError


@dataclass
class Config:
    n_features: int
    window: int = 1
    d_model: int | None = None
    layers: int = 2
    heads: int = 4
    ff_width: int | None = None  # feed-forward width of each block
    dropout: float = 0.1
    blocks: int | None = None  # contiguous blocks a window is cut into for masked reconstruction
    hidden: list[int] | int | None = None  # the CLI's --hidden D[,FF]: taken as d_model and ff_width

    def __post_init__(self):
        if self.hidden is not None:
            sizes = list(self.hidden) if isinstance(self.hidden, (list, tuple)) else [self.hidden]
            self.d_model = sizes[0] if sizes else self.d_model
            self.ff_width = sizes[1] if len(sizes) > 1 else self.ff_width
            self.hidden = None  # consumed: the saved config names d_model and ff_width
        self.heads, self.layers = int(self.heads), int(self.layers)
        if self.heads < 1 or self.layers < 1:
            raise DataError("--heads and --layers must be at least 1")
        if self.d_model is None:
            self.d_model = min(64, max(32, 2 * self.n_features))
        self.d_model = self.heads * math.ceil(int(self.d_model) / self.heads)  # attention needs d_model % heads == 0
        self.ff_width = int(self.ff_width or 2 * self.d_model)
        self.blocks = max(1, min(int(self.blocks or 4), self.window))


class Model(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.span = self.scored = config.window
        self.embed = nn.Linear(config.n_features, config.d_model)
        self.position = nn.Parameter(0.02 * torch.randn(1, config.window, config.d_model))
        self.mask_token = nn.Parameter(0.02 * torch.randn(config.d_model))
        block = nn.TransformerEncoderLayer(config.d_model, config.heads, config.ff_width, config.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_features)
        # block_of[t]: which block time step t belongs to (fixed, so not saved with the weights)
        self.register_buffer("block_of", torch.arange(config.window) * config.blocks // config.window, persistent=False)

    def forward(self, x: torch.Tensor, hidden_block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct (batch, window, features) with block `hidden_block[i]` of window i masked out.
        Returns the reconstruction and the (batch, window) mask of hidden steps."""
        hide = self.block_of[None, :] == hidden_block[:, None]
        tokens = torch.where(hide[..., None], self.mask_token, self.embed(x)) + self.position
        return self.head(self.norm(self.encoder(tokens))), hide

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # validation: every block in turn, as scoring does (no noise for early stopping)
            return self.errors(x).mean()
        recon, hide = self(x, torch.randint(self.config.blocks, (len(x),), device=x.device))
        return (recon - x).square()[hide].mean()

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        err = torch.zeros_like(x)
        # Attention holds (batch, heads, window, window) scores: split long-window batches to bound memory.
        rows = max(1, 2**24 // (self.config.heads * self.span * self.span))
        for start in range(0, len(x), rows):
            part = x[start:start + rows]
            for b in range(self.config.blocks):
                recon, hide = self(part, torch.full((len(part),), b, device=x.device))
                err[start:start + rows] += torch.where(hide[..., None], (recon - part).square(), 0.0)
        return err
