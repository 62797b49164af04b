"""How many voxels a VAE decode may create: a memory budget derived from the device.

The structure-predicting decoder can create voxels the latent grid did not have; an untrained or
unlucky sample may keep almost every candidate, and its finest step then holds ``8x`` the voxels of
the one before. The budget caps the voxels at the level's resolution so that the decode fits in the
memory the device has free now, and the pipeline says so (a warning and the level's metadata) when
it bites. It replaces a bound of a quarter of the dense box (134 M voxels at 1024 x 1024 x 512, far
beyond any device), which guarded nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch

logger = logging.getLogger(__name__)

MEMORY_FRACTION = 0.5  # of the free memory a decode may use (the rest: weights, the U-Net, other work)
ASSUMED_BYTES = 8 << 30  # when a platform reports no free memory at all
_KERNEL_MAP_BYTES = 27 * 2 * 8  # one 3x3x3 neighbour table: 27 offsets, (in, out) int64 per pair
_LIVE_ACTIVATIONS = 6  # feature tensors alive at once per voxel (input, block output, norm, residual, ...)


@dataclasses.dataclass(frozen=True)
class VoxelBudget:
    """The most voxels a decode may keep at the level's resolution, and why.

    Attributes:
        max_voxels: the cap (>= 1).
        bytes_per_voxel: estimated peak memory per voxel at the finest decoder step.
        free_bytes: memory reported free on the device.
        source: what set the cap: where ``free_bytes`` came from ("cuda", "/proc/meminfo", "sysconf",
            "assumed") or a configured cap (e.g. "max_voxel_fraction").
    """

    max_voxels: int
    bytes_per_voxel: int
    free_bytes: int
    source: str

    def capped(self, max_voxels: int, source: str) -> "VoxelBudget":
        """This budget, lowered to ``max_voxels`` (named ``source``) when that is smaller."""
        if max_voxels >= self.max_voxels:
            return self
        return dataclasses.replace(self, max_voxels=max(1, int(max_voxels)), source=source)

    def as_metadata(self, kept: int, dropped: int) -> dict:
        return {"max_voxels": self.max_voxels, "kept": kept, "dropped": dropped,
                "bytes_per_voxel": self.bytes_per_voxel, "free_bytes": self.free_bytes, "source": self.source}


def free_memory(device: torch.device | str) -> tuple[int, str]:
    """Bytes free on ``device`` now and where that number came from."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), "cuda"
    return host_free_memory()


def host_free_memory(meminfo: str = "/proc/meminfo") -> tuple[int, str]:
    """Available host RAM: Linux's MemAvailable (free + reclaimable caches), else half the physical
    pages (POSIX sysconf), else `ASSUMED_BYTES`."""
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2, "sysconf"
    except (AttributeError, ValueError, OSError):
        return ASSUMED_BYTES, "assumed"


def bytes_per_voxel(finest_channels: int, dtype_bytes: int = 4) -> int:
    """Peak bytes per voxel at the decoder's finest step: live activations plus one kernel map."""
    return _LIVE_ACTIVATIONS * finest_channels * dtype_bytes + _KERNEL_MAP_BYTES


def decode_voxel_budget(finest_channels: int, device: torch.device | str,
                        fraction: float = MEMORY_FRACTION) -> VoxelBudget:
    """The voxel cap of one decode whose finest step has ``finest_channels`` features per voxel."""
    free, source = free_memory(device)
    per_voxel = bytes_per_voxel(finest_channels)
    return VoxelBudget(max(1, int(free * fraction) // per_voxel), per_voxel, free, source)
