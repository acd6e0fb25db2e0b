"""Quantization attack (Zhang et al., ICLR 2025, zzwjames/FailureLLMUnlearning): the unlearned weights, quantized after the fact, then
the forget metrics again. No data and no training.

Backends:
- `quanto`: optimum-quanto (`pip install optimum-quanto`; runs on CPU): int8 per-channel and
  int4 group-wise (group 128) weights of every linear layer. The first int4 use compiles
  quanto's CPU kernels once (a few minutes), cached by torch afterwards.
- `rtn`: built-in round-to-nearest, simulated in the weights (quantize then dequantize, which
  is what a weight-only int kernel computes): int8 symmetric per output row (absmax / 127, like
  LLM.int8's vector-wise scale without its outlier split), int4 symmetric per group of
  `group_size` input weights (absmax / 7; bitsandbytes uses blocks of 64, with the NF4/FP4
  code book instead of the integer grid).
- `auto` (default): quanto where it is installed, else rtn. The result notes the backend used.

Both leave `lm_head` in full precision, as transformers' bitsandbytes integration does.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from unlearnkit.data.schema import ForgetRequest
from unlearnkit.eval.attacks._base import Variant, register_attack
from unlearnkit.eval.attacks._forget import WeightAttack, forget_measure
from unlearnkit.eval.data import EvalData
from unlearnkit.models.subject import Subject

Backend = Literal["auto", "quanto", "rtn"]
SKIP = ("lm_head",)


@torch.no_grad()
def fake_quantize(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Round-to-nearest symmetric quantization of a 2-D weight, returned dequantized.

    Scales are per output row (group_size None) or per group of `group_size` consecutive input
    weights of a row; every value moves by at most half its scale."""
    levels = 2 ** (bits - 1) - 1  # 127 for int8, 7 for int4
    rows, cols = weight.shape
    size = group_size if group_size and cols % group_size == 0 else cols
    grouped = weight.float().reshape(rows, cols // size, size)
    scale = grouped.abs().amax(-1, keepdim=True).clamp(min=1e-12) / levels
    quantized = torch.clamp(torch.round(grouped / scale), -levels - 1, levels) * scale
    return quantized.reshape(rows, cols).to(weight.dtype)


def quantization_scales(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """The per-group scale `fake_quantize` uses, broadcast to the weight's shape (for bounds)."""
    levels = 2 ** (bits - 1) - 1
    rows, cols = weight.shape
    size = group_size if group_size and cols % group_size == 0 else cols
    grouped = weight.float().reshape(rows, cols // size, size)
    scale = grouped.abs().amax(-1, keepdim=True).clamp(min=1e-12) / levels
    return scale.expand_as(grouped).reshape(rows, cols)


def rtn_quantize(model: Any, bits: int, group_size: int) -> Any:
    """Quantize every linear layer but the output head, in place."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] not in SKIP:
            module.weight.data = fake_quantize(module.weight.data, bits, None if bits == 8 else group_size)
    return model


def quanto_quantize(model: Any, bits: int) -> Any:
    from optimum.quanto import freeze, qint4, qint8, quantize

    quantize(model, weights=qint8 if bits == 8 else qint4, exclude=list(SKIP))
    freeze(model)
    return model


def quanto_available() -> bool:
    try:
        import optimum.quanto  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_subject(subject: Subject, bits: int, backend: Backend = "auto", group_size: int = 64) -> Subject:
    """A copy of `subject` with quantized weights (wrappers above the weights are kept)."""
    chosen = resolve_backend(backend)
    model = copy.deepcopy(subject.model)
    model = quanto_quantize(model, bits) if chosen == "quanto" else rtn_quantize(model, bits, group_size)
    model.eval()
    return subject.with_model(model, name=f"{subject.name}@int{bits}")


def resolve_backend(backend: Backend) -> str:
    if backend == "auto":
        return "quanto" if quanto_available() else "rtn"
    if backend == "quanto" and not quanto_available():
        from unlearnkit.errors import UnlearnkitError

        raise UnlearnkitError("quantize backend 'quanto': optimum-quanto is not installed (pip install optimum-quanto, or use backend=rtn)")
    return backend


@register_attack("quantize")
class Quantize(WeightAttack):
    description: ClassVar[str] = "8-bit and 4-bit weight quantization, then the forget metrics again"

    bits: list[Literal[8, 4]] = Field(default_factory=lambda: [8, 4])
    backend: Backend = "auto"
    group_size: int = Field(64, ge=1, description="rtn int4: input weights per scale")

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        backend = resolve_backend(self.backend)
        notes.append(f"backend: {backend}")
        records = self.qa(request.records) + [r for r in request.records if r.kind != "qa"]
        measure = forget_measure(request.id, records, data, self.metrics, self.max_new_tokens)
        return [
            Variant(f"int{bits}", measure, measure, transform=lambda s, b=bits: quantize_subject(s, b, backend, self.group_size), items=len(records))
            for bits in self.bits
        ]
