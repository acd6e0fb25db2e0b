"""Mixed precision: which arithmetic a forward (and backward) pass runs in, decided once here.

`precision` is a setting of every training method (`TrainConfig.precision`), of `prepare` and of
a Subject's scoring and generation:

- `auto`: bfloat16 autocast where the hardware runs bf16 natively (a CPU with AVX512-BF16 or
  AMX, a CUDA device with bf16 support), float32 elsewhere;
- `bfloat16`: bf16 autocast; refused, with one line naming the setting, where the hardware lacks
  native bf16 (emulated bf16 is several times slower than fp32, never what a user wants);
- `float32`: plain fp32 (the path before mixed precision).

Autocast keeps the weights as they are (fp32 master weights when training: `training.train`
upcasts lower-precision trainable weights) and runs matrix products in bf16 (PyTorch's autocast
op lists: https://pytorch.org/docs/stable/amp.html). Losses take `.float()` of the logits it
returns, so log-softmax, KL, JSD and the like run in fp32.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Literal

import torch

from unlearnkit.errors import UnlearnkitError

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")


FAST_PATH_ENV = "UNLEARNKIT_FAST_PATH"


def fast_path() -> bool:
    """False under `UNLEARNKIT_FAST_PATH=0`: every `auto` precision is float32 and no prompt
    prefix is shared or batch length-bucketed, in training, scoring and generation alike. That is
    the code path from before these changes, for before/after timings of whole runs (the warm
    demo in docs/performance.md); explicit settings such as `precision: bfloat16` still apply.
    `prepare` keeps its precision: its models are cached under it, and a warm run "before" must
    find the same target and oracles as one "after"."""
    return os.environ.get(FAST_PATH_ENV, "1") != "0"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 matrix products natively."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(precision: str, device: torch.device, setting: str = "precision", *, follow_fast_path: bool = True) -> str:
    """'auto' is bfloat16 where the hardware runs it natively (and the fast path is on, unless
    `follow_fast_path` is False), else float32; `bfloat16` where it does not is refused, naming
    `setting`."""
    if precision not in PRECISIONS:
        raise UnlearnkitError(f"{setting} '{precision}': use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if native_bf16(device) and (fast_path() or not follow_fast_path) else "float32"
    if precision == "bfloat16" and not native_bf16(device):
        raise UnlearnkitError(f"{setting} 'bfloat16': this {device.type} device has no native bf16 support (use auto or float32)")
    return precision


def autocast(precision: str, device: torch.device) -> AbstractContextManager[None]:
    """bf16 autocast on `device` for a resolved `bfloat16`; for `float32`, autocast switched off
    (so an fp32 pass inside a bf16 one really runs in fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
