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


def _ground(extent=(32, 32), copies=1, lift=None):
    """A one-voxel ground plane over ``copies`` scenes stacked along Y; ``lift(x, y)`` (scene-local
    columns) raises columns by 3 voxels (a terrace edge where it changes)."""
    rows = []
    for k in range(copies):
        for x in range(extent[0]):
            for y in range(extent[1]):
                rows.append([x, y + k * extent[1], 3 if lift is not None and lift(x, y) else 0])
    ijk = torch.tensor(rows, dtype=torch.int32)
    return Level(index=0, ijk=ijk, voxel_size=1.0, normals=torch.zeros(len(ijk), 3),
                 semantics=(ijk[:, 2] > 0).long(),
                 metadata={"extent_m": [float(extent[0]), float(extent[1])], "extent_columns": list(extent)})


def test_box_seams_see_only_the_edges_of_the_edited_box():
    from xcube_core.eval.seams import box_seam_scores
    from xcube_core.inpaint import Box

    box = Box(8, 8, 24, 24)
    flat = box_seam_scores(_ground(), box, (32, 32), half=1)
    assert flat["ratio"] == pytest.approx({"occupancy": 1.0, "classes": 1.0, "continuity": 1.0})
    # the box raised as a whole: its four edges break continuity and change class; nothing else does
    inside = lambda x, y: 8 <= x < 24 and 8 <= y < 24  # noqa: E731
    raised = box_seam_scores(_ground(lift=inside), box, (32, 32), half=1)
    assert raised["x"]["continuity"] == pytest.approx(0.0) and raised["y"]["continuity"] == pytest.approx(0.0)
    assert raised["ratio"]["classes"] < 0.9
    # a terrace outside the box's rows (y >= 28) is not on the box's edges: no seam is seen
    beside = box_seam_scores(_ground(lift=lambda x, y: y >= 28 and x >= 16), box, (32, 32), half=1)
    assert beside["x"] == pytest.approx({"occupancy": 1.0, "classes": 1.0, "continuity": 1.0})
    # pooled over copies stacked along Y: the same answer as one scene when all copies agree
    pooled = box_seam_scores(_ground(copies=3, lift=inside), box, (32, 32), half=1, copies=3)
    assert pooled["ratio"] == pytest.approx(raised["ratio"])
    with pytest.raises(ValueError, match="no edge inside"):
        box_seam_scores(_ground(), Box(0, 0, 32, 32), (32, 32), half=1)


def test_pooled_scenes_cancel_chance_while_a_seam_in_every_scene_stays():
    from xcube_core.eval.seams import pooled_seam_scores

    def layered(extra_columns, skip=()):  # a ground plane, a second layer over some X columns, holes at skip
        base = _plane([x for x in range(32) if x not in skip], range(16))
        top = base.ijk[torch.isin(base.ijk[:, 0], torch.tensor(extra_columns))] + torch.tensor([0, 0, 1], dtype=torch.int32)
        ijk = torch.cat([base.ijk, top])
        return Level(index=0, ijk=ijk, voxel_size=1.0, normals=torch.zeros(len(ijk), 3),
                     semantics=torch.zeros(len(ijk), dtype=torch.long), metadata=base.metadata)

    lines = ([(0, 16)], [(0, 8), (0, 24)], (32, 16))
    dense_border, dense_interior = layered([15, 16]), layered([7, 8, 23, 24])
    # each scene alone scores 0.5 (min / max), though together their bands hold the same
    assert seam_scores(dense_border, *lines, half=1)["ratio"]["occupancy"] == pytest.approx(0.5)
    assert seam_scores(dense_interior, *lines, half=1)["ratio"]["occupancy"] == pytest.approx(0.5)
    both = pooled_seam_scores([dense_border, dense_interior], *lines, half=1)
    assert both["ratio"]["occupancy"] == pytest.approx(1.0)
    # stacked scenes are no one's neighbours: continuity stays that of one scene
    assert both["ratio"]["continuity"] == pytest.approx(1.0)
    # a gap at the border of every scene stays a seam, however many scenes are pooled
    gap = _plane([x for x in range(32) if x != 16], range(16))
    assert pooled_seam_scores([gap] * 3, *lines, half=1)["ratio"] == pytest.approx(seam_scores(gap, *lines, half=1)["ratio"])
    # Y lines are repeated for every scene
    ys = pooled_seam_scores([layered([], skip=()), gap], [(1, 8)], [(1, 4), (1, 12)], (32, 16), half=1)
    assert ys["ratio"]["occupancy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one"):
        pooled_seam_scores([], *lines)
