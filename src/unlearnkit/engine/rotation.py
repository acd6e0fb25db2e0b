"""Which earlier requests a step measures: a seeded rotation with a fixed budget of records.

Re-checking every earlier request after every step costs O(t) at step t, O(T²) over a stream.
With `evaluation.earlier: B` a step measures its own request(s) fully and, of the earlier ones,
those measured longest ago (ties in a seeded order) while their records fit in B (at least one),
so the cost of a step does not grow with the number of earlier requests. Every earlier request
waits at most ceil(R·m / B) steps between two measurements (R earlier requests of at most m
records each, B ≥ m), and a full step (`full_every`, oracle steps, the last step) measures all.

`schedule` is a pure function of the steps so far, so a resumed run measures what an
uninterrupted one did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def tie_rank(seed: int, request_id: str) -> str:
    """The seeded order among requests last measured at the same step."""
    return hashlib.sha256(f"{seed}:{request_id}".encode()).hexdigest()


def schedule(own_step: Mapping[str, int], items: Mapping[str, int], budget: int | None, full: Iterable[int],
             seed: int, upto: int) -> dict[int, list[str]]:
    """{step: the earlier requests it measures} for steps 1..`upto`.

    `own_step`: request id -> the step that applied it (several ids share a coalesced step);
    `items`: request id -> records the suite measures of it; `budget` None measures every
    earlier request at every step; `full`: the steps that measure every request.
    """
    full = set(full)
    last_seen: dict[str, int] = {}
    chosen: dict[int, list[str]] = {}
    for step in range(1, upto + 1):
        earlier = [r for r, s in own_step.items() if s < step]
        if budget is None or step in full:
            picked = earlier
        else:
            queue = sorted(earlier, key=lambda r: (last_seen[r], tie_rank(seed, r)))
            picked, used = [], 0
            for request in queue:
                if picked and used + items[request] > budget:
                    break
                picked.append(request)
                used += items[request]
        for request in picked + [r for r, s in own_step.items() if s == step]:
            last_seen[request] = step
        chosen[step] = picked
    return chosen
