"""Packing (batch, i, j, k) into one sortable int64 key.

The grid structure *is* the sorted key array: 8 bytes per voxel, nothing else per voxel. Because the
packing is linear in each coordinate (as long as coordinates stay in range), the key of a neighbour
at offset (di, dj, dk) is ``key + pack_offset(di, dj, dk)``: kernel maps need one add per offset and a
binary search, and never unpack.

Layout (most significant first): 12 bits batch | 17 bits i | 17 bits j | 17 bits k, each coordinate
stored with a bias of 2**16. Valid coordinates are |c| <= COORD_LIMIT, which leaves a margin so that
neighbour offsets of up to ``COORD_MARGIN`` never carry into the next field.
"""

from __future__ import annotations

import torch

AXIS_BITS = 17
BIAS = 1 << (AXIS_BITS - 1)
COORD_MARGIN = 64
COORD_LIMIT = BIAS - COORD_MARGIN  # 65472: e.g. 6.5 km at 10 cm voxels
MAX_GRIDS = 1 << (63 - 3 * AXIS_BITS)  # 4096
_MASK = (1 << AXIS_BITS) - 1


def check_ijk(ijk: torch.Tensor, what: str = "ijk") -> None:
    """Raise ValueError unless ``ijk`` is an integer (N, 3) tensor within the representable range."""
    if not isinstance(ijk, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(ijk).__name__}")
    if ijk.dtype.is_floating_point or ijk.dtype == torch.bool or ijk.is_complex():
        raise ValueError(f"{what} must be an integer tensor (int32/int64), got {ijk.dtype}; round it first")
    if ijk.dim() != 2 or ijk.shape[1] != 3:
        raise ValueError(f"{what} must have shape (N, 3), got {tuple(ijk.shape)}")
    if ijk.numel() and int(ijk.abs().max()) > COORD_LIMIT:
        raise ValueError(
            f"{what} has a coordinate of magnitude {int(ijk.abs().max())}, beyond the engine's limit "
            f"{COORD_LIMIT}; use a larger voxel size or split the scene"
        )


def pack(ijk: torch.Tensor, batch: torch.Tensor | int = 0) -> torch.Tensor:
    """Keys of voxels. ``ijk`` (N, 3) integer, ``batch`` (N,) or scalar. Returns (N,) int64."""
    ijk = ijk.to(torch.int64)
    key = (ijk[:, 0] + BIAS) << (2 * AXIS_BITS)
    key |= (ijk[:, 1] + BIAS) << AXIS_BITS
    key |= ijk[:, 2] + BIAS
    if isinstance(batch, torch.Tensor):
        key |= batch.to(torch.int64) << (3 * AXIS_BITS)
    elif batch:
        key |= int(batch) << (3 * AXIS_BITS)
    return key


def unpack(keys: torch.Tensor) -> torch.Tensor:
    """Coordinates of ``keys`` (N,) int64. Returns (N, 3) int32."""
    i = ((keys >> (2 * AXIS_BITS)) & _MASK) - BIAS
    j = ((keys >> AXIS_BITS) & _MASK) - BIAS
    k = (keys & _MASK) - BIAS
    return torch.stack([i, j, k], dim=1).to(torch.int32)


def unpack_batch(keys: torch.Tensor) -> torch.Tensor:
    """Grid index of ``keys`` (N,). Returns (N,) int64."""
    return keys >> (3 * AXIS_BITS)


def pack_offset(di: int, dj: int, dk: int) -> int:
    """Key delta of a neighbour offset; valid for |d| <= COORD_MARGIN on in-range voxels."""
    return (di << (2 * AXIS_BITS)) + (dj << AXIS_BITS) + dk


def lookup(sorted_keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Index of each query key in ``sorted_keys``, or -1 where absent. Returns (M,) int64."""
    if sorted_keys.numel() == 0:
        return torch.full_like(query, -1)
    pos = torch.searchsorted(sorted_keys, query)
    pos.clamp_(max=sorted_keys.numel() - 1)
    found = sorted_keys[pos] == query
    return torch.where(found, pos, torch.full_like(pos, -1))
