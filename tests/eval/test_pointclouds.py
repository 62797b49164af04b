"""Surface sampling on voxel sets and per-shape normalisation."""

from __future__ import annotations

import pytest
import torch

from xcube_core.errors import InvalidInputError
from xcube_core.eval.pointclouds import (
    exposed_faces,
    level_point_cloud,
    normalize_points,
    sample_surface_points,
    surface_voxel_mask,
)
from xcube_core.level import Level


def _box(lo, hi) -> torch.Tensor:
    axes = [torch.arange(a, b) for a, b in zip(lo, hi)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).to(torch.int32)


def _dense_exposed(ijk: torch.Tensor) -> torch.Tensor:
    """Reference: exposed faces from a dense occupancy array."""
    lo = ijk.min(0).values.long() - 1
    rel = ijk.long() - lo
    occ = torch.zeros(*(rel.max(0).values + 2).tolist(), dtype=torch.bool)
    occ[rel[:, 0], rel[:, 1], rel[:, 2]] = True
    out = []
    for axis in range(3):
        for sign in (-1, 1):
            nb = rel.clone()
            nb[:, axis] += sign
            out.append(~occ[nb[:, 0], nb[:, 1], nb[:, 2]])
    return torch.stack(out, 1)


@pytest.mark.parametrize("dense_lookup", [True, False])
def test_exposed_faces_match_dense_reference(generator, monkeypatch, dense_lookup):
    import xcube_core.eval.pointclouds as pc

    if not dense_lookup:  # force the sorted-key path used for very large bounding boxes
        monkeypatch.setattr(pc, "DENSE_LOOKUP_MAX_CELLS", 0)
    ijk = torch.unique(torch.randint(-3, 5, (200, 3), generator=generator, dtype=torch.int32), dim=0)
    assert torch.equal(exposed_faces(ijk), _dense_exposed(ijk))


def test_surface_of_solid_cube():
    ijk = _box((0, 0, 0), (5, 5, 5))
    assert int(surface_voxel_mask(ijk).sum()) == 125 - 27  # all but the 3x3x3 interior
    assert int(exposed_faces(ijk).sum()) == 6 * 25
    assert exposed_faces(ijk[:0]).shape == (0, 6)


def test_face_samples_lie_on_the_boundary_and_cover_it(generator):
    ijk = _box((0, 0, 0), (4, 4, 4))
    pts = sample_surface_points(ijk, 6000, voxel_size=0.5, origin=(0.25, 0.25, 0.25), generator=generator)
    assert pts.shape == (6000, 3) and pts.dtype == torch.float32
    # The cube spans [0, 2]^3 in world units; every point lies on one of its 6 faces.
    assert float(pts.min()) >= -1e-6 and float(pts.max()) <= 2 + 1e-6
    on_face = ((pts.abs() < 1e-5) | ((pts - 2).abs() < 1e-5)).any(dim=1)
    assert bool(on_face.all())
    # Area-uniform: each face gets about 1/6 of the points.
    counts = torch.stack([(pts[:, a].abs() < 1e-5) for a in range(3)] +
                         [((pts[:, a] - 2).abs() < 1e-5) for a in range(3)]).sum(1).float() / 6000
    assert torch.allclose(counts, torch.full((6,), 1 / 6), atol=0.03)


def test_center_samples_are_surface_voxel_centres(generator):
    ijk = _box((0, 0, 0), (5, 5, 5))
    pts = sample_surface_points(ijk, 500, generator=generator, mode="centers")  # voxel 1, origin 0.5
    cells = (pts - 0.5).round().long()
    assert torch.allclose(pts, cells.float() + 0.5)
    interior = ((cells >= 1) & (cells <= 3)).all(dim=1)
    assert not bool(interior.any())


def test_sampling_is_reproducible_and_validates():
    ijk = _box((0, 0, 0), (3, 3, 3))
    a = sample_surface_points(ijk, 64, generator=torch.Generator().manual_seed(3))
    b = sample_surface_points(ijk, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(InvalidInputError, match="empty level"):
        sample_surface_points(ijk[:0], 10)
    with pytest.raises(InvalidInputError, match="num_points"):
        sample_surface_points(ijk, 0)
    with pytest.raises(InvalidInputError, match=r"\(N, 3\)"):
        sample_surface_points(ijk[:, :2], 10)
    with pytest.raises(InvalidInputError, match="integer"):
        sample_surface_points(ijk.float(), 10)


def test_normalize_box_and_sphere(generator):
    pts = torch.rand(2, 300, 3, generator=generator) * torch.tensor([10.0, 4.0, 2.0]) + 7.0
    box = normalize_points(pts, "box")
    lo, hi = box.min(1).values, box.max(1).values
    assert torch.allclose(lo[:, 0], torch.full((2,), -1.0)) and torch.allclose(hi[:, 0], torch.ones(2))
    assert torch.allclose(lo + hi, torch.zeros(2, 3), atol=1e-6)  # centred on the bounding box
    # One uniform scale keeps the aspect ratio.
    ext = (pts.max(1).values - pts.min(1).values)
    assert torch.allclose((hi - lo) / (hi - lo)[:, :1], ext / ext[:, :1], atol=1e-5)
    sph = normalize_points(pts[0], "sphere")
    assert torch.allclose(sph.mean(0), torch.zeros(3), atol=1e-5)
    assert float(sph.norm(dim=1).max()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(normalize_points(pts, "none"), pts)
    single = normalize_points(torch.ones(4, 3), "box")  # degenerate cloud does not divide by zero
    assert torch.isfinite(single).all()


def test_level_point_cloud_is_scale_invariant():
    ijk = _box((0, 0, 0), (6, 3, 2))
    g = torch.Generator()
    small = level_point_cloud(Level(0, ijk, 0.25), 256, generator=g.manual_seed(0))
    large = level_point_cloud(Level(0, ijk, 2.0), 256, generator=g.manual_seed(0))
    assert torch.allclose(small, large, atol=1e-5)
    assert float(small.abs().max()) <= 1.0 + 1e-6
