"""A PNG preview of a `Level`: shaded voxels coloured by semantic class, seen from a 3/4 elevated view.

Pure numpy rasteriser, no GPU or OpenGL:

1. For the three cube-face directions that face the camera, find the exposed faces (the neighbour
   across the face is empty) with vectorised lookups.
2. Project them orthographically. Every face of one direction projects to the same parallelogram, so
   each face is rasterised by testing the pixels of one small fixed-size box around it (barycentric
   coordinates with a shared inverse matrix), in bounded chunks.
3. Resolve visibility with a z-buffer (``np.minimum.at``), shade with Lambert light from the upper
   left plus a sky term, a per-face ambient-occlusion factor (occupied voxels around the face) and
   dark outlines at depth discontinuities, over a sky gradient. Voxels that project to a few pixels
   only are shaded with per-voxel normals (the level's, or estimated) instead of flat cube faces,
   which would otherwise show moire.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import numpy as np

from xcube_core.errors import InvalidInputError
from xcube_core.io.voxels import VoxelLookup, class_colors, to_numpy

logger = logging.getLogger(__name__)

SKY_TOP = np.array([118, 163, 222], np.float32)
SKY_HORIZON = np.array([222, 232, 242], np.float32)
_CHUNK_FRAGMENTS = 1 << 22


def _camera(azimuth: float, elevation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right, up and forward (into the screen) unit vectors of an orbit camera; +Z is up."""
    az, el = np.radians(azimuth), np.radians(elevation)
    eye = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    forward = -eye
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return right, up, forward


def render_preview(level: Any, width: int = 800, height: int = 600, azimuth: float = -50.0,
                   elevation: float = 32.0, supersample: int = 2) -> np.ndarray:
    """Render a level to an RGB image.

    Args:
        level: a `Level` (ijk, optional semantics; normals are not needed).
        width, height: output size in pixels.
        azimuth: camera direction around +Z in degrees (0 = looking from +X).
        elevation: camera height angle in degrees (0 = horizontal, 90 = top-down).
        supersample: render at this factor and downsample (anti-aliasing); lowered for huge levels.

    Returns:
        Shape: (height, width, 3), uint8.
    """
    if width < 16 or height < 16 or width * height > 16_000_000:
        raise InvalidInputError(f"preview size must be between 16x16 and 16 Mpixel, got {width}x{height}")
    ijk = to_numpy(level.ijk, np.int64).reshape(-1, 3)
    ss = max(1, int(supersample))
    if len(ijk) > 2_000_000:
        ss = 1
    w, h = width * ss, height * ss
    image = _sky(w, h)
    if len(ijk) == 0:
        return _downsample(image, ss)
    cam = _camera(azimuth, elevation)
    scale, shift = _fit(ijk, cam, w, h)
    lookup = VoxelLookup(ijk)
    colors = class_colors(level.semantics, len(ijk)).astype(np.float32)
    smooth = _smooth_weight(scale / ss)
    voxel_normals = None
    if smooth > 0:
        voxel_normals = (to_numpy(level.normals, np.float32) if level.normals is not None
                         else to_numpy(level.occupancy_normals(), np.float32))
    zbuf = np.full(w * h, np.inf, np.float32)
    frags = []
    for normal in np.eye(3, dtype=np.int64).tolist() + (-np.eye(3, dtype=np.int64)).tolist():
        normal = np.asarray(normal)
        if normal @ cam[2] >= 0:
            continue  # back face
        faces = np.flatnonzero(~lookup.contains(ijk + normal))
        if len(faces):
            n = np.broadcast_to(normal.astype(np.float32), (len(faces), 3))
            if smooth > 0:
                n = (1 - smooth) * n + smooth * voxel_normals[faces]
                n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
            ao = _ambient_occlusion(ijk[faces], normal, lookup)
            shade = _shade(n, cam) * (1 - (1 - smooth) * (1 - ao))  # no AO on tiny voxels
            rgb = colors[faces] * shade[:, None]
            frags.extend(_raster_faces(ijk[faces], normal, rgb, cam, scale, shift, w, h, zbuf))
    pix = np.concatenate([f[0] for f in frags])
    depth = np.concatenate([f[1] for f in frags])
    rgb = np.concatenate([f[2] for f in frags])
    win = depth <= zbuf[pix]
    flat = image.reshape(-1, 3)
    flat[pix[win]] = rgb[win]
    _outline(image, zbuf.reshape(h, w), jump=2.0 + 10.0 * smooth)
    return _downsample(image, ss)


def save_preview(level: Any, path: str | os.PathLike, **kwargs: Any) -> pathlib.Path:
    """Render a level (see `render_preview`) and write it as a PNG."""
    from PIL import Image

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_preview(level, **kwargs)).save(path, format="PNG", optimize=False)
    return path


# ------------------------------------------------------------------------------------------ parts


def _sky(w: int, h: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None] ** 0.8
    rows = SKY_TOP[None] * (1 - t) + SKY_HORIZON[None] * t
    return np.repeat(rows[:, None, :], w, axis=1).astype(np.float32)


def _fit(ijk: np.ndarray, cam: tuple, w: int, h: int) -> tuple[float, np.ndarray]:
    """Pixels per voxel and 2D shift that fit the level's projected bounding box with a margin."""
    lo, hi = ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    sx, sy = corners @ cam[0], corners @ cam[1]
    scale = 0.9 * min(w / max(np.ptp(sx), 1e-6), h / max(np.ptp(sy), 1e-6))
    shift = np.array([w / 2 - scale * (sx.max() + sx.min()) / 2, h / 2 + scale * (sy.max() + sy.min()) / 2])
    return float(scale), shift


def _shade(normals: np.ndarray, cam: tuple) -> np.ndarray:
    """Lambert light from the upper left (behind the viewer) plus a sky term. normals: (F, 3) -> (F,)."""
    light = -0.55 * cam[0] - 0.35 * cam[2] + np.array([0.0, 0.0, 0.75])
    light = light / np.linalg.norm(light)
    lambert = np.clip(normals @ light, 0.0, None)
    sky = 0.5 + 0.5 * normals[:, 2]
    return (0.30 + 0.62 * lambert + 0.18 * sky).astype(np.float32)


def _smooth_weight(pixels_per_voxel: float) -> float:
    """How much per-voxel (smooth) normals replace flat face normals: voxels of ~1-2 pixels show
    moire when shaded as cubes, so small voxels are shaded as a smooth surface."""
    return float(np.clip((5.0 - pixels_per_voxel) / 3.0, 0.0, 1.0))


def _ambient_occlusion(ijk: np.ndarray, normal: np.ndarray, lookup: VoxelLookup) -> np.ndarray:
    """Per face: 1 minus a share of the 8 voxels around the face (in front of it) that are occupied."""
    axis = int(np.flatnonzero(normal)[0])
    u, v = np.eye(3, dtype=np.int64)[(axis + 1) % 3], np.eye(3, dtype=np.int64)[(axis + 2) % 3]
    count = np.zeros(len(ijk), np.float32)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            if du or dv:
                count += lookup.contains(ijk + normal + du * u + dv * v)
    return 1.0 - 0.055 * count


def _raster_faces(ijk, normal, rgb, cam, scale, shift, w, h, zbuf):
    """Rasterise the faces of one direction; updates ``zbuf``; yields (pixel, depth, rgb) fragments."""
    axis = int(np.flatnonzero(normal)[0])
    u, v = np.eye(3)[(axis + 1) % 3], np.eye(3)[(axis + 2) % 3]
    c0 = ijk + 0.5 * normal - 0.5 * u - 0.5 * v  # (F, 3) one corner of each face
    proj = np.stack([cam[0] * scale, -cam[1] * scale])  # (2, 3): world -> pixel (y down)
    p0 = c0 @ proj.T + shift  # (F, 2)
    e = np.stack([proj @ u, proj @ v], axis=1)  # (2, 2) columns: projected edges
    inv = np.linalg.inv(e) if abs(np.linalg.det(e)) > 1e-9 else None
    if inv is None:
        return []
    ext = np.array([[0, 0], e[:, 0], e[:, 1], e[:, 0] + e[:, 1]])
    lo, hi = ext.min(axis=0), ext.max(axis=0)
    kx, ky = int(np.ceil(hi[0] - lo[0])) + 2, int(np.ceil(hi[1] - lo[1])) + 2
    ox, oy = np.meshgrid(np.arange(kx), np.arange(ky), indexing="ij")
    offs = np.stack([ox.ravel(), oy.ravel()], axis=1)  # (K, 2)
    d0 = c0 @ cam[2]
    dz = np.array([u @ cam[2], v @ cam[2]])
    out = []
    per = max(1, _CHUNK_FRAGMENTS // len(offs))
    for a in range(0, len(ijk), per):
        b = min(a + per, len(ijk))
        base = np.floor(p0[a:b] + lo).astype(np.int64)  # (f, 2)
        px = base[:, None, :] + offs[None]  # (f, K, 2)
        st = (px + 0.5 - p0[a:b, None, :]) @ inv.T  # (f, K, 2) face coordinates
        inside = np.all((st >= -1e-3) & (st <= 1 + 1e-3), axis=2)
        inside &= (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
        fi, ki = np.nonzero(inside)
        pix = (px[fi, ki, 1] * w + px[fi, ki, 0]).astype(np.int64)
        depth = (d0[a:b][fi] + st[fi, ki] @ dz).astype(np.float32)
        np.minimum.at(zbuf, pix, depth)
        out.append((pix, depth, rgb[a:b][fi]))
    return out


def _outline(image: np.ndarray, depth: np.ndarray, jump: float = 2.0) -> None:
    """Darken pixels where depth jumps by more than ``jump`` voxels (silhouettes and creases)."""
    d = np.where(np.isfinite(depth), depth, 1e9)
    edge = np.zeros(depth.shape, bool)
    edge[:, 1:] |= np.abs(d[:, 1:] - d[:, :-1]) > jump
    edge[1:, :] |= np.abs(d[1:, :] - d[:-1, :]) > jump
    edge &= np.isfinite(depth)
    image[edge] *= 0.55


def _downsample(image: np.ndarray, ss: int) -> np.ndarray:
    if ss > 1:
        h, w = image.shape[0] // ss, image.shape[1] // ss
        image = image[: h * ss, : w * ss].reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
