"""Voxel-level structure metrics: F-score at a voxel tolerance, orphan rate, parent/child class agreement.

* **F-score at tolerance t** (as in Tatarchenko et al. 2019, "What do single-view 3D reconstruction
  networks learn?", on voxels): precision = share of predicted voxels with a reference voxel within
  Chebyshev distance t (t = 1: the 26-neighbourhood), recall = the same the other way round,
  F = 2PR / (P + R). A wall one voxel off counts as a miss for IoU but a hit here.
* **Orphan rate** of a hierarchy: the share of coarse-level voxels with no child voxel in the finer
  level. The data hierarchy is built by coarsening, so it is 0 there; in generated scenes it measures
  holes and hollow roofs of the finer level under solid coarse voxels.
* **Parent/child class agreement**: the share of fine voxels (with a parent) whose semantic class
  equals their parent's class.

All functions take voxel coordinates as (N, 3) integer tensors of unique voxels.
"""

from __future__ import annotations

import itertools

import torch

from xcube_core.errors import InvalidInputError
from xcube_core.eval.pointclouds import _check_ijk, _contains, voxel_keys

__all__ = ["orphan_rate", "parent_child_class_agreement", "parent_indices", "voxel_fscore"]


def _within(query: torch.Tensor, ref: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Per query voxel: is a ref voxel within Chebyshev distance ``tolerance``? Shape: (Nq,), bool."""
    both = torch.cat([query, ref])
    lo = both.min(dim=0).values - tolerance
    dims = both.max(dim=0).values + tolerance - lo + 1
    ref_keys = torch.sort(voxel_keys(ref, lo, dims)).values
    hit = torch.zeros(query.shape[0], dtype=torch.bool)
    for offset in itertools.product(range(-tolerance, tolerance + 1), repeat=3):
        hit |= _contains(ref_keys, voxel_keys(query + torch.tensor(offset), lo, dims))
    return hit


def voxel_fscore(ref_ijk: torch.Tensor, pred_ijk: torch.Tensor, tolerance: int = 1) -> dict[str, float]:
    """Precision, recall and F-score of ``pred_ijk`` against ``ref_ijk`` at ``tolerance`` voxels.

    Args:
        ref_ijk: reference voxels. Shape: (Nr, 3), integer.
        pred_ijk: predicted voxels. Shape: (Np, 3), integer.
        tolerance: Chebyshev distance in voxels that still counts as a match (0 = exact, 1 = 26-neighbourhood).

    Returns:
        ``{"precision", "recall", "fscore"}``; all 1.0 when both sets are empty, 0.0 when one is.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise InvalidInputError(f"tolerance must be an integer >= 0, got {tolerance!r}")
    ref, pred = _check_ijk(ref_ijk), _check_ijk(pred_ijk)
    if ref.shape[0] == 0 and pred.shape[0] == 0:
        return {"precision": 1.0, "recall": 1.0, "fscore": 1.0}
    if ref.shape[0] == 0 or pred.shape[0] == 0:
        return {"precision": 0.0, "recall": 0.0, "fscore": 0.0}
    precision = float(_within(pred, ref, tolerance).float().mean())
    recall = float(_within(ref, pred, tolerance).float().mean())
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "fscore": f}


def _factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2 or factor & (factor - 1):
        raise InvalidInputError(f"factor (coarse / fine voxel size) must be a power of two >= 2, got {factor!r}")
    return factor


def parent_indices(parent_ijk: torch.Tensor, child_ijk: torch.Tensor, factor: int) -> torch.Tensor:
    """Row of each child's parent in ``parent_ijk`` (-1 when it has none). Shape: (Nc,), int64.

    A child ``c`` of a fine level lies in parent ``floor(c / factor)`` (levels share their origin corner,
    as the data hierarchy and the pipeline's levels do).
    """
    parent, child = _check_ijk(parent_ijk), _check_ijk(child_ijk)
    up = torch.div(child, _factor(factor), rounding_mode="floor")
    if parent.shape[0] == 0 or child.shape[0] == 0:
        return torch.full((child.shape[0],), -1, dtype=torch.int64)
    both = torch.cat([parent, up])
    lo = both.min(dim=0).values
    dims = both.max(dim=0).values - lo + 1
    keys, order = torch.sort(voxel_keys(parent, lo, dims))
    q = voxel_keys(up, lo, dims)
    pos = torch.searchsorted(keys, q).clamp_(max=keys.numel() - 1)
    return torch.where(keys[pos] == q, order[pos], torch.full_like(pos, -1))


def orphan_rate(parent_ijk: torch.Tensor, child_ijk: torch.Tensor, factor: int) -> float:
    """Share of parent voxels without any child voxel (0.0 for no parents).

    Args:
        parent_ijk: coarse level voxels. Shape: (Np, 3), integer.
        child_ijk: fine level voxels. Shape: (Nc, 3), integer.
        factor: coarse voxel size / fine voxel size (a power of two, 4 for 1 m over 0.25 m).
    """
    parent = _check_ijk(parent_ijk)
    if parent.shape[0] == 0:
        _factor(factor)
        return 0.0
    idx = parent_indices(parent, child_ijk, factor)
    has_child = torch.zeros(parent.shape[0], dtype=torch.bool)
    has_child[idx[idx >= 0]] = True
    return float((~has_child).float().mean())


def parent_child_class_agreement(parent_ijk: torch.Tensor, parent_sem: torch.Tensor, child_ijk: torch.Tensor,
                                 child_sem: torch.Tensor, factor: int) -> float:
    """Share of child voxels (with a parent and known classes) whose class equals their parent's.

    Args:
        parent_ijk, parent_sem: coarse voxels (Np, 3) and their class ids (Np,).
        child_ijk, child_sem: fine voxels (Nc, 3) and their class ids (Nc,).
        factor: coarse voxel size / fine voxel size.

    Returns:
        The agreement in [0, 1]; NaN when no child has a parent with a known class.
    """
    if parent_sem.shape[0] != parent_ijk.shape[0] or child_sem.shape[0] != child_ijk.shape[0]:
        raise InvalidInputError("each semantics tensor needs one class per voxel: got "
                                f"{parent_sem.shape[0]} for {parent_ijk.shape[0]} and {child_sem.shape[0]} "
                                f"for {child_ijk.shape[0]} voxels")
    idx = parent_indices(parent_ijk, child_ijk, factor)
    ok = idx >= 0
    if not bool(ok.any()):
        return float("nan")
    mine = child_sem.reshape(-1).long()[ok]
    theirs = parent_sem.reshape(-1).long()[idx[ok]]
    known = (mine >= 0) & (theirs >= 0)
    if not bool(known.any()):
        return float("nan")
    return float((mine[known] == theirs[known]).float().mean())
