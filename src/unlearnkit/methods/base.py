"""What every unlearning method is: typed hyperparameters and `unlearn(subject, request, context)`.

- `Method`: the interface; weight arithmetic and inference-time wrappers implement `unlearn`.
- `LossMethod`: a training-based method supplies only `loss` (and optionally extra example parts
  or reference values to cache); the shared loop in `unlearnkit.training` does the rest.

Register a method with `@register_method("name")` in any module of `unlearnkit.methods`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from unlearnkit.data.formatting import ANSWER_LEAD
from unlearnkit.data.knowledge import stated_at
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.loading import wrap_lora
from unlearnkit.models.subject import Subject
from unlearnkit.registry import Registry, build_with_settings
from unlearnkit.training import Batch, Example, Monitor, TrainConfig, TrainStats, loss_pass, train

Need = Literal["retain", "reference", "idk"]


@dataclass
class UnlearnContext:
    """What a method may use besides the request: retain data and run settings."""

    retain: list[Record] = field(default_factory=list)
    seed: int = 0
    lora: dict[str, Any] | None = None  # LoRA settings; None means full-parameter
    merge_lora: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
    monitor: Monitor | None = None  # guarded unlearning's check during training (unlearnkit.safety)
    stats: TrainStats | None = None  # filled by training-based methods
    # In a sequential run: the records of the requests applied before this one, and records no
    # model was trained on (a world's holdout people), for recipes that guard earlier requests.
    earlier: list[Record] = field(default_factory=list)
    control: list[Record] = field(default_factory=list)
    # Passages the run's start model wrote, each with its log-prob under it (`methods.anchor`),
    # for recipes that hold general text to the start of the run (`anchor_weight`).
    anchor: list[Record] = field(default_factory=list)


class Method(BaseModel):
    """Base of all methods. Subclasses declare hyperparameters as typed pydantic fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    family: ClassVar[str] = "other"
    needs: ClassVar[tuple[Need, ...]] = ()
    description: ClassVar[str] = ""

    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None) -> Method:
        """Build from `key=value` settings, with one clear line for an unknown or bad key."""
        return build_with_settings(cls, settings, "method", "hyperparameter")

    registry_name: ClassVar[str] = "?"

    @property
    def anchor_wanted(self) -> int:
        """How many anchor passages (`UnlearnContext.anchor`) the method trains on; 0: none."""
        return 0


METHODS: Registry[type[Method]] = Registry("method", "unlearnkit.methods")
register_method = METHODS.register


def get_method(name: str, settings: dict[str, Any] | None = None) -> Method:
    return METHODS.get(name).from_settings(settings)


class LossMethod(Method, TrainConfig):
    """A training-based method: its loss over a forget batch and a retain batch, nothing else."""

    family: ClassVar[str] = "gradient"

    # "own" by default: measured on the default chat model (docs/methods.md, "Real knowledge"),
    # the record's bare answer is a sequence the model hardly ever says (p ≈ 0.008), so a loss
    # on it barely touches what the model says; its own words carry the fact.
    answers: Literal["given", "own"] = Field(
        "own",
        description="what a question is trained on: the record's answer, or the model's own greedy answer before the request where it states the record's answer (its words up to the answer as context, the rest as target)",
    )

    # Tied embeddings (the default model's) carry every token's output and input: a forget loss
    # that moves them moves all text. A stream recipe can keep them, and the attention, fixed.
    trainable: str | None = Field(
        None,
        description="regex on parameter names: only parameters whose name matches train (e.g. '\\.mlp\\.'); None: all",
    )

    @field_validator("trainable")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression ({error})") from None
        return pattern

    # Per-request state a method builds in `prepare` (cached reference log-probs, a frozen copy
    # of the model); emptied after every request so nothing outlives it.
    _cache: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def needs_retain(self) -> bool:
        return "retain" in self.needs

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.model_fields})

    # -- hooks a method may override ---------------------------------------------------------
    def forget_records(self, request: ForgetRequest, context: UnlearnContext) -> list[Record]:
        """The records trained on as forget examples (a stream recipe adds earlier requests')."""
        return list(request.records)

    def forget_example(self, subject: Subject, record: Record, index: int) -> Example:
        """The parts of one forget example; `"x"` is the record as (prompt, target)."""
        return {"x": subject.encode_record(record, where=f"forget record {record.id or index}")}

    def retain_records(self, kept: list[Record], context: UnlearnContext) -> list[Record]:
        """The records trained on as retain examples (a method may add the run's anchor passages)."""
        return kept

    def retain_example(self, subject: Subject, record: Record, index: int) -> Example:
        """The parts of one retain example (IDK+AP adds an "I don't know" answer)."""
        return {"x": subject.encode_record(record, where=f"retain record {record.id or index}")}

    def prepare(self, subject: Subject, forget: list[Example], retain: list[Example]) -> None:
        """Called once before training with the frozen starting model (cache reference values)."""

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def targets(self, subject: Subject, request: ForgetRequest, retain: list[Record]) -> tuple[ForgetRequest, list[Record]]:
        """The request and retain records as trained: as given, or answered in the model's own
        words (`answers="own"`)."""
        if self.answers == "given":
            return request, retain
        kept = own_answers(subject, retain) if self.needs_retain else retain
        return request.model_copy(update={"records": own_answers(subject, request.records)}), kept

    # -- the shared driver -------------------------------------------------------------------
    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        request, kept = self.targets(subject, request, context.retain)
        forget = [self.forget_example(subject, r, i) for i, r in enumerate(self.forget_records(request, context))]
        retain = [self.retain_example(subject, r, i) for i, r in enumerate(self.retain_records(kept, context))] if self.needs_retain else []
        if self.needs_retain and not retain:
            raise UnlearnkitError(f"method '{self.registry_name}': needs a retain set (--retain FILE)")
        # A method may freeze parameters (RMU) and peft freezes the base weights; the model
        # handed back must train like the one received, so the flags are restored afterwards.
        flags = [(p, p.requires_grad) for p in subject.model.parameters()]
        working = subject
        if context.lora is not None:
            with torch.random.fork_rng(devices=[]):  # the adapter's initialisation is seeded too
                torch.manual_seed(self.seed)
                working = subject.with_model(wrap_lora(subject.model, **context.lora))
        try:
            if self.trainable is not None:
                freeze_except(working.model, self.trainable, self.registry_name)
            with loss_pass(self.train_config(), working.device):  # reference values as training computes them
                self.prepare(working, forget, retain)
            context.stats = train(
                working, forget, self, self.train_config(), retain if self.needs_retain else None,
                description=f"{self.registry_name} on {request.id}", monitor=context.monitor,
            )
        except BaseException:
            if context.lora is not None:  # peft injected its layers into subject.model: take them out
                working.model.unload()
            raise
        finally:
            self._cache.clear()
            if context.lora is None or context.merge_lora:
                for p, flag in flags:
                    p.requires_grad_(flag)
        if context.lora is not None and context.merge_lora:
            return subject.with_model(working.model.merge_and_unload())
        return working


def freeze_except(model: Any, pattern: str, method: str) -> None:
    """Only parameters that train now and whose name matches `pattern` go on training (the
    caller restores the flags)."""
    selected, kept = re.compile(pattern), 0
    for name, param in model.named_parameters():
        keep = param.requires_grad and bool(selected.search(name))
        param.requires_grad_(keep)
        kept += keep
    if not kept:
        raise UnlearnkitError(f"method '{method}': no trainable parameter's name matches '{pattern}'")


OWN_ANSWER_TOKENS = 48


def own_answers(subject: Subject, records: list[Record]) -> list[Record]:
    """Each question answered in the model's own words where its greedy answer states the
    record's answer (as whole words): the words up to that answer become the context
    (`ANSWER_LEAD`, neither trained nor scored) and the rest the target; otherwise, and for
    passages, the record stays as it is. For a chat model that answers "The capital of France
    is Paris.", the bare "Paris" + EOS is tiny before any unlearning, and a loss on the whole
    sentence also pushes down the words every kept answer shares; the loss on "Paris." after
    its own "The capital of France is" acts on the fact itself."""
    questions = [r for r in records if r.kind == "qa"]
    if not questions:
        return list(records)
    said = iter(subject.greedy([r.question or "" for r in questions], max_new_tokens=OWN_ANSWER_TOKENS))
    out = []
    for record in records:
        text = next(said) if record.kind == "qa" else ""
        at = stated_at(record.answer or "", text) if text else None
        if at is None:
            out.append(record)
            continue
        lead = text[:at].rstrip()
        out.append(record.model_copy(update={"answer": text[len(lead):], "meta": {**record.meta, ANSWER_LEAD: lead}}))
    return out
