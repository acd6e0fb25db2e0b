"""The reference frameworks' evaluation files: results written in open-unlearning's layout, and a
retain model's logs (open-unlearning's, or TOFU's original per-item logs) read as the oracle.

open-unlearning ("OU", locuslab/open-unlearning `src/evals/base.py`) writes one `<NAME>_EVAL.json`
per evaluation, `{metric: {"agg_value": x, "value_by_index": {index: {...}}}}`, and a
`<NAME>_SUMMARY.json`, `{metric: agg_value}`. Its metric names are TOFU's and MUSE's
(`forget_truth_ratio`, `model_utility`, `forget_verbmem_ROUGE`, ...); a row of ours with no OU
counterpart keeps its own name (`scope/metric`). Forget quality and PrivLeak read a retain
model's file: its `forget_truth_ratio` scores and its `mia_min_k` AUC (`retain_logs_path` in OU).

TOFU's original repository (locuslab/tofu) publishes per-item logs instead
(`eval_log_aggregated.json`: per set, `avg_gt_loss`, `avg_paraphrased_loss`,
`average_perturb_loss`, `rougeL_recall` by item); `tofu_legacy_scores` aggregates them with
unlearnkit's formulas, and such a file of a retain model is an oracle too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval import primitives as P
from unlearnkit.eval.metric import MetricResult, finite
from unlearnkit.eval.result import Row, SuiteResult
from unlearnkit.files import write_json

# (scope, our row) -> OU's metric name; "forget" stands for the (one) request's scope.
OU_NAMES: dict[tuple[str, str], str] = {
    ("forget", "probability"): "forget_Q_A_Prob",
    ("forget", "rouge"): "forget_Q_A_ROUGE",
    ("forget", "truth_ratio"): "forget_truth_ratio",
    ("forget", "forget_quality"): "forget_quality",
    ("forget", "extraction_strength"): "extraction_strength",
    ("forget", "exact_memorization"): "exact_memorization",
    ("forget", "mia_min_k"): "mia_min_k",
    ("forget", "privleak"): "privleak",
    ("retain", "probability"): "retain_Q_A_Prob",
    ("retain", "rouge"): "retain_Q_A_ROUGE",
    ("retain", "truth_ratio"): "retain_Truth_Ratio",
    ("real_authors", "probability_options"): "ra_Q_A_Prob_normalised",
    ("real_authors", "rouge"): "ra_Q_A_ROUGE",
    ("real_authors", "truth_ratio"): "ra_Truth_Ratio",
    ("real_facts", "probability_options"): "wf_Q_A_Prob_normalised",
    ("real_facts", "rouge"): "wf_Q_A_ROUGE",
    ("real_facts", "truth_ratio"): "wf_Truth_Ratio",
    ("utility", "model_utility"): "model_utility",
    ("forget", "verbmem"): "forget_verbmem_ROUGE",
    ("forget", "knowmem"): "forget_knowmem_ROUGE",
    ("retain", "knowmem"): "retain_knowmem_ROUGE",
    ("forget", "mia_min_k/passage"): "mia_min_k",
    ("forget", "privleak/passage"): "privleak",
    ("forget", "extraction_strength/passage"): "extraction_strength",
}
# The oracle rows forget quality and PrivLeak compare with, and where a retain model's OU file has them.
ORACLE_KEYS = {"truth_ratio": "forget_truth_ratio", "mia_min_k": "mia_min_k", "mia_min_k/passage": "mia_min_k", "mia_min_k/qa": "mia_min_k"}


def request_scopes(result: SuiteResult) -> list[str]:
    """The request ids a result measured (its `sizes` settings name them)."""
    return [key.removeprefix("request:") for key in result.settings.get("sizes", {}) if key.startswith("request:")]


def suite_scope(scope: str, requests: list[str]) -> str:
    """The suite scope a row's scope belongs to: a request id is "forget", `<id>/probes` "probes"."""
    if scope in requests:
        return "forget"
    return "probes" if scope.endswith("/probes") else scope


def ou_name(row: Row, requests: list[str]) -> str:
    """OU's name for a row; with several requests, each request's rows are prefixed by its id."""
    scope = suite_scope(row.scope, requests)
    name = OU_NAMES.get((scope, row.metric), f"{scope}/{row.metric}")
    return f"{row.scope}/{name}" if scope in ("forget", "probes") and len(requests) > 1 else name


def _item(metric: str, value: float | None, generation: str | None, settings: dict[str, Any]) -> dict[str, Any]:
    """One `value_by_index` entry in OU's keys: `prob` (and `avg_loss`) for probabilities,
    `rougeL_*` (with the generation) for ROUGE, `score` for everything else."""
    base = metric.split("/")[0]
    if base == "probability" and value is not None and value > 0:
        return {"prob": value, "avg_loss": -math.log(value)}
    if base == "probability_options":
        return {"prob": finite(value)}
    if base in ("rouge", "verbmem", "knowmem"):
        measure = "rougeL_recall" if settings.get("measure", "f1") == "recall" else "rougeL_f1"
        entry: dict[str, Any] = {measure: finite(value)}
        return entry | ({"generation": generation} if generation is not None else {})
    return {"score": finite(value)}


def to_ou_logs(result: SuiteResult) -> dict[str, dict[str, Any]]:
    """The `<NAME>_EVAL.json` content of a suite result."""
    logs: dict[str, dict[str, Any]] = {}
    requests = request_scopes(result)
    for row in result.rows:
        outcome = result.result(row.scope, row.metric)
        settings = result.settings.get("metrics", {}).get(f"{suite_scope(row.scope, requests)}:{row.metric}", {})
        generations = list((outcome.details.get("generations") if outcome else None) or [])
        by_index = {}
        if outcome is not None:
            for position, (key, value) in enumerate(outcome.per_item.items()):
                generation = generations[position] if position < len(generations) else None
                by_index[key] = _item(row.metric, value, generation, settings)
        entry: dict[str, Any] = {"agg_value": finite(row.value)}
        if by_index:
            entry["value_by_index"] = by_index
        logs[ou_name(row, requests)] = entry
    return dict(sorted(logs.items()))


def ou_file_name(suite: str) -> str:
    """OU's evaluator name: TOFU, MUSE, ... (`tofu_ours` writes TOFU files too)."""
    return suite.split("_")[0].upper()


def write_ou_logs(result: SuiteResult, folder: str | Path) -> tuple[Path, Path]:
    """`<NAME>_EVAL.json` and `<NAME>_SUMMARY.json` in `folder`, OU's layout."""
    folder = Path(folder)
    name = ou_file_name(result.suite)
    logs = to_ou_logs(result)
    summary = {key: entry["agg_value"] for key, entry in logs.items() if entry["agg_value"] is not None}
    return write_json(folder / f"{name}_EVAL.json", logs, indent=4), write_json(folder / f"{name}_SUMMARY.json", summary, indent=4)


# -- reading a retain model's logs as the oracle ---------------------------------------------------
def read_logs(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnlearnkitError(f"--reference-logs {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise UnlearnkitError(f"--reference-logs {path} line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise UnlearnkitError(f"--reference-logs {path}: expected an object of metrics")
    return data


def reference_oracle(path: str | Path, oracle_rows: list[str], scopes: list[str], suite: str) -> SuiteResult:
    """A retain model's evaluation file as the oracle of `suite`: for every forget scope, the
    rows forget quality and PrivLeak compare with (`oracle_rows`), from OU's keys or from TOFU's
    original per-item logs (truth ratios only)."""
    logs = read_logs(path)
    oracle = SuiteResult(suite, f"reference logs {path}")
    for row in dict.fromkeys(oracle_rows):
        found = _oracle_result(logs, row)
        if found is None:
            continue
        for scope in scopes:
            oracle.add(Row(scope, row, found.value, len(found.per_item), 0.0), found)
    if not oracle.rows:
        wanted = ", ".join(sorted({ORACLE_KEYS.get(r, r) for r in oracle_rows}))
        raise UnlearnkitError(f"--reference-logs {path}: none of {wanted} (an open-unlearning *_EVAL.json of a retain model, or TOFU's eval_log_aggregated.json)")
    return oracle


def _oracle_result(logs: dict[str, Any], row: str) -> MetricResult | None:
    key = ORACLE_KEYS.get(row)
    if key is None:
        return None
    entry = logs.get(key)
    if isinstance(entry, dict) and "agg_value" in entry:
        scores = {str(k): float(v["score"]) for k, v in (entry.get("value_by_index") or {}).items() if isinstance(v, dict) and v.get("score") is not None}
        return MetricResult(entry["agg_value"], scores)
    if key == "forget_truth_ratio" and "eval_log_forget.json" in logs:
        ratios = tofu_legacy_ratios(logs["eval_log_forget.json"])
        return MetricResult(P.truth_ratio_forget_score(list(ratios.values()), epsilon=0.0), ratios)
    return None


# -- TOFU's original per-item logs ------------------------------------------------------------------
LEGACY_SETS = {"eval_log.json": "retain", "eval_real_author_wo_options.json": "real_authors", "eval_real_world_wo_options.json": "real_facts"}


def tofu_legacy_ratios(task: dict[str, Any]) -> dict[str, float]:
    """Per item R = wrong/correct from one set of TOFU's logs (`avg_paraphrased_loss`, the correct
    answer's L̄, and `average_perturb_loss`, the perturbed answers'), in TOFU's original form (no
    epsilon)."""
    correct, perturbed = task["avg_paraphrased_loss"], task["average_perturb_loss"]
    return {k: P.truth_ratio(float(correct[k]), [float(x) for x in perturbed[k]], epsilon=0.0) for k in correct}


def tofu_legacy_scores(logs: dict[str, Any], retain_logs: dict[str, Any] | None = None) -> dict[str, float]:
    """TOFU's nine utility components, model utility and (with a retain model's logs) forget
    quality, computed with unlearnkit's formulas from TOFU's per-item logs
    (`eval_log_aggregated.json`), in TOFU's original form: probability with options and truth
    ratio without OU's epsilon."""
    scores: dict[str, float] = {}
    for task, scope in LEGACY_SETS.items():
        data = logs[task]
        correct = np.exp(-np.asarray(list(data["avg_gt_loss"].values()), dtype=float))
        if scope == "retain":
            scores[f"{scope}:probability"] = float(np.mean(correct))
        else:
            wrong = [np.exp(-np.asarray(x, dtype=float)) for x in data["average_perturb_loss"].values()]
            scores[f"{scope}:probability_options"] = float(np.mean([P.probability_with_options(c, w, epsilon=0.0) for c, w in zip(correct, wrong)]))
        scores[f"{scope}:rouge"] = float(np.mean(list(data["rougeL_recall"].values())))
        scores[f"{scope}:truth_ratio"] = P.truth_ratio_retain_score(list(tofu_legacy_ratios(data).values()))
    scores["model_utility"] = P.model_utility(list(scores.values()))
    if retain_logs is not None:
        ours = list(tofu_legacy_ratios(logs["eval_log_forget.json"]).values())
        theirs = list(tofu_legacy_ratios(retain_logs["eval_log_forget.json"]).values())
        scores["forget_quality"] = P.forget_quality(ours, theirs)
    return scores
