"""Transformer reconstruction over windows, scored by masked reconstruction.

Each time step is projected to `d_model`, a learned positional embedding is added, `layers` encoder blocks mix
the steps, and a linear head maps back to the features. A plain reconstruction transformer can learn to copy
its input (no bottleneck), and copying scores anomalies as normal. So a step is always reconstructed while it is
hidden: the window's steps are dealt into `segments` groups, and a hidden group's steps are replaced by a learned
mask token. Training hides one random group per window; scoring runs one pass per group, so every step gets the
error of a reconstruction made from the rest of its window. With window 1 the step is reconstructed from
nothing: the model learns the training mean and the error becomes a squared z-score.

Groups interleave in runs of `run` steps (step t is in group (t // run) % segments), so each hidden run sits
between visible ones. Hiding a quarter of the window at once made the model extrapolate the middle of every
ramp, and errors on normal slopes outranked a short burst of jitter on a UCR series; runs of one step are
interpolated so easily that a smooth change of frequency is reconstructed too; runs of two catch both
(docs/decisions/0013-transformer-interleaved-masking.md). Configs saved before `run` existed keep contiguous
groups (run 0).
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
    layers: int = 1  # one layer keeps training on CPU under a minute for 10,000 rows x 25 columns (bench)
    heads: int = 4
    ff_width: int | None = None  # feed-forward width of each block
    dropout: float = 0.0  # hiding segments already regularises; dropout mostly slows training on CPU
    segments: int | None = None  # groups a window's steps are dealt into; each is hidden in turn
    run: int | None = None  # steps hidden together (default 2); 0: one contiguous segment per group (older versions)
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
            self.d_model = min(64, max(16, self.n_features))
        self.d_model = self.heads * math.ceil(int(self.d_model) / self.heads)  # attention needs d_model % heads == 0
        self.ff_width = int(self.ff_width or 2 * self.d_model)
        if self.run is None:  # a saved config without it comes from a version that hid contiguous segments
            self.run = 2 if self.segments is None else 0
        self.segments = max(1, min(int(self.segments or 4), self.window))
        self.run = max(0, int(self.run))


class Block(nn.Module):
    """Pre-norm encoder block: self-attention over all steps of the window, then a feed-forward layer."""

    def __init__(self, config: Config):
        super().__init__()
        self.heads, self.dropout = config.heads, config.dropout
        self.norm1, self.norm2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.ff = nn.Sequential(nn.Linear(config.d_model, config.ff_width), nn.GELU(),
                                nn.Linear(config.ff_width, config.d_model), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (part.view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for part in self.qkv(self.norm1(x)).split(d, dim=2))
        att = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + nn.functional.dropout(self.proj(att.transpose(1, 2).reshape(b, t, d)), self.dropout, self.training)
        return x + self.ff(self.norm2(x))


class Model(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.span = self.scored = config.window
        self.embed = nn.Linear(config.n_features, config.d_model)
        self.position = nn.Parameter(0.02 * torch.randn(1, config.window, config.d_model))
        self.mask_token = nn.Parameter(0.02 * torch.randn(config.d_model))
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.layers)])
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_features)
        # segment_of[t]: the group time step t belongs to (fixed, so not saved with the weights)
        steps = torch.arange(config.window)
        segment_of = (steps // config.run % config.segments if config.run else steps * config.segments // config.window)
        self.register_buffer("segment_of", segment_of, persistent=False)

    def forward(self, x: torch.Tensor, hidden_segment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct (batch, window, features) with segment `hidden_segment[i]` of window i masked out.
        Returns the reconstruction and the (batch, window) mask of hidden steps."""
        hide = self.segment_of[None, :] == hidden_segment[:, None]
        tokens = torch.where(hide[..., None], self.mask_token, self.embed(x)) + self.position
        return self.head(self.norm(self.blocks(tokens))), hide

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        # Training hides a random segment of each window; validation a fixed one (window i hides segment
        # i % segments), so early stopping sees no sampling noise and validation costs one pass.
        segment = (torch.randint(self.config.segments, (len(x),), device=x.device) if self.training
                   else torch.arange(len(x), device=x.device) % self.config.segments)
        recon, hide = self(x, segment)
        hidden = hide[..., None].to(x.dtype)
        return ((recon - x).square() * hidden).sum() / (hidden.sum() * x.shape[2])

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        err = torch.zeros_like(x)
        # Attention holds (batch, heads, window, window) scores: split long-window batches to bound memory.
        rows = max(1, 2**24 // (self.config.heads * self.span * self.span))
        for start in range(0, len(x), rows):
            part = x[start:start + rows]
            for segment in range(self.config.segments):
                recon, hide = self(part, torch.full((len(part),), segment, device=x.device))
                err[start:start + rows] += torch.where(hide[..., None], (recon - part).square(), 0.0)
        return err
