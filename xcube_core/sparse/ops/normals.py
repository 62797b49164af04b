"""Outward normals of occupancy alone (for grids that carry no normals, e.g. a user's layout)."""

from __future__ import annotations

import itertools

import torch

from xcube_core.sparse import keys as K

_UP = (0.0, 0.0, 1.0)


def occupancy_normals(keys: torch.Tensor) -> torch.Tensor:
    """Minus the sum of the unit directions to the occupied 26-neighbours, normalised.

    Points from the occupied side to the empty one; (0, 0, 1) where the neighbourhood is symmetric
    (a lone voxel, the inside of a solid). The 26-neighbourhood (rather than the 6 axis neighbours)
    gives diagonal surfaces diagonal normals.

    Args:
        keys: sorted voxel keys of a batch (`xcube_core.sparse.keys`). Shape: (N,), int64.

    Returns:
        Shape: (N, 3), float32, unit length, in key order.
    """
    acc = torch.zeros(len(keys), 3, dtype=torch.float32, device=keys.device)
    for d in itertools.product((-1, 0, 1), repeat=3):
        if d == (0, 0, 0):
            continue
        present = K.lookup(keys, keys + K.pack_offset(*d)) >= 0  # same grid: offsets never carry
        direction = torch.tensor(d, dtype=torch.float32, device=keys.device)
        acc -= present[:, None].float() * (direction / direction.norm())
    norm = acc.norm(dim=1, keepdim=True)
    up = torch.tensor(_UP, device=keys.device)
    return torch.where(norm > 1e-6, acc / norm.clamp(min=1e-6), up)
