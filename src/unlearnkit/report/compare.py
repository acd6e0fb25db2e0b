"""Side-by-side comparison of finished runs: a table and a forgetting-vs-utility plot."""

from __future__ import annotations

import html
from pathlib import Path
from statistics import mean

from unlearnkit.eval.suites import UTILITY_ROWS
from unlearnkit.report import plots
from unlearnkit.report.data import RunView, load_run
from unlearnkit.display import number

# (column, how to read it from the last step of a run)
FORGET_COLUMNS = ("forget_quality", "probability", "truth_ratio", "mia_min_k")
KEPT_COLUMNS = (("retain", "probability"), ("real_facts", "option_accuracy"), ("general_text", "perplexity"))


def run_row(view: RunView) -> dict[str, float | str | None]:
    """Headline numbers of one run after its last step; forget metrics averaged over requests."""
    last = view.last_step()
    row: dict[str, float | str | None] = {"run": view.label, "steps": last}
    for metric in FORGET_COLUMNS:
        values = [view.metric(last, rid, metric) for rid in view.request_ids]
        present = [v for v in values if v is not None]
        row[f"forget {metric}"] = mean(present) if present else None
    row["utility"] = next((v for name in UTILITY_ROWS if (v := view.metric(last, "utility", name)) is not None), None)
    for scope, metric in KEPT_COLUMNS:
        row[f"{scope} {metric}"] = view.metric(last, scope, metric)
    for attack, fractions in attack_recovery(view).items():
        row[f"{attack} recovered"] = mean(fractions) if fractions else None
    row["unlearn s"] = sum(s.get("unlearn_s") or 0.0 for s in view.steps)
    verdicts = [card["verdict"] for card in view.verdicts()]
    if verdicts:
        row["verdicts"] = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    return row


def attack_recovery(view: RunView) -> dict[str, list[float]]:
    """Recovered fractions per attack over requests and rows (robustness, lower is better)."""
    out: dict[str, list[float]] = {}
    for result in view.attacks:
        rows = [r["recovered"] for r in result["rows"] if r.get("recovered") is not None]
        out.setdefault(result["attack"], []).extend(rows)
    return out


def compare(folders: list[str | Path]) -> tuple[list[dict[str, float | str | None]], str]:
    """Rows for the table and a self-contained HTML page."""
    views = [load_run(f) for f in folders]
    rows = [run_row(v) for v in views]
    columns = list(dict.fromkeys(c for r in rows for c in r))  # runs may have run other attacks
    rows = [{c: r.get(c) for c in columns} for r in rows]
    x_key = "forget forget_quality" if any(r.get("forget forget_quality") is not None for r in rows) else "forget probability"
    points = [(str(r["run"]), _num(r.get(x_key)), _num(r.get("utility"))) for r in rows]
    svg = plots.tradeoff_chart(points, x_key.replace("forget ", "forget-set ") + " (mean over requests)", "utility")
    columns = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(number(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>unlearnkit comparison</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto}"
        "table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ddd;padding:.25rem .5rem}"
        "th{background:#f6f6f6}figure svg{width:100%;max-width:640px;height:auto}</style></head><body>"
        f"<h1>Comparing {len(rows)} runs</h1><table><tr>{head}</tr>{body}</table>"
        f"<figure class='chart'>{svg}</figure></body></html>"
    )
    return rows, page


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
