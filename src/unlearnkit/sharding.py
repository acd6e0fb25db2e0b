"""FSDP 2 in the shared training loop: weights, gradients, optimizer states and frozen teachers
sharded across the processes while a request trains (docs/scale.md, "FSDP").

FSDP is asked for by the launcher: `accelerate launch` with an FSDP config sets
ACCELERATE_USE_FSDP=true (and FSDP_VERSION, ...) in every process; `distributed.sharded()` reads
it. What differs from DDP is decided here:

- The Accelerator. accelerate 1.15 turns FSDP on only for GPU-type process groups (in
  `AcceleratorState.__init__`, the FSDP branch sits under `elif self.distributed_type in
  [MULTI_GPU, MULTI_MLU, ...]`, which MULTI_CPU is not), so on CPU it keeps MULTI_CPU and
  `prepare` wraps the model in DDP without a word. torch's `fully_shard` itself runs on CPU
  with gloo, so on CPU the state is set to FSDP here (`training_accelerator`).
- Handing back a plain model. `fully_shard` turns the module into an FSDP module in place (its
  parameters become DTensor shards, its forward all-gathers them) and there is no way back;
  evaluation, checkpoints and the next request need a plain module with full weights. Before
  sharding, `plain_twin` keeps a second module tree holding the caller's parameter objects;
  their storage is released while the shards train, and afterwards each gets its full tensor,
  gathered from the shards, and the twin becomes `subject.model`. The parameter objects the
  caller holds (their `requires_grad` flags, tied weights) stay the same.
- Frozen teachers (KL, JSD, UNDIAL, RMU) are a `plain_twin` too while sharding (no copy of the
  weights) and are sharded the same way as the trained model, in eval mode, before the shared
  weights are released.
- Every process must call a sharded module the same number of times in the same order (each
  call all-gathers its weights): while sharded, nothing may decide the number of forward calls
  from the data (prefix sharing in losses, length groups in `prepare`'s fine-tuning), and
  scoring and generation (the guard's checks) are not dealt out across the processes
  (`distributed.set_lockstep`): every process runs every batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

from unlearnkit import distributed
from unlearnkit.errors import TrainingError, UnlearnkitError


def training_accelerator(cpu: bool) -> Accelerator:
    """The training loop's Accelerator: DDP, or FSDP 2 where the launcher asked for it."""
    # Buffers are not re-broadcast on every forward: a loss may call the model a different number
    # of times on each process (length groups), and a decoder's buffers (rotary tables) are constants.
    handlers = [DistributedDataParallelKwargs(broadcast_buffers=False)]
    if not distributed.sharded():
        return Accelerator(cpu=cpu, kwargs_handlers=handlers)
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    # cpu_ram_efficient_loading moves the model to the meta device before sharding: the plain
    # twin shares its parameters, and every process has already loaded the full weights anyway.
    plugin = FullyShardedDataParallelPlugin(cpu_ram_efficient_loading=False)
    if plugin.fsdp_version != 2:
        raise UnlearnkitError(f"FSDP version {plugin.fsdp_version} is not supported: set fsdp_version: 2 in the accelerate config (configs/accelerate/fsdp.yaml)")
    accelerator = Accelerator(cpu=cpu, fsdp_plugin=plugin, kwargs_handlers=handlers)
    if accelerator.distributed_type != DistributedType.FSDP:  # CPU: see the module docstring
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
    return accelerator


def plain_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A second module tree around the same parameter and buffer objects (no tensor is copied)."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, shared)


def is_sharded(tensor: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a DTensor (the whole value of a replicated one, such as a gradient
    norm); a plain tensor as it is."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def shard_for_training(accelerator: Accelerator, subject: Any, optimizer: torch.optim.Optimizer,
                       frozen: list[torch.nn.Module]) -> tuple[Any, Any, Callable[[], None]]:
    """Shard `subject.model` (in place, with its optimizer) and the `frozen` teachers; returns the
    prepared model and optimizer and `unshard`, which every process must call after training:
    it gathers the full weights into the caller's parameters and makes them `subject.model`."""
    from accelerate.utils import fsdp2_prepare_model

    plain = plain_twin(subject.model)
    for network in frozen:  # first: they copy their shards from the weights the twin shares
        fsdp2_prepare_model(accelerator, network)
        network.eval().requires_grad_(False)
    model, optimizer = accelerator.prepare(subject.model, optimizer)
    if model is not subject.model or not any(is_sharded(p) for p in model.parameters()):
        raise TrainingError("FSDP was asked for (ACCELERATE_USE_FSDP) but accelerate did not shard the model in place")
    _release(plain)
    distributed.set_lockstep(True)

    def unshard() -> None:
        distributed.set_lockstep(False)
        _reshard(model)
        shards = dict(model.named_parameters())
        for name, param in plain.named_parameters():
            shard = shards[name]
            param.data = (shard.full_tensor() if is_sharded(shard) else shard).detach()
        plain.train(model.training)
        subject.model = plain

    return model, optimizer, unshard


def _release(plain: torch.nn.Module) -> None:
    """Free the full weights while their shards train (the parameter objects stay)."""
    for param in plain.parameters():
        param.data = torch.empty(0, dtype=param.dtype, device=param.device)


def _reshard(model: torch.nn.Module) -> None:
    """Register every module's shards again. A forward pass without backward (the guard's checks)
    leaves the groups that do not reshard after forward (the root, the embeddings and head)
    holding all-gathered copies: what a rollback restored into the shards is not in them."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
