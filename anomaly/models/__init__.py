"""Model registry. Each model type is one module holding a `Config` dataclass and a `Model` nn.Module.

The contract every model keeps (training, scoring, persistence, the service layer and the servers rely on
nothing else):

- `Config(n_features, window, **hyperparameters)`: a dataclass; `None` hyperparameters are derived from the
  input size in `__post_init__`. It is saved as JSON, so fields are plain numbers, strings and lists.
- `Model(config)`, with
  - `span`: consecutive rows in one sample (the window; a forecaster needs `window + 1`: history and target);
  - `scored`: how many trailing rows of a sample get an error (`span` when reconstructing, 1 when forecasting);
  - `loss(x)`: training loss of a batch `x` of shape (batch, span, features);
  - `errors(x)`: non-negative error per scored row and feature, shape (batch, scored, features). The score
    of a row is the mean over features, averaged over all samples that score that row.
  - optional: `stride` (rows between scored samples, default 1), `uniform_rows` (errors() returns one row per
    sample, the same for all its scored rows) with `split_errors(x)` (that error as a part shared by the rows
    plus parts carried by single rows, zero when the model does not split) and `calibrate_split(folds, pieces)`
    (sets it from out-of-fold windows), `fit_closed_form(x)` (fitted without gradient
    descent; returns the history) with `fit_folds(x, blocks)` (copies fitted without each block, for calibration); module-level `DEFAULT_WINDOW` (an int or "auto"; default 32),
    `DEFAULT_SMOOTH` (rows of score smoothing; default 2 * window - 1) and `auto_window(X)` (what
    `--window auto` picks; default `anomaly.period.auto_window`).

Adding a model type is one new module and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from types import ModuleType

from ..errors import DataError

MODEL_TYPES: dict[str, str] = {
    "dense": "anomaly.models.dense",
    "lstm": "anomaly.models.lstm",
    "transformer": "anomaly.models.transformer",
    "vae": "anomaly.models.vae",
    "pca": "anomaly.models.pca",
}

# The hyperparameters a model type may take (each takes the ones in its Config and ignores the rest).
MODEL_PARAMS = ("encoding_dim", "hidden", "layers", "heads", "dropout", "error", "samples")


def get(model_type: str) -> ModuleType:
    if model_type not in MODEL_TYPES:
        raise DataError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    return importlib.import_module(MODEL_TYPES[model_type])


def default_window(model_type: str) -> int | str:
    return getattr(get(model_type), "DEFAULT_WINDOW", 32)


def make_config(model_type: str, n_features: int, window: int, params: dict):
    """Build a model's Config from the options that apply to it; options that do not apply are ignored."""
    module = get(model_type)
    known = {f.name for f in fields(module.Config)}
    kwargs = {k: v for k, v in params.items() if k in known and v is not None and k not in ("n_features", "window")}
    return module.Config(n_features=n_features, window=window, **kwargs)


def build(model_type: str, config_dict: dict):
    """Recreate a model from its saved config (the weights are loaded separately)."""
    module = get(model_type)
    return module.Model(module.Config(**config_dict))
