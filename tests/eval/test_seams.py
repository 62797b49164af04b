"""Seam score (xcube_core.eval.seams) on hand-made levels with known answers."""

from __future__ import annotations

import pytest
import torch

from xcube_core.eval.seams import seam_scores, tile_lines
from xcube_core.level import Level
from xcube_core.tiling import plan_tiles


def _plane(xs, ys, classes=None):
    ijk = torch.tensor([[x, y, 0] for x in xs for y in ys], dtype=torch.int32)
    sem = torch.zeros(len(ijk), dtype=torch.long) if classes is None else classes(ijk)
    return Level(index=0, ijk=ijk, voxel_size=1.0, normals=torch.zeros(len(ijk), 3), semantics=sem,
                 metadata={"extent_m": [32.0, 16.0], "extent_columns": [32, 16]})


def test_a_seamless_plane_scores_one_everywhere():
    s = seam_scores(_plane(range(32), range(16)), [(0, 16)], [(0, 8), (0, 24)], (32, 16), half=1)
    assert s["ratio"] == pytest.approx({"occupancy": 1.0, "classes": 1.0, "continuity": 1.0})


def test_a_gap_and_a_class_change_at_the_border_lower_their_ratios():
    gap = _plane([x for x in range(32) if x != 16], range(16))
    s = seam_scores(gap, [(0, 16)], [(0, 8), (0, 24)], (32, 16), half=1)
    # border band = columns 15 and 16: one of the two is empty, and column 15 ends there
    assert s["ratio"]["occupancy"] == pytest.approx(0.5)
    assert s["ratio"]["continuity"] == pytest.approx(0.0)
    road = _plane(range(32), range(16), lambda ijk: (ijk[:, 0] == 15).long())
    s = seam_scores(road, [(0, 16)], [(0, 8), (0, 24)], (32, 16), half=1)
    assert s["ratio"]["classes"] == pytest.approx(0.5)  # half the border band is another class


def test_tile_lines_are_the_ownership_borders_and_inner_quarters():
    plan = plan_tiles((112, 64), (64, 64), 16, 4)
    borders, interiors = tile_lines(plan)
    assert borders == [(0, 56)]
    assert interiors == [(0, 14), (0, 28), (0, 42), (0, 70), (0, 84), (0, 98), (1, 16), (1, 32), (1, 48)]
