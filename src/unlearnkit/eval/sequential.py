"""Read-outs over a sequential run, and the scalability protocol.

`results[t]` is the SuiteResult after step t (0-based): request `requests[t]` unlearned and every
earlier request re-checked. `requests` is the order in which the requests were unlearned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from unlearnkit.data.schema import ForgetRequest, Record

from unlearnkit.eval import primitives as P
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.result import SuiteResult
from unlearnkit.eval.suites import HOLDOUT_SCOPE, HOLDOUT_SUFFIX, Oracle, Suite, evaluate, holdout_ratios_row
from unlearnkit.models.subject import Subject

Table = dict[str, list[float | None]]  # row name -> one value per step


def forget_table(results: Sequence[SuiteResult], metric: str, requests: Sequence[str]) -> Table:
    """{request id: [value at step 1, step 2, ...]} for one forget metric; None before the
    request was unlearned or where the metric did not run."""
    table: Table = {}
    for rid in requests:
        start = unlearned_at(rid, requests)
        table[rid] = [res.value(rid, metric) if step >= start else None for step, res in enumerate(results)]
    return table


def unlearned_at(request_id: str, order: Sequence[str]) -> int:
    """The step index (0-based) at which a request is unlearned: its place in the order."""
    return list(order).index(request_id)


def utility_curve(results: Sequence[SuiteResult], metric: str | None = None, scope: str = "utility") -> list[float | None]:
    """One utility value per step (sustainability: does general ability hold as requests pile up);
    `metric` None reads the suite's own utility row (`model_utility`, `quick_utility`, ...)."""
    if metric is not None:
        return [res.value(scope, metric) for res in results]
    return [next((r.value for r in res.rows if r.scope == scope), None) for res in results]


@dataclass(frozen=True)
class Relapse:
    request: str
    metric: str
    step: int  # 0-based step at which the value climbed back
    value: float
    baseline: float  # the value right after the request's own step


def relapsed(baseline: float | None, value: float | None, threshold: float, higher_means_remembered: bool = True) -> bool:
    """The relapse rule: the request's own step brought its metric to or under `threshold`
    (`baseline`) and a later value is over it again. A request never forgotten at its own step
    is a failure, not a relapse."""
    if baseline is None or value is None:
        return False
    sign = 1.0 if higher_means_remembered else -1.0
    return sign * baseline <= sign * threshold < sign * value


def relapse_flags(
    results: Sequence[SuiteResult],
    metric: str,
    requests: Sequence[str],
    threshold: float,
    *,
    higher_means_remembered: bool = True,
) -> list[Relapse]:
    """Flag every later step where an earlier request's metric climbs back over `threshold`
    after its own step had brought it at or under it (e.g. probability or ROUGE on the forget set
    rising again as other requests are unlearned). Set `higher_means_remembered=False` for
    metrics where a lower value means the content is back."""
    flags = []
    for rid, values in forget_table(results, metric, requests).items():
        start = unlearned_at(rid, requests)
        baseline = values[start] if start < len(values) else None
        for step in range(start + 1, len(values)):
            value = values[step]
            if relapsed(baseline, value, threshold, higher_means_remembered):
                assert baseline is not None and value is not None
                flags.append(Relapse(rid, metric, step, value, baseline))
    return flags


QUALITY_PASS = 0.05  # forget quality at or above this: the KS test cannot tell the model from its reference


def holdout_agreement(requests: Sequence[str], measured: SuiteResult, oracle: SuiteResult, holdout: SuiteResult) -> dict[str, Any]:
    """The holdout reference beside a real oracle, after a step that has one (eval.holdout).

    Per request: the forget probability of the unlearned model, of the oracle (`oracle`: the
    suite on the oracle model) and of the holdout reference; forget quality against the oracle
    and against the holdout reference (rows of `measured`, the step's suite result); and the KS
    p-value of the oracle's own truth ratios against the holdout reference's (how alike the two
    references are). The summary has their means and the share of requests on which both forget
    qualities give the same pass/fail at 0.05.
    """
    quality = next((r.metric.removesuffix(HOLDOUT_SUFFIX) for r in measured.rows if r.metric.endswith(HOLDOUT_SUFFIX)), "forget_quality")
    reference_ratios = holdout.result(HOLDOUT_SCOPE, holdout_ratios_row(quality))
    holdout_probability = holdout.value(HOLDOUT_SCOPE, "probability")
    rows = []
    for rid in requests:
        theirs = oracle.result(rid, "truth_ratio")
        ours = [v for v in theirs.per_item.values() if v is not None] if theirs is not None else []
        reference = [v for v in reference_ratios.per_item.values() if v is not None] if reference_ratios is not None else []
        alike = P.forget_quality(ours, reference) if ours and reference else None
        rows.append({
            "request": rid,
            "probability": measured.value(rid, "probability"),
            "oracle_probability": oracle.value(rid, "probability"),
            "holdout_probability": holdout_probability,
            "forget_quality_oracle": measured.value(rid, quality),
            "forget_quality_holdout": measured.value(rid, quality + HOLDOUT_SUFFIX),
            "oracle_vs_holdout_ks": alike,
        })

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return sum(values) / len(values) if values else None

    gaps = [abs(r["oracle_probability"] - r["holdout_probability"]) for r in rows
            if r["oracle_probability"] is not None and r["holdout_probability"] is not None]
    pairs = [(r["forget_quality_oracle"], r["forget_quality_holdout"]) for r in rows
             if r["forget_quality_oracle"] is not None and r["forget_quality_holdout"] is not None]
    summary = {
        "requests": len(rows),
        "probability": mean("probability"),
        "oracle_probability": mean("oracle_probability"),
        "holdout_probability": holdout_probability,
        "mean_abs_probability_gap": sum(gaps) / len(gaps) if gaps else None,
        "max_abs_probability_gap": max(gaps) if gaps else None,
        "forget_quality_oracle": mean("forget_quality_oracle"),
        "forget_quality_holdout": mean("forget_quality_holdout"),
        "same_verdict": sum((a >= QUALITY_PASS) == (b >= QUALITY_PASS) for a, b in pairs) / len(pairs) if pairs else None,
        "oracle_vs_holdout_ks": mean("oracle_vs_holdout_ks"),
    }
    return {"summary": summary, "requests": rows}


@dataclass(frozen=True)
class ScalePoint:
    size: int
    result: SuiteResult


def scalability(
    unlearn: Callable[[Subject, ForgetRequest], Subject],
    target: Subject,
    records: Sequence[Record],
    sizes: Sequence[int],
    suite: str | Suite,
    data: EvalData,
    oracle: Callable[[int], Oracle] | None = None,
) -> list[ScalePoint]:
    """MUSE's scalability protocol (Shi et al., MUSE): nested forget sets records[:size] for each size, each
    unlearned independently from the same target, each evaluated with the suite (the forget
    scope is the nested set itself, id `scale-<size>`). `oracle(size)` may supply the oracle.
    Plot `utility_curve([p.result for p in points])` against the sizes."""
    if list(sizes) != sorted(set(sizes)) or not sizes or sizes[0] < 1 or sizes[-1] > len(records):
        raise ValueError(f"scalability: sizes must increase within 1..{len(records)}, got {list(sizes)}")
    points = []
    for size in sizes:
        request = ForgetRequest(id=f"scale-{size}", kind="scalability", records=list(records[:size]))
        model = unlearn(target.clone(), request)
        scoped = EvalData(
            [request], data.retain, data.neighbours, data.holdout, data.real_facts, data.general_text
        )
        points.append(ScalePoint(size, evaluate(suite, model, scoped, oracle(size) if oracle else None)))
    return points
