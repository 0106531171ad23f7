"""The training loop: random mini-batches sliced from in-memory tensors, Adam, early stopping on validation."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from .device import autocast, model_device
from .scoring import gather, row_errors, single_thread

ProgressFn = Callable[[dict], None]


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def split_rows(X: np.ndarray, validation_split: float, span: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Time-ordered split: the last fraction of rows validates (more honest than a shuffle for series)."""
    n_val = int(round(len(X) * validation_split)) if validation_split > 0 else 0
    if n_val < span or len(X) - n_val < span:
        return X, None
    return X[:-n_val], X[-n_val:]


def fit(
    model: torch.nn.Module,
    X_train: np.ndarray,
    X_val: np.ndarray | None,
    *,
    epochs: int = 100,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    patience: int = 10,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: str = "fp32",
) -> dict:
    """Train in place on the device the model is on; the weights of the best validation epoch are kept.
    Returns the training history."""
    generator = seed_everything(seed)
    if hasattr(model, "fit_closed_form"):  # fitted in one step on every training row (no epochs to validate)
        started = time.perf_counter()
        rows = np.concatenate([X_train, X_val]) if X_val is not None else X_train
        history = model.fit_closed_form(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
                                        .to(model_device(model)))
        if progress:
            progress({"epoch": 1, "epochs": 1, "loss": history["loss"][0], "val_loss": None})
        model.eval()
        return {**history, "seconds": round(time.perf_counter() - started, 3)}
    span = model.span
    device = model_device(model)
    # The whole training matrix goes to the device once; batches are sliced there (no per-batch copies).
    x_train = torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.float32)).to(device)
    x_val = torch.from_numpy(np.ascontiguousarray(X_val, dtype=np.float32)).to(device) if X_val is not None else None
    n_samples = len(x_train) - span + 1
    # fused Adam halves the per-step cost of small models on CPU (one kernel instead of one per tensor)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)
    # fp16 gradients underflow without loss scaling; for fp32 and bf16 the scaler is a pass-through
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history: dict = {"loss": [], "val_loss": [], "best_epoch": None, "stopped_early": False, "seconds": 0.0}
    best, best_state, waited = math.inf, None, 0
    started = time.perf_counter()
    # small batches: thread hand-offs cost more than they save
    with single_thread() if batch_size < 1024 else contextlib.nullcontext():
        for epoch in range(1, epochs + 1):
            model.train()
            # drawn on the CPU generator (same seed, same order on every device), moved once per epoch
            order = torch.randperm(n_samples, generator=generator).to(device)
            total = torch.zeros((), device=device)
            for i in range(0, n_samples, batch_size):
                batch = gather(x_train, order[i:i + batch_size], span)
                with autocast(device, precision):
                    loss = model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += loss.detach().float() * len(batch)
            train_loss = total.item() / n_samples
            history["loss"].append(train_loss)
            val_loss = evaluate_loss(model, x_val, precision=precision) if x_val is not None else None
            history["val_loss"].append(val_loss)
            monitored = val_loss if val_loss is not None else train_loss
            if monitored < best - 1e-7:
                best, waited, history["best_epoch"] = monitored, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
            if progress:
                progress({"epoch": epoch, "epochs": epochs, "loss": train_loss, "val_loss": val_loss})
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training diverged at epoch {epoch} (loss {train_loss}); lower --learning-rate")
            if x_val is not None and patience and waited >= patience:
                history["stopped_early"] = True
                break
            if should_stop and should_stop():
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["epochs_run"] = len(history["loss"])
    history["seconds"] = round(time.perf_counter() - started, 3)
    return history


def out_of_fold_errors(model: torch.nn.Module, X: np.ndarray, folds: int = 5, calibrate: bool = False) -> np.ndarray | None:
    """Per-row errors of a closed-form model, each block of rows scored by a copy fitted without it: the errors a
    new file gets, not the smaller ones of rows the model was fitted on (in-sample windowed PCA put `pot`'s
    threshold far too low: docs/decisions/0002-out-of-fold-calibration.md). None when the rows are too few to
    leave a block out. `calibrate`: set the model's own calibration from these out-of-fold windows first (pca's
    `calibrate_split`), at fitting time."""
    n, span = len(X), model.span
    size = -(-n // folds)
    if not hasattr(model, "fit_folds") or n - size - span < 2 * span:
        return None
    x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(model_device(model))
    out = np.empty(X.shape, np.float32)
    blocks = [(start, min(n, start + size)) for start in range(0, n, size)]
    folds = model.fit_folds(x, blocks)
    reach = [(max(0, start - span + 1), min(n, stop + span - 1)) for start, stop in blocks]  # windows touching it
    if calibrate and hasattr(model, "calibrate_split"):  # the copies inherit the model's own otherwise
        model.calibrate_split(folds, [x[lo:hi] for lo, hi in reach])
    for (start, stop), (lo, hi), fold in zip(blocks, reach, folds):
        out[start:stop] = row_errors(fold, X[lo:hi])[start - lo:stop - lo]
    return out


def evaluate_loss(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 8192, precision: str = "fp32") -> float:
    model.eval()
    n = len(x) - model.span + 1
    total = 0.0
    with torch.inference_mode(), autocast(x.device, precision):
        for i in range(0, n, batch_size):
            starts = torch.arange(i, min(i + batch_size, n), device=x.device)
            total += model.loss(gather(x, starts, model.span)).item() * len(starts)
    model.train()
    return total / max(n, 1)
