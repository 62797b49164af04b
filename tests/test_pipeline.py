"""XCubePipeline with a tiny random model: ordering, nesting, determinism, cancel, bad input, layout."""

from __future__ import annotations

import threading

import pytest
import torch

from xcube_core.errors import CancelledError, InvalidInputError, ModelLoadError
from xcube_core.level import Level
from xcube_core.pipeline import XCubePipeline


@pytest.fixture(scope="module")
def pipe() -> XCubePipeline:
    return XCubePipeline.tiny(seed=0)


def test_levels_arrive_in_order_and_nest(pipe):
    events = []
    levels = list(pipe.generate("a quiet street", seed=1, steps=3, callback=lambda *e: events.append(e)))
    assert [lv.index for lv in levels] == [0, 1]
    assert [lv.voxel_size for lv in levels] == pipe.voxel_sizes
    coarse, fine = levels
    assert coarse.num_voxels > 0 and fine.num_voxels > 0
    # every fine voxel lies inside an active coarse voxel (level origin = half voxel: aligned)
    parents = torch.div(fine.ijk.long(), 2, rounding_mode="floor")
    assert bool(coarse.grid().coords_in_grid(parents).all())
    assert events == [(0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 3), (1, 2, 3), (1, 3, 3)]
    for lv in levels:
        assert lv.normals.shape == (lv.num_voxels, 3) and lv.semantics.shape == (lv.num_voxels,)
        assert lv.metadata["prompt"] == "a quiet street" and lv.metadata["seed"] == 1
        assert lv.origin == (lv.voxel_size / 2,) * 3


def test_generates_a_nested_scene_on_every_device(device):
    """The same tiny model on each device: CPU levels out, in order, nested, inside the box, and a
    layout condition (occupancy normals on the device's grid) accepted."""
    tiny = XCubePipeline.tiny(seed=0, device=device)
    coarse, fine = tiny.generate("a quiet street", seed=1, steps=2)
    for lv, shape in zip((coarse, fine), [(8, 8, 4), (16, 16, 8)]):
        assert lv.ijk.device.type == "cpu" and lv.normals.device.type == "cpu" and lv.num_voxels > 0
        assert bool((lv.ijk >= 0).all()) and bool((lv.ijk < torch.tensor(shape)).all())
    parents = torch.div(fine.ijk.long(), 2, rounding_mode="floor")
    assert bool(coarse.grid().coords_in_grid(parents).all())
    layout = Level(index=0, ijk=torch.tensor([[x, y, 0] for x in range(8) for y in range(8)]), voxel_size=2.0)
    levels = list(tiny.generate("a plaza", seed=2, steps=2, condition=layout))
    assert levels[0].num_voxels == 64 and levels[1].num_voxels > 0


def test_same_seed_same_scene_other_seed_other_scene(pipe):
    a = [lv.ijk for lv in pipe.generate("a park", seed=5, steps=2)]
    b = [lv.ijk for lv in pipe.generate("a park", seed=5, steps=2)]
    c = [lv.ijk for lv in pipe.generate("a park", seed=6, steps=2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, c))


def test_cancel_stops_within_a_step(pipe):
    cancel = threading.Event()
    seen = []

    def on_step(level, step, total):
        seen.append((level, step))
        if step == 2:
            cancel.set()

    with pytest.raises(CancelledError):
        list(pipe.generate("x", steps=10, callback=on_step, cancel=cancel))
    assert seen == [(0, 1), (0, 2)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt=""), "empty"),
    (dict(prompt="   "), "empty"),
    (dict(prompt="x" * 10_000), "limit"),
    (dict(prompt="x", steps=-1), "steps"),
    (dict(prompt="x", steps=0), "steps"),
    (dict(prompt="x", num_levels=3), "num_levels"),
    (dict(prompt="x", num_levels=0), "num_levels"),
    (dict(prompt="x", guidance=-2.0), "guidance"),
])
def test_bad_arguments_raise_clear_errors(pipe, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        next(pipe.generate(**kwargs))


def test_layout_condition_starts_at_the_next_level(pipe):
    # a blocked-out box on the ground at the coarsest resolution (8 x 8 x 4 voxels of 2 m)
    ground = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(8), torch.arange(1), indexing="ij"), -1)
    box = torch.stack(torch.meshgrid(torch.arange(2, 5), torch.arange(2, 5), torch.arange(1, 3), indexing="ij"), -1)
    ijk = torch.cat([ground.reshape(-1, 3), box.reshape(-1, 3)]).int()
    layout = Level(index=0, ijk=ijk, voxel_size=2.0)
    levels = list(pipe.generate("a tower", steps=2, condition=layout))
    assert torch.equal(levels[0].ijk, ijk) and levels[0].metadata["source"] == "condition"
    assert levels[0].normals.shape == (ijk.shape[0], 3)  # estimated from the occupancy
    parents = torch.div(levels[1].ijk.long(), 2, rounding_mode="floor")
    assert bool(levels[0].grid().coords_in_grid(parents).all())
    with pytest.raises(InvalidInputError, match="voxel size"):
        next(pipe.generate("x", condition=Level(index=0, ijk=ijk, voxel_size=1.0)))
    with pytest.raises(InvalidInputError, match="must lie in"):
        next(pipe.generate("x", condition=Level(index=0, ijk=ijk + 8, voxel_size=2.0)))


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "m")
    loaded = XCubePipeline.from_pretrained(tmp_path / "m")
    a = [lv.ijk for lv in pipe.generate("a farm", seed=2, steps=2)]
    b = [lv.ijk for lv in loaded.generate("a farm", seed=2, steps=2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ModelLoadError, match="pipeline.json"):
        XCubePipeline.from_pretrained(tmp_path / "missing")


def test_scale_grows_the_scene_without_densifying(pipe):
    small = list(pipe.generate("a wide plain", seed=3, steps=2))
    big = list(pipe.generate("a wide plain", seed=3, steps=2, scale=2))
    for s, b, lv_shape in zip(small, big, [(8, 8, 4), (16, 16, 8)]):
        hi = b.ijk.max(0).values
        assert int(hi[0]) < 2 * lv_shape[0] and int(hi[1]) < 2 * lv_shape[1] and int(hi[2]) < lv_shape[2]
        assert b.num_voxels > s.num_voxels
        assert b.num_voxels < 2 * 2 * lv_shape[0] * lv_shape[1] * lv_shape[2]  # inside the scaled box
    with pytest.raises(InvalidInputError, match="scale"):
        next(pipe.generate("x", scale=0))


def test_shipped_model_makes_a_usable_nested_scene():
    """The default model ships in the package and runs on CPU, offline, and what it makes is a scene:
    both levels non-empty, the fine one nested in the coarse one, several classes, plausible sizes."""
    shipped = XCubePipeline.from_pretrained()
    assert shipped.model_id == "xcube-procedural-v9" and shipped.num_levels == 2
    assert shipped.voxel_sizes == [1.0, 0.25] and shipped.coarse_shape == (64, 64, 32)
    coarse, fine = shipped.generate("a quiet suburban street lined with houses and oak trees", seed=0, steps=4)
    assert (coarse.index, fine.index) == (0, 1)
    # a surface scene: a few percent of the 64 x 64 x 32 box (measured 8.6 k), not empty, not a solid block
    assert 2_000 < coarse.num_voxels < 40_000
    hi = coarse.ijk.max(0).values
    assert int(coarse.ijk.min()) >= 0 and int(hi[0]) < 64 and int(hi[1]) < 64 and int(hi[2]) < 32
    # 4x finer surfaces hold ~16x the voxels (measured 10.8x)
    assert 4 < fine.num_voxels / coarse.num_voxels < 40
    parents = {tuple(v) for v in torch.div(fine.ijk.long(), 4, rounding_mode="floor").tolist()}
    assert parents <= {tuple(v) for v in coarse.ijk.tolist()}  # nesting
    for level in (coarse, fine):
        classes = set(level.semantics.unique().tolist())
        assert 0 in classes and len(classes) >= 4, classes  # ground and several kinds of things
        assert "voxel_budget" not in level.metadata
        assert torch.allclose(level.normals.norm(dim=1), torch.ones(level.num_voxels), atol=1e-3)


def test_decoding_priors_travel_in_pipeline_json_and_act(tmp_path):
    """keep_support / class_prior are per-level settings of the model folder, and they change the output."""
    import json

    pipe = XCubePipeline.tiny(seed=0)
    pipe.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "pipeline.json").read_text())
    assert meta["levels"][1]["keep_support"] is True and meta["levels"][1]["class_prior"] == 0.0
    meta["levels"][1].update(keep_support=False, class_prior=50.0)
    (tmp_path / "m" / "pipeline.json").write_text(json.dumps(meta))
    edited = XCubePipeline.from_pretrained(tmp_path / "m")
    assert (edited.levels[1].keep_support, edited.levels[1].class_prior) == (False, 50.0)
    plain = XCubePipeline.from_pretrained(tmp_path / "m")
    plain.levels[1].class_prior = 0.0
    for p in (edited, plain):  # the prior acts on the decoder; a refinement net would have the last word
        p.levels[1].refine = None
    base = list(plain.generate("a farm", seed=1, steps=2))
    # a prior of 50 nats: every fine voxel carries its parent's class
    coarse, fine = list(edited.generate("a farm", seed=1, steps=2))
    assert torch.equal(fine.ijk, base[1].ijk)
    grid, _, parent_cls = coarse.grid_attributes("cpu")
    factor = round(coarse.voxel_size / fine.voxel_size)
    idx = grid.ijk_to_index(torch.div(fine.ijk, factor, rounding_mode="floor"))
    assert bool((idx >= 0).all()) and torch.equal(fine.semantics.long(), parent_cls[idx].long())
    assert not torch.equal(base[1].semantics.long(), parent_cls[idx].long())  # without it they differ
