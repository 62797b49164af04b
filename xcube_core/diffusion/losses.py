"""Diffusion training losses.

The v-prediction MSE (Salimans & Ho 2022) ``|| v_hat - v ||^2`` is averaged over the voxels and
channels of each batch item first, then over the batch, so a scene with many voxels weighs as much
as one with few (the sparse layout would otherwise weigh items by their voxel count).
"""

from __future__ import annotations

import torch

__all__ = ["per_item_mse", "v_prediction_loss"]


def per_item_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    jidx: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Mean squared error of each batch item.

    Args:
        pred: Shape: (B, ...) dense, or (N, C) / (N,) sparse rows, float.
        target: same shape as ``pred``.
        jidx: per-row batch index for sparse input. Shape: (N,), int. None for dense input.
        batch_size: number of items ``B`` for sparse input (default ``jidx.max() + 1``); lets a
            trailing item with no voxels count as empty.

    Returns:
        Shape: (B,), float32 or the input's dtype if wider. Items without voxels give NaN.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    diff = pred - target
    if diff.dtype in (torch.float16, torch.bfloat16):
        diff = diff.float()  # accumulate half-precision errors in float32
    sq = diff.square()
    if jidx is None:
        if sq.ndim == 0:
            raise ValueError("dense input needs a batch dimension, got a 0-d tensor")
        return sq.reshape(sq.shape[0], -1).mean(dim=1)
    if jidx.ndim != 1 or jidx.shape[0] != sq.shape[0]:
        raise ValueError(f"jidx must have shape (N,) = ({sq.shape[0]},), got {tuple(jidx.shape)}")
    if batch_size is None:
        batch_size = int(jidx.max()) + 1 if jidx.numel() else 0
    per_row = sq.flatten(1).mean(dim=1) if sq.ndim > 1 else sq  # mean over channels, shape (N,)
    idx = jidx.to(device=sq.device, dtype=torch.long)
    sums = torch.zeros(batch_size, device=sq.device, dtype=sq.dtype).index_add_(0, idx, per_row)
    counts = torch.zeros(batch_size, device=sq.device, dtype=sq.dtype).index_add_(0, idx, torch.ones_like(per_row))
    return sums / counts  # 0/0 = NaN marks empty items


def v_prediction_loss(
    pred_v: torch.Tensor,
    target_v: torch.Tensor,
    jidx: torch.Tensor | None = None,
    batch_size: int | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between predicted and true ``v``: mean over voxels per item, then over the batch.

    Args:
        pred_v: network output. Shape: (B, C, D, H, W) dense or (N, C) sparse, float.
        target_v: ``schedule.get_velocity(x0, noise, t)``, same shape.
        jidx: per-row batch index for sparse input. Shape: (N,).
        batch_size: number of items for sparse input (default ``jidx.max() + 1``).
        weights: optional per-item weights. Shape: (B,). The result is their weighted mean.

    Returns:
        Scalar loss (0-d). Items with no voxels are left out of the batch mean.
    """
    per_item = per_item_mse(pred_v, target_v, jidx, batch_size)
    valid = ~torch.isnan(per_item)
    if not bool(valid.any()):
        raise ValueError("the batch has no voxels at all; fix: skip empty batches in the data loader")
    w = torch.ones_like(per_item) if weights is None else weights.to(per_item)
    if w.shape != per_item.shape:
        raise ValueError(f"weights must have shape (B,) = {tuple(per_item.shape)}, got {tuple(w.shape)}")
    w = torch.where(valid, w, torch.zeros_like(w))
    return (torch.where(valid, per_item, torch.zeros_like(per_item)) * w).sum() / w.sum()
