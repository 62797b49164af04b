"""Point clouds from voxel levels, for the Chamfer-based generation metrics.

The point-cloud GAN / diffusion literature (Achlioptas et al. 2018, PointFlow 2019, LION 2022,
XCube 2024) compares shapes as fixed-size point clouds sampled on their surfaces. A sparse voxel
level has no mesh, so we sample on the surface *of the voxelisation itself*: the exposed faces of
active voxels (faces whose neighbour across the face is not active). Every face has the same area,
so choosing faces uniformly and a point uniformly on each face is exactly area-uniform sampling of
the voxel boundary surface, the analogue of sampling a mesh surface uniformly.

Normalisation follows LION (Zeng et al. 2022), whose protocol XCube's ShapeNet tables use: every
shape, generated or reference, is normalised *individually* into the bounding box [-1, 1]^3
(centre = bounding-box centre, one uniform scale = half the longest bounding-box side, so aspect
ratios are kept). The unit-sphere variant of Achlioptas et al. (centre = mean point, scale = the
largest distance from it) is available as ``mode="sphere"``.
"""

from __future__ import annotations

import logging

import torch

from xcube_core.errors import InvalidInputError

log = logging.getLogger(__name__)

# The 6 face directions: (axis, sign). Face d of a voxel faces neighbour ijk + sign * e_axis.
_FACE_DIRS: tuple[tuple[int, int], ...] = ((0, -1), (0, 1), (1, -1), (1, 1), (2, -1), (2, 1))
NORMALIZE_MODES = ("box", "sphere", "none")
# Bounding boxes up to this many cells use a dense occupancy lookup (1 byte per cell), larger ones
# binary search over sorted voxel keys.
DENSE_LOOKUP_MAX_CELLS = 1 << 26


def _check_ijk(ijk: torch.Tensor) -> torch.Tensor:
    if not isinstance(ijk, torch.Tensor):
        raise TypeError(f"ijk must be a torch.Tensor of shape (N, 3), got {type(ijk).__name__}")
    if ijk.dim() != 2 or ijk.shape[1] != 3:
        raise InvalidInputError(f"ijk must have shape (N, 3), got {tuple(ijk.shape)}")
    if ijk.dtype.is_floating_point or ijk.dtype == torch.bool:
        raise InvalidInputError(f"ijk must be an integer tensor, got dtype {ijk.dtype}")
    return ijk.to(torch.int64)


def voxel_keys(ijk: torch.Tensor, lo: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """Unique int64 keys of voxel coordinates inside the box ``[lo, lo + dims)``.

    Args:
        ijk: voxel coordinates. Shape: (N, 3), integer.
        lo: lower corner of the box. Shape: (3,), int64.
        dims: box size per axis (each >= 1). Shape: (3,), int64.

    Returns:
        Keys ``((i - lo_i) * dims_j + (j - lo_j)) * dims_k + (k - lo_k)``. Shape: (N,), int64.
    """
    rel = ijk.to(torch.int64) - lo
    return (rel[:, 0] * dims[1] + rel[:, 1]) * dims[2] + rel[:, 2]


def _contains(sorted_keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Membership of ``query`` keys in ``sorted_keys`` (sorted ascending). Shape: like query, bool."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == query


def exposed_faces(ijk: torch.Tensor) -> torch.Tensor:
    """Which of the 6 faces of each voxel lie on the surface (neighbour across the face inactive).

    Args:
        ijk: active voxel coordinates (unique). Shape: (N, 3), integer.

    Returns:
        Mask in the order -x, +x, -y, +y, -z, +z. Shape: (N, 6), bool.
    """
    ijk = _check_ijk(ijk)
    n = ijk.shape[0]
    out = torch.zeros(n, 6, dtype=torch.bool)
    if n == 0:
        return out
    lo = ijk.min(dim=0).values - 1  # one voxel margin so neighbours have keys too
    dims = ijk.max(dim=0).values - lo + 2
    if int(dims.prod()) <= DENSE_LOOKUP_MAX_CELLS:
        # Dense occupancy of the bounding box (+1 margin): one gather per direction.
        occ = torch.zeros(int(dims.prod()), dtype=torch.bool)
        occ[voxel_keys(ijk, lo, dims)] = True
        keys = voxel_keys(ijk, lo, dims)
        strides = (int(dims[1] * dims[2]), int(dims[2]), 1)
        for d, (axis, sign) in enumerate(_FACE_DIRS):
            out[:, d] = ~occ[keys + sign * strides[axis]]
        return out
    keys = torch.sort(voxel_keys(ijk, lo, dims)).values
    for d, (axis, sign) in enumerate(_FACE_DIRS):
        nb = ijk.clone()
        nb[:, axis] += sign
        out[:, d] = ~_contains(keys, voxel_keys(nb, lo, dims))
    return out


def surface_voxel_mask(ijk: torch.Tensor) -> torch.Tensor:
    """Voxels with at least one exposed face. Shape: (N,), bool."""
    return exposed_faces(ijk).any(dim=1)


def sample_surface_points(
    ijk: torch.Tensor,
    num_points: int = 2048,
    *,
    voxel_size: float = 1.0,
    origin: tuple[float, float, float] | None = None,
    generator: torch.Generator | None = None,
    mode: str = "faces",
) -> torch.Tensor:
    """Sample a fixed number of points on the surface of a voxelised shape, in world units.

    Args:
        ijk: active voxel coordinates (unique). Shape: (N, 3), integer; N >= 1.
        num_points: points to return (sampled with replacement).
        voxel_size: edge length of a voxel.
        origin: world position of voxel (0,0,0)'s centre; default half the voxel size.
        generator: source of randomness (CPU ``torch.Generator``); the library never seeds globally.
        mode: ``"faces"`` (default): uniform on the exposed voxel faces, i.e. area-uniform on the
            voxel boundary surface; ``"centers"``: centres of surface voxels chosen uniformly.

    Returns:
        Points in world units. Shape: (num_points, 3), float32.

    Raises:
        InvalidInputError: empty ``ijk``, ``num_points < 1`` or an unknown ``mode``.
    """
    ijk = _check_ijk(ijk)
    if ijk.shape[0] == 0:
        raise InvalidInputError("cannot sample points on an empty level (0 voxels); "
                                "skip or substitute empty scenes before sampling")
    if int(num_points) < 1:
        raise InvalidInputError(f"num_points must be >= 1, got {num_points}")
    if mode not in ("faces", "centers"):
        raise InvalidInputError(f"mode must be 'faces' or 'centers', got {mode!r}")
    h = 0.5 * float(voxel_size)
    org = torch.tensor(origin if origin is not None else (h, h, h), dtype=torch.float32)
    faces = exposed_faces(ijk)
    if not bool(faces.any()):  # cannot happen for a finite set, kept as a guard
        faces[:, :] = True
    if mode == "centers":
        idx = torch.nonzero(faces.any(dim=1)).squeeze(1)
        pick = idx[torch.randint(idx.numel(), (num_points,), generator=generator)]
        local = torch.zeros(num_points, 3)
    else:
        vox, dirs = torch.nonzero(faces, as_tuple=True)
        choice = torch.randint(vox.numel(), (num_points,), generator=generator)
        pick, d = vox[choice], dirs[choice]
        # Uniform on the unit face: all three coordinates in [-0.5, 0.5], then the face's axis is
        # pinned to +-0.5 (d // 2 is the axis, d % 2 the sign: 0 -> -, 1 -> +).
        local = torch.rand(num_points, 3, generator=generator) - 0.5
        axis = d // 2
        local[torch.arange(num_points), axis] = (d % 2).float() - 0.5
    centres = ijk[pick].to(torch.float32) * float(voxel_size) + org
    return centres + local * float(voxel_size)


def normalize_points(points: torch.Tensor, mode: str = "box", eps: float = 1e-8) -> torch.Tensor:
    """Normalise each point cloud individually (see the module docstring for the protocol).

    Args:
        points: one cloud (P, 3) or a batch (B, P, 3), float.
        mode: ``"box"`` (LION / XCube): centre at the bounding-box centre, divide by half the longest
            bounding-box side, so the cloud fits [-1, 1]^3 touching it on its longest axis.
            ``"sphere"`` (Achlioptas et al.): centre at the mean, divide by the largest norm, so the
            cloud fits the unit sphere. ``"none"``: unchanged.
        eps: lower bound of the scale, so a degenerate (single-point) cloud maps to the origin.

    Returns:
        Normalised points, same shape and dtype as ``points``.
    """
    if mode not in NORMALIZE_MODES:
        raise InvalidInputError(f"mode must be one of {NORMALIZE_MODES}, got {mode!r}")
    if points.dim() not in (2, 3) or points.shape[-1] != 3:
        raise InvalidInputError(f"points must have shape (P, 3) or (B, P, 3), got {tuple(points.shape)}")
    if mode == "none":
        return points
    x = points if points.dim() == 3 else points.unsqueeze(0)
    if mode == "box":
        lo, hi = x.min(dim=1, keepdim=True).values, x.max(dim=1, keepdim=True).values
        centre = 0.5 * (lo + hi)
        scale = (0.5 * (hi - lo)).amax(dim=2, keepdim=True)
    else:
        centre = x.mean(dim=1, keepdim=True)
        scale = (x - centre).norm(dim=2).amax(dim=1).view(-1, 1, 1)
    out = (x - centre) / scale.clamp_min(eps)
    return out if points.dim() == 3 else out.squeeze(0)


def level_point_cloud(level, num_points: int = 2048, *, generator: torch.Generator | None = None,
                      normalize: str = "box", mode: str = "faces") -> torch.Tensor:
    """Surface points of a `Level` (its finest-level grid), normalised per shape.

    Args:
        level: a `xcube_core.level.Level` (uses ``ijk``, ``voxel_size``, ``origin``).
        num_points: points per cloud.
        generator: source of randomness.
        normalize: see `normalize_points`.
        mode: see `sample_surface_points`.

    Returns:
        Shape: (num_points, 3), float32.
    """
    pts = sample_surface_points(level.ijk, num_points, voxel_size=level.voxel_size, origin=level.origin,
                                generator=generator, mode=mode)
    return normalize_points(pts, normalize)
