"""Numbers in loaded artifacts that pass the schema (`store.validate_artifacts`) yet make a model that flags
nothing: NaN weights, a scale that squashes a feature to nothing. Refused on load (`DetectorCore.load` turns the
ValueError into a one-line ArtifactError)."""

from __future__ import annotations

import numpy as np
import torch


def check_weights(state: dict) -> None:
    """NaN or infinite weights score every row NaN: nothing is ever flagged, silently."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"weight {name} holds NaN or infinite values")


MIN_SCALED_RANGE = 1e-6  # a training column's range in scaled units: 1 or more for every supported scaler


def check_scaling(mul: np.ndarray, add: np.ndarray, names: list[str], ranges: dict | None) -> None:
    """A scale that squashes a feature to nothing (a denormal or tiny multiplier) makes every value of it
    the same to the model: nothing is flagged. Training never writes one (its checks refuse such columns)."""
    tiny = np.finfo(np.float64).tiny
    broken = ~np.isfinite(mul) | (np.abs(mul) < tiny) | ~np.isfinite(add)
    if broken.any():
        raise ValueError(f"the scaling of feature {names[int(np.argmax(broken))]} is not a usable number "
                         f"(multiplier {mul[int(np.argmax(broken))]:.3g})")
    if not isinstance(ranges, dict):
        return
    for i, name in enumerate(names):
        lo_hi = ranges.get(name)
        if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(isinstance(v, (int, float)) for v in lo_hi)):
            continue
        with np.errstate(all="ignore"):
            spread = abs((float(lo_hi[1]) - float(lo_hi[0])) * mul[i])
        if lo_hi[1] > lo_hi[0] and spread < MIN_SCALED_RANGE:
            raise ValueError(f"the scaling of feature {name} squashes its training range to {spread:.3g} units")
