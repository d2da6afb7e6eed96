"""Several processes (GPUs or machines) with PyTorch's own stack: torchrun, DistributedDataParallel,
torch.distributed collectives.

Under `torchrun` every process reads RANK / WORLD_SIZE / LOCAL_RANK from its environment; the
trainers split each global batch across ranks (every rank draws the same global batch from the
same seeded generators and takes its slice), DDP averages gradients, and rank 0 alone logs and
writes checkpoints. Scoring shards the test samples across ranks and gathers the scores in the
original order, so every sample is counted exactly once whatever the number of processes.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class World:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: str = "auto", source: str = "train.device") -> World:
    """Join the process group torchrun set up (nccl on GPUs, gloo on CPUs); a single process otherwise.

    `source` names where `device` came from (a config key or --device) if it is not usable here."""
    from ..io import check_device, resolve_device

    check_device(device, source)  # a name this machine cannot run is refused before any work
    if not launched_by_torchrun():
        return World(device=resolve_device(device, source))
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(rank, size, local_rank, target)


def finish(world: World) -> None:
    """Leave the process group cleanly and end the process (gloo ranks can abort at interpreter exit)."""
    if not world.distributed or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def wrap_ddp(model: torch.nn.Module, device: torch.device, has_buffers: bool = False) -> torch.nn.Module:
    """DistributedDataParallel with gradients written straight into the all-reduce buckets (no second
    copy of every gradient); buffers are broadcast from rank 0 only for models that have them."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True, broadcast_buffers=has_buffers)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def average_scalars(values: dict[str, float], world: World) -> dict[str, float]:
    """Mean of logged scalars over ranks (each rank saw an equal slice of the batch)."""
    if not world.distributed:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return {k: float(v) / world.size for k, v in zip(keys, tensor.tolist())}


def shard(num_items: int, world: World) -> slice:
    """Contiguous share of `num_items` for this rank (the first `num_items % size` ranks get one more)."""
    base, extra = divmod(num_items, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (1 if world.rank < extra else 0))


def gather_rows(local: np.ndarray, num_items: int, world: World) -> np.ndarray:
    """Concatenate every rank's `shard` rows in rank order -> the full (num_items, ...) array on every rank."""
    if not world.distributed:
        return local
    largest = -(-num_items // world.size)
    padded = torch.zeros((largest,) + local.shape[1:], dtype=torch.from_numpy(local).dtype, device=world.device)
    padded[: len(local)] = torch.from_numpy(local).to(world.device)
    gathered = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(gathered, padded)
    parts = []
    for rank, block in enumerate(gathered):
        size = shard(num_items, World(rank, world.size)).stop - shard(num_items, World(rank, world.size)).start
        parts.append(block[:size].cpu().numpy())
    return np.concatenate(parts)


def sharded_score(scorer, features: np.ndarray, classes: np.ndarray, world: World) -> np.ndarray:
    """`scorer.score` with the samples split across ranks; every rank returns the full (N, K) scores."""
    if not world.distributed:
        return scorer.score(features, classes)
    part = shard(len(features), world)
    return gather_rows(scorer.score(features[part], classes), len(features), world)
