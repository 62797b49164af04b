"""Run inside a fresh Python with bpy (Blender 5.0.1 as a module): load a .vdb as a Volume, mesh it.

Usage: python blender_volume_check.py FILE.vdb THRESHOLD
Prints one JSON line: grid names, evaluated mesh vertex/face counts and world bounds.
Kept out of the pytest process: bpy is heavy and must not share a process with torch.
"""

import json
import sys

import bpy


def main(path: str, threshold: float) -> dict:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    volume = bpy.data.volumes.new("xcube_level")
    volume.filepath = path
    volume.grids.load()
    grids = {g.name: {"type": g.data_type, "loaded": bool(g.is_loaded)} for g in volume.grids}
    vol_obj = bpy.data.objects.new("xcube_volume", volume)
    bpy.context.scene.collection.objects.link(vol_obj)

    mesh_obj = bpy.data.objects.new("xcube_mesh", bpy.data.meshes.new("xcube_mesh"))
    bpy.context.scene.collection.objects.link(mesh_obj)
    mod = mesh_obj.modifiers.new("volume_to_mesh", "VOLUME_TO_MESH")
    mod.object = vol_obj
    mod.grid_name = "density"
    mod.threshold = threshold
    mod.resolution_mode = "GRID"
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = mesh_obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    coords = [tuple(evaluated.matrix_world @ v.co) for v in mesh.vertices]
    result = {"grids": grids, "vertices": len(mesh.vertices), "faces": len(mesh.polygons)}
    if coords:
        result["bounds"] = [[min(c[i] for c in coords) for i in range(3)],
                            [max(c[i] for c in coords) for i in range(3)]]
    evaluated.to_mesh_clear()
    return result


if __name__ == "__main__":
    print("XCUBE_RESULT " + json.dumps(main(sys.argv[1], float(sys.argv[2]))))
