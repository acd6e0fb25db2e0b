"""Logit-offset unlearning (δ-unlearning, Huang et al. 2025).

The main model stays frozen. A small helper model that shares its tokenizer is copied twice: a
frozen original and a trainable copy. Decoding uses

    z(x) = z_main(x) + weight * (z_helper(x) - z_helper_original(x))

in both verbs: `score` runs `OffsetLM.forward`, `generate` runs the main model's own
`generate` with a LogitsProcessor that adds the offset to each step's logits (before
temperature and top-p, so sampling sees the combined distribution; the helpers keep their own
KV caches).

Training (`train_on="combined"`, the paper's way): any training-based method from the registry
runs its loss on the combined logits, with only the helper trainable. `train_on="helper"`
unlearns the helper on its own and adds its difference afterwards (cheaper: no main forward).
Later requests continue training the same helper.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import CausalLMOutput

from unlearnkit.data.schema import ForgetRequest
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import LossMethod, Method, UnlearnContext, get_method, register_method
from unlearnkit.models.stack import WrappedSubject, base_subject, find_wrapper, register_wrapper, replace_base
from unlearnkit.models.subject import GenerationSettings, ScoreResult, Subject, cache_argument


def add_offset(logits: torch.Tensor, helper: torch.Tensor, original: torch.Tensor, weight: float) -> torch.Tensor:
    """logits + weight * (helper - original) over the shared vocabulary (padded rows untouched)."""
    vocab = min(logits.shape[-1], helper.shape[-1])
    delta = (helper[..., :vocab] - original[..., :vocab]).to(logits.dtype)
    if vocab == logits.shape[-1]:
        return logits + weight * delta
    return torch.cat([logits[..., :vocab] + weight * delta, logits[..., vocab:]], dim=-1)


class OffsetLM(torch.nn.Module):
    """The main model plus the helpers' logit difference, usable wherever a causal LM is."""

    def __init__(self, main: Any, original: Any, helper: Any, weight: float) -> None:
        super().__init__()
        self.main, self.original, self.helper, self.weight = main, original, helper, weight

    @property
    def config(self) -> Any:
        return self.main.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> CausalLMOutput:
        with torch.no_grad():  # only the helper ever learns here
            main = self.main(input_ids=input_ids, attention_mask=attention_mask).logits
            original = self.original(input_ids=input_ids, attention_mask=attention_mask).logits
        helper = self.helper(input_ids=input_ids, attention_mask=attention_mask).logits
        logits = add_offset(main.float(), helper.float(), original.float(), self.weight)
        loss = None
        if labels is not None:  # HF's shifted cross-entropy, so losses that read `.loss` work
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        processor = OffsetProcessor(self.original, self.helper, self.weight, attention_mask)
        processors = LogitsProcessorList([*kwargs.pop("logits_processor", []), processor])
        return self.main.generate(input_ids=input_ids, attention_mask=attention_mask, logits_processor=processors, **kwargs)


class OffsetProcessor(LogitsProcessor):
    """Adds the helpers' last-position logit difference to each decoding step's logits."""

    def __init__(self, original: Any, helper: Any, weight: float, attention_mask: torch.Tensor) -> None:
        self.models = (original, helper)
        self.weight = weight
        self.mask = attention_mask
        self.caches: list[Any] = [None, None]
        self.started = False

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.started:  # the whole (left-padded) prompt; HF repeats rows for n samples
            self.mask = self.mask.repeat_interleave(input_ids.shape[0] // self.mask.shape[0], dim=0).to(input_ids.device)
            step = input_ids
            self.started = True
        else:  # one new token per row; generate attends to every new token, so do we
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(input_ids), 1)], dim=1)
            step = input_ids[:, -1:]
        # Positions as HF derives them for left padding: count of real tokens so far, minus one.
        positions = (self.mask.long().cumsum(-1) - 1).clamp(min=0)[:, -step.shape[1] :]
        last = []
        for k, model in enumerate(self.models):
            key = cache_argument(model)
            out = model(input_ids=step, attention_mask=self.mask, position_ids=positions, use_cache=True, **{key: self.caches[k]})
            self.caches[k] = getattr(out, key)
            last.append(out.logits[:, -1].float())
        return add_offset(scores, last[1], last[0], self.weight)


@register_wrapper("offset")
class OffsetSubject(WrappedSubject):
    """Scores and generates with the offset logits; must sit directly on the plain Subject."""

    def __init__(self, inner: Subject, *, original: Any, helper: Any, weight: float = 1.0, name: str | None = None) -> None:
        if isinstance(inner, WrappedSubject):
            raise ValueError("OffsetSubject needs the model's logits: wrap the plain Subject (see replace_base)")
        super().__init__(inner, name)
        self.original, self.helper, self.weight = original, helper, weight

    def rewrap(self, inner: Subject) -> OffsetSubject:
        return OffsetSubject(inner, original=self.original, helper=self.helper, weight=self.weight, name=self.name)

    def own_state(self) -> None:
        self.helper = copy.deepcopy(self.helper)  # the original helper is never trained: shared

    def combined(self) -> Subject:
        """A plain Subject around the offset model: the verbs are the base Subject's own code."""
        lm = OffsetLM(self.inner.model, self.original, self.helper, self.weight)
        inner = self.inner
        return Subject(lm, self.tokenizer, self.fmt, batch_size=self.batch_size, max_length=self.max_length, name=self.name,
                       precision=inner.precision, share_prefix=inner.share_prefix, length_buckets=inner.length_buckets)

    def score(self, prompts: list[str], targets: list[str], **kwargs: Any) -> ScoreResult:  # type: ignore[override]
        return self.combined().score(prompts, targets, **kwargs)

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None, **kwargs: Any) -> list[list[str]]:  # type: ignore[override]
        return self.combined().generate(prompts, settings, **kwargs)

    def config(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def save_files(self, folder: Path) -> None:
        self.original.save_pretrained(folder / "helper_original", safe_serialization=True)
        self.helper.save_pretrained(folder / "helper", safe_serialization=True)

    @classmethod
    def from_saved(cls, inner: Subject, folder: Path, config: dict[str, Any], device: str) -> OffsetSubject:
        from transformers import AutoModelForCausalLM

        load = lambda sub: AutoModelForCausalLM.from_pretrained(folder / sub, dtype=inner.model.dtype).to(inner.device).eval()  # noqa: E731
        return cls(inner, original=load("helper_original"), helper=load("helper"), weight=config["weight"])


@contextlib.contextmanager
def only_trainable(trainable: Any, *frozen: Any) -> Iterator[None]:
    """Freeze `frozen` modules for the duration (the loop trains whatever requires grad)."""
    saved = [[p.requires_grad for p in m.parameters()] for m in frozen]
    try:
        for m in frozen:
            m.requires_grad_(False)
        trainable.requires_grad_(True)
        yield
    finally:
        for m, flags in zip(frozen, saved):
            for p, flag in zip(m.parameters(), flags):
                p.requires_grad_(flag)


def load_helper(source: str, main: Subject) -> Any:
    """The helper model: a copy of the main model ("copy") or a model that shares its tokenizer."""
    if source == "copy":
        return copy.deepcopy(main.model)
    from unlearnkit.models.loading import load_model

    model, tokenizer = load_model(source, device=str(main.device))
    if tokenizer.get_vocab() != main.tokenizer.get_vocab():
        raise UnlearnkitError(f"method 'logit_offset': helper '{source}' has another tokenizer than the model; the logits must share one vocabulary")
    return model.to(device=main.device, dtype=main.model.dtype)


@register_method("logit_offset")
class LogitOffset(Method):
    """δ-unlearning: a small helper's (unlearned - original) logits are added at decoding."""

    family: ClassVar[str] = "inference"
    description: ClassVar[str] = "logit offset (δ-unlearning): main logits + w·(unlearned helper − original helper)"

    helper: str = Field("copy", description="'copy' (of the model itself) or a model sharing its tokenizer")
    trainer: str = Field("npo", description="training-based method that unlearns the helper")
    trainer_settings: dict[str, Any] = Field(default_factory=dict)
    weight: float = 1.0
    train_on: Literal["combined", "helper"] = "combined"

    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        trainer = get_method(self.trainer, self.trainer_settings)
        if not isinstance(trainer, LossMethod):
            raise UnlearnkitError(f"method 'logit_offset': trainer '{self.trainer}' is not a training-based method")
        wrapper = find_wrapper(subject, OffsetSubject)
        result = subject
        if wrapper is None:  # insert at the bottom: the offset needs the plain model's logits
            base = base_subject(subject)
            original = load_helper(self.helper, base).eval()
            wrapper = OffsetSubject(base, original=original, helper=copy.deepcopy(original), weight=self.weight)
            result = replace_base(subject, wrapper)
        # LoRA wrapping is for plain HF models; the helper is small, so it trains in full.
        local = dataclasses.replace(context, lora=None)
        if self.train_on == "combined":
            training = wrapper.combined()
            with only_trainable(wrapper.helper, wrapper.inner.model, wrapper.original):
                trainer.unlearn(training, request, local)
        else:
            training = wrapper.inner.with_model(wrapper.helper)
            with only_trainable(wrapper.helper, wrapper.original):
                trainer.unlearn(training, request, local)
        wrapper.helper.eval()
        context.stats = local.stats
        return result
