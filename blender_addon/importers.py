"""Turns a received level (a .vdb file on disk) into Blender objects. Main thread only.

Each level becomes, in a collection named after the prompt, a Volume object (the file loaded with
``volumes.new`` + ``filepath`` + ``grids.load()``, shaded by a Principled Volume whose density and
colour come from the ``density`` and ``semantics`` grids) and/or a Mesh object (the server's surface
mesh with its class colours, or else a Volume to Mesh modifier on that volume at density 0.5). When level ``i`` arrives, level ``i - 1`` is hidden; every
level stays in the file.
"""

from __future__ import annotations

import colorsys
import hashlib
import logging
import os
import re
import tempfile

import bpy

log = logging.getLogger(__name__)

# Display colours (sRGB 0..255) of the procedural scene classes, matched by name; classes a model
# names differently get a stable colour from a hash of the name. (The add-on never imports
# xcube_core, so this small table is repeated here.)
CLASS_COLORS = {
    "ground": (132, 168, 96),
    "road": (70, 70, 76),
    "building": (196, 184, 168),
    "roof": (168, 84, 64),
    "tree": (46, 122, 52),
    "bush": (96, 150, 70),
    "vehicle": (40, 90, 180),
    "pole": (150, 150, 150),
    "water": (60, 130, 200),
}

DENSITY_SCALE = 2.0  # Principled Volume density per unit of the `density` grid (1 inside voxels)
MESH_THRESHOLD = 0.5
COLOR_ATTRIBUTE = "Col"


def output_directory(prefs_output_dir: str = "") -> str:
    """The folder for received files: the preference if set, else the extension's user folder.

    Falls back to a temporary folder when the add-on is not installed as an extension (legacy
    loading or tests that import the package directly).
    """
    if prefs_output_dir:
        path = bpy.path.abspath(prefs_output_dir)
    else:
        try:
            path = os.path.join(bpy.utils.extension_path_user(__package__, create=True), "levels")
        except (ValueError, AttributeError):
            path = os.path.join(tempfile.gettempdir(), "xcube_levels")
    os.makedirs(path, exist_ok=True)
    return path


def safe_filename(text: str, limit: int = 40) -> str:
    """A file-name-safe slug of ``text`` (letters, digits, ``_`` and ``-``)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_")
    return slug[:limit] or "scene"


def srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def class_color(name: str) -> tuple[float, float, float, float]:
    """Linear RGBA display colour of a semantic class."""
    rgb = CLASS_COLORS.get(name.lower())
    if rgb is None:
        hue = int(hashlib.sha1(name.encode()).hexdigest()[:6], 16) / 0xFFFFFF
        srgb = colorsys.hsv_to_rgb(hue, 0.55, 0.8)
    else:
        srgb = tuple(v / 255.0 for v in rgb)
    return (*(srgb_to_linear(v) for v in srgb), 1.0)


def ensure_collection(scene: bpy.types.Scene, prompt: str) -> bpy.types.Collection:
    """A new collection named after the prompt, linked under the scene's master collection."""
    name = prompt.strip().replace("\n", " ")[:60] or "XCube scene"
    collection = bpy.data.collections.new(name)
    scene.collection.children.link(collection)
    return collection


def _use_nodes(material: bpy.types.Material) -> None:
    if bpy.app.version < (5, 0, 0):  # always on (and deprecated) from Blender 5.0
        material.use_nodes = True


def volume_material(class_names: tuple[str, ...]) -> bpy.types.Material:
    """A Principled Volume material: density from ``density``, colour from ``semantics`` classes.

    The class id (a float grid) is mapped to a colour by a constant-interpolation colour ramp with one
    stop per class at ``id / num_classes``; ``(id + 0.5) / num_classes`` picks stop ``id``.
    """
    key = hashlib.sha1("|".join(class_names).encode()).hexdigest()[:8]
    name = f"XCube Volume {key}"
    material = bpy.data.materials.get(name)
    if material is not None:
        return material
    material = bpy.data.materials.new(name)
    _use_nodes(material)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (600, 0)
    volume = nodes.new("ShaderNodeVolumePrincipled")
    volume.location = (300, 0)
    links.new(volume.outputs["Volume"], out.inputs["Volume"])

    density = nodes.new("ShaderNodeAttribute")
    density.attribute_name = "density"
    density.location = (-400, -200)
    scale = nodes.new("ShaderNodeMath")
    scale.operation = "MULTIPLY"
    scale.inputs[1].default_value = DENSITY_SCALE
    scale.location = (0, -200)
    links.new(density.outputs["Fac"], scale.inputs[0])
    links.new(scale.outputs["Value"], volume.inputs["Density"])

    semantics = nodes.new("ShaderNodeAttribute")
    semantics.attribute_name = "semantics"
    semantics.location = (-600, 150)
    count = max(1, len(class_names))
    to_fac = nodes.new("ShaderNodeMapRange")  # id -> (id + 0.5) / count
    to_fac.inputs["From Min"].default_value = -0.5
    to_fac.inputs["From Max"].default_value = count - 0.5
    to_fac.location = (-400, 150)
    links.new(semantics.outputs["Fac"], to_fac.inputs["Value"])
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.location = (-150, 150)
    ramp.color_ramp.interpolation = "CONSTANT"
    elements = ramp.color_ramp.elements
    while len(elements) < count:
        elements.new(0.0)
    for i, element in enumerate(list(elements)[:count]):
        element.position = i / count
        element.color = class_color(class_names[i]) if class_names else (0.8, 0.8, 0.8, 1.0)
    links.new(to_fac.outputs["Result"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], volume.inputs["Color"])
    links.new(ramp.outputs["Color"], volume.inputs["Absorption Color"])  # tinted, not black, in shadow
    material["xcube_class_names"] = list(class_names)
    return material


def mesh_material() -> bpy.types.Material:
    """A neutral clay material for the Volume to Mesh surfaces."""
    name = "XCube Surface"
    material = bpy.data.materials.get(name)
    if material is None:
        material = bpy.data.materials.new(name)
        material.diffuse_color = (0.72, 0.7, 0.66, 1.0)
        _use_nodes(material)
        bsdf = material.node_tree.nodes.get("Principled BSDF")
        if bsdf is not None:
            bsdf.inputs["Base Color"].default_value = (0.72, 0.7, 0.66, 1.0)
            bsdf.inputs["Roughness"].default_value = 0.8
    return material


def vertex_color_material() -> bpy.types.Material:
    """Principled BSDF coloured by the mesh's ``Col`` attribute (the server's class colours)."""
    name = "XCube Surface Colours"
    material = bpy.data.materials.get(name)
    if material is not None:
        return material
    material = bpy.data.materials.new(name)
    _use_nodes(material)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = nodes.get("Principled BSDF") or nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 0.8
    attribute = nodes.new("ShaderNodeAttribute")
    attribute.attribute_name = COLOR_ATTRIBUTE
    attribute.location = (-300, 200)
    links.new(attribute.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def mesh_from_arrays(name: str, mesh) -> bpy.types.Mesh:
    """A Mesh datablock from a parsed server mesh (``ply.PlyMesh``: vertices, triangles, colours)."""
    import numpy as np

    data = bpy.data.meshes.new(name)
    n_vert, n_face = len(mesh.vertices), len(mesh.faces)
    data.vertices.add(n_vert)
    data.vertices.foreach_set("co", np.ascontiguousarray(mesh.vertices, dtype=np.float32).ravel())
    data.loops.add(3 * n_face)
    data.loops.foreach_set("vertex_index", np.ascontiguousarray(mesh.faces, dtype=np.int32).ravel())
    data.polygons.add(n_face)
    data.polygons.foreach_set("loop_start", np.arange(0, 3 * n_face, 3, dtype=np.int32))
    data.polygons.foreach_set("use_smooth", np.ones(n_face, dtype=bool))
    classes = getattr(mesh, "face_classes", None)
    if classes is not None:  # before validate(): a face it removes takes its class along
        from .materials import CLASS_ATTRIBUTE

        attr = data.attributes.new(CLASS_ATTRIBUTE, "INT", "FACE")
        attr.data.foreach_set("value", np.ascontiguousarray(classes, dtype=np.int32).ravel())
    if mesh.colors is not None:
        attr = data.color_attributes.new(COLOR_ATTRIBUTE, "BYTE_COLOR", "POINT")
        srgb = np.ascontiguousarray(mesh.colors, dtype=np.float32)
        attr.data.foreach_set("color_srgb", srgb.ravel())
    data.update()
    if data.validate(verbose=False):
        log.warning("xcube: the server's mesh %r needed repairs", name)
    return data


def load_volume(name: str, filepath: str) -> bpy.types.Volume:
    """Creates a Volume datablock for ``filepath`` and loads its grids.

    Raises:
        RuntimeError: Blender could not read the file (the message names it and Blender's reason).
    """
    volume = bpy.data.volumes.new(name)
    volume.filepath = filepath
    if not volume.grids.load() or len(volume.grids) == 0:
        reason = volume.grids.error_message or "no grids"
        bpy.data.volumes.remove(volume)
        raise RuntimeError(f"Blender could not load the volume {filepath!r}: {reason}")
    return volume


def hide_object(obj: bpy.types.Object, hide: bool = True) -> None:
    """Hides an object in the viewport (eye icon, saved with the file) and in renders."""
    obj.hide_render = hide
    try:
        obj.hide_set(hide)
    except RuntimeError:  # not in the current view layer
        obj.hide_viewport = hide


def import_level(
    collection: bpy.types.Collection,
    *,
    index: int,
    vdb_path: str,
    output: str,
    class_names: tuple[str, ...] = (),
    tags: dict | None = None,
    mesh=None,
    shading: str = "COLORS",
) -> list[bpy.types.Object]:
    """Adds one level to ``collection`` and hides the levels before it.

    Args:
        collection: the job's collection.
        index: level index, 0 = coarsest.
        vdb_path: the level's OpenVDB file (grids ``density``, ``normal``, ``semantics``).
        output: "VOLUME", "MESH" or "BOTH".
        class_names: semantic class names (id -> name) for the colours.
        tags: extra custom properties stored on every new object (prompt, seed, voxel size, ...).
        mesh: the server's surface of this level (``ply.PlyMesh``) or None; without it the Mesh object
            gets a Volume to Mesh modifier on the volume instead.
        shading: "COLORS" (class colours) or "MATERIALS" (render materials per class, ``materials.py``).

    Returns:
        The new objects: the Volume object first, then the Mesh object if asked for. In "MESH" mode
        the volume object still exists (the modifier reads it) but stays hidden.
    """
    from . import materials

    base = f"{collection.name[:40]} L{index}"
    volume = load_volume(base, vdb_path)
    volume.materials.append(volume_material(tuple(class_names)))
    vol_obj = bpy.data.objects.new(f"{base} volume", volume)
    collection.objects.link(vol_obj)
    new_objects = [vol_obj]
    if output in ("MESH", "BOTH"):
        if mesh is not None and len(mesh.faces):
            mesh_obj = bpy.data.objects.new(f"{base} mesh", mesh_from_arrays(f"{base} mesh", mesh))
            has_colors = mesh.colors is not None
            mesh_obj.data.materials.append(vertex_color_material() if has_colors else mesh_material())
            if getattr(mesh, "face_classes", None) is not None:  # as stored: validate() may drop faces
                materials.set_face_classes(mesh_obj, materials.face_classes(mesh_obj.data), tuple(class_names))
            collection.objects.link(mesh_obj)
        else:
            mesh_obj = bpy.data.objects.new(f"{base} mesh", bpy.data.meshes.new(f"{base} mesh"))
            collection.objects.link(mesh_obj)
            modifier = mesh_obj.modifiers.new("Volume to Mesh", "VOLUME_TO_MESH")
            modifier.object = vol_obj
            modifier.grid_name = "density"
            modifier.threshold = MESH_THRESHOLD
            modifier.resolution_mode = "GRID"
            mesh_obj.data.materials.append(mesh_material())
            if class_names and "semantics" in volume.grids:
                voxel = volume.grids["semantics"].matrix_object.col[0].xyz.length
                materials.add_class_nodes(mesh_obj, vol_obj, tuple(class_names), voxel, shading)
        new_objects.append(mesh_obj)
        if output == "MESH":
            hide_object(vol_obj)
    vol_obj[materials.NAMES_KEY] = list(class_names)
    for obj in new_objects:
        materials.restyle(obj, shading)
        obj["xcube_level"] = index
        for key, value in (tags or {}).items():
            obj[f"xcube_{key}"] = value
    for obj in collection.objects:
        level = obj.get("xcube_level")
        if level is not None and level < index:
            hide_object(obj)
    return new_objects
