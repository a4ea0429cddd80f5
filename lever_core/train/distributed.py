"""Multi-process data parallelism under torchrun: process-group set-up from the torchrun
environment (``gloo`` on CPU, ``nccl`` on GPU) and gradient reduction.

Which parameters are data parallel: those with ``requires_grad=True`` (broadcast from rank 0 at the
start, gradients summed every step). A parameter with ``requires_grad=False`` is process-local:
frozen, or a model-parallel part whose gradient the backbone writes itself (Renée's label-sharded
classifier).

Gradients are all-reduced with SUM, not averaged: the loop already divides every rank's loss by the
number of rows in the *global* batch, so the sum over ranks is exactly the single-process gradient,
even for a last batch split unevenly between ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. writes a cache), the others after it finished."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def init_distributed(device: str) -> DistEnv:
    """Join the process group torchrun describes through WORLD_SIZE/RANK/LOCAL_RANK; a plain
    ``python`` launch is a world of one and starts no process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank)


def shutdown_distributed(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sum_gradients(params: Iterable[torch.nn.Parameter], env: DistEnv) -> None:
    """All-reduce (sum) the gradients of ``params`` in one flat buffer per dtype/device. A missing
    gradient counts as zeros, because every rank must join every collective."""
    if not env.enabled:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    groups: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for group in groups.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def broadcast_parameters(params: Iterable[torch.nn.Parameter], env: DistEnv) -> None:
    """Start every rank from rank 0's values of the (replicated) ``params``."""
    if not env.enabled:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def all_reduce_sum(value: float, env: DistEnv, device: torch.device | str = "cpu") -> float:
    if not env.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())
