"""Inference-time unlearning: methods that wrap a Subject instead of changing its weights.

- `guardrail` (methods/guard.py): embedding match against removed content, then a refusal.
- `icul` (methods/inference_icul.py): instructions and refused demonstrations in the prompt.
- `logit_offset` (methods/inference_offset.py): δ-unlearning, a helper's logit difference.

Each returns a `WrappedSubject`, so suites and attacks run on it unchanged; wrappers stack on a
weight-based method and on each other, and a later request extends the existing wrapper. A
wrapped Subject is saved with `save_subject(subject, dir)` (or `subject.save(dir)`) and read back
with `load_subject(dir)`; see docs/inference.md.
"""

from __future__ import annotations

from unlearnkit.methods.guard import GuardedSubject, Guardrail
from unlearnkit.models.stack import WrappedSubject, base_subject, layers, load_subject, save_subject
from unlearnkit.methods.inference_icul import InContextSubject, InContextUnlearning
from unlearnkit.methods.inference_offset import LogitOffset, OffsetLM, OffsetSubject

__all__ = [
    "GuardedSubject",
    "Guardrail",
    "InContextSubject",
    "InContextUnlearning",
    "LogitOffset",
    "OffsetLM",
    "OffsetSubject",
    "WrappedSubject",
    "base_subject",
    "layers",
    "load_subject",
    "save_subject",
]
