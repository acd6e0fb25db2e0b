"""Weight arithmetic shared by the weight-space methods and by `prepare`'s merge with the base."""

from __future__ import annotations

from typing import Any

import torch

Vector = dict[str, torch.Tensor]


def snapshot(model: Any) -> Vector:
    """A copy of every parameter (tied weights once): θ before a change."""
    return {k: p.detach().clone() for k, p in model.named_parameters()}


@torch.no_grad()
def scale_change(model: Any, before: Vector | Any, factor: float) -> None:
    """In place: θ ← θ_before + factor·(θ − θ_before).

    factor 1 keeps θ, 0 restores θ_before, a value between interpolates the two (WiSE-FT's
    weight-space ensemble), a negative one subtracts the change (task-vector negation).
    `before` is a `snapshot` or a model with the same parameter names.
    """
    reference = before if isinstance(before, dict) else dict(before.named_parameters())
    for name, p in model.named_parameters():
        old = reference[name].to(p.dtype)
        p.copy_(old + factor * (p - old))
