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
from contextlib import nullcontext
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnkit import distributed, sharding
from unlearnkit.data.formatting import IGNORE, Encoded, collate
from unlearnkit.errors import TrainingError
from unlearnkit.models.batching import length_groups
from unlearnkit.models.precision import Precision, autocast, fast_path, resolve_precision
from unlearnkit.models.prefix import forward_sharing_prefix, shared_prefix
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
    precision: Precision = Field("auto", description="auto: bf16 autocast with fp32 master weights where the hardware runs bf16 natively, else float32; float32; bfloat16")
    share_prefix: bool = Field(True, description="run a prompt prefix common to a batch once (same loss and gradients)")


class Objective(Protocol):
    needs_retain: bool

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class Check:
    """What a monitor says about the model at one check (see `Monitor`)."""

    within_budget: bool
    target_met: bool
    level: float  # how much of the request the model still holds: lower is more forgotten
    info: dict[str, Any] = field(default_factory=dict)


class Monitor(Protocol):
    """Checked every `every` optimiser steps and after the last one (guarded unlearning,
    `unlearnkit.safety.monitor`). `start_level` is the level of the weights before training."""

    every: int
    start_level: float

    def check(self, subject: Any, step: int) -> Check: ...


@dataclass
class TrainStats:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    stop_reason: str | None = None  # "target" (met early), "budget" (rolled back), None (ran to the end)
    rolled_back_to: int | None = None  # the optimiser step whose weights were kept after a budget stop
    history: list[dict[str, float]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

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


def select_rows(batch: Batch, keep: torch.Tensor) -> Batch:
    """The rows of `batch` where `keep` is true, cut to the longest of them (right padding)."""
    keep = keep.to(batch["index"].device)
    out: Batch = {}
    for name, value in batch.items():
        if isinstance(value, dict):
            width = int(value["attention_mask"][keep].sum(-1).max())
            out[name] = {k: t[keep][:, :width] for k, t in value.items()}
        else:
            out[name] = value[keep]
    return out


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in batch.items()}


def batch_tokens(batch: Batch | None) -> int:
    if batch is None:
        return 0
    return sum(int(v["attention_mask"].sum()) for v in batch.values() if isinstance(v, dict))


# -- the fast path: mixed precision and shared prompt prefixes -----------------------------------
# Set by `loss_pass` while a loss (or a method's `prepare`) runs, read by `model_logits`, so the
# losses of every method stay plain functions of (model, batch).
_SHARING_PREFIX: ContextVar[bool] = ContextVar("sharing_prefix", default=False)


@contextmanager
def loss_pass(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Forward passes of losses as `config` says: bf16 autocast (or fp32) and prefix sharing."""
    # Sharded (FSDP), every process must call the model as often as the others: prefix sharing
    # makes one call or two depending on the batch (`unlearnkit.sharding`).
    token = _SHARING_PREFIX.set(config.share_prefix and fast_path() and not distributed.sharded())
    try:
        with autocast(resolve_precision(config.precision, device), device):
            yield
    finally:
        _SHARING_PREFIX.reset(token)


def sharing_prefix() -> bool:
    """Whether the loss running now shares a batch's common prompt prefix (inside `loss_pass`)."""
    return _SHARING_PREFIX.get()


def model_logits(model: Any, part: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits `[B, T, V]` of a padded part at every position, in fp32 (losses take log-softmax
    over the vocabulary: under bf16 autocast the matmuls ran in bf16, the loss runs in fp32).
    Inside a `loss_pass` with prefix sharing, a prompt prefix common to the batch runs once."""
    if not sharing_prefix():
        return model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits.float()
    logits, _ = forward_sharing_prefix(model, part["input_ids"], part["attention_mask"], part["labels"], every_position=True)
    return logits.float()


def fp32_master_weights(model: Any) -> bool:
    """Upcast a model whose trainable weights are not fp32 (bf16 on a GPU) to fp32, so that
    optimizer steps of lr ~1e-5 are not rounded away; True if it did. The model stays fp32 after
    training (scoring and generation run bf16 autocast on it where native)."""
    if all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad):
        return False
    model.float()
    return True


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


def adamw(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """The loop's optimizer. Fused (one kernel over every tensor instead of a pass per operation)
    where torch has it for the weights (fp32 on CPU or CUDA, not FSDP's sharded DTensors) and the
    fast path is on (`models/precision.fast_path`). On the default model on 2 CPU cores the
    clip-and-step part of a step fell from ~0.45 s to ~0.18 s; the update is the same AdamW
    (tests/test_fastpath.py compares the two)."""
    fused = fast_path() and not distributed.sharded() and all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def _finite_weights(params: list[torch.nn.Parameter]) -> bool:
    """Whether every trainable weight is finite, on every process (each checks its own shards)."""
    return not distributed.any_true(not all(bool(torch.isfinite(sharding.local(p)).all()) for p in params))


def train(
    subject: Any,
    data: list[Example],
    objective: Objective,
    config: TrainConfig,
    retain: list[Example] | None = None,
    *,
    description: str = "training",
    monitor: Monitor | None = None,
) -> TrainStats:
    """Run `objective` over `data` (and `retain`), updating `subject.model` in place.

    On a NaN/infinite loss or weight the model's trainable weights are restored to what they
    were before this call and a `TrainingError` is raised. With a `monitor` (guarded
    unlearning), every `monitor.every` optimiser steps and after the last: a check outside the
    budget restores the best state within it (the lowest level seen, the start included) and
    stops; a check that meets the target stops.

    Under FSDP (`unlearnkit.sharding`) the model trains sharded and `subject.model` is afterwards
    a new module object around the same parameter objects, holding the full weights.
    """
    if not data:
        raise TrainingError(f"{description}: no training examples")
    if objective.needs_retain and not retain:
        raise TrainingError(f"{description}: this objective needs a retain set, and none was given")
    # Several processes (docs/scale.md): the global batch of a step is `grad_accum` micro-batches
    # of `batch_size`, drawn in the same order on every process; process r runs micro-batches
    # r, r + N, ... and the gradients are summed across processes, so the step is the one a
    # single process takes. Each micro-batch's RNG (dropout, random labels) is seeded from its
    # place in the global batch, never from the rank.
    world = distributed.world_size()
    if config.grad_accum % world:
        raise TrainingError(f"{description}: grad_accum {config.grad_accum} is not a multiple of the {world} processes; "
                            f"set grad_accum to a multiple of {world} (the global batch is batch_size x grad_accum)")
    rng_base = int(torch.randint(0, 2**62, (1,)).item())  # from the caller's seeded RNG, the same on every process
    model, pad_id, device = subject.model, subject.tokenizer.pad_token_id, subject.device
    accelerator = sharding.training_accelerator(cpu=device.type == "cpu")
    resolve_precision(config.precision, device)  # a bad setting fails here, before any work
    fp32_master_weights(model)
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], config)
    per_epoch = math.ceil(len(data) / config.batch_size / config.grad_accum)
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    # An objective may lay its schedule out over another number of steps than it runs (SSU's
    # reference sizes it in micro-batches but steps it per optimiser step).
    span = objective.schedule_steps(total) if hasattr(objective, "schedule_steps") else total
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, span))
    wrapped = distributed.together() or not distributed.launched()  # `solo()` training stays unwrapped: no peer joins it
    unshard: Callable[[], None] = lambda: None  # FSDP: hands the full weights back
    if distributed.sharded():  # FSDP: weights, gradients, optimizer states and frozen teachers sharded
        frozen = objective.frozen_networks() if hasattr(objective, "frozen_networks") else []
        model, optimizer, unshard = sharding.shard_for_training(accelerator, subject, optimizer, frozen)
    elif wrapped:
        model, optimizer = accelerator.prepare(model, optimizer)
    # Taken after `prepare`: FSDP swaps the parameters for shards (and the optimizer's with them).
    params = [p for p in model.parameters() if p.requires_grad]
    snapshot = [p.detach().clone() for p in params]  # the divergence guard's restore point
    try:
        forget_stream = batches(data, config.batch_size, pad_id, config.seed)
        retain_stream = batches(retain, config.retain_batch_size or config.batch_size, pad_id, config.seed + 10_007) if objective.needs_retain and retain else None
        stats, start = TrainStats(), time.perf_counter()
        best_level, best_step, best_state = (monitor.start_level if monitor else 0.0), 0, snapshot
        # A short run is still checked a few times, so a rollback has a state to go back to other
        # than the start (8 facts at batch 8 for 5 epochs is 5 steps: one check at `every` 5).
        check_every = max(1, min(monitor.every, total // MIN_CHECKS)) if monitor is not None else 0
        model.train()
        with make_progress() as progress:
            task = progress.add_task(description, total=total, info="")
            for step in range(total):
                logs: dict[str, float] = {}
                bad_loss: float | None = None
                mine = [m for m in range(config.grad_accum) if m % world == distributed.rank()]
                for micro in range(config.grad_accum):
                    forget_cpu, retain_cpu = next(forget_stream), (next(retain_stream) if retain_stream else None)
                    if micro not in mine:  # another process's share of the global batch
                        continue
                    forget_batch = to_device(forget_cpu, device)
                    retain_batch = to_device(retain_cpu, device) if retain_cpu is not None else None
                    # Gradients are exchanged once per step, after this process's last micro-batch.
                    sync = accelerator.no_sync(model) if wrapped and micro != mine[-1] else _nothing()
                    with torch.random.fork_rng(devices=_rng_devices(device)), sync:
                        torch.manual_seed(distributed.micro_seed(rng_base, step, micro))
                        with loss_pass(config, device):
                            loss, logs = objective.loss(model, forget_batch, retain_batch)
                        if not torch.isfinite(loss):  # still run backward: every process must join the exchange
                            bad_loss = loss.item()
                        # The exchange averages over processes; x world makes it the sum, i.e. the
                        # one-process mean over the global batch's micro-batches.
                        accelerator.backward(loss * world / config.grad_accum)
                    stats.tokens += batch_tokens(forget_batch) + batch_tokens(retain_batch)
                if distributed.any_true(bad_loss is not None):
                    _restore(params, snapshot)
                    raise TrainingError(f"{description}: loss became {bad_loss if bad_loss is not None else 'NaN/inf on another process'} at step {step + 1}; weights restored to before this request")
                if hasattr(objective, "before_optimizer_step"):  # optional: edit the accumulated gradients (SSU's saliency mask)
                    objective.before_optimizer_step(model)
                # The guard reads the gradient norm that clipping computes anyway: with finite
                # gradients AdamW's steps are bounded by the learning rate, so the weights stay
                # finite. (Checking every weight every step cost ~10% of a step on a 135M model;
                # the weights are still checked once, after the last step.)
                norm = sharding.local(accelerator.clip_grad_norm_(params, config.max_grad_norm or float("inf")))
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
                if monitor is not None and ((step + 1) % check_every == 0 or step + 1 == total):
                    check = monitor.check(subject, step + 1)
                    stats.checks.append(check.info)
                    if not check.within_budget:  # roll back to the best state within the budget
                        _restore(params, best_state)
                        stats.stop_reason, stats.rolled_back_to = "budget", best_step
                        break
                    if check.level < best_level:
                        best_level, best_step, best_state = check.level, step + 1, [p.detach().clone() for p in params]
                    if check.target_met:
                        stats.stop_reason = "target"
                        break
        if not _finite_weights(params):
            _restore(params, snapshot)
            raise TrainingError(f"{description}: weights became NaN/inf by step {stats.steps}; weights restored to before this request")
        stats.seconds = time.perf_counter() - start
        stats.tokens = distributed.total(stats.tokens)
    finally:
        unshard()  # every process gets here together: errors in the loop are raised on all of them
    subject.model.eval()
    return stats


MIN_CHECKS = 4  # checks a guarded run gets at least, where it has that many optimiser steps


def _nothing() -> Any:
    return nullcontext()


def _rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG a micro-batch seeds (none on CPU)."""
    return [device.index or 0] if device.type == "cuda" else []


def _restore(params: list[torch.nn.Parameter], snapshot: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, saved in zip(params, snapshot):
            p.copy_(saved)


# -- fine-tuning on records of mixed length (prepare) ------------------------------------------
class LengthGroupedFineTune:
    """Next-token NLL where every record weighs the same, computed per length group.

    Why not the loop's `FineTune`: a batch mixes ~45-token QA pairs with ~220-token biographies.
    Padded together, every QA row would cost a biography's compute (about 3x the work on CPU),
    and a token-mean loss would let the one long biography drown the short answers. Rows are
    therefore run in groups of similar length (trimmed to the group's longest), and the loss is
    the mean over records of each record's mean token NLL.

    Rows of a group that start with the same unlabelled tokens (the chat template's system prompt
    and user marker: about half of a QA pair's tokens with the embedded model) run that prefix
    once and share its keys and values; gradients flow through the shared prefix as through the
    copies it replaces, so the loss and its gradient are those of the plain forward pass.
    """

    needs_retain = False
    max_ratio = 1.5  # a group's longest row is at most this many times its shortest

    def __init__(self, precision: str = "float32", share_prefix: bool = True) -> None:
        self.precision = precision  # resolved ("float32" or "bfloat16")
        self.share_prefix = share_prefix and fast_path()

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        part = forget["x"]
        lengths = part["attention_mask"].sum(1)
        per_record = []
        # Sharded (FSDP), every process must call the model as often as the others: one group.
        groups = [list(range(len(lengths)))] if distributed.sharded() else length_groups(lengths.tolist(), self.max_ratio)
        for rows in groups:
            index = torch.tensor(rows, device=lengths.device)
            width = int(lengths[index].max())
            ids, mask, labels = (part[k][index, :width] for k in ("input_ids", "attention_mask", "labels"))
            with autocast(self.precision, ids.device):
                logits, offset = self._logits(model, ids, mask, labels)
            targets = labels[:, offset + 1 :]
            nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
            counts = (targets != IGNORE).sum(1).clamp(min=1)
            per_record.append(nll.sum(1) / counts)
        loss = torch.cat(per_record).mean()
        return loss, {"nll": loss.item()}

    def _logits(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Logits predicting tokens offset+1 .. end (offset = length of the shared prefix)."""
        if not self.share_prefix or distributed.sharded():  # sharded: one call per group (see `loss`)
            return model(input_ids=ids, attention_mask=mask).logits[:, :-1], 0
        # The prefix's own positions carry no labels (shared_prefix stops before any), so its
        # logits are not needed; logits[t] of the rest predicts token offset + t + 1.
        logits, offset = forward_sharing_prefix(model, ids, mask, labels, every_position=False)
        return logits[:, :-1], offset
