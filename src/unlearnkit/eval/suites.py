"""Named suites of metrics and `evaluate`, which runs one with shared forward passes.

A suite entry says which metric runs on which scope:
- `forget`: each request's records (non-members: the holdout set; KnowMem shots: retain QA);
- `probes`: each request's held-out probes (2-hop questions);
- `retain`, `neighbours`, `real_authors`, `real_facts`, `general_text`: those record sets.

A benchmark may measure other records than it unlearns (MUSE unlearns its raw forget corpus and
measures VerbMem, KnowMem and PrivLeak items): `EvalData.measured` maps a request to those.
`utility` lists the rows whose harmonic mean is the suite's utility row (scope "utility", named
by `utility_name`: TOFU's `model_utility`, the quick suite's own `quick_utility`). Without every
component the row has no value and names what is missing: a harmonic mean of fewer components is
another number, not the same one shrunk.
Entries that compare with the oracle (`oracle=True`) run only when an oracle is given.

The holdout reference (`eval.holdout`): where no oracle was trained, forget quality can compare
with the target's truth ratios on the holdout people instead, who were never trained; given
one, every forget-quality entry also runs against it, as row `<name>/holdout`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from unlearnkit.errors import UnlearnkitError, did_you_mean
from unlearnkit.eval import primitives as P
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.metric import MetricInput, MetricResult, Reference, get_metric, metric_registry
from unlearnkit.eval.passes import sharing
from unlearnkit.eval.result import Row, SuiteResult
from unlearnkit.models.subject import Subject

SCOPES = ("forget", "probes", "retain", "neighbours", "real_authors", "real_facts", "general_text")


@dataclass(frozen=True)
class Entry:
    metric: str
    scope: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # the row name; default the metric name
    oracle: str | None = None  # the oracle's row this compares with, if the oracle is precomputed

    @property
    def row_name(self) -> str:
        return self.label or self.metric


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[Entry, ...]
    utility: tuple[tuple[str, str], ...] = ()  # (scope, row name) components of the utility row
    per_set: int | None = None  # records per kind and set (None: all)
    utility_name: str = "model_utility"  # the utility row's name


def _e(metric: str, scope: str, label: str | None = None, oracle: str | None = None, **params: Any) -> Entry:
    return Entry(metric, scope, params, label, oracle)


# -- TOFU: what OpenUnlearning's `tofu` evaluation computes (docs/metrics.md, TOFU) ----------
def _tofu(correct: str, last_token: str) -> tuple[Entry, ...]:
    """The TOFU entries with the truth ratio's correct answer on forget/retain and the last-token
    rule of ES, EM and Min-K as parameters (the reference form and unlearnkit's variant)."""
    return (
        _e("probability", "forget"),
        _e("rouge", "forget"),
        _e("truth_ratio", "forget", aggregation="forget", correct=correct),
        _e("extraction_strength", "forget", last_token=last_token),
        _e("exact_memorization", "forget", last_token=last_token),
        _e("mia_min_k", "forget", kind="qa", last_token=last_token),
        _e("forget_quality", "forget", oracle="truth_ratio", correct=correct),
        _e("privleak", "forget", kind="qa", oracle="mia_min_k", last_token=last_token),
        _e("probability", "retain"),
        _e("rouge", "retain"),
        _e("truth_ratio", "retain", aggregation="retain", correct=correct),
        *(
            entry
            for scope in ("real_authors", "real_facts")
            for entry in (
                _e("probability_options", scope),
                _e("rouge", scope),
                _e("truth_ratio", scope, aggregation="retain", correct="answer"),
            )
        ),
    )


TOFU = _tofu("paraphrased", "drop")
TOFU_OURS = _tofu("auto", "keep")
# TOFU's model utility: the harmonic mean of these 9 (retain, real authors, world facts).
TOFU_UTILITY = tuple(
    (scope, name)
    for scope in ("retain", "real_authors", "real_facts")
    for name in ("probability" if scope == "retain" else "probability_options", "rouge", "truth_ratio")
)


# -- MUSE: what swj0419/muse_bench computes (docs/metrics.md, MUSE) ----------------------------
# `source` picks a benchmark split's records where the data is tagged with them (MUSE's own
# files); on untagged data (the built-in world) every record of the right kind counts.
def _muse(truncate: str, last_token: str) -> tuple[Entry, ...]:
    return (
        _e("verbmem", "forget", source="verbmem/forget", truncate=truncate),
        _e("knowmem", "forget", source="knowmem/forget_qa"),
        _e("mia_min_k", "forget", label="mia_min_k/passage", kind="passage", source="privleak/forget", last_token=last_token),
        _e("privleak", "forget", label="privleak/passage", kind="passage", source="privleak/forget", last_token=last_token, oracle="mia_min_k/passage"),
        _e("extraction_strength", "forget", label="extraction_strength/passage", kind="passage", source="verbmem/forget"),
        _e("knowmem", "retain", source="knowmem/retain_qa"),
    )


MUSE = _muse("muse", "keep")
MUSE_OURS = _muse("new_tokens", "drop")
MIA = tuple(
    _e(f"mia_{attack}", "forget", label=f"mia_{attack}/{kind}", kind=kind)
    for kind in ("qa", "passage")
    for attack in ("loss", "zlib", "min_k", "min_k_pp", "gradnorm")
) + tuple(
    _e(metric, "forget", label=f"{metric}/{kind}", kind=kind, oracle=oracle)
    for kind in ("qa", "passage")
    for metric, oracle in (("mia_reference", None), ("privleak", f"mia_min_k/{kind}"))
)
QUICK = (
    _e("probability", "forget"),
    _e("truth_ratio", "forget", aggregation="forget", correct="auto"),
    _e("extraction_strength", "forget"),
    _e("mia_min_k", "forget", kind="qa"),
    _e("forget_quality", "forget", oracle="truth_ratio", correct="auto"),
    _e("privleak", "forget", kind="qa", oracle="mia_min_k"),
    _e("probability", "retain"),
    _e("truth_ratio", "retain", aggregation="retain", correct="auto"),
    _e("option_accuracy", "real_facts"),
    _e("mc_accuracy", "real_facts"),
    _e("perplexity", "general_text"),
)
EXTRA = (
    _e("probability", "probes"),
    _e("rouge", "probes"),
    _e("rouge", "forget", label="rouge/paraphrased", question="paraphrased"),
    _e("probability", "neighbours"),
    _e("rouge", "neighbours"),
    _e("truth_ratio", "neighbours", aggregation="retain", correct="auto"),
    _e("verbmem", "neighbours"),
    _e("option_accuracy", "real_facts"),
    _e("mc_accuracy", "real_facts"),
    _e("mc_accuracy", "forget"),
    _e("mc_accuracy", "probes"),
    _e("perplexity", "general_text"),
)
WMDP = (
    _e("mc_accuracy", "forget"),
    _e("mc_accuracy", "probes"),
    _e("mc_accuracy", "real_facts"),
    _e("perplexity", "general_text"),
)


def _union(*groups: tuple[Entry, ...]) -> tuple[Entry, ...]:
    """Entries of several suites; the same metric with the same settings on a scope runs once
    (under the first suite's row name)."""
    seen: dict[tuple[str, str, str], Entry] = {}
    for entry in (e for group in groups for e in group):
        seen.setdefault((entry.scope, entry.metric, repr(sorted(entry.params.items()))), entry)
    return tuple(seen.values())


SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick",
        "after every sequential step: forward passes only, at most 8 records per kind and set",
        QUICK,
        utility=(("retain", "probability"), ("retain", "truth_ratio"), ("real_facts", "option_accuracy")),
        per_set=8,
        utility_name="quick_utility",
    ),
    "tofu": Suite("tofu", "TOFU as OpenUnlearning computes it: probability, ROUGE-L recall, truth ratio, ES, forget quality, PrivLeak, model utility (9 components)", TOFU, TOFU_UTILITY),
    "tofu_ours": Suite("tofu_ours", "TOFU with unlearnkit's variants: the truth ratio's correct answer by length, every scored token in ES, EM and Min-K", TOFU_OURS, TOFU_UTILITY),
    "muse": Suite("muse", "MUSE as swj0419/muse_bench computes it: VerbMem, KnowMem (forget and retain), PrivLeak", MUSE, (("retain", "knowmem"),), utility_name="muse_utility"),
    "muse_ours": Suite("muse_ours", "MUSE with unlearnkit's variants: VerbMem reference of max_new_tokens tokens, Min-K without the last token", MUSE_OURS, (("retain", "knowmem"),), utility_name="muse_utility"),
    "wmdp": Suite("wmdp", "WMDP: multiple-choice accuracy on the hazardous questions (lm-evaluation-harness's zero-shot acc)", WMDP),
    "mia": Suite("mia", "membership inference: six attacks on QA and passages, PrivLeak", MIA),
    "full": Suite("full", "everything: tofu + muse + mia + probes, neighbours, utility sets", _union(TOFU, MUSE, MIA, EXTRA), TOFU_UTILITY),
}


# The names utility rows go by (the report and comparisons read whichever a run has).
UTILITY_ROWS: tuple[str, ...] = tuple(dict.fromkeys(s.utility_name for s in SUITES.values() if s.utility))


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise UnlearnkitError(f"unknown suite '{name}'{did_you_mean(name, SUITES)}; valid: {', '.join(SUITES)}")
    return SUITES[name]


def caps_generation(metric: str) -> bool:
    """Whether `max_new_tokens` bounds this metric's cost: it generates and has that setting."""
    cls = metric_registry.get(metric)
    return cls.generates and "max_new_tokens" in cls.model_fields


def with_max_new_tokens(suite: Suite, max_new_tokens: int) -> Suite:
    """The same suite with every generation cut to `max_new_tokens` (cheaper; recorded in the
    result's settings, since it changes ROUGE-based numbers)."""
    entries = tuple(
        replace(e, params={**e.params, "max_new_tokens": max_new_tokens}) if caps_generation(e.metric) else e
        for e in suite.entries
    )
    return replace(suite, entries=entries)


def scope_inputs(scope: str, data: EvalData) -> list[MetricInput]:
    """The MetricInputs a suite scope expands to (one per request for forget/probes).

    KnowMem's in-context examples: the benchmark's own for the scope (MUSE's `forget_qa_icl`,
    `retain_qa_icl`), else the retain set's QA.
    """
    retain_qa = [r for r in data.retain if r.kind == "qa"]
    shots = data.shots.get(scope, retain_qa) if scope != "probes" else retain_qa
    if scope == "forget":
        return [MetricInput(data.measured.get(r.id, r.records), data.holdout, shots, r.id) for r in data.requests]
    if scope == "probes":
        return [MetricInput(r.probes, data.holdout, shots, f"{r.id}/probes") for r in data.requests if r.probes]
    if scope in SCOPES:
        return [MetricInput(getattr(data, scope), data.holdout, shots, scope)]
    raise UnlearnkitError(f"unknown scope '{scope}'{did_you_mean(scope, SCOPES)}")


Oracle = Subject | SuiteResult | None
HOLDOUT_SCOPE = "holdout"  # the holdout reference's one scope (eval.holdout)
HOLDOUT_SUFFIX = "/holdout"  # a forget-quality row measured against the holdout reference


def holdout_ratios_row(row_name: str) -> str:
    """The holdout reference's row holding the truth ratios a forget-quality entry compares with."""
    return f"truth_ratio/{row_name}"


def _reference(entry: Entry, scope: str, oracle: Oracle) -> Reference:
    if isinstance(oracle, SuiteResult):
        return oracle.result(scope, entry.oracle) if entry.oracle else None
    return oracle


def evaluate(suite: str | Suite, subject: Subject, data: EvalData, oracle: Oracle = None, *, share: bool = True,
             holdout: SuiteResult | None = None) -> SuiteResult:
    """Run a suite on `subject`; each distinct forward pass and generation runs once.

    `oracle`: the retrain oracle as a Subject (its passes are shared too), or its SuiteResult of
    the same suite (precomputed); oracle comparisons are skipped without it.
    `share=False` computes every metric's passes on its own (the benchmark's baseline).
    `holdout`: the holdout reference (`eval.holdout.holdout_reference`); forget quality then
    also runs against it (rows `<name>/holdout`).
    """
    suite = get_suite(suite) if isinstance(suite, str) else suite
    data = data.limited(suite.per_set)
    result = SuiteResult(suite.name, subject.name, settings={"per_set": suite.per_set, "sizes": data.sizes(), "metrics": {}})
    started = time.perf_counter()
    with sharing(share) as counts:
        for entry in suite.entries:
            metric = get_metric(entry.metric, **entry.params)
            result.settings["metrics"][f"{entry.scope}:{entry.row_name}"] = {"metric": entry.metric, **metric.settings()}
            spent = 0.0
            for inputs in scope_inputs(entry.scope, data):
                reference = _reference(entry, inputs.scope, oracle) if metric.needs_reference or entry.oracle else None
                if not metric.applies(inputs) or (metric.needs_reference and reference is None):
                    continue
                tick = time.perf_counter()
                outcome = metric.compute(subject, inputs, reference)
                seconds = time.perf_counter() - tick
                spent += seconds
                result.add(Row(inputs.scope, entry.row_name, outcome.value, len(outcome.per_item), seconds), outcome)
            result.timings[f"{entry.scope}:{entry.row_name}"] = spent
        if holdout is not None:
            _against_holdout(result, suite, subject, data, holdout)
        _add_utility(result, suite)
        result.passes = counts.as_dict()
    result.timings["total"] = time.perf_counter() - started
    return result


def _against_holdout(result: SuiteResult, suite: Suite, subject: Subject, data: EvalData, holdout: SuiteResult) -> None:
    """Each forget-quality entry once more per request, against the holdout reference's truth
    ratios (inside the suite's sharing block: the request's own truth ratios are reused)."""
    for entry in suite.entries:
        reference = holdout.result(HOLDOUT_SCOPE, holdout_ratios_row(entry.row_name))
        if entry.metric != "forget_quality" or entry.scope != "forget" or reference is None:
            continue
        metric = get_metric(entry.metric, **entry.params)
        for inputs in scope_inputs(entry.scope, data):
            if not metric.applies(inputs):
                continue
            tick = time.perf_counter()
            outcome = metric.compute(subject, inputs, reference)
            result.add(Row(inputs.scope, entry.row_name + HOLDOUT_SUFFIX, outcome.value, len(outcome.per_item), time.perf_counter() - tick), outcome)


def _add_utility(result: SuiteResult, suite: Suite) -> None:
    """The utility row: the harmonic mean of every declared component, or no value (with the
    missing components named) when one did not run."""
    if not suite.utility:
        return
    components = {f"{scope}:{name}": result.value(scope, name) for scope, name in suite.utility}
    present = {k: v for k, v in components.items() if v is not None}
    missing = [k for k in components if k not in present]
    value = P.model_utility([max(0.0, v) for v in present.values()]) if present and not missing else None
    outcome = MetricResult(value, {}, {"components": present, "missing": missing})
    result.add(Row("utility", suite.utility_name, value, len(present), 0.0), outcome)


def missing_utility(result: SuiteResult) -> dict[str, list[str]]:
    """{utility row: [missing components]} for every utility row left without a value."""
    return {
        row.metric: list(outcome.details.get("missing", []))
        for row in result.rows
        if row.scope == "utility" and row.value is None and (outcome := result.result(row.scope, row.metric)) is not None
    }
