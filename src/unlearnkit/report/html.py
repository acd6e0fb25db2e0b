"""Build `report.html` for a run folder: one self-contained file (inline SVG charts, no network)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from unlearnkit.display import number, unseen_lines
from unlearnkit.eval.metric import metric_registry
from unlearnkit.files import write_text
from unlearnkit.report import plots
from unlearnkit.report.data import SET_SCOPES, RunView, load_run

UTILITY_CAPTION = "utility: harmonic mean of the suite's utility components (higher is better)"
HOLDOUT_SUFFIX = "/holdout"
HOLDOUT_CAPTION = ("KS-test p-value of the truth ratios against the target's on the holdout people, who were never trained "
                   "(the reference between oracles; higher = forgotten)")
HEATMAP_CAPTION = ("forget probability after each step minus that of a model that never saw the request: the first oracle "
                   "trained without it, else the holdout reference (red: still remembered; blue: below a never-seen model; "
                   "blank: not measured at that step)")
FORGOTTEN = {"higher": "lower = forgotten", "lower": "higher = forgotten", None: "closest to the oracle = forgotten"}
BETTER = {True: "higher is better", False: "lower is better", None: "closest to the oracle is better"}


def caption(scope: str, row: str) -> str:
    """A chart's caption from the metric's declared description and direction: on a kept set
    (retain, neighbours, real_facts, general_text) which direction is better, on any other scope
    (a request id, or "forget" for all requests) which direction means forgotten. A row name may
    carry a suffix (`mia_min_k/passage`); an unregistered name is its own caption."""
    if scope == "utility":
        return UTILITY_CAPTION
    if row.endswith(HOLDOUT_SUFFIX):
        return HOLDOUT_CAPTION
    name = row.split("/")[0]
    if name not in metric_registry.names():
        return row
    metric = metric_registry.get(name)
    if not metric.description:
        return row
    direction = BETTER[metric.higher_is_better] if scope in SET_SCOPES else FORGOTTEN[metric.remembered_when]
    return f"{metric.description} ({direction})"


def _summary(view: RunView, requests: bool = True, sets: bool = True) -> list[dict[str, str]]:
    last = view.last_step()
    oracle = view.oracles.get(last, {})
    rows = []
    for rid in view.request_ids if requests else []:
        for metric in view.forget_metrics():
            rows.append({"scope": rid, "metric": metric, "value": number(view.metric(last, rid, metric)),
                         "target": number(view.target.get(rid, {}).get(metric)), "oracle": number(oracle.get(rid, {}).get(metric))})
    for scope, metric in view.set_metrics() if sets else []:
        rows.append({"scope": scope, "metric": metric, "value": number(view.metric(last, scope, metric)),
                     "target": number(view.target.get(scope, {}).get(metric)), "oracle": number(oracle.get(scope, {}).get(metric))})
    return rows


def _relapse_rows(view: RunView) -> list[dict[str, Any]]:
    return [{**r, **{k: number(r[k], 3) for k in ("baseline", "peak", "rise")}} for r in view.relapses()]


def _holdout_rows(view: RunView) -> list[dict[str, str]]:
    """One row per step with an oracle: the holdout reference beside it (holdout_check.json)."""
    keys = ("probability", "oracle_probability", "holdout_probability", "mean_abs_probability_gap",
            "forget_quality_oracle", "forget_quality_holdout", "same_verdict", "oracle_vs_holdout_ks")
    return [{"step": str(step), "requests": str(entry["summary"]["requests"]), **{k: number(entry["summary"].get(k), 3) for k in keys}}
            for step, entry in sorted(view.holdout_check.items())]


VERDICT_MEASURES = (
    ("forget answered", "forget_accuracy"), ("paraphrased answered", "forget_paraphrased_accuracy"),
    ("forget said", "forget_said"), ("retain said", "retain_said"),
    ("collateral answered", "collateral_accuracy"), ("perplexity", "perplexity"),
)


def _verdict_rows(view: RunView) -> list[dict[str, Any]]:
    """One row per guarded step: its verdict and each measure as `before → after`."""
    rows = []
    for step, card in zip([s["step"] for s in view.steps if s.get("verdict")], view.verdicts()):
        before, after = card.get("before", {}), card.get("after", {})
        rows.append({
            "step": step, "request": card["request"], "method": card["method"], "verdict": card["verdict"],
            "kind": "ok" if card["verdict"] == "forgotten" else "bad" if card["verdict"].startswith("budget") else "warn",
            "measures": [f"{number(before.get(k), 3)} → {number(after.get(k), 3)}" for _, k in VERDICT_MEASURES],
            "violations": card.get("violations", []),
            "unseen": unseen_lines(card.get("unseen", {}), short=True),
        })
    return rows


def _attack_rows(view: RunView) -> list[dict[str, str]]:
    keys = ("before", "after", "target", "oracle_after", "recovered", "oracle_recovered")
    return [
        {"attack": r["attack"], "request": r["request"], "variant": row["variant"], "metric": row["metric"], **{k: number(row.get(k)) for k in keys}}
        for r in view.attacks
        for row in r.get("rows", [])
    ]


def _timings(view: RunView) -> dict[str, str]:
    totals = {"unlearning (s)": 0.0, "checkpoints (s)": 0.0, "evaluation (s)": 0.0}
    for s in view.steps:
        totals["unlearning (s)"] += s.get("unlearn_s") or 0.0
        totals["checkpoints (s)"] += s.get("checkpoint_s") or 0.0
        totals["evaluation (s)"] += s.get("eval_s") or 0.0
    out = {k: f"{v:.1f}" for k, v in totals.items()}
    attack_s = sum(r.get("seconds") or 0.0 for r in view.attacks)
    if attack_s:
        out["attacks (s)"] = f"{attack_s:.1f}"
    return out


def render_report(view: RunView) -> str:
    env = Environment(loader=PackageLoader("unlearnkit.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    if view.long:  # a request × step heatmap and means over requests, not one line per request
        forget = [{"svg": plots.heatmap(view, "probability"), "caption": HEATMAP_CAPTION, "id": "heatmap"}] if "probability" in view.forget_metrics() else []
        forget += [{"svg": plots.forget_mean_chart(view, m), "caption": caption("forget", m)} for m in view.forget_metrics()]
    else:
        forget = [{"svg": plots.forget_chart(view, m), "caption": caption("forget", m)} for m in view.forget_metrics()]
    kept = [{"svg": plots.set_chart(view, s, m), "caption": caption(s, m)} for s, m in view.set_metrics()]
    attack_svg = plots.attack_chart(view)
    steps = [{k: number(v) if isinstance(v, float) else v for k, v in s.items() if k not in ("metrics", "verdict")} for s in view.steps]
    methods = view.plan.get("method") or []
    return env.get_template("report.html.j2").render(
        title=f"unlearnkit report: {view.folder.name}",
        folder=str(view.folder),
        model=view.plan.get("model", "?"),
        method="+".join(m["name"] if isinstance(m, dict) else str(m) for m in methods),
        n_requests=len(view.requests),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        long=view.long,
        summary=_summary(view, requests=not view.long),
        request_summary=_summary(view, sets=False) if view.long else [],
        relapses=_relapse_rows(view),
        budget=view.budget_flags(),
        holdout_rows=_holdout_rows(view),
        verdicts=_verdict_rows(view),
        verdict_measures=[label for label, _ in VERDICT_MEASURES],
        forget_charts=forget,
        set_charts=kept,
        charts=forget + kept + ([attack_svg] if attack_svg else []),
        attack_chart=attack_svg,
        attack_rows=_attack_rows(view),
        requests=view.requests,
        steps=steps,
        timings=_timings(view),
        plan=view.plan,
        plan_yaml=yaml.safe_dump(view.plan, sort_keys=False),
    )


def write_report(run_folder: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of a run folder to `out` (default `<run>/report.html`), atomically."""
    view = load_run(run_folder)
    return write_text(Path(out) if out else view.folder / "report.html", render_report(view))
