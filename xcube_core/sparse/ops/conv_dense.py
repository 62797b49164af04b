"""Dense fast path: a plan whose grids are full boxes runs torch's dense conv3d kernels.

The coarsest level's latent is a full dense box (e.g. 16 x 16 x 8). Its voxels, sorted by key, are
exactly a row-major (B, X, Y, Z) array, so the features reshape to (B, C, X, Y, Z) at no cost and
oneDNN/cuDNN's conv3d gives the same result as the sparse kernel map (missing neighbours = zero
padding), several times faster. Handles submanifold convs (odd k, stride 1), k = s downsampling
and its transposed upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_shape(grid) -> tuple[int, int, int] | None:
    """(X, Y, Z) when every grid of the batch is the same full box, else None."""
    if grid.total_voxels == 0:
        return None
    bbox = grid.bbox()
    lo, hi = bbox[:, 0], bbox[:, 1]
    if not (bool((lo == lo[0]).all()) and bool((hi == hi[0]).all())):
        return None
    dims = tuple(int(v) for v in (hi[0] - lo[0] + 1))
    if dims[0] * dims[1] * dims[2] * grid.grid_count != grid.total_voxels:
        return None
    return dims


def dense_layout(plan) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(source box, target box) when the plan can run densely with the same result, else None."""
    src, tgt = box_shape(plan.source_grid), box_shape(plan.target_grid)
    if src is None or tgt is None:
        return None
    k, s = plan.kernel_size, plan.stride
    slo = plan.source_grid.bbox()[0, 0]
    tlo = plan.target_grid.bbox()[0, 0]
    if s == 1 and not plan.transposed and all(v % 2 == 1 for v in k) and src == tgt and bool((slo == tlo).all()):
        return src, tgt
    if s > 1 and k == (s, s, s):
        fine, coarse, flo, clo = (tgt, src, tlo, slo) if plan.transposed else (src, tgt, slo, tlo)
        if all(f == c * s for f, c in zip(fine, coarse)) and bool((flo == clo * s).all()):
            return src, tgt
    return None


def dense_conv(x: torch.Tensor, weight: torch.Tensor, plan, layout) -> torch.Tensor:
    """Run ``plan`` with dense kernels. x (N_in, C_in), weight (K, C_in, C_out) -> (N_out, C_out)."""
    (sx, sy, sz), (tx, ty, tz) = layout
    b = plan.source_grid.grid_count
    kx, ky, kz = plan.kernel_size
    c_in, c_out = weight.shape[1], weight.shape[2]
    if not torch.is_autocast_enabled(x.device.type):
        weight = weight.to(x.dtype)  # under autocast conv3d picks the low-precision dtype itself
    vol = x.reshape(b, sx, sy, sz, c_in).permute(0, 4, 1, 2, 3)
    if plan.transposed:
        w = weight.reshape(kx, ky, kz, c_in, c_out).permute(3, 4, 0, 1, 2)  # (C_in, C_out, k, k, k)
        out = F.conv_transpose3d(vol, w, stride=plan.stride)
    else:
        w = weight.reshape(kx, ky, kz, c_in, c_out).permute(4, 3, 0, 1, 2)  # (C_out, C_in, k, k, k)
        pad = 0 if plan.stride > 1 else tuple(v // 2 for v in plan.kernel_size)
        out = F.conv3d(vol, w, stride=plan.stride, padding=pad)
    return out.permute(0, 2, 3, 4, 1).reshape(b * tx * ty * tz, c_out)
