"""Layout meshes, region edits and tiled extents over a real loopback server with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcube_client import EditRegion, InvalidRequestError, LayoutMesh, SceneLevel
from xcube_core.classes import CLASS_NAMES
from xcube_core.layout import layout_from_triangles
from xcube_core.pipeline import XCubePipeline
from xcube_core.tiling import generate_extent


@pytest.fixture(scope="module")
def tiny():
    return XCubePipeline.tiny(seed=0)


def _raw(level, name, dtype, cols):
    a = np.frombuffer(level.artifacts[name].data, dtype=dtype)
    return a.reshape(-1, cols) if cols > 1 else a


def _layout():
    road = np.array([[0.5, 0.5, 0.5], [15.5, 0.5, 0.5], [15.5, 3.5, 0.5], [0.5, 3.5, 0.5]])
    roof = road[:, :] * [0.3, 2.0, 1.0] + [5.0, 6.0, 5.0]
    v = np.concatenate([road, roof]).astype(np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], dtype=np.int32)
    cls = np.array([CLASS_NAMES.index("road")] * 2 + [CLASS_NAMES.index("roof")] * 2, dtype=np.int32)
    return v, f, cls


def test_a_layout_mesh_round_trips_through_the_wire_to_the_same_coarse_grid(tiny, serve, connect):
    client = connect(serve(tiny))
    v, f, cls = _layout()
    api = layout_from_triangles(v, f, cls, tiny.coarse_shape, tiny.voxel_sizes[0], tiny.class_names)
    levels = list(client.generate("a block", steps=2, outputs=("raw",),
                                  layout_mesh=LayoutMesh(v, f, cls)))
    ijk = _raw(levels[0], "ijk", "<i4", 3)
    sem = _raw(levels[0], "semantics", "<i4", 1)
    assert sorted(map(tuple, ijk.tolist())) == sorted(map(tuple, api.ijk.tolist()))
    assert dict(zip(map(tuple, ijk.tolist()), sem.tolist())) == dict(
        zip(map(tuple, api.ijk.tolist()), api.semantics.tolist()))


@pytest.mark.parametrize("mesh, field", [
    (LayoutMesh(np.zeros((3, 3), np.float32), np.zeros((0, 3), np.int32)), "layout_mesh.faces"),
    (LayoutMesh(np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], np.float32), np.array([[0, 1, 2]])),
     "layout_mesh.vertices"),
    (LayoutMesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 7]])), "layout_mesh.faces"),
])
def test_bad_layout_meshes_are_invalid_argument_naming_the_field(tiny, serve, connect, mesh, field):
    client = connect(serve(tiny))
    with pytest.raises(InvalidRequestError) as info:
        list(client.generate("a block", steps=2, layout_mesh=mesh))
    assert info.value.field == field


def test_a_layout_too_big_for_the_grid_is_invalid_argument(tiny, serve, connect):
    client = connect(serve(tiny))
    v = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0]], np.float32)
    with pytest.raises(InvalidRequestError, match="--fit|fit"):
        list(client.generate("a block", steps=2, layout_mesh=LayoutMesh(v, np.array([[0, 1, 2]]))))
    levels = list(client.generate("a block", steps=2, outputs=("raw",),
                                  layout_mesh=LayoutMesh(v, np.array([[0, 1, 2]]), fit=True)))
    assert levels[0].num_voxels > 0


def test_an_edit_over_the_wire_keeps_every_voxel_outside_the_box(tiny, serve, connect):
    client = connect(serve(tiny))
    scene = list(tiny.generate("a street", seed=2, steps=2))
    sent = [SceneLevel(lv.ijk.numpy(), lv.normals.numpy(), lv.voxel_size, lv.semantics.numpy()) for lv in scene]
    got = list(client.generate("a pond", seed=4, steps=2, outputs=("raw",),
                               edit=EditRegion(sent, (4.0, 2.0, 10.0, 12.0))))
    assert [g.index for g in got] == [0, 1]
    for old, new in zip(scene, got):
        f = round(2.0 / old.voxel_size)
        ijk, nrm = _raw(new, "ijk", "<i4", 3), _raw(new, "normals", "<f4", 3)
        cols = np.floor_divide(ijk[:, :2], f)
        out = ~((cols[:, 0] >= 2) & (cols[:, 0] < 5) & (cols[:, 1] >= 1) & (cols[:, 1] < 6))
        ocols = torch.div(old.ijk[:, :2].long(), f, rounding_mode="floor")
        oout = ~((ocols[:, 0] >= 2) & (ocols[:, 0] < 5) & (ocols[:, 1] >= 1) & (ocols[:, 1] < 6))
        a = {tuple(k): tuple(n) for k, n in zip(ijk[out].tolist(), nrm[out].view("<i4").tolist())}
        b = {tuple(k): tuple(n) for k, n in zip(old.ijk[oout].tolist(), old.normals[oout].view(torch.int32).tolist())}
        assert a == b
    with pytest.raises(InvalidRequestError, match="not inside the scene"):
        list(client.generate("a pond", steps=2, edit=EditRegion(sent, (0.0, 0.0, 50.0, 4.0))))
    with pytest.raises(InvalidRequestError) as info:
        list(client.generate("a pond", steps=2, edit=EditRegion(sent, (4.0, 2.0, 1.0, 12.0))))
    assert info.value.field == "edit.x0"


def test_a_tiled_extent_streams_tiles_that_match_the_api(tiny, serve, connect):
    client = connect(serve(tiny))
    got = list(client.generate("a park", seed=1, steps=2, outputs=("raw",), extent_m=(32, 16)))
    api = list(generate_extent(tiny, "a park", (32, 16), seed=1, steps=2))
    assert [(g.index, g.metadata["tile"]) for g in got] == [(t.index, t.metadata["tile"]) for t in api]
    for g, t in zip(got, api):
        assert g.metadata["region_m"] == t.metadata["region_m"]
        assert np.array_equal(_raw(g, "ijk", "<i4", 3), t.ijk.numpy())
    with pytest.raises(InvalidRequestError) as info:
        list(client.generate("a park", steps=2, extent_m=(0, 16)))
    assert info.value.field == "extent_m"


def test_keeping_layout_classes_over_the_wire_matches_the_api(tiny, serve, connect):
    """class_prior = inf keeps each given class at the finer level, the same over the wire as in the API;
    unset leaves the model free to relabel (the tiny model does)."""
    import math

    client = connect(serve(tiny))
    v, f, cls = _layout()
    api = layout_from_triangles(v, f, cls, tiny.coarse_shape, tiny.voxel_sizes[0], tiny.class_names)
    kept = list(tiny.generate("a block", steps=2, condition=api, class_prior=math.inf))[1]
    free = list(tiny.generate("a block", steps=2, condition=api))[1]
    wire = list(client.generate("a block", steps=2, outputs=("raw",), layout_mesh=LayoutMesh(v, f, cls),
                                class_prior=math.inf))[1]
    parent = dict(zip(map(tuple, api.ijk.tolist()), api.semantics.tolist()))

    def agreement(ijk, sem):
        given = [(p, int(s)) for p, s in ((tuple(c // 2 for c in v), s) for v, s in zip(ijk, sem))
                 if parent.get(p, -1) >= 0]
        return sum(parent[p] == s for p, s in given) / len(given)

    assert agreement(kept.ijk.tolist(), kept.semantics.tolist()) == 1.0
    assert agreement(free.ijk.tolist(), free.semantics.tolist()) < 1.0
    ijk, sem = _raw(wire, "ijk", "<i4", 3), _raw(wire, "semantics", "<i4", 1)
    assert dict(zip(map(tuple, ijk.tolist()), sem.tolist())) == dict(
        zip(map(tuple, kept.ijk.tolist()), kept.semantics.tolist()))
    with pytest.raises(ValueError, match="class_prior"):
        list(client.generate("a block", steps=2, layout_mesh=LayoutMesh(v, f, cls), class_prior=-1.0))
