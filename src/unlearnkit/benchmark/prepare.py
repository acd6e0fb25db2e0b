"""`unlearnkit prepare`: the target model and the retrain oracles of a built-in world.

The **target** is the base model fine-tuned on every trained person's QA and biography
(requests + neighbours + retain). **Oracle t** is the same base model fine-tuned the same way
on the world without requests 1..t, so oracle K is the retrain-from-scratch reference for the
whole sequence. After training, every model keeps `finetune_share` of its weight change (a
weight-space ensemble with the base model), which brings back the base model's real knowledge
that fine-tuning on invented facts displaced. Each model is cached under
`$UNLEARNKIT_CACHE/prepared/<hash>`, the hash covering the base model, the exact training
examples, the prompt format and the training settings; a second call loads instead of
training. `models.stack.save_subject` writes atomically, so an interrupted prepare leaves
either a finished model or nothing that a later call would trust, and a rerun resumes with the
models still missing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from unlearnkit import distributed

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.data.world import World, load_world
from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.result import SuiteResult
from unlearnkit.eval.suites import Entry, Suite, evaluate
from unlearnkit.models.loading import cache_dir, source_fingerprint, wrap_lora
from unlearnkit.models.stack import META_FILE, load_subject, save_subject
from unlearnkit.models.subject import Subject
from unlearnkit.models.weights import scale_change
from unlearnkit.progress import console
from unlearnkit.training import Example, LengthGroupedFineTune, TrainConfig, TrainStats, resolve_precision, train

CACHE_VERSION = 2  # bump when the training recipe changes in a way the settings do not show

# Which oracles to train: one per request ("all"), only the last ("final"), none, or the
# oracles after the listed numbers of requests (sparse oracles for long streams: [25, 50, 100];
# between them the runner measures against the holdout reference, docs/sequential.md).
OracleChoice = Literal["all", "final", "none"] | list[int]
# Training settings that prepare decides itself: `precision` is its own top-level setting and
# `LengthGroupedFineTune` always shares prompt prefixes (left out of the cache key, so models
# prepared before these settings existed keep their keys).
PREPARE_OWN = ("precision", "share_prefix")
# Training settings that no longer exist (the guard replaced them), at the values every prepared
# model had: kept in the cache key so models prepared before they went keep their keys.
RETIRED_TRAIN_FIELDS = {"stop_forget_prob": None, "check_every": 5}


def default_train_config() -> TrainConfig:
    """The small world's recipe (docs/benchmark.md; experiments E1-E6 in bench/README.md): 7 epochs
    at lr 3e-4 with linear decay took the target to 99% greedy accuracy on its facts; 5 epochs
    gave 65%, 6 at a constant rate 76%."""
    return TrainConfig(lr=3e-4, epochs=7, batch_size=8, schedule="linear", warmup_ratio=0.05, weight_decay=0.0, seed=0)


class PrepareSettings(BaseModel):
    """What `prepare` trains, besides the world and base model."""

    model_config = ConfigDict(extra="forbid")

    train: TrainConfig = Field(default_factory=default_train_config)
    lora: dict[str, Any] | None = None  # None: full fine-tuning; else `wrap_lora` settings
    oracles: OracleChoice = "all"
    # Mix true real-fact QA of countries outside the evaluated set into every model's data
    # (`rehearsal_for`): without it, real-fact accuracy fell from 58% to 17% (bench/README.md, E1-E6).
    rehearse_real_facts: bool = True
    # Mixed precision (fp32 weights, bf16 matmuls): 0.9-1.55x per step on this CPU (AVX512-BF16),
    # median ~1.3x, four side-by-side pairs measured under heavy load (commit 7c7b46b); uncertain.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # After training, keep this share of the weight change: θ = θ_base + share·(θ_ft − θ_base)
    # (WiSE-FT's weight-space ensemble). 1.0 keeps the model as trained. Why 0.6: the trained
    # model answered 99% of its facts but only 52% of the real facts greedily (base 62%); at 0.6
    # it answers 94% and 62% (bench/README.md, experiment E7).
    finetune_share: float = Field(0.6, gt=0.0, le=1.0)

    @field_validator("oracles")
    @classmethod
    def _steps(cls, value: OracleChoice) -> OracleChoice:
        if isinstance(value, list):
            if not value or any(t < 1 for t in value):
                raise ValueError("list the numbers of requests after which to train an oracle, each at least 1 (e.g. [25, 50, 100])")
            if sorted(set(value)) != value:
                raise ValueError(f"{value}: list each step once, in increasing order")
        return value

    @model_validator(mode="before")
    @classmethod
    def _flat_train_keys(cls, data: Any) -> Any:
        """A plan may write `prepare: {epochs: 3, lr: 2e-4}`: training keys go into `train`."""
        if isinstance(data, dict):
            flat = {k: data[k] for k in data if k in TrainConfig.model_fields and k not in PREPARE_OWN}
            if flat:
                data = {k: v for k, v in data.items() if k not in flat}
                base = data.get("train", default_train_config())
                base = base.model_dump() if isinstance(base, TrainConfig) else dict(base)
                data["train"] = {**base, **flat}
        return data


@dataclass
class PreparedModel:
    name: str  # "target", "oracle-1", ...
    path: Path
    removed: list[str]  # ids of the requests whose records it never saw
    trained_now: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedWorld:
    world: Path
    base: str
    target: Path
    oracles: dict[int, Path]  # t -> oracle trained without requests 1..t
    models: list[PreparedModel]

    @property
    def trained_any(self) -> bool:
        return any(m.trained_now for m in self.models)


def encode_records(subject: Subject, records: list[Record]) -> list[Example]:
    """Training examples: QA pairs in the prompt format; a passage's whole text, raw (a target
    learns the whole biography, as it is scored)."""
    return [{"x": subject.encode_record(record, whole_passage=True, where=f"record '{record.id}'")} for record in records]


def rehearsal_for(world: World) -> list[Record]:
    """True capital and continent QA of countries the world does not evaluate (see the module's
    `data.knowledge.rehearsal_records`). Measured alternative that did worse: replaying the base
    model's own greedy answers instead of the true ones (45% against 52% greedy real-fact
    accuracy on the small world, bench/README.md, E6)."""
    from unlearnkit.data.knowledge import rehearsal_records

    return rehearsal_records({str(r.meta.get("country")) for r in world.real_facts})


def model_key(base: dict[str, Any], examples: list[Example], fmt: str, settings: PrepareSettings) -> str:
    digest = hashlib.sha256()
    # `oracles` is left out: it says which models to make, not how one is made.
    header = {
        "version": CACHE_VERSION, "base": base, "format": fmt, "train": {**settings.train.model_dump(exclude=set(PREPARE_OWN)), **RETIRED_TRAIN_FIELDS},
        "lora": settings.lora, "precision": settings.precision,
    }
    if settings.finetune_share != 1.0:  # 1.0 is the model as trained: its key stays what it was
        header["finetune_share"] = settings.finetune_share
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for example in examples:
        digest.update(json.dumps([example["x"].input_ids, example["x"].labels]).encode())
    return digest.hexdigest()[:24]


def oracle_steps(oracles: OracleChoice, num_requests: int) -> list[int]:
    """The numbers t of leading requests each oracle is trained without."""
    if isinstance(oracles, list):
        beyond = [t for t in oracles if t > num_requests]
        if beyond:
            raise UnlearnkitError(f"prepare: oracles: {beyond[0]} is beyond the world's {num_requests} requests")
        return list(oracles)
    return {"all": list(range(1, num_requests + 1)), "final": [num_requests], "none": []}[oracles]


def parse_oracles(text: str) -> OracleChoice:
    """`--oracles`: all, final, none, or step numbers separated by commas (10,25,50,100)."""
    if text in ("all", "final", "none"):
        return text  # type: ignore[return-value]
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UnlearnkitError(f"--oracles '{text}': use all, final, none or step numbers such as 10,25,50,100") from None


def _plan(world: World, oracles: OracleChoice) -> list[tuple[str, int]]:
    """(name, number of leading requests removed) of every model to prepare."""
    return [("target", 0), *[(f"oracle-{t}", t) for t in oracle_steps(oracles, len(world.requests))]]


def prepare_world(
    model_source: str,
    world_dir: str | Path,
    settings: PrepareSettings | None = None,
    *,
    subject: Subject | None = None,
    cache: Path | None = None,
    fmt: str | None = None,
    device: str = "auto",
) -> PreparedWorld:
    """Train (or find in the cache) the target and the oracles of the world at `world_dir`.

    `subject` may hand in an already loaded base model (tests pass a tiny one); it is never
    modified: each model trains on its own copy.
    """
    settings = settings or PrepareSettings()
    world = load_world(world_dir)
    base = subject or load_subject(model_source, fmt=fmt, device=device)
    # Not switched by UNLEARNKIT_FAST_PATH: the cache key holds the precision (models/precision.py).
    settings = settings.model_copy(update={"precision": resolve_precision(settings.precision, base.device, follow_fast_path=False)})
    root = (cache or cache_dir()) / "prepared"
    fingerprint = source_fingerprint(model_source)
    models: list[PreparedModel] = []
    rehearsal = rehearsal_for(world) if settings.rehearse_real_facts else []
    for name, removed in _plan(world, settings.oracles):
        examples = encode_records(base, world.trained(without=removed) + rehearsal)
        key = model_key(fingerprint, examples, base.fmt.name, settings)
        out = root / key
        removed_ids = [r.id for r in world.requests[:removed]]
        if (out / META_FILE).exists():
            stats = json.loads((out / META_FILE).read_text()).get("stats", {})
            models.append(PreparedModel(name, out, removed_ids, trained_now=False, stats=stats))
            console.print(f"{name}: cached at {out}")
            continue
        model, stats = _train_one(base, examples, settings, description=f"prepare {name}")
        meta = {
            "kind": "unlearnkit-prepared",
            "name": name,
            "base": fingerprint,
            "world": str(Path(world_dir).resolve()),
            "world_meta": {k: world.meta.get(k) for k in ("seed", "size", "num_requests")},
            "removed_requests": removed_ids,
            "examples": len(examples),
            "format": base.fmt.name,
            "settings": settings.model_dump(),
            "stats": stats,
        }
        with distributed.main_writes() as writer:  # every process trained it; one writes it
            if writer:
                save_subject(base.with_model(model, name=name), out, meta=meta)
        models.append(PreparedModel(name, out, removed_ids, trained_now=True, stats=stats))
        console.print(f"{name}: trained {stats['steps']} steps in {stats['seconds']:.0f} s, final loss {stats['final_loss']:.3f} -> {out}")
    return PreparedWorld(
        world=Path(world_dir),
        base=model_source,
        target=models[0].path,
        oracles={len(m.removed): m.path for m in models[1:]},
        models=models,
    )


def _train_one(base: Subject, examples: list[Example], settings: PrepareSettings, description: str) -> tuple[Any, dict[str, Any]]:
    model = copy.deepcopy(base.model)
    if settings.lora is not None:
        model = wrap_lora(model, **settings.lora)
    subject = base.with_model(model)
    torch.manual_seed(settings.train.seed)
    started = time.perf_counter()
    objective = LengthGroupedFineTune(settings.precision)
    config = settings.train.model_copy(update={"precision": settings.precision})
    result: TrainStats = train(subject, examples, objective, config, description=description)
    tuned = subject.model.merge_and_unload() if settings.lora is not None else subject.model
    if settings.finetune_share < 1.0:
        scale_change(tuned, base.model, settings.finetune_share)
    losses = [h["loss"] for h in result.history]
    window = max(1, len(losses) // 10)
    return tuned, {
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": time.perf_counter() - started,
        "first_loss": sum(losses[:window]) / window,
        "final_loss": sum(losses[-window:]) / window,
    }


# -- quality check (the figures of docs/benchmark.md), run through the evaluation suites ----------
def _facts(records: list[Record]) -> list[Record]:
    return [r for r in records if r.kind == "qa" and r.meta.get("type", "fact") == "fact"]


QUALITY = Suite(
    "prepare-check",
    "a prepared world's quality bar: facts answered, membership by loss, real knowledge",
    (
        Entry("answer_accuracy", "forget"),  # every scope below is a "request" of its own
        Entry("mia_loss", "forget", {"kind": "qa"}),  # members (trained facts) vs the holdout
        Entry("answer_accuracy", "real_facts"),
        Entry("option_accuracy", "real_facts"),
    ),
)


def _scored(subject: Subject, sets: dict[str, list[Record]], holdout: list[Record], real_facts: list[Record]) -> SuiteResult:
    data = EvalData(requests=[ForgetRequest(id=name, records=records) for name, records in sets.items() if records],
                    holdout=holdout, real_facts=real_facts)
    return evaluate(QUALITY, subject, data)


def check_quality(prepared: PreparedWorld, world: World, base: Subject) -> dict[str, Any]:
    """The issue's quality bar: target accuracy on trained facts, loss-based membership AUC
    (trained vs holdout), real-fact accuracy against the base model, and each oracle's accuracy
    on the people it never saw (which should sit at the holdout level)."""
    target = base.with_model(load_subject(prepared.target, device=str(base.device)).model, name="target")
    trained, holdout = _facts(world.trained()), _facts(world.holdout)
    # Membership compares trained facts with the holdout: the holdout set plays the non-members.
    scored = _scored(target, {"trained": trained, "holdout": holdout}, holdout, world.real_facts)
    on_base = _scored(base, {}, [], world.real_facts)
    report: dict[str, Any] = {
        "target": {
            "trained_fact_accuracy": scored.value("trained", "answer_accuracy"),
            "holdout_fact_accuracy": scored.value("holdout", "answer_accuracy"),
            "membership_auc_loss": scored.value("trained", "mia_loss"),
            "real_fact_accuracy": scored.value("real_facts", "answer_accuracy"),
            "real_fact_option_accuracy": scored.value("real_facts", "option_accuracy"),
        },
        "base": {
            "real_fact_accuracy": on_base.value("real_facts", "answer_accuracy"),
            "real_fact_option_accuracy": on_base.value("real_facts", "option_accuracy"),
        },
        "oracles": {},
    }
    for t, path in sorted(prepared.oracles.items()):
        oracle = base.with_model(load_subject(path, device=str(base.device)).model, name=f"oracle-{t}")
        removed = _facts([r for q in world.requests[:t] for r in q.records])
        kept = _facts([r for q in world.requests[t:] for r in q.records] + world.retain)
        result = _scored(oracle, {"removed": removed, "kept": kept, "holdout": holdout}, [], [])
        report["oracles"][t] = {
            "removed_fact_accuracy": result.value("removed", "answer_accuracy"),
            "kept_fact_accuracy": result.value("kept", "answer_accuracy"),
            "holdout_fact_accuracy": result.value("holdout", "answer_accuracy"),
        }
    return report
