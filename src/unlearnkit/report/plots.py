"""Charts as inline SVG (matplotlib), so the report is one self-contained file with no network.

Conventions in every chart: solid lines are the unlearned model over steps, dashed horizontal
lines the target (the model before any request), dotted markers the retrain oracle of each step.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from unlearnkit.report.data import RunView  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def to_svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: it is inlined in HTML


def _axes(title: str, ylabel: str, steps: list[int]) -> tuple[Any, Any]:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5.6, 3.2), dpi=100)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step (requests applied)")
    ax.set_ylabel(ylabel)
    if len(steps) <= 12:
        ax.set_xticks([0, *steps])
    else:  # a long stream: a tick per step would be unreadable
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return fig, ax


def _marker(steps: list[int]) -> dict[str, Any]:
    return {"marker": "o", "markersize": 6 if len(steps) <= 12 else 2}


def forget_chart(view: RunView, metric: str) -> str:
    """One line per request from its own step on, with its target and oracle values."""
    steps = [s["step"] for s in view.steps]
    fig, ax = _axes(f"forget: {metric}", metric, steps)
    for i, rid in enumerate(view.request_ids):
        color = COLORS[i % len(COLORS)]
        points = [(s, view.metric(s, rid, metric)) for s in steps]
        points = [(s, v) for s, v in points if v is not None]
        target = view.target.get(rid, {}).get(metric)
        if target is not None and points:
            points = [(points[0][0] - 1, target), *points]  # the value before its own step
            ax.axhline(target, color=color, linestyle="--", linewidth=0.8, alpha=0.7)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=color, label=rid)
        oracle = [(s, view.oracles.get(s, {}).get(rid, {}).get(metric)) for s in steps]
        oracle = [(s, v) for s, v in oracle if v is not None]
        if oracle:
            ax.plot([p[0] for p in oracle], [p[1] for p in oracle], linestyle=":", marker="x", color=color, alpha=0.8)
    ax.legend(fontsize=7, title="request (-- target, ·· oracle)", title_fontsize=7)
    return to_svg(fig)


def set_chart(view: RunView, scope: str, metric: str) -> str:
    """A kept set's metric (retain, utility, ...) over steps, with target and oracles."""
    steps = [s["step"] for s in view.steps]
    fig, ax = _axes(f"{scope}: {metric}", metric, steps)
    values = [(s, view.metric(s, scope, metric)) for s in steps]
    values = [(s, v) for s, v in values if v is not None]
    target = view.target.get(scope, {}).get(metric)
    if target is not None:
        values = [(0, target), *values]
        ax.axhline(target, color="gray", linestyle="--", linewidth=0.9, label="target")
    if values:
        ax.plot([v[0] for v in values], [v[1] for v in values], color=COLORS[0], label="unlearned", **_marker(steps))
    oracle = [(s, view.oracles.get(s, {}).get(scope, {}).get(metric)) for s in steps]
    oracle = [(s, v) for s, v in oracle if v is not None]
    if oracle:  # sparse oracles are points: a line between them would be a value nobody measured
        style = ":" if len(oracle) == len(steps) else "none"
        ax.plot([p[0] for p in oracle], [p[1] for p in oracle], linestyle=style, marker="x", color=COLORS[1], label="oracle")
    ax.legend(fontsize=7)
    return to_svg(fig)


def forget_mean_chart(view: RunView, metric: str) -> str:
    """A long stream's forget metric: the mean over the requests measured after each step (its
    own and the rotation's), with the oracles' means over the same requests."""
    steps = [s["step"] for s in view.steps]
    fig, ax = _axes(f"forget: {metric} (mean over requests measured)", metric, steps)
    means, oracle = [], []
    for step in steps:
        values = [(rid, view.metric(step, rid, metric)) for rid in view.request_ids]
        values = [(rid, v) for rid, v in values if v is not None]
        if values:
            means.append((step, sum(v for _, v in values) / len(values)))
        theirs = [view.oracles.get(step, {}).get(rid, {}).get(metric) for rid, _ in values]
        theirs = [v for v in theirs if v is not None]
        if theirs:
            oracle.append((step, sum(theirs) / len(theirs)))
    if means:
        ax.plot([p[0] for p in means], [p[1] for p in means], color=COLORS[0], label="unlearned", **_marker(steps))
    if oracle:
        ax.plot([p[0] for p in oracle], [p[1] for p in oracle], linestyle="none", marker="x", color=COLORS[1], label="oracle")
    reference = view.holdout.get(metric)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle=":", linewidth=0.9, label="holdout reference")
    ax.legend(fontsize=7)
    return to_svg(fig)


def heatmap(view: RunView, metric: str = "probability") -> str:
    """Requests × steps: the forget metric after each step minus what a model that never saw the
    request has (`RunView.reference`: its first oracle, else the holdout reference). Blank: not
    measured at that step (before its own step, or left out by the rotation)."""
    import numpy as np

    steps = [s["step"] for s in view.steps]
    ids = view.request_ids
    grid = np.full((len(ids), len(steps)), np.nan)
    for i, rid in enumerate(ids):
        reference = view.reference(rid, metric)
        for j, step in enumerate(steps):
            value = view.metric(step, rid, metric)
            if value is not None and reference is not None:
                grid[i, j] = value - reference
    fig, ax = plt.subplots(figsize=(7.2, max(3.0, min(9.0, 0.08 * len(ids) + 1.5))), dpi=100)
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest",
                      extent=(steps[0] - 0.5, steps[-1] + 0.5, len(ids) - 0.5, -0.5) if steps else None)
    for step in view.oracles:
        ax.axvline(step, color="black", linestyle=":", linewidth=0.6)
    every = max(1, len(ids) // 20)
    ax.set_yticks(range(0, len(ids), every), [ids[i] for i in range(0, len(ids), every)], fontsize=6)
    ax.set_xlabel("step (requests applied); dotted: steps with an oracle")
    ax.set_ylabel("request")
    ax.set_title(f"forget {metric} minus a never-seen model's (red: remembered, blue: below it)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    return to_svg(fig)


def attack_chart(view: RunView) -> str | None:
    """Recovered fraction per attack (mean over requests and metrics), unlearned vs oracle."""
    by_attack: dict[str, tuple[list[float], list[float]]] = {}
    for result in view.attacks:
        ours, theirs = by_attack.setdefault(result["attack"], ([], []))
        for row in result.get("rows", []):
            if row.get("recovered") is not None:
                ours.append(row["recovered"])
            if row.get("oracle_recovered") is not None:
                theirs.append(row["oracle_recovered"])
    if not by_attack:
        return None
    names = list(by_attack)
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    fig, ax = plt.subplots(figsize=(5.6, 3.2), dpi=100)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [mean(by_attack[n][0]) for n in names], width=0.4, label="unlearned", color=COLORS[0])
    ax.bar([i + 0.2 for i in x], [mean(by_attack[n][1]) for n in names], width=0.4, label="oracle", color=COLORS[1])
    ax.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("recovered fraction")
    ax.set_title("attacks after the last step: how much came back", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return to_svg(fig)


def tradeoff_chart(points: list[tuple[str, float | None, float | None]], xlabel: str, ylabel: str) -> str:
    """Scatter of runs: forgetting (x) against utility (y), one labelled point per run."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    for i, (label, x, y) in enumerate(points):
        if x is None or y is None:
            continue
        ax.scatter([x], [y], color=COLORS[i % len(COLORS)], s=40)
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("forgetting vs utility across runs", fontsize=10)
    ax.grid(alpha=0.3)
    return to_svg(fig)
