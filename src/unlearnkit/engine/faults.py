"""Deliberate crashes at named points, so tests can prove that a killed run resumes correctly.

`UNLEARNKIT_CRASH_AT=POINT:STEP` makes the process SIGKILL itself (no cleanup, no `finally`,
exactly like the OOM killer or a power cut) when step STEP reaches POINT;
`UNLEARNKIT_CRASH_AT=POINT:STEP:INT` (or `:TERM`) sends it SIGINT (SIGTERM) instead, a real
signal that must stop the process cleanly (signals.py: exit 130 or 143, temporary output
removed). The points:

- `train`: after the first optimizer step of any training inside the step (a global optimizer
  hook, so it works for every training-based method without knowing its internals);
- `checkpoint`: checkpoint files written, not yet renamed into place;
- `ledger`: checkpoint renamed into place, ledger row not yet committed;
- `eval`: some sets evaluated, metric rows not yet committed;
- `purge`: step evaluated, before the request text is deleted and old checkpoints pruned;
- `save`: `unlearnkit unlearn` wrote the model, not yet renamed to `--out` (STEP is 1).

With several processes (docs/scale.md) every process crashes, unless `UNLEARNKIT_CRASH_RANK=R`
names the only one that does (its launcher then stops the others).
"""

from __future__ import annotations

import os
import signal
from typing import Any

ENV = "UNLEARNKIT_CRASH_AT"
RANK_ENV = "UNLEARNKIT_CRASH_RANK"  # with several processes: crash only the one of this rank


SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}


def armed(point: str, step: int) -> signal.Signals | None:
    """The signal to send at this point and step, if the environment asks for one."""
    rank = os.environ.get(RANK_ENV)
    if rank is not None and rank != os.environ.get("RANK", "0"):  # only that process of several crashes
        return None
    spec = os.environ.get(ENV, "")
    name, _, rest = spec.partition(":")
    at, _, kind = rest.partition(":")
    if name != point or at != str(step):
        return None
    return SIGNALS.get(kind or "KILL")


def crash_point(point: str, step: int) -> None:
    chosen = armed(point, step)
    if chosen is not None:
        os.kill(os.getpid(), chosen)


def arm_training_crash(step: int) -> Any:
    """Install the `train` crash for this step; returns a handle to remove it (or None)."""
    chosen = armed("train", step)
    if chosen is None:
        return None
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def kill(optimizer: Any, args: Any, kwargs: Any) -> None:
        os.kill(os.getpid(), chosen)

    return register_optimizer_step_post_hook(kill)
