"""Region edits (xcube_core.inpaint.edit_region and `xcube edit`) with a tiny model: voxels outside the
box stay bit-identical at every level, inside is regenerated and nests, determinism, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from xcube_core.cli import main
from xcube_core.errors import InvalidInputError
from xcube_core.inpaint import edit_region
from xcube_core.io.scene import read_scene
from xcube_core.level import Level
from xcube_core.pipeline import XCubePipeline
from xcube_core.tiling import generate_extent, merge_tiles


@pytest.fixture(scope="module")
def pipe() -> XCubePipeline:
    return XCubePipeline.tiny(seed=0)


@pytest.fixture(scope="module")
def scene(pipe):
    return list(pipe.generate("a quiet street", seed=1, steps=2))


def _records(level: Level, keep) -> dict:
    """voxel -> (normal bits, class) for the voxels whose level-0 column satisfies ``keep``."""
    f = round(2.0 / level.voxel_size)
    cols = torch.div(level.ijk[:, :2].long(), f, rounding_mode="floor")
    sel = keep(cols)
    return {tuple(v): (tuple(n), int(s)) for v, n, s in zip(level.ijk[sel].tolist(),
                                                            level.normals[sel].view(torch.int32).tolist(),
                                                            level.semantics[sel].tolist())}


def _in_box(x0, y0, x1, y1):
    return lambda c: (c[:, 0] >= x0) & (c[:, 0] < x1) & (c[:, 1] >= y0) & (c[:, 1] < y1)


def test_outside_the_box_is_bit_identical_at_every_level(pipe, scene):
    edited = list(edit_region(pipe, scene, (4.0, 2.0, 10.0, 12.0), "a pond", seed=7, steps=2))
    assert [lv.index for lv in edited] == [0, 1]
    box = _in_box(2, 1, 5, 6)  # metres / 2 m voxels
    outside = lambda c: ~box(c)  # noqa: E731
    changed = False
    for old, new in zip(scene, edited):
        assert _records(new, outside) == _records(old, outside)  # ijk, normal bits and class
        assert len(_records(new, lambda c: torch.ones(len(c), dtype=torch.bool))) == new.num_voxels
        changed |= _records(new, box) != _records(old, box)
    assert changed  # the box was regenerated
    coarse, fine = edited
    assert bool(coarse.grid().coords_in_grid(torch.div(fine.ijk.long(), 2, rounding_mode="floor")).all())
    again = list(edit_region(pipe, scene, (4.0, 2.0, 10.0, 12.0), "a pond", seed=7, steps=2))
    assert all(torch.equal(a.ijk, b.ijk) for a, b in zip(edited, again))


def test_edit_of_a_tiled_scene_keeps_the_rest(pipe):
    levels = merge_tiles(list(generate_extent(pipe, "a park", (32, 32), seed=3, steps=2)))
    edited = list(edit_region(pipe, levels, (18.0, 18.0, 30.0, 30.0), "a car park", seed=1, steps=2, halo=2))
    outside = lambda c: ~_in_box(9, 9, 15, 15)(c)  # noqa: E731
    for old, new in zip(levels, edited):
        assert _records(new, outside) == _records(old, outside)


@pytest.mark.parametrize("box, match", [
    ((-2, 0, 4, 4), "not inside the scene"), ((0, 0, 4, 40), "not inside the scene"),
    ((4, 4, 2, 8), "X1 must exceed"), ((0, float("nan"), 2, 2), "finite"), ((0, 0, 2), "four"),
])
def test_bad_boxes_get_clear_errors(pipe, scene, box, match):
    with pytest.raises(InvalidInputError, match=match):
        next(edit_region(pipe, scene, box, "x", steps=2))


def test_bad_scenes_get_clear_errors(pipe, scene):
    wrong = Level(index=0, ijk=scene[0].ijk, voxel_size=1.0, normals=scene[0].normals)
    with pytest.raises(InvalidInputError, match="voxels; this model"):
        next(edit_region(pipe, [wrong], (0, 0, 2, 2), "x", steps=2))
    with pytest.raises(InvalidInputError, match="non-empty list"):
        next(edit_region(pipe, [], (0, 0, 2, 2), "x", steps=2))
    with pytest.raises(InvalidInputError, match="resample"):
        next(edit_region(pipe, scene, (0, 0, 2, 2), "x", steps=2, resample=0))
    with pytest.raises(InvalidInputError, match="neither overlaps nor touches"):
        next(edit_region(pipe, scene, (40, 0, 50, 8), "x", steps=2, grow=True))


def test_a_box_wider_than_a_tile_is_tiled_and_the_rest_kept(pipe):
    big = merge_tiles(list(generate_extent(pipe, "a park", (48, 16), seed=3, steps=2)))
    edited = list(edit_region(pipe, big, (2, 0, 42, 10), "a lake", seed=1, steps=2, halo=2))
    outside = lambda c: ~_in_box(1, 0, 21, 5)(c)  # noqa: E731
    for old, new in zip(big, edited):
        assert _records(new, outside) == _records(old, outside)
        assert new.num_voxels == len(_records(new, lambda c: torch.ones(len(c), dtype=torch.bool)))


@pytest.mark.parametrize("box, lo, hi", [((16, 0, 32, 16), 8, 16), ((-16, 0, 0, 16), -8, 0)])
def test_growing_along_an_edge_keeps_the_scene_and_adds_beside_it(pipe, scene, box, lo, hi):
    grown = list(edit_region(pipe, scene, box, "more street", seed=2, steps=2, grow=True, halo=2))
    for old, new in zip(scene, grown):
        assert _records(new, lambda c: (c[:, 0] >= 0) & (c[:, 0] < 8)) == _records(old, lambda c: c[:, 0] >= 0)
        f = round(2.0 / new.voxel_size)
        cols = torch.div(new.ijk[:, 0].long(), f, rounding_mode="floor")
        assert bool(((cols >= min(lo, 0)) & (cols < max(hi, 8))).all())
    assert bool(((torch.div(grown[0].ijk[:, 0].long(), 1, rounding_mode="floor") >= lo)
                 & (grown[0].ijk[:, 0] < hi)).any())  # something new beside the old scene
    assert grown[0].metadata["extent_columns"] == [16, 8]
    assert grown[0].metadata["extent_origin_columns"] == [min(lo, 0), 0]


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("tiny") / "model")


def test_cli_edit_writes_a_new_scene_with_the_outside_unchanged(model_dir, tmp_path, capsys):
    src, dst = tmp_path / "scene", tmp_path / "edited"
    assert main(["generate", "a quiet street", "--model", str(model_dir), "--out", str(src), "--steps", "2",
                 "--mesh-format", "none", "--no-preview"]) == 0
    assert main(["edit", str(src), "--box", "4", "2", "10", "12", "--prompt", "a pond", "--seed", "3",
                 "--model", str(model_dir), "--out", str(dst), "--steps", "2", "--mesh-format", "none",
                 "--no-preview"]) == 0
    old, new = read_scene(src), read_scene(dst)
    outside = lambda c: ~_in_box(2, 1, 5, 6)(c)  # noqa: E731
    for a, b in zip(old, new):
        assert _records(a, outside) == _records(b, outside)
    capsys.readouterr()
    assert main(["edit", str(src), "--box", "0", "0", "100", "4", "--model", str(model_dir),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xcube edit: error:") and "not inside the scene" in err and "\n" not in err
    assert main(["edit", str(tmp_path / "nothing"), "--box", "0", "0", "1", "1"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_extent_streams_tiles_and_merges_levels(model_dir, tmp_path, capsys):
    out = tmp_path / "big"
    assert main(["generate", "a park", "--model", str(model_dir), "--out", str(out), "--steps", "2",
                 "--extent", "32x16", "--mesh-format", "none", "--no-preview"]) == 0
    tiles = sorted(p.name for p in (out / "tiles").iterdir())
    # level 0 in native tiles (3 along X); level 1 in one box (the default fine box exceeds the scene)
    assert tiles == [f"level0_x{a}_y0.vdb" for a in (0, 1, 2)] + ["level1_x0_y0.vdb"]
    levels = read_scene(out)
    assert [lv.index for lv in levels] == [0, 1]
    assert levels[0].metadata["extent_columns"] == [16, 8]
    fine = tmp_path / "fine"
    assert main(["generate", "a park", "--model", str(model_dir), "--out", str(fine), "--steps", "2",
                 "--extent", "32x16", "--fine-tile", "16", "--mesh-format", "none", "--no-preview"]) == 0
    assert sorted(p.name for p in (fine / "tiles").glob("level1_*")) == ["level1_x0_y0.vdb", "level1_x1_y0.vdb"]
    assert read_scene(fine)[0].num_voxels == levels[0].num_voxels  # level 0 does not depend on the fine boxes
    capsys.readouterr()
    assert main(["generate", "a park", "--model", str(model_dir), "--out", str(out), "--extent", "0x16"]) == 2
    assert "each side" in capsys.readouterr().err


def test_cli_extent_merges_a_large_level_from_its_tile_files(model_dir, tmp_path, monkeypatch):
    """Past MERGE_IN_MEMORY_VOXELS a level is merged from its tile files (no mesh, no preview): the
    file holds the same voxels, normals and classes as the in-memory merge."""
    from xcube_core.cli import extent as cli_extent

    args = ["generate", "a park", "--model", str(model_dir), "--steps", "2", "--extent", "32x16", "--no-preview"]
    assert main([*args, "--out", str(tmp_path / "memory")]) == 0
    monkeypatch.setattr(cli_extent, "MERGE_IN_MEMORY_VOXELS", 0)
    assert main([*args, "--out", str(tmp_path / "files")]) == 0
    for a, b in zip(read_scene(tmp_path / "memory"), read_scene(tmp_path / "files")):
        assert a.num_voxels == b.num_voxels > 0
        order_a, order_b = a.ijk.long().tolist(), b.ijk.long().tolist()
        ka = dict(zip(map(tuple, order_a), zip(a.semantics.tolist(), a.normals.tolist())))
        kb = dict(zip(map(tuple, order_b), zip(b.semantics.tolist(), b.normals.tolist())))
        assert ka == kb
    summary = json.loads((tmp_path / "files" / "summary.json").read_text())
    assert all("merged from the tile files" in lv["note"] for lv in summary["levels"])
    assert not list((tmp_path / "files").glob("level*.ply")) and list((tmp_path / "memory").glob("level*.ply"))


def test_bench_edit_scores_the_box_edges_of_each_edit(pipe, model_dir, capsys):
    """`xcube bench edit`: the seam score of the regenerated box pooled over scenes, next to the same
    lines of the unedited scenes; a box outside the tile is refused."""
    from xcube_core.eval.seams import box_seam_scores
    from xcube_core.inpaint import Box

    assert main(["bench", "edit", "--model", str(model_dir), "--box", "4", "4", "12", "12", "--scenes", "2",
                 "--levels", "2", "--steps", "2", "--band", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["level"] for row in report["levels"]] == [0, 1] and report["scenes"] == 2
    # reference: scene 0 alone, scored directly, is one of the two scenes pooled (same order of magnitude)
    assert main(["bench", "edit", "--model", str(model_dir), "--box", "4", "4", "12", "12", "--scenes", "1",
                 "--steps", "2", "--band", "1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["levels"][0]["unedited"]
    scene = list(pipe.generate("a quiet suburban street lined with houses and oak trees", seed=0, steps=2,
                               num_levels=1))[0]
    scene.metadata.update(extent_m=[16.0, 16.0], extent_columns=[8, 8])
    direct = box_seam_scores(scene, Box(2, 2, 6, 6), (8, 8), half=1)["ratio"]
    assert one == pytest.approx({k: round(v, 3) for k, v in direct.items()})
    assert main(["bench", "edit", "--model", str(model_dir), "--box", "4", "4", "40", "12"]) == 2
    assert "is not inside" in capsys.readouterr().err


def test_held_cells_of_an_edit_are_encoded_with_the_old_region_in_place(pipe, scene, monkeypatch):
    """The encoder that gives an edit its held latent sees the whole old scene in the window, the
    region's old voxels included (without them it reads an edge beside every held cell)."""
    from xcube_core import inpaint

    seen = []
    original = inpaint._known_latent

    def spy(p, i, lat_grid, existing, *args, **kw):
        seen.append((i, {tuple(v) for v in existing.ijk.tolist()}))
        return original(p, i, lat_grid, existing, *args, **kw)

    monkeypatch.setattr(inpaint, "_known_latent", spy)
    list(edit_region(pipe, scene, (4.0, 2.0, 10.0, 12.0), "a pond", seed=7, steps=2))
    assert [i for i, _ in seen] == [0, 1]
    # level 0: one native window covering the whole 16 m scene, so the encoder sees every old voxel,
    # those in the region (columns [2, 5) x [1, 6)) too
    assert bool(_in_box(2, 1, 5, 6)(scene[0].ijk[:, :2].long()).any())
    assert seen[0][1] == {tuple(v) for v in scene[0].ijk.tolist()}
