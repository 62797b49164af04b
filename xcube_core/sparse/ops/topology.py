"""Functional topology ops on the key representation (sorted unique int64 keys + offsets).

Every function here takes and returns plain tensors; `GridBatch` coerces inputs and wraps results.
"""

from __future__ import annotations

import itertools

import torch

from xcube_core.sparse import keys as K


def offsets_from_keys(keys: torch.Tensor, num_grids: int) -> torch.Tensor:
    """Row offsets (B + 1,) of sorted keys grouped by their grid bits."""
    counts = torch.bincount(K.unpack_batch(keys), minlength=num_grids) if keys.numel() else \
        torch.zeros(num_grids, dtype=torch.int64, device=keys.device)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def keys_from_ijk(ijk: torch.Tensor, jidx: torch.Tensor) -> torch.Tensor:
    """Sorted unique keys of (possibly repeated, unsorted) voxels. ijk (N, 3) int, jidx (N,)."""
    return torch.unique(K.pack(ijk, jidx), sorted=True)


def jidx_of(keys: torch.Tensor) -> torch.Tensor:
    return K.unpack_batch(keys)


def cube_offsets(lo: int, hi: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All integer offsets in [lo, hi]^3, x-major. Returns (n^3, 3) int64."""
    r = range(lo, hi + 1)
    return torch.tensor(list(itertools.product(r, r, r)), dtype=torch.int64, device=device)


def coarsened_keys(keys: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Keys of the parents (ijk // factor, floor) of every voxel. factor (3,) int64."""
    ijk = K.unpack(keys).to(torch.int64)
    parent = torch.div(ijk, factor, rounding_mode="floor")
    return torch.unique(K.pack(parent, K.unpack_batch(keys)), sorted=True)


def refined_keys(keys: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Keys of all children (ijk * factor + [0, factor)^3) of every voxel, sorted."""
    ijk = K.unpack(keys).to(torch.int64) * factor
    b = K.unpack_batch(keys)
    fx, fy, fz = (int(v) for v in factor)
    child = torch.tensor(
        list(itertools.product(range(fx), range(fy), range(fz))), dtype=torch.int64, device=keys.device
    )
    all_ijk = (ijk[:, None, :] + child[None]).reshape(-1, 3)
    all_b = b.repeat_interleave(child.shape[0])
    # Children of distinct parents are distinct, so sort (not unique) suffices.
    return torch.sort(K.pack(all_ijk, all_b)).values


def dilated_keys(keys: torch.Tensor, radius: int) -> torch.Tensor:
    """Keys of every voxel within Chebyshev distance ``radius`` of an active voxel."""
    deltas = [K.pack_offset(*d) for d in cube_offsets(-radius, radius).tolist()]
    delta = torch.tensor(deltas, dtype=torch.int64, device=keys.device)
    return torch.unique((keys[:, None] + delta[None]).reshape(-1), sorted=True)


def merged_keys(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.unique(torch.cat([a, b]), sorted=True)


def conv_output_keys(keys: torch.Tensor, kernel_size: int, stride: int, lo: int) -> torch.Tensor:
    """Keys of outputs o with an input at o * stride + d, d in [lo, lo + kernel_size)^3."""
    ijk = K.unpack(keys).to(torch.int64)
    b = K.unpack_batch(keys)
    deltas = cube_offsets(lo, lo + kernel_size - 1, keys.device)
    cand = (ijk[:, None, :] - deltas[None]).reshape(-1, 3)
    cb = b.repeat_interleave(deltas.shape[0])
    if stride > 1:
        keep = (cand % stride == 0).all(dim=1)
        cand, cb = torch.div(cand[keep], stride, rounding_mode="floor"), cb[keep]
    return torch.unique(K.pack(cand, cb), sorted=True)
