"""Point clouds -> aligned sparse voxel hierarchies, for scan-like data.

A finest voxel is active iff a point falls into it. Normals are the mean of the given point normals,
or, when the cloud has none, the smallest-eigenvalue direction of the covariance of the points in
the voxel's 3x3x3 neighbourhood (from per-voxel moments, no kd-tree), oriented away from the cloud's
centre (unit-box objects) or towards a viewpoint high above the cloud (metric scans).
"""

from __future__ import annotations

import pathlib
import time

import torch

from xcube_core.data import normalize
from xcube_core.data.assets import PointData, load_points
from xcube_core.data.hierarchy import (VoxelSample, build_hierarchy, ijk_to_key, majority_class, mean_normals,
                                       unique_voxels)
from xcube_core.errors import DataError
from xcube_core.level import Level

_NEIGHBOURS = torch.tensor([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])


def pca_normals(u: torch.Tensor, inverse: torch.Tensor, ijk: torch.Tensor) -> torch.Tensor:
    """Unoriented normals from the covariance of the points in each voxel's 3x3x3 neighbourhood.

    Args:
        u: points in voxel units. Shape: (N, 3), float64.
        inverse: voxel of each point. Shape: (N,), int64.
        ijk: sorted unique voxels. Shape: (M, 3), int32.

    Returns:
        Unit vectors. Shape: (M, 3), float64.
    """
    m = len(ijk)
    rel = u - ijk[inverse].to(torch.float64)  # within-voxel coordinates keep the sums well conditioned
    cnt = torch.zeros(m, dtype=torch.float64).index_add_(0, inverse, torch.ones(len(u), dtype=torch.float64))
    s1 = torch.zeros(m, 3, dtype=torch.float64).index_add_(0, inverse, rel)
    s2 = torch.zeros(m, 3, 3, dtype=torch.float64).index_add_(0, inverse, rel[:, :, None] * rel[:, None, :])
    keys = ijk_to_key(ijk)
    n_cnt, n_s1, n_s2 = torch.zeros_like(cnt), torch.zeros_like(s1), torch.zeros_like(s2)
    for off in _NEIGHBOURS:
        nk = ijk_to_key(ijk.to(torch.int64) + off)
        pos = torch.searchsorted(keys, nk).clamp(max=m - 1)
        hit = keys[pos] == nk
        src, dst = pos[hit], torch.nonzero(hit).squeeze(1)
        o = off.to(torch.float64)
        c, a = cnt[src], s1[src]
        # shift the neighbour's moments into this voxel's frame: q = p + o
        n_cnt[dst] += c
        n_s1[dst] += a + c[:, None] * o
        n_s2[dst] += s2[src] + a[:, :, None] * o[None, None, :] + o[None, :, None] * a[:, None, :] \
            + c[:, None, None] * (o[:, None] * o[None, :])
    mean = n_s1 / n_cnt[:, None]
    cov = n_s2 / n_cnt[:, None, None] - mean[:, :, None] * mean[:, None, :]
    _, vecs = torch.linalg.eigh(cov)
    return vecs[:, :, 0]


def voxelize_points(cloud: PointData, num_levels: int = 3, mode: str = "metric", resolution: int = 512,
                    voxel_size: float = 0.1) -> VoxelSample:
    """A point cloud as an aligned hierarchy of ``num_levels`` sparse grids (see `voxelize_mesh`)."""
    start = time.perf_counter()
    pts = cloud.points
    norm = normalize.fit(pts.min(0), pts.max(0), mode, num_levels, resolution, voxel_size)
    u = torch.from_numpy(norm.to_voxel(pts))
    hi = torch.tensor(norm.shape) - 1
    ijk_all = torch.minimum(u.floor().long().clamp(min=0), hi)
    ijk, inverse = unique_voxels(ijk_all)
    m = len(ijk)
    if cloud.normals is not None:
        normals = mean_normals(torch.from_numpy(cloud.normals), inverse, m)
        source = "given"
    else:
        n = pca_normals(u, inverse, ijk)
        centre = ijk.to(torch.float64) + 0.5
        if mode == "unit_box":
            view = centre - u.mean(0)  # away from the centroid
        else:
            eye = torch.tensor([*u[:, :2].mean(0).tolist(), float(u[:, 2].max()) + float(hi.max())])
            view = eye - centre  # towards a viewpoint high above the scan
        n = torch.where(((n * view).sum(1) < 0)[:, None], -n, n)
        normals, source = n.to(torch.float32), "pca"
    sem = None
    if cloud.labels is not None:
        labels = torch.from_numpy(cloud.labels)
        if bool(((labels < -1) | (labels > 254)).any()):
            raise DataError(f"labels must be class ids in [-1, 254], got [{int(labels.min())}, {int(labels.max())}]")
        sem = majority_class(labels, inverse, m)
    finest = Level(index=num_levels - 1, ijk=ijk, voxel_size=norm.voxel_size, normals=normals, semantics=sem)
    meta = {"kind": "points", "normalization": norm.as_metadata(), "grid_shape": list(norm.shape),
            "num_points": int(len(pts)), "normals_source": source, "has_semantics": sem is not None}
    levels = build_hierarchy(finest, num_levels)
    meta["seconds"] = time.perf_counter() - start
    return VoxelSample(levels=levels, caption="", metadata=meta)


def voxelize_points_file(path, num_levels: int = 3, mode: str = "metric", resolution: int = 512,
                         voxel_size: float = 0.1, caption: str = "") -> VoxelSample:
    """Load and voxelise one point-cloud file; errors name the file."""
    cloud = load_points(path)
    try:
        sample = voxelize_points(cloud, num_levels, mode, resolution, voxel_size)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    sample.caption = caption
    sample.metadata["source"] = pathlib.Path(path).name
    return sample
