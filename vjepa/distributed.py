"""Process groups and parallelism applied from outside the model.

One code path for every world size: a single process still initialises a (gloo or NCCL) process group. The models
are wrapped with FSDP2 `fully_shard`, per transformer block and on the root, whenever there is something to shard
or to cast (`wants_fsdp`: world size above 1, or a compute dtype below fp32, whose bf16 parameter policy FSDP2
provides, so the numbers never depend on the number of processes); an fp32 run in one process leaves the modules
plain, as torchtitan does when the data-parallel shard degree is 1: FSDP2's bookkeeping (parameter all-gathers,
DTensor gradients) costs about 20% of a CPU step there and buys nothing (`train.fsdp=always` shards anyway). The
encoder and the target encoder are wrapped identically, so their local shards line up for the communication-free
EMA update. On GPU the compute policy is bf16 parameters with fp32 gradient reduction; master weights and the
target encoder shards stay fp32. Process-group errors propagate: there is no silent fallback to one process (the
official code's behaviour). SLURM variables are read only in `launch/`; here we read the torchrun variables.

`shutdown` really ends the process group. DTensor's sharding caches keep our DeviceMesh alive, and the mesh holds
the process group in its `_pg_registry`, so `destroy_process_group` alone left the gloo backend and its worker
threads running into interpreter finalization. A worker that then released its last collective (an all-gather
whose output tensors Python owns) needed the GIL, which a finalizing interpreter refuses by ending the thread;
the forced unwind through a C++ destructor called std::terminate and rank 1 died with SIGABRT after a finished
run ("terminate called without an active exception"; seen in CI about once in twenty 2-process runs under load,
gdb: ProcessGroupGloo::runLoop -> ~AsyncAllgatherWork -> decref_pyobject -> take_gil -> pthread_exit). At shutdown
the meshes made here drop their process groups and the cyclic garbage holding the group is collected, so
destroying the group joins its threads while Python is whole.
"""

from __future__ import annotations

import gc
import os
import socket
import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise (or reuse) the default process group from torchrun's variables; world size 1 without them."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world, device_id=dev if backend == "nccl" else None
        )
    if dist.get_world_size() != world:
        raise RuntimeError(f"process group has {dist.get_world_size()} ranks but WORLD_SIZE={world}")
    mesh = init_device_mesh(dev.type, (world,))
    _MESHES.add(mesh)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, mesh=mesh)


_MESHES: weakref.WeakSet[DeviceMesh] = weakref.WeakSet()  # the meshes init_distributed made (module docstring)


def shutdown() -> None:
    """Destroy the process group and join its threads (module docstring); a mesh used afterwards resolves its
    group by name again."""
    for mesh in list(_MESHES):
        registry = getattr(mesh, "_pg_registry", None)
        if isinstance(registry, dict):
            registry.clear()
    _MESHES.clear()
    gc.collect()  # FSDP2's per-module state is cyclic garbage by now, and it holds the group too
    if dist.is_initialized():
        dist.destroy_process_group()


def mixed_precision(dtype: torch.dtype) -> MixedPrecisionPolicy:
    if dtype == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def wants_fsdp(mode: str, world_size: int, dtype: torch.dtype) -> bool:
    """Whether training wraps its modules with FSDP2: train.fsdp "always", or "auto" with more than one process or
    a compute dtype below fp32 (module docstring)."""
    if mode not in ("auto", "always"):
        raise ValueError(f"train.fsdp must be auto or always, got {mode!r}")
    return mode == "always" or world_size > 1 or dtype != torch.float32


def apply_fsdp(
    module: nn.Module,
    blocks: nn.ModuleList,
    mesh: DeviceMesh,
    dtype: torch.dtype = torch.float32,
    activation_checkpointing: bool = False,
    compile_blocks: bool = False,
    no_backward: bool = False,
    shard: bool = True,
    compile_backend: str = "inductor",
) -> nn.Module:
    """Shard each block of `blocks` (a submodule of `module`), then the root; optional AC and compile per block.
    `shard=False` applies only AC and compile (the plain single-process path, module docstring).

    `no_backward` is for modules only run under no_grad (the target encoder): FSDP2 keeps parameters unsharded
    after forward until their backward, which never comes, so they would keep serving stale gathered weights
    after the EMA updated the shards. Such modules are resharded after every forward, root included.
    """
    policy = mixed_precision(dtype)
    if compile_blocks:
        import torch._dynamo.config as dynamo_config

        # one graph per bucket shape (the families' padded widths): allow more than dynamo's default of 8 per block
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
    for i, block in enumerate(blocks):
        if activation_checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

            block = checkpoint_wrapper(block, preserve_rng_state=False)
        if compile_blocks:
            # static shapes: training pads the kept-token counts to buckets (model.compile_buckets), so each bucket
            # compiles once; dynamic shapes would give up the fusions that make compiling worth it
            block = torch.compile(block, dynamic=False, backend=compile_backend)
        if shard:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        blocks[i] = block
    if shard:
        fully_shard(module, mesh=mesh, mp_policy=policy, reshard_after_forward=True if no_backward else None)
    return module


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.get_world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def all_reduce_sum_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over all processes, differentiable (functional collective with an autograd rule): its backward
    sums the incoming gradients over processes as well. `t` itself when there is no process group or one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    from torch.distributed import _functional_collectives as funcol

    return funcol.wait_tensor(funcol.all_reduce(t, "sum", dist.group.WORLD))
