"""Real Blender (bpy 5.0.1, headless) reads our .vdb as a Volume and meshes it with Volume to Mesh.

bpy runs in a subprocess (tests/io/blender_volume_check.py): Blender-as-a-module is heavy to import
and is kept apart from the torch/openvdb state of the test process.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from io_levels import box_ijk, make_level, sphere_ijk

from xcube_core.io import vdb

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bpy") is None,
                                reason="bpy (Blender as a module) is not installed; pip install "
                                "-c constraints.txt 'xcube-artists[vdb]'")

SCRIPT = pathlib.Path(__file__).with_name("blender_volume_check.py")


def _blender(path: pathlib.Path, threshold: float = 0.5) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(path), str(threshold)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("XCUBE_RESULT "))
    return json.loads(line.split(" ", 1)[1])


def test_blender_loads_the_three_grids_and_meshes_the_level(tmp_path):
    # a sphere and a separate box, away from the origin, with half-voxel origin and 0.2 m voxels
    ijk = np.unique(np.concatenate([sphere_ijk(7.0, centre=(20.0, -10.0, 9.0)),
                                    box_ijk((34, -4, 0), (40, 2, 5))]), axis=0)
    level = make_level(ijk, voxel_size=0.2)
    path = vdb.write_level(level, tmp_path / "level.vdb")
    result = _blender(path)
    assert set(result["grids"]) == {"density", "normal", "semantics"}
    assert result["grids"]["density"]["type"] == "FLOAT"
    assert result["grids"]["normal"]["type"] == "VECTOR_FLOAT"
    assert result["vertices"] > 0 and result["faces"] > 0
    lo = ijk.min(0) * 0.2 + 0.1 - 0.1
    hi = ijk.max(0) * 0.2 + 0.1 + 0.1
    np.testing.assert_allclose(result["bounds"][0], lo, atol=0.2)
    np.testing.assert_allclose(result["bounds"][1], hi, atol=0.2)
