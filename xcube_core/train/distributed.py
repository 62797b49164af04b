"""Data parallel training with ``torchrun``: process-group setup and a resumable, sharded sampler.

``torchrun --nproc_per_node N -m xcube_core train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; :func:`init_distributed` reads them and starts the
process group (``nccl`` on CUDA, ``gloo`` on CPU). Without them everything runs in one process.

Data order: :class:`ResumableBatchSampler` draws one permutation per epoch from ``(seed, epoch)``,
cuts it into *global* batches of ``batch_size * world_size`` items and hands rank ``r`` the
``r``-th slice of each. The order therefore depends only on the seed and the global batch size: one
process with batch 2B sees exactly the items that two processes with batch B see together, and a
run can resume from a checkpoint at any (epoch, batch) position.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import logging
import os
from typing import Iterator

import torch
import torch.distributed as dist

from xcube_core.errors import DataError, InvalidInputError

__all__ = ["DistInfo", "ResumableBatchSampler", "all_gather_tensors", "init_distributed", "shutdown_distributed"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 when not distributed.
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this node (selects the CUDA device).
        backend: ``"nccl"``, ``"gloo"`` or ``None`` when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> DistInfo:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1); else a single process.

    Raises:
        InvalidInputError: torchrun variables are inconsistent (e.g. RANK outside WORLD_SIZE).
    """
    if dist.is_available() and dist.is_initialized():  # the caller started the group: use it, leave it
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        return DistInfo(rank=rank, world_size=world, local_rank=local, backend=str(dist.get_backend()))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world:
        raise InvalidInputError(f"RANK={rank} is outside WORLD_SIZE={world}; launch with torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("process group: rank %d/%d (local %d), backend %s", rank, world, local, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, backend=backend, owns_group=True)


def shutdown_distributed(info: DistInfo, finished: bool = True) -> None:
    """Destroy the process group started by :func:`init_distributed` (no-op for one process).

    Objects that still hold the group (DDP's reducer, gloo work in reference cycles) are collected
    first, while the group and the interpreter are alive: left to interpreter exit, gloo's worker
    threads can outlive them and abort the process after a run that finished. When every rank
    ``finished`` its job, they meet at a barrier so that no rank tears its connections down while
    another is still using them; after a failure there is no barrier (the other ranks may never come).
    """
    if not (info.owns_group and dist.is_initialized()):
        return
    gc.collect()
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def all_gather_tensors(tensors: dict[str, torch.Tensor], info: DistInfo, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every rank's ``tensors`` (same names and shapes on all ranks), as CPU tensors, indexed by rank."""
    if not info.distributed:
        return [{k: v.cpu() for k, v in tensors.items()}]
    comm = device if info.backend == "nccl" else torch.device("cpu")
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(info.world_size)]
    for name in sorted(tensors):
        local = tensors[name].to(comm).contiguous()
        parts = [torch.empty_like(local) for _ in range(info.world_size)]
        dist.all_gather(parts, local)
        for r, part in enumerate(parts):
            out[r][name] = part.cpu()
    return out


class ResumableBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Seeded, sharded batch sampler whose position is part of the checkpoint.

    Yields this rank's index list of each global batch, from the current position to the end of the
    epoch (incomplete global batches are dropped so that every rank steps together). The position
    moves only through :meth:`advance`.

    Args:
        num_items: dataset length.
        batch_size: items per rank and step.
        seed: seeds the per-epoch permutations (``seed * 1_000_003 + epoch``).
        rank, world_size: this process's shard.
        shuffle: permute each epoch; otherwise the identity order.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise InvalidInputError(f"bad sampler shard: batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.rank, self.world_size, self.shuffle = int(rank), int(world_size), bool(shuffle)
        self.global_batch = self.batch_size * self.world_size
        if self.num_items < self.global_batch:
            raise DataError(
                f"the dataset has {self.num_items} items, fewer than one global batch of {self.global_batch} "
                f"({self.batch_size} per process x {self.world_size} processes); fix: lower --batch-size or add data"
            )
        self.epoch = 0
        self.batch = 0  # global batches of this epoch already handed out

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.global_batch

    def state_dict(self) -> dict[str, int]:
        """Position (epoch, batch) plus what the order depends on, for the checkpoint."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "global_batch": self.global_batch,
                "num_items": self.num_items}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position; warns when the order it was saved with differs."""
        changed = {k: (state.get(k), getattr(self, k)) for k in ("seed", "global_batch", "num_items")
                   if state.get(k) is not None and state.get(k) != getattr(self, k)}
        if changed:
            logger.warning("data order differs from the checkpoint's (%s); resume is not exact",
                           ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items()))
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch ``epoch``. Shape: (num_items,), int64."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=gen)

    def advance(self) -> None:
        """Record that one more global batch was consumed (the trainer calls this per step)."""
        self.batch += 1
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0

    def __len__(self) -> int:
        return self.batches_per_epoch - self.batch

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's batches from the current position to the end of the epoch.

        Iterating does not move the position (DataLoader workers prefetch ahead of training); the
        trainer calls :meth:`advance` for each batch it actually used.
        """
        epoch, first = self.epoch, self.batch
        order = self.order(epoch)
        for b in range(first, self.batches_per_epoch):
            start = b * self.global_batch + self.rank * self.batch_size
            yield order[start:start + self.batch_size].tolist()
