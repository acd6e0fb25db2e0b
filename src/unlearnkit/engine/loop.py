"""The one training loop: fine-tuning (target, oracles, task vectors) and every loss-based method.

An objective only supplies `loss(model, forget_batch, retain_batch)`. The loop owns everything
else: reproducible batches (forget shuffled per epoch, retain drawn independently from its own
generator), gradient accumulation, the learning-rate schedule, clipping, the divergence guard,
an optional early stop on forget probability, and a progress bar with losses and tokens/s.

A batch is a dict: one padded tensor dict per example part (`"x"` is the record itself; methods
such as IdkPO add parts like `"idk"`), plus `"index"`, the example positions, which methods use
to look up reference values they cached before training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from accelerate import Accelerator
from pydantic import BaseModel, ConfigDict, Field

from unlearnkit.data.formatting import Encoded, collate
from unlearnkit.errors import TrainingError
from unlearnkit.progress import make_progress

Example = dict[str, Encoded]
Batch = dict[str, Any]


class TrainConfig(BaseModel):
    """Optimisation settings shared by fine-tuning and every loss-based method."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-5, gt=0)
    epochs: float = Field(5, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(4, ge=1)
    retain_batch_size: int | None = Field(None, ge=1)
    grad_accum: int = Field(1, ge=1)
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    stop_forget_prob: float | None = Field(None, gt=0, lt=1, description="stop once mean forget probability falls below")
    check_every: int = Field(5, ge=1)


class Objective(Protocol):
    needs_retain: bool

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class TrainStats:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def make_batch(examples: list[Example], indices: list[int], pad_id: int) -> Batch:
    parts = examples[indices[0]].keys()
    batch: Batch = {part: collate([examples[i][part] for i in indices], pad_id) for part in parts}
    batch["index"] = torch.tensor(indices, dtype=torch.long)
    return batch


def batches(examples: list[Example], size: int, pad_id: int, seed: int) -> Iterator[Batch]:
    """Endless reshuffled batches; epoch e uses permutation seed+e, so runs are reproducible."""
    epoch = 0
    while True:
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for start in range(0, len(order), size):
            yield make_batch(examples, order[start : start + size], pad_id)
        epoch += 1


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in batch.items()}


def batch_tokens(batch: Batch | None) -> int:
    if batch is None:
        return 0
    return sum(int(v["attention_mask"].sum()) for v in batch.values() if isinstance(v, dict))


def nll(model: Any, part: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token NLL of a padded part (HF's own shifted cross-entropy)."""
    return model(input_ids=part["input_ids"], attention_mask=part["attention_mask"], labels=part["labels"]).loss


class FineTune:
    """Plain next-token NLL on the data: learning, not forgetting (target, oracles, task vectors)."""

    needs_retain = False

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        loss = nll(model, forget["x"])
        return loss, {"nll": loss.item()}


def _schedule(cfg: TrainConfig, total: int) -> Any:
    warmup = int(cfg.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


@torch.no_grad()
def mean_forget_prob(model: Any, examples: list[Example], pad_id: int, device: torch.device, size: int = 8) -> float:
    """Mean length-normalised probability exp(-mean NLL) of the forget records."""
    was_training = model.training
    model.eval()
    probs = []
    for start in range(0, len(examples), size):
        part = to_device(make_batch(examples, list(range(start, min(start + size, len(examples)))), pad_id), device)["x"]
        logits = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits[:, :-1].float()
        labels = part["labels"][:, 1:]
        mask = labels != -100
        lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        probs.extend(torch.exp((lp * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist())
    model.train(was_training)
    return sum(probs) / len(probs)


def _finite_weights(model: Any) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)


def train(
    subject: Any,
    data: list[Example],
    objective: Objective,
    config: TrainConfig,
    retain: list[Example] | None = None,
    *,
    description: str = "training",
) -> TrainStats:
    """Run `objective` over `data` (and `retain`), updating `subject.model` in place.

    On a NaN/infinite loss or weight the model's trainable weights are restored to what they
    were before this call and a `TrainingError` is raised.
    """
    if not data:
        raise TrainingError(f"{description}: no training examples")
    if objective.needs_retain and not retain:
        raise TrainingError(f"{description}: this objective needs a retain set, and none was given")
    accelerator = Accelerator(cpu=subject.device.type == "cpu")
    model, pad_id, device = subject.model, subject.tokenizer.pad_token_id, subject.device
    params = [p for p in model.parameters() if p.requires_grad]
    snapshot = [p.detach().clone() for p in params]  # the divergence guard's restore point
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(data) / config.batch_size / config.grad_accum)
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total))
    model, optimizer = accelerator.prepare(model, optimizer)
    forget_stream = batches(data, config.batch_size, pad_id, config.seed)
    retain_stream = batches(retain, config.retain_batch_size or config.batch_size, pad_id, config.seed + 10_007) if objective.needs_retain and retain else None

    stats, start = TrainStats(), time.perf_counter()
    model.train()
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for step in range(total):
            logs: dict[str, float] = {}
            for _ in range(config.grad_accum):
                forget_batch = to_device(next(forget_stream), device)
                retain_batch = to_device(next(retain_stream), device) if retain_stream else None
                loss, logs = objective.loss(model, forget_batch, retain_batch)
                if not torch.isfinite(loss):
                    _restore(params, snapshot)
                    raise TrainingError(f"{description}: loss became {loss.item()} at step {step + 1}; weights restored to before this request")
                accelerator.backward(loss / config.grad_accum)
                stats.tokens += batch_tokens(forget_batch) + batch_tokens(retain_batch)
            if hasattr(objective, "before_optimizer_step"):  # optional: edit the accumulated gradients (SSU's saliency mask)
                objective.before_optimizer_step(model)
            # The guard reads the gradient norm that clipping computes anyway: with finite
            # gradients AdamW's steps are bounded by the learning rate, so the weights stay
            # finite. (Checking every weight every step cost ~10% of a step on a 135M model;
            # the weights are still checked once, after the last step.)
            norm = accelerator.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
            if not torch.isfinite(norm):
                _restore(params, snapshot)
                raise TrainingError(f"{description}: gradients became NaN/inf at step {step + 1}; weights restored to before this request")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            stats.steps = step + 1
            stats.history.append({"step": step + 1, "loss": loss.item(), "lr": scheduler.get_last_lr()[0], **logs})
            elapsed = time.perf_counter() - start
            progress.update(task, advance=1, info=f"loss {loss.item():.3f}  {stats.tokens / elapsed:.0f} tok/s")
            if config.stop_forget_prob and (step + 1) % config.check_every == 0:
                if mean_forget_prob(model, data, pad_id, device) < config.stop_forget_prob:
                    stats.stopped_early = True
                    break
    if not _finite_weights(model):
        _restore(params, snapshot)
        raise TrainingError(f"{description}: weights became NaN/inf by step {stats.steps}; weights restored to before this request")
    model.eval()
    stats.seconds = time.perf_counter() - start
    return stats


def _restore(params: list[torch.nn.Parameter], snapshot: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, saved in zip(params, snapshot):
            p.copy_(saved)
