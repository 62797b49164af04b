"""Chamfer against numpy brute force; MMD / COV / 1-NNA on constructed cases; IoU; class fractions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcube_core.errors import InvalidInputError
from xcube_core.eval.metrics import (
    batched_voxel_iou,
    chamfer_distance,
    class_fractions,
    cov_from_matrix,
    distribution_metrics,
    histogram_distance,
    matched_semantic_accuracy,
    mmd_from_matrix,
    one_nna_from_matrices,
    pairwise_chamfer,
    voxel_iou,
)


def _brute_chamfer(x: np.ndarray, y: np.ndarray) -> float:
    d = ((x[:, None, :].astype(np.float64) - y[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return float(d.min(axis=1).mean() + d.min(axis=0).mean())


def _brute_matrix(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.array([[_brute_chamfer(x.numpy(), y.numpy()) for y in b] for x in a])


@pytest.mark.parametrize("backend", ["torch", "kdtree"])
def test_pairwise_chamfer_matches_numpy(generator, backend):
    a = torch.rand(5, 64, 3, generator=generator)
    b = torch.rand(4, 48, 3, generator=generator) * 2.0 - 0.5  # different point count and spread
    got = pairwise_chamfer(a, b, backend=backend, memory_bytes=1)  # memory_bytes=1: one pair per chunk
    np.testing.assert_allclose(got.numpy(), _brute_matrix(a, b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "kdtree"])
def test_pairwise_chamfer_symmetric(generator, backend):
    a = torch.rand(6, 40, 3, generator=generator)
    got = pairwise_chamfer(list(a), backend=backend)
    ref = _brute_matrix(a, a)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-6)
    assert torch.equal(got, got.T)
    assert torch.all(got.diagonal() == 0)


def test_torch_chamfer_is_accurate_far_from_the_origin(generator):
    a = torch.rand(2, 64, 3, generator=generator) + 1000.0  # metres far from the origin, float32
    b = torch.rand(2, 64, 3, generator=generator) + 1000.0
    np.testing.assert_allclose(pairwise_chamfer(a, b, backend="torch").numpy(),
                               pairwise_chamfer(a, b, backend="kdtree").numpy(), rtol=1e-3)


def test_chamfer_of_translated_cloud_is_twice_squared_shift():
    # A single point vs the same point shifted by t: each direction contributes |t|^2.
    x = torch.zeros(1, 1, 3)
    y = torch.tensor([[[0.3, -0.4, 0.0]]])
    assert chamfer_distance(x, y).item() == pytest.approx(2 * 0.25, rel=1e-6)


def test_pairwise_chamfer_rejects_bad_input(generator):
    with pytest.raises(InvalidInputError, match="same number of points"):
        pairwise_chamfer([torch.rand(5, 3), torch.rand(6, 3)])
    with pytest.raises(InvalidInputError, match=r"\(B, P, 3\)"):
        pairwise_chamfer(torch.rand(2, 5, 2))
    with pytest.raises(InvalidInputError, match="backend"):
        pairwise_chamfer(torch.rand(2, 5, 3), backend="faiss")


def _shapes(centres: list[float], base: torch.Tensor) -> torch.Tensor:
    """Copies of one base cloud translated along x, one per centre. Shape: (len(centres), P, 3)."""
    shift = torch.tensor([[c, 0.0, 0.0] for c in centres]).unsqueeze(1)
    return base.unsqueeze(0) + shift


def test_identical_sets_cover_fully_and_nna_flags_memorisation(generator):
    ref = torch.rand(8, 32, 3, generator=generator) + torch.arange(8.0).view(8, 1, 1) * 3.0
    m = distribution_metrics(ref.clone(), ref)
    assert m["COV-CD"] == 1.0
    assert m["MMD-CD"] == pytest.approx(0.0, abs=1e-9)
    # Each generated shape's nearest neighbour is its exact copy in the reference set.
    assert m["1-NNA-CD"] == 0.0


def test_samples_of_one_distribution_give_nna_near_half():
    # Generated and reference shapes are independent draws of the same random shape family.
    g = torch.Generator().manual_seed(1)

    def draw(n):
        scale = 0.5 + torch.rand(n, 1, 1, generator=g)
        return torch.rand(n, 64, 3, generator=g) * scale

    m = distribution_metrics(draw(60), draw(60))
    assert 0.35 <= m["1-NNA-CD"] <= 0.65
    assert m["COV-CD"] >= 0.35


def test_constructed_sets_give_exactly_half_nna(generator):
    base = torch.rand(16, 3, generator=generator) * 0.1
    # Clusters 100 apart: {g0, g1} and {r0, r1} are pure (4 correct), {g2, r2} and {g3, r3} are
    # mixed (4 wrong): 1-NNA = 4 / 8.
    gen = _shapes([0.0, 1.0, 200.0, 300.0], base)
    ref = _shapes([100.0, 101.0, 201.0, 301.0], base)
    m = distribution_metrics(gen, ref)
    assert m["1-NNA-CD"] == 0.5
    # Nearest references of the generated shapes: r0 (from g0, g1), r2, r3 -> 3 of 4 covered.
    assert m["COV-CD"] == 0.75


def test_distant_clusters_are_fully_separable(generator):
    base = torch.rand(16, 3, generator=generator)
    gen = _shapes([0.0, 0.5, 1.0, 1.5, 2.0], base)
    ref = _shapes([50.0, 50.5, 51.0, 51.5], base)
    m = distribution_metrics(gen, ref)
    assert m["1-NNA-CD"] == 1.0 and m["1-NNA-CD_gen"] == 1.0 and m["1-NNA-CD_ref"] == 1.0
    # Every generated shape is nearest to the reference at 50.0 -> coverage 1 / 4.
    assert m["COV-CD"] == 0.25
    # MMD: mean over references of the distance to the closest generated shape (the one at 2.0).
    expected = np.mean([_brute_chamfer(gen[-1].numpy(), r.numpy()) for r in ref])
    assert m["MMD-CD"] == pytest.approx(expected, rel=1e-4)


def test_matrix_metrics_on_hand_made_matrices():
    d_gr = torch.tensor([[1.0, 5.0, 9.0], [2.0, 0.5, 7.0]])
    assert mmd_from_matrix(d_gr) == pytest.approx((1.0 + 0.5 + 7.0) / 3)
    assert cov_from_matrix(d_gr) == pytest.approx(2 / 3)
    d_gg = torch.tensor([[0.0, 0.1], [0.1, 0.0]])
    d_rr = torch.tensor([[0.0, 3.0, 3.0], [3.0, 0.0, 0.2], [3.0, 0.2, 0.0]])
    out = one_nna_from_matrices(d_gg, d_rr, d_gr)
    # g0->g1, g1->g0 (right); r0->g0 (wrong), r1->r2, r2->r1 (right): 4 / 5.
    assert out["1-NNA"] == pytest.approx(0.8)
    assert out["1-NNA_gen"] == 1.0 and out["1-NNA_ref"] == pytest.approx(2 / 3)


def _box(lo, hi) -> torch.Tensor:
    axes = [torch.arange(a, b) for a, b in zip(lo, hi)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).to(torch.int32)


def test_voxel_iou_of_overlapping_boxes():
    a = _box((0, 0, 0), (4, 4, 4))  # 64 voxels
    b = _box((2, 0, 0), (6, 4, 4))  # 64 voxels, 32 shared
    assert voxel_iou(a, b) == pytest.approx(32 / 96)
    assert voxel_iou(a, a[torch.randperm(64)]) == 1.0  # order does not matter
    assert voxel_iou(a, _box((10, 10, 10), (12, 12, 12))) == 0.0
    assert voxel_iou(a[:0], b[:0]) == 1.0 and voxel_iou(a, b[:0]) == 0.0
    assert voxel_iou(a - 10, b - 10) == pytest.approx(32 / 96)  # negative coordinates


def test_batched_voxel_iou_on_grid_batches():
    from xcube_core.sparse import GridBatch

    a = [_box((0, 0, 0), (4, 4, 4)), _box((0, 0, 0), (2, 2, 2))]
    b = [_box((2, 0, 0), (6, 4, 4)), _box((0, 0, 0), (2, 2, 2))]
    got = batched_voxel_iou(GridBatch.from_ijk(a).ijk, GridBatch.from_ijk(b).ijk)
    assert got.tolist() == pytest.approx([32 / 96, 1.0])
    assert batched_voxel_iou(a, b).tolist() == pytest.approx([32 / 96, 1.0])
    with pytest.raises(InvalidInputError, match="same number of grids"):
        batched_voxel_iou(a, b[:1])


def test_matched_semantic_accuracy():
    a = _box((0, 0, 0), (2, 2, 1))  # 4 voxels
    sem_a = torch.tensor([0, 1, 2, 3])
    perm = torch.tensor([3, 2, 1, 0])
    b = torch.cat([a[perm], torch.tensor([[9, 9, 9]], dtype=torch.int32)])
    sem_b = torch.cat([sem_a[perm], torch.tensor([5])])
    sem_b[0] = 7  # voxel a[3] now disagrees
    assert matched_semantic_accuracy(a, sem_a, b, sem_b) == pytest.approx(0.75)
    sem_a[3] = -1  # the disagreeing voxel becomes "unknown" in the reference: not scored
    assert matched_semantic_accuracy(a, sem_a, b, sem_b) == 1.0
    assert np.isnan(matched_semantic_accuracy(a, torch.full((4,), -1), b, sem_b))


def test_class_fractions_and_distance():
    f = class_fractions(torch.tensor([0, 2, 2, 2, -1]), 4)
    assert f.tolist() == [0.25, 0.0, 0.75, 0.0]
    assert class_fractions(None, 3).tolist() == [0.0, 0.0, 0.0]
    assert histogram_distance(f, torch.tensor([0.25, 0.0, 0.75, 0.0])) == 0.0
    assert histogram_distance(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == 1.0
    with pytest.raises(InvalidInputError, match="class ids"):
        class_fractions(torch.tensor([0, 5]), 4)
