"""Several processes, one result: rank, world size, barriers and ordered gathers (docs/scale.md).

unlearnkit runs under `accelerate launch` (or `torch.distributed.run`): every process runs the
same command, trains its share of each optimiser step, and only the main process (rank 0)
writes (checkpoints, ledger, reports, saved models); the others wait at a barrier. One process
without a launcher is the same code with a world of one.

What is shared is decided here once; accelerate's `PartialState` owns the process group (gloo on
CPU, NCCL on GPUs). On a machine without CUDA the state is created with `cpu=True`, so two
processes started by `torch.distributed.run` on CPU form a gloo group (accelerate 1.15's own
`launch --cpu` starts one process unless mpirun is installed: see docs/scale.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import torch

# Rank 0 may evaluate for a long time while the others wait at a barrier: the process group's
# default 30-minute timeout would end a healthy run. A crashed rank is noticed by the launcher
# (it stops the others), not by this timeout.
TIMEOUT_ENV = "UNLEARNKIT_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 6 * 3600

T = TypeVar("T")
R = TypeVar("R")

_STATE: Any = None
_SOLO = False  # inside `solo()`: this process works alone (rank 0 evaluating while the others wait)
_LOCKSTEP = False  # a sharded model is in use (FSDP training): every process makes the same calls


def launched() -> bool:
    """Whether a launcher started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state() -> Any:
    """accelerate's process state, created once (it joins the process group when launched)."""
    global _STATE
    if _STATE is None:
        from accelerate import PartialState

        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        _STATE = PartialState(cpu=not torch.cuda.is_available(), timeout=timeout) if launched() else PartialState(cpu=not torch.cuda.is_available())
    return _STATE


def together() -> bool:
    """Whether the processes work together now: launched as several, and not inside `solo()`."""
    return launched() and not _SOLO


FSDP_ENV = "ACCELERATE_USE_FSDP"  # set by `accelerate launch` from a config with distributed_type: FSDP


def sharded() -> bool:
    """Whether training shards the model across the processes now (FSDP 2, `unlearnkit.sharding`):
    the launcher asked for FSDP and the processes work together (a `solo()` run trains alone,
    unsharded)."""
    return together() and os.environ.get(FSDP_ENV, "false").lower() == "true"


def world_size() -> int:
    return state().num_processes if together() else 1


def rank() -> int:
    """This process's rank (0 inside `solo()`, which only the main process enters)."""
    return state().process_index if together() else 0


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """The main process alone, e.g. evaluating (an attack that fine-tunes trains on one
    process), while the others wait for its next broadcast."""
    global _SOLO
    previous, _SOLO = _SOLO, True
    try:
        yield
    finally:
        _SOLO = previous


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device | None:
    """This process's accelerator under a launcher (cuda:LOCAL_RANK), else None (the caller decides)."""
    if not launched():
        return None
    return torch.device(state().device)


def barrier() -> None:
    if together():
        state().wait_for_everyone()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every process (any picklable object)."""
    if not together():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def set_lockstep(on: bool) -> None:
    """While a sharded model is in use (`unlearnkit.sharding`), each of its forward calls gathers
    its weights from every process: work is not dealt out (`deal`), every process runs all of it."""
    global _LOCKSTEP
    _LOCKSTEP = on


def deal(items: list[T], work: Callable[[T], list[R]], through: Callable[[list[T]], Iterable[T]] = iter) -> list[R]:
    """`work(item)` for each item, concatenated in item order, on every process. Processes working
    together (each makes this same call) deal the items out round-robin and gather the results;
    one process, or several in lockstep, runs them all. `through` wraps this process's items
    (a progress bar)."""
    if _LOCKSTEP or not together():
        return [row for item in through(items) for row in work(item)]
    mine = [items[i] for i in shard(len(items))]
    return [row for rows in gather_in_order([work(item) for item in through(mine)]) for row in rows]


def gather_in_order(mine: list[Any]) -> list[Any]:
    """Every process's items, rank 0's first: with items dealt round-robin (`shard`), `interleave`
    restores their original order."""
    if not together():
        return list(mine)
    parts: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(parts, mine)
    return interleave(parts)


def shard(count: int) -> list[int]:
    """The positions 0..count-1 this process handles: dealt round-robin (rank, rank + N, ...)."""
    return list(range(rank(), count, world_size()))


def interleave(parts: list[list[Any]]) -> list[Any]:
    """Undo a round-robin deal: parts[r] holds positions r, r + N, ... ."""
    out: list[Any] = []
    for i in range(max((len(p) for p in parts), default=0)):
        out += [p[i] for p in parts if i < len(p)]
    return out


def any_true(flag: bool) -> bool:
    """Whether `flag` is true on any process (a NaN loss on one rank stops all of them together)."""
    if not together():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=state().device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def total(value: int) -> int:
    """The sum of an integer over all processes (tokens trained)."""
    if not together():
        return value
    tensor = torch.tensor([float(value)], device=state().device, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return int(tensor.item())


@contextlib.contextmanager
def main_writes() -> Iterator[bool]:
    """`with main_writes() as writer: if writer: ...`: the main process writes, then everyone
    meets at a barrier, so what it wrote is there for all when the block ends."""
    try:
        yield is_main()
    finally:
        barrier()


def micro_seed(base: int, step: int, micro: int) -> int:
    """The RNG seed of one micro-batch (dropout, random labels): a function of the optimiser step
    and the micro-batch's place in the global batch only, never of the rank that runs it."""
    return (base * 1_000_003 + step * 4099 + micro) % (2**63 - 1)
