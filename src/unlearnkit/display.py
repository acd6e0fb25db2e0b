"""How a number is shown to a person: in tables on the terminal, in the report, in summaries.

One rule everywhere, so the same value reads the same in `unlearnkit eval`, `ledger`, `attack`,
`compare` and the HTML report: a missing value is an en dash, integers as they are, tiny
non-zero values in scientific notation (so 3e-05 does not print as 0.0000), the rest with four
decimals.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"


def number(value: Any, digits: int = 4) -> str:
    """`value` as table text (None: an en dash; text is returned unchanged)."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and abs(value) < 10 ** -(digits - 1):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    return str(value)


def unseen_lines(unseen: dict[str, dict[str, Any]], *, short: bool = False) -> list[str]:
    """A verdict card's "unseen" (`safety.verdict.Card.unseen`, also in its JSON) in words: the
    terminal card's lines, or the report's short form."""
    if short:
        return [f"{name}: {u['lost']}/{u['known']} lost, up to {u['bound']:.0%} not ruled out" for name, u in unseen.items()]
    return [f"{name}: {u['lost']} of {u['known']} probes it answered at the start lost; so few cannot rule out "
            f"losing up to {u['bound']:.0%} of facts like them ({u['confidence']:.0%})" for name, u in unseen.items()]
