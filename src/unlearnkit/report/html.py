"""Build `report.html` for a run folder: one self-contained file (inline SVG charts, no network)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from unlearnkit.display import number
from unlearnkit.files import write_text
from unlearnkit.report import plots
from unlearnkit.report.data import RunView, load_run

# Forget metrics where a lower value means "more forgotten" (the rest: higher = more forgotten).
CAPTIONS = {
    "probability": "mean length-normalised probability of the forgotten answers (lower = forgotten)",
    "truth_ratio": "TOFU truth ratio, forget aggregation (higher = the model no longer prefers the true answer)",
    "extraction_strength": "share of the answer needed as a prefix before the rest is reproduced (lower = forgotten)",
    "mia_min_k": "Min-K% membership AUC, forget vs holdout (0.5 = indistinguishable from unseen data)",
    "forget_quality": "KS-test p-value of truth ratios against the oracle's (higher = closer to retraining)",
    "privleak": "PrivLeak: relative AUC gap to the oracle (0 = like the oracle)",
    "model_utility": "harmonic mean of the suite's utility components",
    "perplexity": "perplexity on real English text (lower is better)",
}


def _summary(view: RunView) -> list[dict[str, str]]:
    last = view.last_step()
    oracle = view.oracles.get(last, {})
    rows = []
    for rid in view.request_ids:
        for metric in view.forget_metrics():
            rows.append({"scope": rid, "metric": metric, "value": number(view.metric(last, rid, metric)),
                         "target": number(view.target.get(rid, {}).get(metric)), "oracle": number(oracle.get(rid, {}).get(metric))})
    for scope, metric in view.set_metrics():
        rows.append({"scope": scope, "metric": metric, "value": number(view.metric(last, scope, metric)),
                     "target": number(view.target.get(scope, {}).get(metric)), "oracle": number(oracle.get(scope, {}).get(metric))})
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
    forget = [{"svg": plots.forget_chart(view, m), "caption": CAPTIONS.get(m, m)} for m in view.forget_metrics()]
    kept = [{"svg": plots.set_chart(view, s, m), "caption": CAPTIONS.get(m, f"{s}: {m}")} for s, m in view.set_metrics()]
    attack_svg = plots.attack_chart(view)
    steps = [{k: number(v) if isinstance(v, float) else v for k, v in s.items() if k != "metrics"} for s in view.steps]
    methods = view.plan.get("method") or []
    return env.get_template("report.html.j2").render(
        title=f"unlearnkit report: {view.folder.name}",
        folder=str(view.folder),
        model=view.plan.get("model", "?"),
        method="+".join(m["name"] if isinstance(m, dict) else str(m) for m in methods),
        n_requests=len(view.requests),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=_summary(view),
        flags=view.flags,
        forget_charts=forget,
        set_charts=kept,
        charts=forget + kept + ([attack_svg] if attack_svg else []),
        attack_chart=attack_svg,
        attack_rows=_attack_rows(view),
        requests=view.requests,
        steps=steps,
        timings=_timings(view),
        plan_yaml=yaml.safe_dump(view.plan, sort_keys=False),
    )


def write_report(run_folder: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of a run folder to `out` (default `<run>/report.html`), atomically."""
    view = load_run(run_folder)
    return write_text(Path(out) if out else view.folder / "report.html", render_report(view))
