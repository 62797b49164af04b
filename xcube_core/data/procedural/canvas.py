"""A dense label volume that analytic solids are rasterised into, and its surface-voxel extraction.

Solids (boxes, ellipsoids, cylinders, cones, roofs) are painted by testing voxel centres against the
closed-form shape inside the shape's bounding window only, so a scene of a few hundred solids costs a
few hundred small numpy operations. The result keeps only SURFACE voxels (occupied voxels with an
empty 6-neighbour), like a voxelised mesh, with outward normals from the occupancy gradient.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

# 26 neighbour offsets and weights 1/|o| used for the occupancy-gradient normal
_OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                     if (a, b, c) != (0, 0, 0)], dtype=np.int64)
_WEIGHTS = 1.0 / np.linalg.norm(_OFFSETS, axis=1)
_FACE_OFFSETS = np.array([(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)], np.int64)


class Canvas:
    """Dense class-label volume in metres; label 0 = empty, label c + 1 = class id c.

    Args:
        shape: voxels along (x, y, z).
        voxel_size: edge length in metres; voxel (i, j, k) spans [ox + i h, ox + (i + 1) h) along x, etc.
        origin: (ox, oy) metres of the canvas corner in the scene, so a canvas can be a window cut from
            a larger scene: solids outside it are clipped away for free.
    """

    def __init__(self, shape: tuple[int, int, int], voxel_size: float,
                 origin: tuple[float, float] = (0.0, 0.0)) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.h = float(voxel_size)
        self.origin = (float(origin[0]), float(origin[1]), 0.0)
        self.labels = np.zeros(self.shape, dtype=np.uint8)

    def centres(self, axis: int) -> np.ndarray:
        """Scene coordinates (metres) of the voxel centres along ``axis``."""
        return (np.arange(self.shape[axis], dtype=np.float32) + 0.5) * self.h + self.origin[axis]

    # -- painting --------------------------------------------------------------------------------
    def _window(self, lo, hi):
        """Index slices and voxel-centre coordinates (broadcastable) of a metric bounding box."""
        slices, coords = [], []
        for axis in range(3):
            o = self.origin[axis]
            i0 = max(0, int(math.floor((lo[axis] - o) / self.h - 0.5)))
            i1 = min(self.shape[axis], int(math.ceil((hi[axis] - o) / self.h + 0.5)))
            if i1 <= i0:
                return None, None
            slices.append(slice(i0, i1))
            c = self.centres(axis)[i0:i1]
            coords.append(c.reshape([-1 if a == axis else 1 for a in range(3)]))
        return tuple(slices), coords

    def paint(self, lo, hi, inside: Callable, cls: int) -> int:
        """Set label ``cls + 1`` wherever ``inside(x, y, z)`` holds within the box [lo, hi].

        Returns:
            The number of voxels painted.
        """
        sl, coords = self._window(lo, hi)
        if sl is None:
            return 0
        x, y, z = coords
        mask = np.broadcast_to(inside(x, y, z), self.labels[sl].shape)
        self.labels[sl][mask] = cls + 1
        return int(mask.sum())

    def box(self, x0, x1, y0, y1, z0, z1, cls: int) -> int:
        """Axis-aligned box; thin sides are widened to one voxel so they never vanish."""
        x0, x1 = _min_width(x0, x1, self.h)
        y0, y1 = _min_width(y0, y1, self.h)
        z0, z1 = _min_width(z0, z1, self.h)
        return self.paint((x0, y0, z0), (x1, y1, z1),
                          lambda x, y, z: (x >= x0) & (x < x1) & (y >= y0) & (y < y1) & (z >= z0) & (z < z1),
                          cls)

    def ellipsoid(self, cx, cy, cz, rx, ry, rz, cls: int) -> int:
        rx, ry, rz = (max(r, 0.75 * self.h) for r in (rx, ry, rz))
        return self.paint((cx - rx, cy - ry, cz - rz), (cx + rx, cy + ry, cz + rz),
                          lambda x, y, z: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0,
                          cls)

    def cylinder(self, cx, cy, r, z0, z1, cls: int) -> int:
        """Vertical cylinder; the radius is at least 0.75 voxel so a pole keeps one voxel per layer."""
        r = max(r, 0.75 * self.h)
        return self.paint((cx - r, cy - r, z0), (cx + r, cy + r, z1),
                          lambda x, y, z: ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) & (z >= z0) & (z < z1), cls)

    def cone(self, cx, cy, r, z0, z1, cls: int) -> int:
        """Vertical cone with base radius ``r`` at ``z0`` and apex at ``z1``."""
        height = max(z1 - z0, self.h)

        def inside(x, y, z):
            rr = r * (1.0 - (z - z0) / height)
            return ((x - cx) ** 2 + (y - cy) ** 2 <= rr * rr) & (z >= z0) & (z < z1)

        return self.paint((cx - r, cy - r, z0), (cx + r, cy + r, z1), inside, cls)

    def gable(self, x0, x1, y0, y1, z0, rise, ridge_along_x: bool, cls: int) -> int:
        """Gabled roof prism on [x0, x1] x [y0, y1] from ``z0`` up to ``z0 + rise`` at the ridge."""
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2

        def inside(x, y, z):
            frac = 1.0 - (np.abs(y - cy) / hy if ridge_along_x else np.abs(x - cx) / hx)
            return (x >= x0) & (x < x1) & (y >= y0) & (y < y1) & (z >= z0) & (z < z0 + rise * frac)

        return self.paint((x0, y0, z0), (x1, y1, z0 + rise), inside, cls)

    def hip(self, x0, x1, y0, y1, z0, rise, cls: int) -> int:
        """Hipped roof (a pyramid on a square footprint) rising ``rise`` over the shorter half-width."""
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        half = min(hx, hy)

        def inside(x, y, z):
            frac = np.minimum(hx - np.abs(x - cx), hy - np.abs(y - cy)) / half
            return (frac >= 0) & (z >= z0) & (z < z0 + rise * frac)

        return self.paint((x0, y0, z0), (x1, y1, z0 + rise), inside, cls)

    # -- surface ---------------------------------------------------------------------------------
    def surface(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Surface voxels of the painted solids with outward unit normals and class ids.

        Outside the volume counts as solid below z = 0 and along the x/y borders (the ground goes on),
        and as empty above the top.

        Returns:
            ``(ijk, normals, classes)``: Shape (M, 3) int32, (M, 3) float32, (M,) int64.
        """
        occ = self.labels > 0
        pad = np.pad(occ, ((1, 1), (1, 1), (1, 0)), mode="edge")
        pad = np.pad(pad, ((0, 0), (0, 0), (0, 1)), mode="constant", constant_values=False)
        nx, ny, nz = self.shape
        exposed = np.zeros_like(occ)
        for dx, dy, dz in _FACE_OFFSETS:
            exposed |= ~pad[1 + dx:1 + dx + nx, 1 + dy:1 + dy + ny, 1 + dz:1 + dz + nz]
        ijk = np.argwhere(occ & exposed)
        normals = _gradient_normals(pad, ijk)
        classes = self.labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.int64) - 1
        return ijk.astype(np.int32), normals, classes


def _min_width(a: float, b: float, h: float) -> tuple[float, float]:
    if b - a >= h:
        return a, b
    mid = (a + b) / 2
    return mid - 0.5 * h, mid + 0.5 * h


def _gradient_normals(pad: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Outward normals: weighted sum of directions towards empty neighbours (minus the occupancy
    gradient); where that cancels (a one-voxel sheet), the exposed face directions; else +Z."""
    p = ijk.astype(np.int64) + 1
    acc = np.zeros((len(ijk), 3), dtype=np.float32)
    for o, w in zip(_OFFSETS, _WEIGHTS):
        empty = ~pad[p[:, 0] + o[0], p[:, 1] + o[1], p[:, 2] + o[2]]
        acc += np.float32(w) * empty[:, None] * o[None].astype(np.float32)
    norm = np.linalg.norm(acc, axis=1)
    weak = norm < 1e-3
    if weak.any():
        q = p[weak]
        face = np.zeros((len(q), 3), dtype=np.float32)
        for o in _FACE_OFFSETS:
            face += (~pad[q[:, 0] + o[0], q[:, 1] + o[1], q[:, 2] + o[2]])[:, None] * o[None]
        face[np.linalg.norm(face, axis=1) < 1e-3] = (0.0, 0.0, 1.0)
        acc[weak] = face
        norm = np.linalg.norm(acc, axis=1)
    return (acc / norm[:, None]).astype(np.float32)
