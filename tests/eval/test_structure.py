"""Structure metrics against references: F-score at a voxel tolerance, orphan rate, class agreement."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from xcube_core.data.procedural.scene import SceneConfig, generate_scene
from xcube_core.errors import InvalidInputError
from xcube_core.eval.metrics import voxel_iou
from xcube_core.eval.runners import hierarchy_stats
from xcube_core.eval.structure import orphan_rate, parent_child_class_agreement, parent_indices, voxel_fscore


def _box(lo, hi) -> torch.Tensor:
    axes = [torch.arange(a, b) for a, b in zip(lo, hi)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _brute_fscore(ref, pred, tol):
    d = torch.cdist(pred.double(), ref.double(), p=float("inf"))  # Chebyshev distance between voxels
    p = float((d.min(dim=1).values <= tol).double().mean())
    r = float((d.min(dim=0).values <= tol).double().mean())
    return p, r, 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_fscore_of_a_set_with_itself_and_with_a_one_voxel_shift():
    box = _box((0, 0, 0), (4, 4, 4))
    assert voxel_fscore(box, box) == {"precision": 1.0, "recall": 1.0, "fscore": 1.0}
    for shift in ([1, 0, 0], [1, 1, 1], [0, -1, 1]):  # every 26-neighbour shift is within tolerance 1
        moved = box + torch.tensor(shift)
        assert voxel_fscore(box, moved, tolerance=1)["fscore"] == 1.0
        assert voxel_iou(box, moved) < 1.0
        assert voxel_fscore(box, moved, tolerance=0)["fscore"] < 1.0
    # shifted by 2 along x: 3 of 4 slices within one voxel, both ways
    two = voxel_fscore(box, box + torch.tensor([2, 0, 0]))
    assert two["precision"] == pytest.approx(0.75) and two["recall"] == pytest.approx(0.75)
    assert two["fscore"] == pytest.approx(0.75)


@pytest.mark.parametrize("tol", [0, 1, 2])
def test_fscore_matches_a_brute_force_chebyshev_reference(generator, tol):
    ref = torch.unique(torch.randint(-6, 6, (120, 3), generator=generator), dim=0)
    pred = torch.unique(torch.randint(-4, 8, (90, 3), generator=generator), dim=0)
    got = voxel_fscore(ref, pred, tolerance=tol)
    p, r, f = _brute_fscore(ref, pred, tol)
    assert got["precision"] == pytest.approx(p) and got["recall"] == pytest.approx(r)
    assert got["fscore"] == pytest.approx(f)
    if tol == 0:  # exact matching: precision = |A & B| / |B|, and IoU follows from it
        inter = got["precision"] * pred.shape[0]
        assert voxel_iou(ref, pred) == pytest.approx(inter / (ref.shape[0] + pred.shape[0] - inter))


def test_fscore_edge_cases():
    empty = torch.zeros(0, 3, dtype=torch.int64)
    one = torch.zeros(1, 3, dtype=torch.int64)
    assert voxel_fscore(empty, empty)["fscore"] == 1.0
    assert voxel_fscore(one, empty)["fscore"] == 0.0 and voxel_fscore(empty, one)["fscore"] == 0.0
    with pytest.raises(InvalidInputError, match="tolerance"):
        voxel_fscore(one, one, tolerance=-1)
    with pytest.raises(InvalidInputError, match="shape"):
        voxel_fscore(torch.zeros(3, 2, dtype=torch.int64), one)


def test_orphan_rate_and_class_agreement_of_a_constructed_case():
    parents = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0]])
    # factor 4: children of (0,0,0) lie in 0..3; of (-1,0,0) in -4..-1; (0,1,0) gets none
    children = torch.tensor([[0, 0, 0], [3, 3, 3], [4, 0, 0], [7, 2, 1], [-1, 0, 0], [-4, 3, 3]])
    assert parent_indices(parents, children, 4).tolist() == [0, 0, 1, 1, 3, 3]
    assert orphan_rate(parents, children, 4) == pytest.approx(0.25)
    assert orphan_rate(parents, torch.zeros(0, 3, dtype=torch.int64), 4) == 1.0
    psem = torch.tensor([2, 3, 4, 0])
    csem = torch.tensor([2, 2, 3, 3, 0, -1])  # 2/2 agree under p0, 2/2 under p1, 1 known under p3
    assert parent_child_class_agreement(parents, psem, children, csem, 4) == pytest.approx(5 / 5)
    csem = torch.tensor([2, 2, 3, 1, 5, 0])  # p0: 2 of 2, p1: 1 of 2, p3: 1 of 2
    assert parent_child_class_agreement(parents, psem, children, csem, 4) == pytest.approx(4 / 6)
    stranger = torch.tensor([[40, 40, 40]])
    assert math.isnan(parent_child_class_agreement(parents, psem, stranger, torch.tensor([1]), 4))
    with pytest.raises(InvalidInputError, match="power of two"):
        orphan_rate(parents, children, 3)


def test_data_hierarchies_have_no_orphans_and_high_class_agreement():
    sample = generate_scene(5, SceneConfig(extent=(24.0, 24.0), height=16.0, voxel_size=0.25), num_levels=3)
    coarse, fine = sample.levels[0], sample.levels[2]
    assert orphan_rate(coarse.ijk, fine.ijk, 4) == 0.0  # by construction: parents are coarsened children
    agree = parent_child_class_agreement(coarse.ijk, coarse.semantics, fine.ijk, fine.semantics, 4)
    assert 0.5 < agree < 1.0  # parents take the majority class, thin parts disagree
    # removing every child of one parent makes exactly that parent an orphan
    target = coarse.ijk[0]
    keep = ~(torch.div(fine.ijk, 4, rounding_mode="floor") == target).all(dim=1)
    assert orphan_rate(coarse.ijk, fine.ijk[keep], 4) == pytest.approx(1 / coarse.ijk.shape[0])
    stats = hierarchy_stats([[coarse, dataclasses.replace(fine, index=1)], None])
    assert stats["L0-L1"]["orphan_rate"] == 0.0 and stats["L0-L1"]["scenes"] == 1
    assert stats["L0-L1"]["class_agreement"] == pytest.approx(agree)
