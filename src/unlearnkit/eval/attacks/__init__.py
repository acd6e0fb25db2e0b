"""Robustness attacks: does forgotten content come back?

One module per attack, registered with `@register_attack("name")`: leak_at_k, quantize,
relearn, paraphrase, two_hop, mixed, in_context, multi_turn. `run_attacks` is the entry point
(docs/robustness.md); `AttackResult` is what it returns, JSON round-trippable. `run_attack` gives
one attack as flat (scope, metric, value) rows for a per-step metrics table.
"""

from unlearnkit.eval.attacks._base import (
    ATTACKS,
    Attack,
    AttackResult,
    AttackRow,
    Models,
    Variant,
    get_attack,
    recovered_fraction,
    register_attack,
)
from unlearnkit.eval.attacks._runner import AttackSettings, FlatResult, FlatRow, build_attacks, parse_names, run_attack, run_attacks

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "AttackRow",
    "AttackSettings",
    "build_attacks",
    "parse_names",
    "Models",
    "Variant",
    "get_attack",
    "recovered_fraction",
    "register_attack",
    "run_attack",
    "run_attacks",
    "FlatResult",
    "FlatRow",
]
