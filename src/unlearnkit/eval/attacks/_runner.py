"""`run_attacks`: the stable entry point for the CLI and the sequential runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unlearnkit.errors import UnlearnkitError, did_you_mean
from unlearnkit.eval.attacks._base import ATTACKS, Attack, AttackResult, Models, get_attack
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.passes import sharing
from unlearnkit.models.subject import Subject
from unlearnkit.progress import track

AttackSettings = dict[str, dict[str, Any]]  # attack name -> its settings (`key: value`)


def parse_names(names: str | list[str]) -> list[str]:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c'], each checked against the registry."""
    parts = names.split(",") if isinstance(names, str) else [p for n in names for p in n.split(",")]
    chosen = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not chosen:
        raise UnlearnkitError(f"no attack named; valid: {', '.join(ATTACKS.names())}")
    for name in chosen:
        ATTACKS.get(name)  # one line naming the valid attacks when unknown
    return chosen


def build_attacks(names: list[str], settings: AttackSettings | None) -> list[Attack]:
    settings = settings or {}
    for key in settings:
        if key not in ATTACKS.names():
            raise UnlearnkitError(f"settings for unknown attack '{key}'{did_you_mean(key, ATTACKS.names())}; valid: {', '.join(ATTACKS.names())}")
    return [get_attack(name, settings.get(name)) for name in names]


def run_attacks(
    names: str | list[str],
    subject: Subject,
    data: EvalData,
    target: Subject | None = None,
    oracle: Subject | None = None,
    settings: AttackSettings | None = None,
    *,
    requests: list[str] | None = None,
) -> list[AttackResult]:
    """Run the named attacks on every request of `data` (or those in `requests`).

    `subject` is the unlearned model; `target` (the model before unlearning) gives the
    recovered fractions; `oracle` (never trained on the requests) is measured under the same
    attacks. Settings are validated before anything runs. One `AttackResult` per attack and
    request, in the order attacks x requests. Nothing here writes files.
    """
    attacks = build_attacks(parse_names(names), settings)
    chosen = data.requests
    if requests is not None:
        known = [r.id for r in data.requests]
        for rid in requests:
            if rid not in known:
                raise UnlearnkitError(f"unknown request '{rid}'{did_you_mean(rid, known)}; requests: {', '.join(known)}")
        chosen = [r for r in data.requests if r.id in requests]
    if not chosen:
        raise UnlearnkitError("no forget requests to attack")
    models = Models(subject, target, oracle)
    jobs = [(attack, request) for attack in attacks for request in chosen]
    results = []
    # One memo for the run: the plain forget questions many attacks share are scored and
    # answered once per model (weights do not change here; transforms get their own memo).
    with sharing():
        for attack, request in track(jobs, "attacks"):
            results.append(attack.run(models, request, data))
    return results


@dataclass(frozen=True)
class FlatRow:
    scope: str  # the request id
    metric: str  # "<variant>/<metric>" (the attacked value), ".../before", ".../recovered"
    value: float | None


@dataclass
class FlatResult:
    attack: str
    rows: list[FlatRow] = field(default_factory=list)
    results: list[AttackResult] = field(default_factory=list)


def run_attack(
    name: str,
    subject: Subject,
    data: EvalData,
    *,
    target: Subject | None = None,
    oracle: Subject | None = None,
    settings: dict[str, Any] | None = None,
    suite: str | None = None,
) -> FlatResult:
    """One attack as flat (scope, metric, value) rows, for a per-step metrics table (a ledger).

    `settings` are this attack's own; `suite` is accepted and unused (each attack runs its own
    forget metrics). Rows per request and variant: the attacked value, the value before, and
    the recovered fraction when a target is given (and the oracle's, with an oracle)."""
    results = run_attacks([name], subject, data, target, oracle, {name: settings} if settings else None)
    flat = FlatResult(name, results=results)
    for result in results:
        for row in result.rows:
            key = f"{row.variant}/{row.metric}"
            flat.rows += [FlatRow(result.request, key, row.after), FlatRow(result.request, f"{key}/before", row.before)]
            if target is not None and not row.collateral:
                flat.rows.append(FlatRow(result.request, f"{key}/recovered", row.recovered))
                if oracle is not None:
                    flat.rows.append(FlatRow(result.request, f"{key}/oracle_recovered", row.oracle_recovered))
    return flat
