"""Scenes of any extent (xcube_core.tiling) with a tiny model: the tile plan, determinism, ownership,
nesting, the known-latent hook, and bad input."""

from __future__ import annotations

import pytest
import torch

from xcube_core import inpaint
from xcube_core.errors import InvalidInputError
from xcube_core.inpaint import Box, KnownLatent
from xcube_core.pipeline import LevelSettings, XCubePipeline
from xcube_core.tiling import (generate_extent, halo_columns, merge_tiles, plan_tiles, receptive_radius, tile_seed)


@pytest.fixture(scope="module")
def pipe() -> XCubePipeline:
    return XCubePipeline.tiny(seed=0)


@pytest.fixture(scope="module")
def tiles(pipe):
    # fine boxes of one native tile (16 m): level 1 runs in several boxes, each with its halo
    return list(generate_extent(pipe, "a park", (40, 24), seed=1, steps=2, fine_tile_m=16))


def _key_map(level):
    return {tuple(v): (tuple(n), int(s)) for v, n, s in zip(level.ijk.tolist(), level.normals.tolist(),
                                                            level.semantics.tolist())}


@pytest.mark.parametrize("extent, tile, overlap", [((40, 24), (8, 8), 4), ((64, 64), (64, 64), 16),
                                                   ((200, 72), (64, 64), 16), ((12, 32), (8, 8), 0)])
def test_owned_boxes_partition_the_scene_and_known_is_what_came_before(extent, tile, overlap):
    plan = plan_tiles(extent, tile, overlap, 4)
    count = torch.zeros(extent, dtype=torch.int64)
    for k, (a, b) in enumerate(plan.tiles()):
        own, box = plan.owned(a, b), plan.box(a, b)
        assert box.width == tile[0] and box.height == tile[1]  # native size: position features in range
        assert own.intersection(box) == own
        # reference: columns owned by earlier tiles (brute force); they lie in the box where it overlaps
        before = torch.zeros(extent, dtype=torch.bool)
        for (a2, b2) in plan.tiles()[:k]:
            o = plan.owned(a2, b2)
            before[o.x0:o.x1, o.y0:o.y1] = True
        assert not bool(before[own.x0:own.x1, own.y0:own.y1].any())
        xs, ys = box.columns()
        inside = (xs < extent[0]) & (ys < extent[1])
        want = torch.zeros_like(inside)
        want[inside] = before[xs[inside], ys[inside]]
        assert torch.equal(plan.known(a, b, box), want)
        count[own.x0:own.x1, own.y0:own.y1] += 1
    assert bool((count == 1).all())  # every column owned by exactly one tile


def test_tiles_are_deterministic_per_seed(pipe, tiles):
    again = list(generate_extent(pipe, "a park", (40, 24), seed=1, steps=2, fine_tile_m=16))
    other = list(generate_extent(pipe, "a park", (40, 24), seed=2, steps=2, fine_tile_m=16))
    assert [t.metadata["tile"] for t in again] == [t.metadata["tile"] for t in tiles]
    assert all(torch.equal(x.ijk, y.ijk) and torch.equal(x.normals, y.normals) for x, y in zip(tiles, again))
    assert not all(x.ijk.shape == y.ijk.shape and torch.equal(x.ijk, y.ijk) for x, y in zip(tiles, other))


def test_tiles_own_their_region_nest_and_do_not_overlap(pipe, tiles):
    # 40 m x 24 m = 20 x 12 columns of 2 m; level 0: tiles of 8 columns with stride 4 (4 x 2);
    # level 1: boxes of 8 columns, the last one along each axis moved back to end at the scene (3 x 2)
    assert [t.index for t in tiles] == [0] * 8 + [1] * 6
    scene = merge_tiles(tiles)
    for t in tiles:
        f = 2 ** t.index
        x0, y0, x1, y1 = (int(v / pipe.voxel_sizes[0]) for v in t.metadata["region_m"])
        cols = torch.div(t.ijk[:, :2].long(), f, rounding_mode="floor")
        assert bool(((cols[:, 0] >= x0) & (cols[:, 0] < x1) & (cols[:, 1] >= y0) & (cols[:, 1] < y1)).all())
    for lv in scene:
        assert lv.num_voxels == len(_key_map(lv)) > 0  # no voxel made twice
    coarse, fine = scene
    assert bool(coarse.grid().coords_in_grid(torch.div(fine.ijk.long(), 2, rounding_mode="floor")).all())
    hi = fine.ijk.max(0).values
    assert int(hi[0]) >= 24 and int(hi[0]) < 40 and int(hi[1]) < 24  # reaches the far tiles, stays inside


def test_first_tile_is_a_plain_generation_and_later_tiles_hold_their_known_band(pipe, tiles, monkeypatch):
    """Tile (0, 0) has nothing to hold: it equals a single-tile generation with its seed. Later tiles
    hold exactly the latent cells of the band earlier tiles made, and end with that latent there."""
    gen = torch.Generator().manual_seed(tile_seed(1, 0, 0, 0))
    text = pipe.text_encoder.encode(["a park", ""])
    plain = pipe._generate_level(0, None, text, gen, LevelSettings(steps=2, guidance=3.0))
    assert torch.equal(plain.ijk.to(torch.int32), tiles[0].ijk)
    held = []
    original = KnownLatent.finish

    def spy(self, x):
        out = original(self, x)
        held.append((self.mask.clone(), torch.equal(out[self.mask], self.x0[self.mask].to(out))))
        return out

    monkeypatch.setattr(KnownLatent, "finish", spy)
    list(generate_extent(pipe, "a park", (32, 16), seed=1, steps=2, num_levels=1))
    # tiles (0,0), (1,0), (2,0) of 8 columns, stride 4: each later tile shares one 4-column latent cell
    assert len(held) == 2
    for mask, exact in held:
        assert exact and int(mask.sum()) == 1 * 2 * 1  # 1 cell along X, 2 along Y, 1 along Z (dense 2x2x1)


def test_holding_nothing_is_the_plain_sampler_and_holding_everything_gives_the_known_latent(pipe):
    text = pipe.text_encoder.encode(["a farm", ""])
    a = pipe._generate_level(0, None, text, torch.Generator().manual_seed(4), LevelSettings(steps=2, guidance=3.0))
    n = 2 * 2 * 1
    none = KnownLatent(torch.zeros(n, dtype=torch.bool), torch.zeros(n, 4))
    b = pipe._generate_level(0, None, text, torch.Generator().manual_seed(4), LevelSettings(steps=2, guidance=3.0),
                             known=none)
    assert torch.equal(a.ijk, b.ijk)
    x0 = torch.randn(n, 4, generator=torch.Generator().manual_seed(9))
    everything = KnownLatent(torch.ones(n, dtype=torch.bool), x0, resample=2)
    c = pipe._generate_level(0, None, text, torch.Generator().manual_seed(5), LevelSettings(steps=2, guidance=3.0),
                             known=everything)
    d = pipe._generate_level(0, None, text, torch.Generator().manual_seed(6), LevelSettings(steps=3, guidance=0.0),
                             known=everything)
    assert torch.equal(c.ijk, d.ijk)  # the decode of x0 whatever the sampler did


def test_receptive_radius_and_halo(pipe):
    from xcube_core.models.unet import UNetConfig

    cfg = UNetConfig(channel_mult=(1, 2, 4), num_res_blocks=1)
    # conv_in 1 + stages 2*(1+2+4) twice + k=2 resampling 2*(1+2) + middle 4*4 + output 1
    assert receptive_radius(cfg) == 1 + 28 + 6 + 16 + 1
    assert halo_columns(pipe, 1) == receptive_radius(pipe.levels[1].unet.config)  # latent voxel = 1 column


@pytest.mark.parametrize("kwargs, match", [
    (dict(extent_m=(0, 10)), "each side"), (dict(extent_m=(-5, 10)), "each side"),
    (dict(extent_m=(5000, 10)), "4096"), (dict(extent_m=(float("nan"), 10)), "finite"),
    (dict(extent_m=(10,)), "two finite"), (dict(overlap_m=100.0), "overlap"),
    (dict(halo=-1), "halo"), (dict(fine_tile_m=-16.0), "fine tile"), (dict(class_prior=-1.0), "class prior"), (dict(fine_tile_m=float("inf")), "fine tile"), (dict(resample=0), "resample"), (dict(steps=0), "steps"),
])
def test_bad_input_is_refused_before_any_work(pipe, kwargs, match):
    args = dict(extent_m=(32, 32))
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        next(generate_extent(pipe, "x", **args))


def test_a_scenes_own_level_0_as_layout_gives_back_its_finer_levels(pipe, tiles):
    """`generate_extent(layout=...)` cuts level 0 from the layout and generates only the finer levels:
    given the coarsest level a run made, it makes that run's finer levels again, voxel for voxel."""
    coarse, fine = merge_tiles(tiles)
    again = list(generate_extent(pipe, "a park", (40, 24), seed=1, steps=2, fine_tile_m=16, layout=coarse))
    assert [t.metadata["tile"] for t in again] == [t.metadata["tile"] for t in tiles]
    given, made = merge_tiles(again)
    assert _key_map(given) == _key_map(coarse)
    assert _key_map(made) == _key_map(fine)
    with pytest.raises(InvalidInputError, match="must lie in"):  # a layout beyond the extent
        next(generate_extent(pipe, "a park", (24, 24), layout=coarse))
    with pytest.raises(InvalidInputError, match="voxel size"):
        next(generate_extent(pipe, "a park", (40, 24), layout=fine))


def test_upsampling_eval_makes_references_wider_than_a_native_scene_as_large_scenes(pipe, tiles):
    """`evaluate_upsampling` on a 40 m reference (the tiny model's native scene is 16 m): the finer level
    comes from `generate_extent` with the reference's level 0 as the layout, scored against its own."""
    from xcube_core.eval.metrics import voxel_iou
    from xcube_core.eval.runners import Reference, evaluate_upsampling

    truth = merge_tiles(tiles)
    assert truth[0].ijk[:, :2].amax(0).tolist() == [19, 11]  # it fills its 40 m x 24 m at 2 m
    for seed in (1, 5):  # the default boxes, not the reference's own 16 m ones: IoU < 1 even for seed 1
        made = merge_tiles(generate_extent(pipe, "a park", (40, 24), seed=seed, steps=2, layout=truth[0]))[1]
        report = evaluate_upsampling(pipe, [Reference(truth, "a park", "scene", {})], seed=seed, steps=2,
                                     progress=False)
        iou = voxel_iou(truth[1].ijk, made.ijk)
        assert report["levels"]["1"]["mean_iou"] == pytest.approx(iou) and iou < 1.0


def test_box_helpers():
    b = Box(2, 3, 6, 8)
    assert (b.width, b.height) == (4, 5)
    assert b.intersection(Box(5, 0, 9, 4)) == Box(5, 3, 6, 4) and b.intersection(Box(6, 0, 9, 9)) is None
    assert b.contains(torch.tensor([[2, 3], [6, 3], [5, 7]])).tolist() == [True, False, True]
    with pytest.raises(InvalidInputError, match="empty"):
        Box(3, 0, 3, 1)
    assert inpaint.level_factor([2.0, 1.0, 0.25], 2) == 8


def test_bench_extent_compares_tiling_with_one_scaled_piece(pipe, tmp_path, capsys):
    """`xcube bench extent --nna N --compare-scale` scores tiles cut from the tiled scene and from the
    same extent made in one piece with generate(scale=S), against the same single-tile generations;
    the one-piece scene is also scored on the tiled plan's border lines (the metric's own noise)."""
    import json

    from xcube_core.cli import main

    model = pipe.save_pretrained(tmp_path / "model")
    assert main(["bench", "extent", "--model", str(model), "--extent", "32x32", "--steps", "2", "--levels", "1",
                 "--nna", "4", "--compare-scale", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scale = report["scale"]
    assert scale["scale"] == 2 and report["per_tile_1nna"]["n"] == 4 and scale["per_tile_1nna"]["n"] == 4
    for r in (report["per_tile_1nna"], scale["per_tile_1nna"]):
        assert 0.0 <= r["1-NNA-CD"] <= 1.0 and 0.0 <= r["COV-CD"] <= 1.0
    assert set(scale["seam_ratio_on_tile_lines"]) == set(report["runs"][0]["levels"][0]["seam_ratio"])
    # the seam score's data reference: procedural scenes laid on the same tile plan
    assert main(["bench", "extent", "--model", str(model), "--extent", "32x32", "--steps", "2", "--levels", "1",
                 "--data-style", "suburban", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["data_tiles"]
    assert data["tiles"] == len(plan_tiles((16, 16), (8, 8), 2, 1).tiles())
    assert all(0.0 < v <= 1.5 for v in data["seam_ratio"].values())
    # per-tile quality from several scenes, and the same protocol on the data (the measure's floor)
    assert main(["bench", "extent", "--model", str(model), "--extent", "32x32", "--steps", "2", "--levels", "1",
                 "--nna", "6", "--nna-scenes", "3", "--nna-boxes", "grid", "--data-style", "suburban",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["per_tile_1nna"]["n"] == 6 and report["per_tile_1nna"]["scenes"] == 3
    floor = report["data_tiles"]["per_tile_1nna"]
    assert floor["n"] == 6 and floor["sites"] == 3 and 0.0 <= floor["1-NNA-CD"] <= 1.0
    assert main(["bench", "extent", "--model", str(model), "--nna", "2", "--nna-scenes", "0"]) == 2
    assert "--nna-scenes" in capsys.readouterr().err
    assert main(["bench", "extent", "--model", str(model), "--scenes", "0"]) == 2
    assert "--scenes must be >= 1" in capsys.readouterr().err
    assert main(["bench", "extent", "--model", str(model), "--data-style", "moon"]) == 2
    assert "suburban" in capsys.readouterr().err
    assert main(["bench", "extent", "--model", str(model), "--extent", "32x16", "--steps", "2", "--levels", "1",
                 "--nna", "2", "--compare-scale"]) == 2
    assert "square extent" in capsys.readouterr().err


def test_bench_extent_pools_the_seam_score_over_scenes(pipe, tmp_path, capsys):
    """`--scenes K`: the seam score of K seeds' scenes with their bands pooled, each scene's own score
    beside it; the pooled score is `pooled_seam_scores` of the scenes generate_extent makes."""
    import json

    from xcube_core.bench.extent import _plan_lines
    from xcube_core.cli import main
    from xcube_core.eval.seams import pooled_seam_scores

    model = pipe.save_pretrained(tmp_path / "model")
    assert main(["bench", "extent", "--model", str(model), "--extent", "32x32", "--steps", "2", "--levels", "1",
                 "--seed", "3", "--scenes", "2", "--band", "1", "--data-style", "suburban", "--prompt", "a street",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pooled = report["pooled_seams"]
    assert pooled["scenes"] == 2 and pooled["seeds"] == [3, 4] and [lv["level"] for lv in pooled["levels"]] == [0]
    level0 = pooled["levels"][0]
    assert level0["per_scene"][0] == report["runs"][0]["levels"][0]["seam_ratio"]  # seed 3 is the first run
    cols, _, borders, interiors = _plan_lines(pipe, (32.0, 32.0))
    scenes = [merge_tiles(generate_extent(pipe, "a street", (32, 32), seed=s, steps=2, num_levels=1))[0] for s in (3, 4)]
    expected = pooled_seam_scores(scenes, borders, interiors, cols, 1)["ratio"]
    assert level0["seam_ratio"] == {k: round(v, 3) for k, v in expected.items()}
    assert len(report["data_tiles"]["per_scene"]) == 2  # the data reference pools as many scenes


def test_bench_extent_compares_windowed_with_global_self_attention(pipe, tmp_path, capsys):
    """`--global-attention` runs the scene again with self-attention over each whole window and reports
    the time ratio per level."""
    import json

    from xcube_core.cli import main

    model = pipe.save_pretrained(tmp_path / "model")
    assert main(["bench", "extent", "--model", str(model), "--extent", "40x24", "--steps", "2", "--fine-tile", "16",
                 "--global-attention", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    windowed, full = report["runs"]
    assert "attention" not in windowed and full["attention"] == "global"
    assert [lv["voxels"] for lv in full["levels"]] == [lv["voxels"] for lv in windowed["levels"]]
    ratios = report["windowed_over_global_seconds"]  # of seconds rounded to 0.1 s: only their form here
    assert set(ratios) == {"0", "1"} and all(isinstance(v, float) and v >= 0 for v in ratios.values())
    assert main(["bench", "extent", "--model", str(model), "--extent", "40x24", "--steps", "2", "--fine-tile", "16",
                 "--levels", "1", "--global-attention"]) == 0
    assert "level 0: windowed / global self-attention time" in capsys.readouterr().out


def test_decoding_part_of_a_window_keeps_the_latents_order(pipe, tiles):
    """Finer windows decode only their region (plus a margin): a mask that keeps every latent voxel
    gives exactly the whole decode, and a partial mask decodes only voxels under the kept latents."""
    coarse = merge_tiles(tiles)[0]
    text = pipe.text_encoder.encode(["a park", ""])
    settings = LevelSettings(steps=2, guidance=3.0)

    def level1(mask=None):
        gen = torch.Generator().manual_seed(5)
        return pipe._generate_level(1, coarse, text, gen, settings, shape=(40, 24, 16), decode_mask=mask)

    whole = level1()
    grid = coarse.grid()
    assert _key_map(level1(torch.ones(grid.total_voxels, dtype=torch.bool))) == _key_map(whole)
    left = grid.ijk.jdata[:, 0] < 6
    part = level1(left)
    assert 0 < part.num_voxels < whole.num_voxels
    assert int(torch.div(part.ijk[:, 0], 2, rounding_mode="floor").max()) < 6


def test_latent_canvas_stores_looks_up_and_forgets_rows():
    from xcube_core.inpaint import LatentCanvas

    canvas = LatentCanvas()
    cells = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 5, 1], [7, 9, 2]])
    x = torch.arange(8.0).view(4, 2)
    canvas.add(cells[:2], x[:2])
    canvas.add(cells[2:], x[2:])
    got, found = canvas.lookup(torch.tensor([[7, 9, 2], [3, 3, 3], [0, 0, 0]]))
    assert found.tolist() == [True, False, True]
    assert torch.equal(got[0], x[3]) and torch.equal(got[2], x[0]) and torch.equal(got[1], torch.zeros(2))
    canvas.forget_below(5)
    assert canvas.lookup(cells)[1].tolist() == [False, False, True, True]


def test_later_tiles_hold_the_latent_earlier_tiles_made_not_a_re_encoding(pipe, monkeypatch):
    """A tile holds, over the columns earlier tiles own, exactly the latent those tiles denoised (in
    scene cells); the VAE's re-encoding of the decoded strip, which sees an edge beside it, is not used
    where that latent exists."""
    made, held = {}, []
    original_generate = XCubePipeline._generate_level
    original_finish = KnownLatent.finish

    def record(self, i, prev, text, gen, settings, shape=None, known=None, decode_mask=None, latent_sink=None,
               **kwargs):
        def sink(grid, x):
            for c, v in zip(grid.ijk.jdata.tolist(), x):
                made.setdefault(len(held), {})[tuple(c)] = v.clone()
            latent_sink(grid, x)
        return original_generate(self, i, prev, text, gen, settings, shape, known, decode_mask, sink, **kwargs)

    def spy(self, x):
        held.append((self.mask.clone(), self.x0.clone()))
        return original_finish(self, x)

    monkeypatch.setattr(XCubePipeline, "_generate_level", record)
    monkeypatch.setattr(KnownLatent, "finish", spy)
    list(generate_extent(pipe, "a park", (32, 16), seed=1, steps=2, num_levels=1))
    # tiles of 8 columns at stride 4 (2x2x1 dense latent cells of 4 columns): tile 1 holds its first
    # cell column, which tile 0 made as its second; tile 2 likewise from tile 1
    assert len(held) == 2
    for k, (mask, x0) in enumerate(held):
        prev, cells = made[k], list(made[k + 1])  # window-local cells; tile k+1 starts one cell further
        rows = torch.nonzero(mask).flatten().tolist()
        assert sorted(cells[r] for r in rows) == [(0, 0, 0), (0, 1, 0)]
        for r in rows:
            cx, cy, cz = cells[r]
            assert torch.equal(x0[r], prev[(cx + 1, cy, cz)].to(x0))
