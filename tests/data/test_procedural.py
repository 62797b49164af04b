"""Procedural scenes: determinism by seed, geometry facts vs metadata, captions with varied wording."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.data.procedural import STYLES, SceneConfig, generate_object, generate_scene, split_seed
from xcube_core.data.procedural.canvas import Canvas
from xcube_core.data.procedural.captions import scene_caption

SMALL = SceneConfig(extent=(48.0, 48.0), height=32.0, voxel_size=0.5)


def _same(a, b) -> bool:
    return a.caption == b.caption and all(
        torch.equal(x.ijk, y.ijk) and torch.equal(x.normals, y.normals) and torch.equal(x.semantics, y.semantics)
        for x, y in zip(a.levels, b.levels))


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = generate_scene(7), generate_scene(7), generate_scene(8)
    assert _same(a, b)
    assert not _same(a, c)
    assert a.metadata["grid_shape"] == [256, 256, 128]
    fine = a.levels[-1]
    assert fine.voxel_size == 0.25 and fine.ijk.min() >= 0
    assert (fine.ijk.amax(0) < torch.tensor([256, 256, 128])).all()


@pytest.mark.parametrize("style", STYLES)
def test_every_style_builds_a_sparse_nested_scene(style):
    s = generate_scene(3, SMALL, num_levels=3, style=style)
    assert s.metadata["style"] == style
    fine = s.levels[-1]
    total = 96 * 96 * 64
    assert 0 < fine.num_voxels < 0.1 * total  # surface voxels only
    assert torch.allclose(fine.normals.norm(dim=1), torch.ones(fine.num_voxels), atol=1e-5)
    assert fine.semantics.min() >= 0 and fine.semantics.max() < len(CLASS_NAMES)
    for coarse, finer in zip(s.levels[:-1], s.levels[1:]):
        assert set(map(tuple, (finer.ijk // 2).tolist())) == set(map(tuple, coarse.ijk.tolist()))
    # the ground (or road/water) is everywhere: every column has a voxel
    cols = set(map(tuple, fine.ijk[:, :2].tolist()))
    assert len(cols) == 96 * 96


def test_ground_normals_point_up_and_walls_sideways():
    s = generate_scene(1, SMALL, style="downtown", building_height=20.0)
    fine = s.levels[-1]
    ground = fine.semantics == CLASS_NAMES.index("road")
    assert (fine.normals[ground][:, 2] > 0.9).float().mean() > 0.9
    wall = (fine.semantics == CLASS_NAMES.index("building")) & (fine.ijk[:, 2] > 10)
    assert wall.sum() > 100
    assert (fine.normals[wall][:, 2].abs() < 0.3).float().mean() > 0.8


def test_parameters_drive_geometry_and_metadata():
    tall = generate_scene(4, SMALL, style="downtown", building_height=24.0)
    low = generate_scene(4, SMALL, style="suburban", building_height=5.0)
    assert tall.metadata["mean_building_height"] > 15 and tall.metadata["height_class"] == "tall"
    assert low.metadata["mean_building_height"] < 8 and low.metadata["height_class"] == "low"
    building = [CLASS_NAMES.index("building"), CLASS_NAMES.index("roof")]

    def top(sample):  # tallest building voxel above ground, metres
        fine = sample.levels[-1]
        mask = torch.isin(fine.semantics, torch.tensor(building))
        return float(fine.ijk[mask, 2].max() + 1) * fine.voxel_size - 1.0

    assert top(tall) > 2 * top(low)
    wet = generate_scene(5, SMALL, style="park", has_water=True, tree_count=40)
    dry = generate_scene(5, SMALL, style="park", has_water=False, tree_count=0)
    assert wet.metadata["has_water"] and wet.metadata["water_fraction"] > 0
    assert not dry.metadata["has_water"] and dry.metadata["water_fraction"] == 0
    assert wet.metadata["tree_count"] > 10 and dry.metadata["tree_count"] == 0
    assert wet.metadata["tree_fraction"] > dry.metadata["tree_fraction"]


def test_captions_vary_and_follow_facts():
    facts = {"style": "downtown", "building_count": 9, "mean_building_height": 24.0, "dominant_roof": "flat",
             "tree_count": 2, "dominant_tree": "oak", "has_water": False, "vehicle_count": 5}
    caps = {scene_caption(facts, np.random.default_rng(i)) for i in range(40)}
    assert len(caps) >= 25  # varied wording for the same facts
    for c in caps:
        assert "low" not in c and "pond" not in c
    park = dict(facts, style="park", building_count=0, tree_count=50, has_water=True, water_kind="pond")
    caps = [scene_caption(park, np.random.default_rng(i)) for i in range(20)]
    assert all("tower" not in c for c in caps)
    assert sum(any(w in c for w in ("pond", "lake", "pool")) for c in caps) == 20


def test_generated_captions_differ_across_seeds():
    caps = [generate_scene(s, SceneConfig(extent=(32.0, 32.0), height=32.0, voxel_size=1.0)).caption
            for s in range(8)]
    assert len(set(caps)) == 8 and all(len(c) > 20 for c in caps)


def test_object_mode_unit_box():
    s = generate_object(11, resolution=64, num_levels=3, kind="house")
    fine = s.levels[-1]
    assert fine.voxel_size == pytest.approx(1 / 64)
    lo, hi = fine.ijk.amin(0), fine.ijk.amax(0)
    assert (lo >= 0).all() and (hi < 64).all()
    centre = (lo + hi).float() / 2
    assert torch.allclose(centre, torch.full((3,), 31.5), atol=1.0)  # centred in the box
    assert s.metadata["normalization"]["mode"] == "unit_box"
    bottom = fine.ijk[:, 2] == lo[2]  # a closed shell: the underside is there and faces down
    assert bottom.sum() > 50 and (fine.normals[bottom][:, 2] < -0.5).float().mean() > 0.9
    assert "house" in s.caption or "cottage" in s.caption or "home" in s.caption
    assert _same(s, generate_object(11, resolution=64, num_levels=3, kind="house"))


def test_splits_use_disjoint_seeds():
    seeds = {split: {split_seed(split, i) for i in range(0, 10_000_000, 99_991)} for split in ("train", "val", "test")}
    assert not seeds["train"] & seeds["val"] and not seeds["val"] & seeds["test"]
    with pytest.raises(ValueError):
        split_seed("holdout", 0)


def test_canvas_surface_of_a_box_is_its_shell():
    c = Canvas((20, 20, 20), 1.0)
    c.box(4, 12, 5, 11, 3, 9, cls=2)
    ijk, normals, cls = c.surface()
    dense = np.zeros((20, 20, 20), bool)
    dense[4:12, 5:11, 3:9] = True
    inner = dense.copy()
    inner[5:11, 6:10, 4:8] = False
    assert set(map(tuple, ijk.tolist())) == set(map(tuple, np.argwhere(inner).tolist()))
    assert (cls == 2).all()
    face = (ijk[:, 0] == 4) & (ijk[:, 1] > 5) & (ijk[:, 1] < 10) & (ijk[:, 2] > 3) & (ijk[:, 2] < 8)
    assert np.allclose(normals[face], [-1, 0, 0])


def test_a_canvas_window_holds_the_same_labels_as_that_part_of_the_whole_canvas():
    whole, window = Canvas((40, 40, 16), 0.5), Canvas((16, 12, 16), 0.5, origin=(6.0, 4.5))
    for c in (whole, window):  # solids inside, across and outside the window
        c.box(1.0, 9.0, 2.0, 7.0, 0.0, 3.0, cls=1)
        c.ellipsoid(12.0, 8.0, 4.0, 3.0, 2.5, 2.0, cls=4)
        c.cylinder(17.0, 17.0, 1.0, 0.0, 6.0, cls=6)
        c.gable(5.0, 11.0, 6.0, 9.0, 3.0, 2.0, True, cls=2)
    np.testing.assert_array_equal(window.labels, whole.labels[12:28, 9:21])
    assert window.labels.any() and (window.labels != 0).sum() < (whole.labels != 0).sum()


def _street_share_at_the_border(config: SceneConfig, seeds) -> float:
    """Road and vehicle voxels per metre in the outer 8 m rows/columns over those in the rest."""
    street = torch.tensor([CLASS_NAMES.index("road"), CLASS_NAMES.index("vehicle")])
    band = inner = 0
    for seed in seeds:
        fine = generate_scene(seed, config, num_levels=1, style=STYLES[seed % len(STYLES)]).levels[-1]
        for axis in (0, 1):
            x = fine.ijk[torch.isin(fine.semantics, street), axis].float() * fine.voxel_size
            edge = (x < 8.0) | (x >= config.extent[axis] - 8.0)
            band, inner = band + int(edge.sum()), inner + int((~edge).sum())
    return (band / 16.0) / (inner / (config.extent[0] - 16.0))


def test_scenes_are_windows_of_a_larger_site_so_their_borders_are_not_framed():
    """Streets run on across a window's border as they do across a tile cut from a big scene; laid
    out for its own frame (context 0), a scene keeps roads and parked cars away from its border."""
    seeds = range(300, 335)
    framed = _street_share_at_the_border(SceneConfig(voxel_size=1.0, context=0.0), seeds)
    windowed = _street_share_at_the_border(SceneConfig(voxel_size=1.0), seeds)
    assert framed < 0.65 and 0.85 < windowed < 1.15, (framed, windowed)


def test_the_census_counts_what_stands_in_the_window():
    s = generate_scene(11, SceneConfig(voxel_size=1.0), num_levels=1, style="suburban")
    x0, x1, y0, y1 = s.metadata["site_window_m"]
    assert s.metadata["site_extent_m"] == [128.0, 128.0] and 12 <= x0 <= 52 and x1 - x0 == 64
    full = generate_scene(11, SceneConfig(voxel_size=1.0, extent=(128.0, 128.0), context=0.0), num_levels=1,
                          style="suburban")
    # the window's census is a part of a whole site's (same density of houses per square metre)
    assert 0 < s.metadata["building_count"] < full.metadata["building_count"]


def test_a_larger_scene_holds_as_many_trees_and_cars_per_square_metre():
    """Counts are meant for a 64 m square: a 192 m scene (a big site, or a site to cut tiles from, as
    the per-tile floor of `xcube bench extent` does) gets 9x as many, not as many as one 64 m scene."""
    def share(extent, seeds, cls):
        config = SceneConfig(voxel_size=1.0, extent=(extent, extent))
        lv = [generate_scene(s, config, num_levels=1, style="suburban").levels[-1] for s in seeds]
        return sum(int((v.semantics == CLASS_NAMES.index(cls)).sum()) for v in lv) / (len(lv) * extent ** 2)

    for cls in ("tree", "vehicle"):
        small, large = share(64.0, range(40, 52), cls), share(192.0, range(40, 43), cls)
        assert 0.6 < large / small < 1.6, (cls, small, large)


def test_windowed_parking_lots_keep_their_store():
    """The store stands in or at the window, as it did on a framed lot (laid along the edge of the
    128 m site, no window of 24 held it)."""
    config = SceneConfig(voxel_size=1.0)
    counts = [generate_scene(split_seed("test", k), config, num_levels=1, style="parking_lot")
              .metadata["building_count"] for k in range(24)]
    assert sum(c > 0 for c in counts) >= 5, counts


def test_negative_context_is_refused():
    with pytest.raises(ValueError, match="context"):
        SceneConfig(context=-1.0)
