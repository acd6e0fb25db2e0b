"""Per-step checkpoints of a sequential run, written atomically, kept by a policy.

Policies (`checkpoints.keep` in a plan):
- `all`: a full model folder per step (`checkpoints/step-003/`);
- `last:N`: the same, but only the newest N are kept once a later step is evaluated;
- `deltas`: one safetensors file per step with θ_step − θ_base for every parameter
  (`checkpoints/step-003.delta.safetensors`); the base model is reloaded from the plan's source.

Atomic means: write under a temporary name, fsync the files and the folder, then rename. A
reader therefore sees either a complete checkpoint or none. A checkpoint without a committed
ledger row (a crash between rename and commit) is an orphan and is removed on resume.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unlearnkit.errors import UnlearnkitError
from unlearnkit.files import fsync_path, remove_path, temporary_sibling
from unlearnkit.models.stack import WrappedSubject, save_subject

PARTIAL = ".partial"
FINISHED = re.compile(r"^step-(\d{3,})(\.delta\.safetensors)?$")  # anything else in the folder is debris


def float_params(model: Any) -> dict[str, torch.Tensor]:
    """The model's parameters by name (tied weights once), the tensors a step can change."""
    return dict(model.named_parameters())


class Checkpoints:
    def __init__(self, root: str | Path, keep: str = "all") -> None:
        self.root = Path(root)
        self.keep = keep
        if not self.root.is_dir():  # a process that only reads (a follower, engine/follower.py) creates nothing
            self.root.mkdir(parents=True, exist_ok=True)
        self._base: dict[str, torch.Tensor] | None = None

    @property
    def deltas(self) -> bool:
        return self.keep == "deltas"

    def path(self, step: int) -> Path:
        name = f"step-{step:03d}"
        return self.root / (f"{name}.delta.safetensors" if self.deltas else name)

    def set_base(self, model: Any) -> None:
        """Remember the base weights (on CPU, float32) that deltas are taken against."""
        if self.deltas:
            self._base = {k: p.detach().to("cpu", torch.float32, copy=True) for k, p in float_params(model).items()}

    # -- writing -----------------------------------------------------------------------------
    def write(self, step: int, subject: Any, meta: dict[str, Any], before_rename: Callable[[], None] | None = None) -> Path:
        final = self.path(step)
        wrapped = isinstance(subject, WrappedSubject)
        if self.deltas and wrapped:
            raise UnlearnkitError("checkpoints: keep 'deltas' stores weight differences only and cannot hold an inference-time wrapper (guardrail, icul, logit_offset); use keep: all or last:N")
        if not self.deltas:  # the whole stack (wrapper state plus the weights underneath), atomically
            return save_subject(subject, final, meta=meta, temporary_suffix=PARTIAL, before_rename=before_rename)
        if self._base is None:
            raise RuntimeError("delta checkpoints need set_base() with the base model first")
        delta = {k: (p.detach().to("cpu", torch.float32) - self._base[k]).contiguous() for k, p in float_params(subject.model).items()}
        tmp = temporary_sibling(final, PARTIAL)
        remove_path(tmp)
        try:
            save_file(delta, tmp, metadata={k: str(v) for k, v in meta.items()})
            fsync_path(tmp)
            if before_rename is not None:
                before_rename()
            tmp.replace(final)
        except BaseException:
            remove_path(tmp)
            raise
        fsync_path(self.root)
        return final

    # -- reading -----------------------------------------------------------------------------
    def apply_delta(self, step: int, model: Any) -> None:
        """Turn a freshly loaded base model into the model of `step` (delta policy)."""
        delta = load_file(self.path(step))
        params = float_params(model)
        if set(delta) != set(params):
            raise RuntimeError(f"{self.path(step)}: parameters do not match the base model")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_((p.detach().float().cpu() + delta[name]).to(p.dtype))

    # -- housekeeping ------------------------------------------------------------------------
    def existing(self) -> dict[int, Path]:
        found = {}
        for entry in self.root.iterdir():
            match = FINISHED.match(entry.name)
            if match:
                found[int(match.group(1))] = entry
        return found

    def clean(self, committed: set[int]) -> list[Path]:
        """Remove partial writes, the leftovers of an interrupted replace, and orphans
        (checkpoints whose step has no ledger row)."""
        removed = []
        for entry in list(self.root.iterdir()):
            match = FINISHED.match(entry.name)
            if match is None or int(match.group(1)) not in committed:
                remove_path(entry)
                removed.append(entry)
        return removed

    def to_prune(self, steps: list[int], last: int | None) -> list[int]:
        """Steps whose full checkpoint falls outside the newest `last` (none for all/deltas)."""
        if last is None or self.deltas:
            return []
        return sorted(steps)[:-last]

    def remove(self, step: int) -> None:
        remove_path(self.path(step))
