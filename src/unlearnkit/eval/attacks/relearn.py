"""Benign relearning attack (Hu et al., ICLR 2025, s-huu/jog_llm_memory): fine-tune the unlearned model for a few steps on
a small relearn set D′ that does not contain the answers it is then asked for, and re-run the
forget metrics. The same is done to the oracle, the honest baseline: a model that never saw
the people also learns from D′ (the control of Hu et al.).

Relearn sets (variants):
- `forget_share`: a seeded `share` of the request's QA records; the metrics are then measured
  on the **other** forget records only (before and after alike), so D′ never holds an answer
  that is asked.
- `related_text`: records about people related to the forgotten ones (the world's neighbours,
  found through the 2-hop probes' `via`; without that meta, every neighbour record). A record
  that contains the answer of any forget question is dropped, except the related person's own
  name (the answer of the link question "who is X's mentor?"), which a text about that person
  cannot avoid.

Training is the project's one loop (`engine.loop.train` with `FineTune`), full-parameter, on a
copy of the weights; defaults follow the reference code (lr 1e-5, weight decay 0, ~10 steps).
"""

from __future__ import annotations

import copy
import random
from typing import ClassVar, Literal

from pydantic import Field

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.training import FineTune, TrainConfig, train
from unlearnkit.eval.attacks._base import Variant, register_attack
from unlearnkit.eval.attacks._forget import WeightAttack, forget_measure
from unlearnkit.eval.attacks._judge import contains_answer
from unlearnkit.eval.data import EvalData
from unlearnkit.models.subject import Subject

RelearnSet = Literal["forget_share", "related_text"]


def relearn_subject(subject: Subject, records: list[Record], config: TrainConfig) -> Subject:
    """A copy of `subject` fine-tuned on `records` (the original is untouched)."""

    relearned = subject.with_model(copy.deepcopy(subject.model), name=f"{subject.name}+relearn")
    for parameter in relearned.model.parameters():
        parameter.requires_grad_(True)
    examples = [{"x": relearned.encode_record(r, where=f"relearn record {r.id or i}")} for i, r in enumerate(records)]
    train(relearned, examples, FineTune(), config, description="relearning")
    relearned.model.eval()
    return relearned


def forget_share(records: list[Record], share: float, seed: int) -> list[Record]:
    """A seeded `share` of the QA records (at least one)."""
    qa = [r for r in records if r.kind == "qa"]
    count = max(1, round(share * len(qa)))
    return random.Random(seed).sample(qa, min(count, len(qa)))


def related_records(request: ForgetRequest, data: EvalData) -> list[Record]:
    """Records about the people related to the request's people, minus any that states a
    removed fact (see the module doc)."""
    people = {r.meta.get("person") for r in request.records} - {None}
    related = {p.meta["via"] for p in request.probes if p.meta.get("person") in people and "via" in p.meta}
    pool = [r for r in data.neighbours + data.retain if r.meta.get("person") in related] if related else list(data.neighbours)
    pool = list({r.id or str(i): r for i, r in enumerate(pool)}.values())  # a set may be passed twice
    relations = {p.meta.get("relation") for p in request.probes} - {None}
    qa = [r for r in request.records if r.kind == "qa" and r.answer]
    removed = [r.answer or "" for r in qa if r.meta.get("attribute") not in relations]
    return [r for r in pool if not any(contains_answer(_text(r), answer) for answer in removed)]


def _text(record: Record) -> str:
    return f"{record.question} {record.answer}" if record.kind == "qa" else record.passage_text


@register_attack("relearn")
class Relearn(WeightAttack):
    description: ClassVar[str] = "a few fine-tuning steps on a share of the forget set or on related text, then the forget metrics"

    sets: list[RelearnSet] = Field(default_factory=lambda: ["forget_share", "related_text"])
    share: float = Field(0.1, gt=0, lt=1, description="forget_share: fraction of the QA records relearned")
    steps: int = Field(10, ge=1)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(4, ge=1)
    seed: int = 0

    def config(self) -> TrainConfig:
        return TrainConfig(lr=self.lr, max_steps=self.steps, batch_size=self.batch_size, schedule="constant", weight_decay=0.0, seed=self.seed)

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        records = self.qa(request.records) + [r for r in request.records if r.kind != "qa"]
        out = []
        for name in self.sets:
            relearn = forget_share(records, self.share, self.seed) if name == "forget_share" else related_records(request, data)
            if not relearn:
                notes.append(f"{name}: no relearn records (no related people found); skipped")
                continue
            held = {id(r) for r in relearn}
            measured = [r for r in records if id(r) not in held]
            measure = forget_measure(request.id, measured, data, self.metrics, self.max_new_tokens)
            notes.append(f"{name}: {len(relearn)} relearn records, {len(measured)} measured")
            out.append(Variant(name, measure, measure, transform=lambda s, rs=relearn: relearn_subject(s, rs, self.config()), items=len(measured)))
        return out
