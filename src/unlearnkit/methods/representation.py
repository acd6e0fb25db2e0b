"""RMU (Representation Misdirection for Unlearning, from the WMDP paper, Li et al., 2024).

Formula, defaults and deviations: docs/methods.md, "RMU details".

    L = mean_{tokens,dims} ‖h_θ^ℓ(x_f) − c·u‖² + α·mean_{tokens,dims} ‖h_θ^ℓ(x_r) − h_ref^ℓ(x_r)‖²

h^ℓ is the output of decoder layer ℓ (the residual stream), u a fixed random unit vector drawn
uniform in [0, 1) and normalised, c the steering coefficient. Only the MLP down-projections of
layers ℓ−2..ℓ are trained; every forward pass stops at layer ℓ, since nothing above it enters
the loss (so a step costs about ℓ/L of a full pass). The retain term needs the frozen model's
activations on random retain batches, so a frozen model is kept (`gradient.Frozen`: a deep copy,
or in LoRA mode the adapter switched off).

Layer choice. WMDP uses ℓ = 7 of Zephyr-7B's 32 layers. A small model gets the same relative
depth: ℓ = round(7·L/32) (SmolLM2-135M, 30 layers: ℓ = 7; a 2-layer test model: ℓ = 0), and
the updated layers are ℓ−2..ℓ clipped at 0. Both can be set explicitly.

Steering coefficient. WMDP's c is a number per model (6.5 for Zephyr-7B, 300 for Mixtral): it
has to be on the scale of that model's own activations, and Zephyr's 6.5 does not move a 135M
model. By default c = `steering_scale` × the mean norm of the layer-ℓ activations of the model
before the request on the request's own tokens, measured once per request; `steering_coeff`
sets c directly. As in the reference (centerforaisafety/wmdp, rmu/unlearn.py: backward, then
`optimizer.step()`), gradients are not clipped.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from transformers import DynamicCache

from unlearnkit.training import Batch, Example, make_batch, sharing_prefix, to_device
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import losses as L
from unlearnkit.methods.base import Need, freeze_except, register_method
from unlearnkit.methods.gradient import Frozen, Logs, Unlearning
from unlearnkit.models.prefix import MIN_SHARED, cache_argument, shared_prefix, supports_kv_cache
from unlearnkit.models.subject import Subject

WMDP_LAYER, WMDP_DEPTH = 7, 32


class _Stop(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The list of transformer blocks (`...layers`, `...h` or `...blocks`), peft-wrapped or not."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks"):
            return module
    raise UnlearnkitError(f"rmu: cannot find the decoder layers of {type(model).__name__}")


def _run_until(model: Any, layer: int, **inputs: Any) -> torch.Tensor:
    """Hidden states after decoder layer `layer`; the layers above it never run."""
    captured: list[torch.Tensor] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0].float()


def layer_output(model: Any, part: dict[str, torch.Tensor], layer: int) -> tuple[torch.Tensor, int]:
    """(hidden states after decoder layer `layer` `[B, T', H]`, offset): states[t] belongs to
    position offset + t. Inside a `loss_pass` that shares prefixes, the prompt prefix common to
    the batch runs once on one row, up to layer `layer` only, and its keys and values serve every
    row (as `models/prefix.py` does for logits); its positions carry no labels, so no loss reads
    their states and they are not returned."""
    ids, mask = part["input_ids"], part["attention_mask"]
    shared = shared_prefix(ids, mask, part["labels"]) if sharing_prefix() and len(ids) > 1 and supports_kv_cache(model) else 0
    if shared < MIN_SHARED:
        return _run_until(model, layer, input_ids=ids, attention_mask=mask), 0
    cache, key = DynamicCache(), cache_argument(model)
    prefix = ids[:1, :shared]
    _run_until(model, layer, input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, **{key: cache})
    cache.batch_repeat_interleave(len(ids))  # filled for layers 0..layer, the only ones that run
    return _run_until(model, layer, input_ids=ids[:, shared:], attention_mask=mask, use_cache=True, **{key: cache}), shared


def steered_mask(part: dict[str, torch.Tensor], offset: int) -> torch.Tensor:
    """The labelled positions from `offset` on: the tokens RMU steers or holds."""
    return part["labels"][:, offset:] != L.IGNORE


@torch.no_grad()
def activation_norm(frozen: Frozen, examples: list[Example], layer: int, pad_id: int, device: torch.device, size: int = 8) -> float:
    """Mean L2 norm of the layer-`layer` activations over the examples' labelled tokens (the
    tokens RMU steers), under the frozen model."""
    total, count = 0.0, 0
    with frozen.network() as network:
        for start in range(0, len(examples), size):
            part = to_device(make_batch(examples, list(range(start, min(start + size, len(examples)))), pad_id), device)["x"]
            acts, offset = layer_output(network, part, layer)
            norms, mask = acts.norm(dim=-1), steered_mask(part, offset)
            total, count = total + float(norms[mask].sum()), count + int(mask.sum())
    return total / max(1, count)


@register_method("rmu")
class RMU(Unlearning):
    """RMU with the WMDP Zephyr defaults (α = 1200, lr 5e-5, constant, batch 4, 80 steps, no
    gradient clipping) and a steering coefficient on the model's own activation scale."""

    family: ClassVar[str] = "representation"
    needs: ClassVar[tuple[Need, ...]] = ("retain", "reference")
    description: ClassVar[str] = "steer layer-ℓ activations of forget text to a random vector; keep retain ones"
    lr: float = Field(5e-5, gt=0)
    max_steps: int | None = Field(80, ge=1, description="optimizer steps; overrides epochs")
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # WMDP: plain AdamW, no schedule
    alpha: float = Field(1200.0, ge=0, description="weight of the retain activation term")
    max_grad_norm: float | None = Field(None, gt=0)  # the reference does not clip
    steering_coeff: float | None = Field(None, gt=0, description="c, the norm of the forget target c·u (Zephyr-7B: 6.5); default: steering_scale × the activations' mean norm")
    steering_scale: float = Field(5.0, gt=0, description="c as a multiple of the mean norm of the model's layer-ℓ activations on the request")
    layer: int | None = Field(None, ge=0, description="ℓ; default round(7·L/32), WMDP's depth")
    update_layers: list[int] | None = Field(None, description="layers whose params train; default ℓ-2..ℓ")
    param_pattern: str = Field(r"mlp\.down_proj", description="regex on parameter names within the updated layers")

    def resolve_layers(self, num_layers: int) -> tuple[int, list[int]]:
        layer = self.layer if self.layer is not None else min(num_layers - 1, round(WMDP_LAYER * num_layers / WMDP_DEPTH))
        if layer >= num_layers:
            raise UnlearnkitError(f"method 'rmu': layer {layer} is out of range for a model with {num_layers} layers")
        return layer, self.update_layers if self.update_layers is not None else list(range(max(0, layer - 2), layer + 1))

    def prepare(self, subject: Subject, forget: list[Example], retain: list[Example]) -> None:
        model = subject.model
        layer, updated = self.resolve_layers(len(decoder_layers(model)))
        # LossMethod.unlearn restores the flags afterwards
        freeze_except(model, rf"layers\.({'|'.join(map(str, updated))})\..*{self.param_pattern}", "rmu")
        hidden = int(model.config.hidden_size)
        u = torch.rand(hidden, generator=torch.Generator().manual_seed(self.seed))
        frozen = Frozen(model)
        coeff = self.steering_coeff or self.steering_scale * activation_norm(frozen, forget, layer, subject.tokenizer.pad_token_id, subject.device)
        self._cache.update(layer=layer, control=(coeff * u / u.norm()).to(subject.device), frozen=frozen, steering=coeff)

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        part = forget["x"]
        # Steer the record's own tokens (labels), not the prompt template it shares with retain
        # data (open-unlearning's mask); for passages that is every token, as in WMDP's corpora.
        acts, offset = layer_output(model, part, self._cache["layer"])
        return L.activation_mse(acts, self._cache["control"], steered_mask(part, offset)), {"steering_coeff": self._cache["steering"]}

    def retain_term(self, model: Any, retain: Batch) -> torch.Tensor:
        part, frozen = retain["x"], self._cache["frozen"]
        acts, offset = layer_output(model, part, self._cache["layer"])
        with frozen.network() as network:
            ref, ref_offset = layer_output(network, part, self._cache["layer"])
        start = max(offset, ref_offset)  # the same batch gives the same prefix; aligned anyway
        acts, ref = acts[:, start - offset:], ref[:, start - ref_offset:]
        return L.activation_mse(acts, ref, steered_mask(part, start))
