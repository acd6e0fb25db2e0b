"""Deliberate crashes at named points, so tests can prove that a killed run resumes correctly.

`UNLEARNKIT_CRASH_AT=POINT:STEP` makes the process SIGKILL itself (no cleanup, no `finally`,
exactly like the OOM killer or a power cut) when step STEP reaches POINT:

- `train`: after the first optimizer step of any training inside the step (a global optimizer
  hook, so it works for every training-based method without knowing its internals);
- `checkpoint`: checkpoint files written, not yet renamed into place;
- `ledger`: checkpoint renamed into place, ledger row not yet committed;
- `eval`: some sets evaluated, metric rows not yet committed;
- `purge`: step evaluated, before the request text is deleted and old checkpoints pruned.
"""

from __future__ import annotations

import os
import signal
from typing import Any

ENV = "UNLEARNKIT_CRASH_AT"


def armed(point: str, step: int) -> bool:
    return os.environ.get(ENV) == f"{point}:{step}"


def crash_point(point: str, step: int) -> None:
    if armed(point, step):
        os.kill(os.getpid(), signal.SIGKILL)


def arm_training_crash(step: int) -> Any:
    """Install the `train` crash for this step; returns a handle to remove it (or None)."""
    if not armed("train", step):
        return None
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def kill(optimizer: Any, args: Any, kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    return register_optimizer_step_post_hook(kill)
