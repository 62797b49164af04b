"""The class of mesh vertices and faces from raw voxels (numpy only), against brute force."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

# classify.py is plain numpy: loaded from its file, without the add-on package (which needs bpy).
_SPEC = importlib.util.spec_from_file_location(
    "xcube_addon_classify", pathlib.Path(__file__).resolve().parents[2] / "blender_addon" / "classify.py")
classify = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(classify)


@pytest.mark.parametrize("spread", [0.6, 3.0])  # near the voxels (first passes) and far away (brute force)
def test_vertex_classes_are_the_nearest_voxels_class(spread):
    rng = np.random.default_rng(1)
    ijk = np.unique(rng.integers(0, 20, (400, 3)), axis=0)
    semantics = rng.integers(0, 9, len(ijk))
    voxel, origin = 0.25, np.array([0.125, -1.0, 3.0])
    index_points = ijk[rng.integers(0, len(ijk), 3000)] + rng.uniform(-spread, spread, (3000, 3))
    got = classify.vertex_classes(index_points * voxel + origin, ijk, semantics, voxel, origin)
    dist = ((index_points[:, None, :] - ijk[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(got, semantics[dist.argmin(1)])


def test_face_class_is_the_majority_of_its_vertices():
    per_vertex = np.array([0, 0, 1, 2, 2, 3])
    faces = np.array([[0, 1, 2], [2, 3, 4], [3, 4, 0], [0, 2, 3], [5, 5, 1]])
    np.testing.assert_array_equal(classify.face_classes(faces, per_vertex), [0, 2, 2, 0, 3])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one class per voxel"):
        classify.vertex_classes(np.zeros((1, 3)), np.zeros((2, 3)), np.zeros(1), 1.0, (0, 0, 0))
