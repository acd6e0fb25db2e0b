"""Gradient norms for the GradNorm membership attack (OpenUnlearning's `gradnorm`; docs/metrics.md,
Membership inference).

This is the one measurement that `Subject.score` cannot give: it needs the model's gradients, so
it uses `subject.model` and `subject.encode` directly. It is written to be harmless at any time:
- gradients come from `torch.autograd.grad`, so no parameter's `.grad` is touched (it can never
  corrupt a training step in progress, unlike OU's zero_grad/backward);
- the model stays in eval mode (OU switches to train mode, which enables dropout and makes the
  score random; deliberate difference, see docs/metrics.md);
- frozen parameters (a LoRA base) are included for the duration of the call, then re-frozen,
  so the score means the same with and without an adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unlearnkit.data.formatting import collate
from unlearnkit.models.subject import Subject

if TYPE_CHECKING:
    from unlearnkit.eval.metrics._common import Pair


def gradient_norms(subject: Subject, pairs: list[Pair], p: float = 2.0) -> list[float]:
    """Per pair (batch size 1): mean over parameter tensors of ||∂ mean NLL / ∂θ||_p."""
    model = subject.model
    params = list(model.parameters())
    frozen = [q for q in params if not q.requires_grad]
    was_training = model.training
    model.eval()
    for q in frozen:
        q.requires_grad_(True)
    try:
        scores = []
        for pair in pairs:
            encoded = subject.encode(pair.prompt, pair.target, template=pair.template, add_eos=pair.add_eos)
            batch = {k: v.to(subject.device) for k, v in collate([encoded], subject.tokenizer.pad_token_id).items()}
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms = [torch.linalg.vector_norm(g.float(), ord=p) for g in grads if g is not None]
            scores.append(float(torch.stack(norms).mean()))
        return scores
    finally:
        for q in frozen:
            q.requires_grad_(False)
        model.train(was_training)
