"""Where torch runs (`--device auto|cpu|cuda|cuda:N|mps`) and in what precision (`--precision fp32|bf16|fp16`).

A model and the tensors it works on live on one device; callers resolve the user's name once with
`resolve_device` and move the model there. Weights are always saved from the CPU (device-neutral), so a model
trained on a GPU loads on a laptop and the other way round.
"""

from __future__ import annotations

import contextlib
import platform
import re

import torch

from .errors import DeviceError

DEVICES = "auto, cpu, cuda, cuda:N, mps"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a user's `--device` value; `auto` = CUDA if available, else MPS, else CPU.
    Unknown names and devices this machine lacks are refused with a one-line DeviceError."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())  # indexed: the model card names the GPU
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device was found"
            raise DeviceError(f"device {name!r} is not available: {why} (torch {torch.__version__}); use "
                              "--device auto or cpu, or install a CUDA build of torch (docs/guides/gpu.md)")
        index = int(name.split(":")[1]) if ":" in name else None
        if index is not None and index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise DeviceError(f"device {name!r} is not available: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", torch.cuda.current_device() if index is None else index)
    if name == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' is not available: it needs Apple silicon and a torch built with MPS; "
                              "use --device auto or cpu")
        return torch.device("mps")
    raise DeviceError(f"unknown device {name!r}; choose one of {DEVICES}")


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for `--precision`; refuses what the device cannot do (fp16 is CUDA-only here: on
    the CPU it is slow and its narrow range overflows squared errors)."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(f"precision fp16 needs a CUDA device, not {device.type}; use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use --precision fp16 or fp32")
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str = "fp32"):
    """Mixed precision for a forward pass; fp32 is no context at all (the plain path, unchanged)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def device_name(device: torch.device) -> str:
    """A human name for the model card: the GPU's model, or the CPU's architecture."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return platform.processor() or platform.machine() or "cpu"


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights are on (data is moved there, not the other way round)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():  # a closed-form model (pca) holds buffers only
        return tensor.device
    return torch.device("cpu")
