"""Memory per device of a training run, by part, for each shipped accelerate config
(`unlearnkit estimate`, docs/scale.md). The formulas, in bytes, with P parameters, T trainable
ones, N processes, w bytes per weight (2 in bf16, 4 in fp32), micro-batch b, sequence length s:

- weights: P·w, divided by N where the config shards them (FSDP, ZeRO-3); with CPU offload only
  the layer in use and the next one stay on the device (2 layers' weights);
- gradients: T·w (/N sharded; 0 offloaded);
- optimizer: AdamW's two fp32 moments, plus an fp32 master copy when weights are 16-bit:
  T·(8 + 4) or T·8 (/N sharded; 0 offloaded);
- frozen reference: a second copy of the weights, P·w, for methods that keep one (KL/JSD retain
  term, UNDIAL, RMU in full-parameter mode; SSU's and the task vectors' copy of θ always). Under
  FSDP a frozen teacher is sharded like the weights (`unlearnkit.sharding`); θ's copy, and any
  copy under ZeRO-3, is a plain copy on every process;
- activations: 34·b·s·h·(w/2) per layer (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", Table 2, without the attention-score term that
  fused attention does not keep), plus the float32 logits and their gradient, 8·b·s·V.

A config fits a GPU when the sum is at most 90% of its memory (CUDA context, fragmentation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unlearnkit.methods.base import Method
from unlearnkit.models.shape import Shape

GB = 1e9
HEADROOM = 0.9


@dataclass(frozen=True)
class Layout:
    shard: bool
    offload: bool
    shards_teacher: bool = False  # unlearnkit shards frozen teachers like the model (FSDP only)


CONFIGS = {  # configs/accelerate/<name>.yaml
    "ddp": Layout(shard=False, offload=False),
    "fsdp": Layout(shard=True, offload=False, shards_teacher=True),
    "fsdp-offload": Layout(shard=True, offload=True, shards_teacher=True),
    "zero3": Layout(shard=True, offload=False),
    "zero3-offload": Layout(shard=True, offload=True),
}


def keeps_weights_before(method: Method) -> bool:
    """θ before the change, to subtract or negate against (a plain copy)."""
    return method.registry_name in ("ssu", "task_vector", "negmerge")


def keeps_teacher(method: Method, lora: bool) -> bool:
    """A frozen network for next-token distributions or activations (`gradient.Frozen`); in LoRA
    mode the teacher is the same network with its adapter off."""
    return not lora and (method.registry_name == "rmu" or bool(getattr(method, "uses_frozen", False)) or (
        getattr(method, "alpha", 0) > 0 and getattr(method, "retain_loss", "nll") in ("kl", "jsd")))


def footprint(shape: Shape, method: Method, *, config: str, processes: int, lora_rank: int | None,
              weight_bytes: int, seq_len: int, batch: int | None = None) -> dict[str, float]:
    """Bytes per device of each part, and their total."""
    layout, n = CONFIGS[config], processes
    lora = lora_rank is not None or method.registry_name == "ssu"  # SSU trains its own adapter
    rank = lora_rank if lora_rank is not None else int(getattr(method, "lora_r", 8))
    trainable = shape.lora_params(rank) if lora else shape.params
    shard = n if layout.shard else 1
    layer = (shape.params - shape.vocab * shape.hidden * (1 if shape.tied else 2) - shape.hidden) / shape.layers  # one layer, norms included
    b = batch or int(getattr(method, "batch_size", 1))
    weights = 2 * layer * weight_bytes if layout.offload else shape.params * weight_bytes / shard
    teacher = (weights if layout.shards_teacher else shape.params * weight_bytes) if keeps_teacher(method, lora_rank is not None) else 0.0
    parts = {
        "weights": weights,
        "gradients": 0.0 if layout.offload else trainable * weight_bytes / shard,
        "optimizer": 0.0 if layout.offload else trainable * (8 + (4 if weight_bytes == 2 else 0)) / shard,
        "frozen reference": teacher + (shape.params * weight_bytes if keeps_weights_before(method) else 0.0),
        "activations": shape.layers * 34 * b * seq_len * shape.hidden * weight_bytes / 2 + 8 * b * seq_len * shape.vocab,
    }
    parts["total"] = sum(parts.values())
    return parts


def fits(parts: dict[str, Any], gpu_gb: float) -> bool:
    return parts["total"] <= HEADROOM * gpu_gb * GB
