"""The add-on's PLY reader against trimesh's writer."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.deps import require

require("bpy")

from addon_support import ADDON_MODULE  # noqa: E402


@pytest.fixture
def ply(addon):
    return importlib.import_module(f"{ADDON_MODULE}.ply")


def _box(colors: bool = True):
    import trimesh

    mesh = trimesh.creation.box(extents=(2.0, 3.0, 4.0))
    if colors:
        mesh.visual.vertex_colors = np.arange(len(mesh.vertices) * 4).reshape(-1, 4) % 256
    return mesh


def test_reads_what_trimesh_writes(ply):
    mesh = _box()
    got = ply.read_ply(mesh.export(file_type="ply", encoding="binary"))
    np.testing.assert_allclose(got.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(got.faces, mesh.faces)
    np.testing.assert_allclose(got.colors * 255, mesh.visual.vertex_colors, atol=1e-3)
    plain = ply.read_ply(_box(colors=False).export(file_type="ply", encoding="binary", vertex_normal=True))
    assert plain.faces.shape == (12, 3)


def test_rejects_what_it_cannot_read(ply):
    data = _box().export(file_type="ply", encoding="binary")
    with pytest.raises(ValueError, match="binary_little_endian"):
        ply.read_ply(_box().export(file_type="ply", encoding="ascii"))
    with pytest.raises(ValueError):
        ply.read_ply(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a PLY"):
        ply.read_ply(b"solid stl\n")
    quads = (b"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
             b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
             + np.zeros(12, "<f4").tobytes() + b"\x04" + np.arange(4, dtype="<i4").tobytes())
    with pytest.raises(ValueError):
        ply.read_ply(quads)
