"""Render-ready procedural materials per semantic class, and the switch between them and class colours.

Each class gets one node material that needs no image textures and works in Cycles and EEVEE:
grass, asphalt, walls, roof tiles, foliage, bushes, vehicle paint, pole metal and water (with
transmission). Textures use object coordinates, so their scale is in metres. Mesh levels carry their
class per face (the ``xcube_class`` face attribute) and get one material slot per class present;
volume levels shade per class from the ``semantics`` grid through an Attribute node. ``restyle`` /
``apply_to_all`` swap every generated object between "MATERIALS" and "COLORS" (main thread only).
"""

from __future__ import annotations

import hashlib

import bpy

from . import importers

CLASS_ATTRIBUTE = "xcube_class"  # INT face attribute of mesh levels: the semantic class id
SLOTS_KEY = "xcube_slot_classes"  # object property: class name of each material slot
NAMES_KEY = "xcube_class_names"  # object property: class id -> name of the level

# Relative density of a class inside volume levels (thin canopy and water let light through).
VOLUME_DENSITY = {"tree": 0.5, "bush": 0.6, "water": 0.25}
# How a model's class name maps to a recipe below.
ALIASES = {"ground": "grass", "grass": "grass", "terrain": "grass", "road": "asphalt", "asphalt": "asphalt",
           "building": "walls", "wall": "walls", "walls": "walls", "roof": "roof", "tree": "foliage",
           "vegetation": "foliage", "foliage": "foliage", "bush": "bushes", "vehicle": "paint", "car": "paint",
           "pole": "metal", "metal": "metal", "water": "water"}


class _Graph:
    """A material's node tree with small helpers (links by socket index or name)."""

    def __init__(self, material: bpy.types.Material) -> None:
        importers._use_nodes(material)
        self.nodes, self.links = material.node_tree.nodes, material.node_tree.links
        self.nodes.clear()
        out = self.nodes.new("ShaderNodeOutputMaterial")
        out.location = (500, 0)
        self.bsdf = self.nodes.new("ShaderNodeBsdfPrincipled")
        self.bsdf.location = (200, 0)
        self.links.new(self.bsdf.outputs[0], out.inputs["Surface"])
        self.coords = self.nodes.new("ShaderNodeTexCoord")
        self.coords.location = (-900, 0)

    def set(self, **values) -> None:
        """Principled inputs by name with underscores, e.g. ``base_color=(...)``, ``transmission_weight=1``."""
        for key, value in values.items():
            self.bsdf.inputs[key.replace("_", " ").title().replace("Ior", "IOR")].default_value = value

    def texture(self, kind: str, scale: float, **inputs) -> bpy.types.Node:
        node = self.nodes.new(kind)
        node.location = (-650, len(self.nodes) * -60)
        self.links.new(self.coords.outputs["Object"], node.inputs["Vector"])
        node.inputs["Scale"].default_value = scale
        for name, value in inputs.items():
            node.inputs[name.replace("_", " ").title()].default_value = value
        return node

    def ramp(self, factor_socket, colors) -> bpy.types.NodeSocket:
        """A colour ramp from ``colors`` (evenly spaced, linear RGB) driven by ``factor_socket``."""
        node = self.nodes.new("ShaderNodeValToRGB")
        node.location = (-300, len(self.nodes) * -60)
        elements = node.color_ramp.elements
        while len(elements) < len(colors):
            elements.new(0.5)
        for i, (element, color) in enumerate(zip(elements, colors)):
            element.position = i / max(1, len(colors) - 1)
            element.color = (*color, 1.0)
        self.links.new(factor_socket, node.inputs[0])
        return node.outputs["Color"]

    def bump(self, height_socket, strength: float, distance: float = 0.05) -> None:
        node = self.nodes.new("ShaderNodeBump")
        node.location = (-50, -400)
        node.inputs["Strength"].default_value = strength
        node.inputs["Distance"].default_value = distance
        self.links.new(height_socket, node.inputs["Height"])
        self.links.new(node.outputs["Normal"], self.bsdf.inputs["Normal"])


def _grass(g: _Graph) -> None:
    noise = g.texture("ShaderNodeTexNoise", 0.35, detail=8.0)
    g.links.new(g.ramp(noise.outputs[0], [(0.06, 0.16, 0.03), (0.16, 0.30, 0.06), (0.22, 0.27, 0.09)]),
                g.bsdf.inputs["Base Color"])
    g.set(roughness=0.92)
    g.bump(g.texture("ShaderNodeTexNoise", 25.0, detail=4.0).outputs[0], 0.35)


def _asphalt(g: _Graph) -> None:
    noise = g.texture("ShaderNodeTexNoise", 30.0, detail=6.0)
    g.links.new(g.ramp(noise.outputs[0], [(0.025, 0.025, 0.03), (0.07, 0.07, 0.075)]), g.bsdf.inputs["Base Color"])
    g.links.new(g.ramp(g.texture("ShaderNodeTexNoise", 0.5).outputs[0], [(0.7, 0.7, 0.7), (0.95, 0.95, 0.95)]),
                g.bsdf.inputs["Roughness"])
    g.bump(noise.outputs[0], 0.15)


def _walls(g: _Graph) -> None:
    brick = g.texture("ShaderNodeTexBrick", 2.0, color1=(0.38, 0.33, 0.27, 1.0), color2=(0.45, 0.4, 0.33, 1.0),
                      mortar=(0.5, 0.49, 0.46, 1.0), mortar_size=0.015)
    g.links.new(brick.outputs["Color"], g.bsdf.inputs["Base Color"])
    g.set(roughness=0.85)
    g.bump(brick.outputs[1], 0.25)


def _roof(g: _Graph) -> None:
    tiles = g.texture("ShaderNodeTexBrick", 3.5, color1=(0.42, 0.11, 0.05, 1.0), color2=(0.33, 0.08, 0.04, 1.0),
                      mortar=(0.12, 0.04, 0.03, 1.0), mortar_size=0.03, row_height=0.35)
    g.links.new(tiles.outputs["Color"], g.bsdf.inputs["Base Color"])
    g.set(roughness=0.6)
    g.bump(tiles.outputs[1], 0.45)


def _leaves(g: _Graph, scale: float, colors) -> None:
    cells = g.texture("ShaderNodeTexVoronoi", scale)
    g.links.new(g.ramp(cells.outputs["Distance"], colors), g.bsdf.inputs["Base Color"])
    g.set(roughness=0.7, subsurface_weight=0.15)
    g.bump(cells.outputs["Distance"], 0.6)


def _foliage(g: _Graph) -> None:
    _leaves(g, 4.0, [(0.09, 0.26, 0.04), (0.02, 0.09, 0.015)])


def _bushes(g: _Graph) -> None:
    _leaves(g, 7.0, [(0.2, 0.33, 0.07), (0.05, 0.14, 0.03)])


def _paint(g: _Graph) -> None:
    g.set(base_color=(0.03, 0.1, 0.42, 1.0), metallic=0.6, roughness=0.3, coat_weight=1.0, coat_roughness=0.03)


def _metal(g: _Graph) -> None:
    g.set(base_color=(0.56, 0.57, 0.58, 1.0), metallic=1.0)
    g.links.new(g.ramp(g.texture("ShaderNodeTexNoise", 8.0).outputs[0], [(0.25, 0.25, 0.25), (0.5, 0.5, 0.5)]),
                g.bsdf.inputs["Roughness"])


def _water(g: _Graph) -> None:
    g.set(base_color=(0.55, 0.75, 0.8, 1.0), roughness=0.03, ior=1.333, transmission_weight=1.0)
    g.bump(g.texture("ShaderNodeTexNoise", 1.5, detail=3.0).outputs[0], 0.2, distance=0.1)


RECIPES = {"grass": _grass, "asphalt": _asphalt, "walls": _walls, "roof": _roof, "foliage": _foliage,
           "bushes": _bushes, "paint": _paint, "metal": _metal, "water": _water}
TITLES = {"grass": "Grass", "asphalt": "Asphalt", "walls": "Walls", "roof": "Roof Tiles", "foliage": "Foliage",
          "bushes": "Bushes", "paint": "Vehicle Paint", "metal": "Pole Metal", "water": "Water"}


def recipe_of(class_name: str) -> str | None:
    return ALIASES.get(class_name.lower())


def class_material(class_name: str) -> bpy.types.Material:
    """The render material of a class ("XCube Grass", ...); a plain coloured one for unknown classes."""
    recipe = recipe_of(class_name)
    name = f"XCube {TITLES[recipe]}" if recipe else f"XCube Class {class_name}"
    material = bpy.data.materials.get(name)
    if material is not None:
        return material
    material = bpy.data.materials.new(name)
    graph = _Graph(material)
    if recipe:
        RECIPES[recipe](graph)
    else:
        graph.set(base_color=importers.class_color(class_name), roughness=0.7)
    material.diffuse_color = importers.class_color(class_name)  # the viewport's solid-mode colour
    if recipe == "water" and hasattr(material, "use_raytrace_refraction"):  # EEVEE refraction
        material.use_raytrace_refraction = True
    material["xcube_class"] = class_name
    return material


def volume_class_material(class_names: tuple[str, ...]) -> bpy.types.Material:
    """Principled Volume shaded per class from the ``semantics`` grid: each class its colour (varied by a
    noise) and its relative density (thin canopy and water)."""
    key = hashlib.sha1("|".join(class_names).encode()).hexdigest()[:8]
    name = f"XCube Volume Materials {key}"
    material = bpy.data.materials.get(name)
    if material is not None:
        return material
    material = importers.volume_material(class_names).copy()  # density and the per-class colour ramp
    material.name = name
    nodes, links = material.node_tree.nodes, material.node_tree.links
    volume = nodes["Principled Volume"]
    ramp = next(n for n in nodes if n.bl_idname == "ShaderNodeValToRGB")
    to_fac = next(n for n in nodes if n.bl_idname == "ShaderNodeMapRange")
    # Density per class: a second constant ramp (grey level = relative density) times the grid's density.
    weights = nodes.new("ShaderNodeValToRGB")
    weights.color_ramp.interpolation = "CONSTANT"
    count = max(1, len(class_names))
    while len(weights.color_ramp.elements) < count:
        weights.color_ramp.elements.new(0.0)
    for i, element in enumerate(list(weights.color_ramp.elements)[:count]):
        element.position = i / count
        w = VOLUME_DENSITY.get(class_names[i].lower(), 1.0) if class_names else 1.0
        element.color = (w, w, w, 1.0)
    links.new(to_fac.outputs["Result"], weights.inputs[0])
    scale = volume.inputs["Density"].links[0].from_node
    product = nodes.new("ShaderNodeMath")
    product.operation = "MULTIPLY"
    links.new(scale.outputs[0], product.inputs[0])
    links.new(weights.outputs["Color"], product.inputs[1])
    links.new(product.outputs[0], volume.inputs["Density"])
    # Colour variation: the class colour times a 0.75..1.15 noise in world metres.
    coords = nodes.new("ShaderNodeTexCoord")
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 0.6
    links.new(coords.outputs["Object"], noise.inputs["Vector"])
    vary = nodes.new("ShaderNodeMapRange")
    vary.inputs["To Min"].default_value, vary.inputs["To Max"].default_value = 0.75, 1.15
    links.new(noise.outputs[0], vary.inputs["Value"])
    tint = nodes.new("ShaderNodeVectorMath")
    tint.operation = "SCALE"
    links.new(ramp.outputs["Color"], tint.inputs[0])
    links.new(vary.outputs["Result"], tint.inputs["Scale"])
    links.new(tint.outputs[0], volume.inputs["Color"])
    volume.inputs["Anisotropy"].default_value = 0.3  # forward scattering, as in foliage and haze
    return material


# -- assigning -------------------------------------------------------------------------------------------

def face_classes(mesh: bpy.types.Mesh):
    """The class id of every face (``xcube_class``), as an int32 array; None without the attribute."""
    import numpy as np

    attr = mesh.attributes.get(CLASS_ATTRIBUTE)
    if attr is None:
        return None
    out = np.empty(len(mesh.polygons), dtype=np.int32)
    attr.data.foreach_get("value", out)
    return out


def set_face_classes(obj: bpy.types.Object, face_classes, class_names: tuple[str, ...]) -> list[str]:
    """Stores the class per face (``xcube_class``), one material slot per class present, and each face's
    slot index; returns the class names of the slots (ascending class id)."""
    import numpy as np

    mesh = obj.data
    classes = np.asarray(face_classes, dtype=np.int32)
    attr = mesh.attributes.get(CLASS_ATTRIBUTE) or mesh.attributes.new(CLASS_ATTRIBUTE, "INT", "FACE")
    attr.data.foreach_set("value", classes)
    present = np.unique(classes)
    slot_of = np.zeros(int(present.max()) + 1 if len(present) else 1, dtype=np.int32)
    slot_of[present] = np.arange(len(present), dtype=np.int32)
    names = [class_names[c] if 0 <= c < len(class_names) else f"class {c}" for c in present.tolist()]
    mesh.materials.clear()  # (resets the faces' material indices: set them after)
    for _ in names:
        mesh.materials.append(None)
    mesh.polygons.foreach_set("material_index", slot_of[classes])
    obj[SLOTS_KEY] = names
    mesh.update()
    return names


def restyle(obj: bpy.types.Object, mode: str) -> None:
    """Gives a generated object the materials of ``mode`` ("MATERIALS" or "COLORS")."""
    if obj.type == "VOLUME" and NAMES_KEY in obj:
        names = tuple(obj[NAMES_KEY])
        material = volume_class_material(names) if mode == "MATERIALS" else importers.volume_material(names)
        _set_slot(obj.data.materials, 0, material)
    elif obj.type == "MESH" and SLOTS_KEY in obj:
        for i, name in enumerate(obj[SLOTS_KEY]):
            # Class colours: the server's vertex colours, which are the class colours.
            _set_slot(obj.data.materials, i,
                      class_material(name) if mode == "MATERIALS" else importers.vertex_color_material())
    elif obj.type == "MESH" and NAMES_KEY in obj and "XCube Classes" in obj.modifiers:
        obj.modifiers["XCube Classes"].node_group = class_nodes(tuple(obj[NAMES_KEY]), mode)


def _set_slot(materials, index: int, material) -> None:
    while len(materials) <= index:
        materials.append(None)
    materials[index] = material


def apply_to_all(mode: str) -> int:
    """Restyles every generated object in the file; returns how many."""
    count = 0
    for obj in bpy.data.objects:
        if obj.get("xcube_level") is not None and (NAMES_KEY in obj or SLOTS_KEY in obj):
            restyle(obj, mode)
            count += 1
    return count


# -- Volume to Mesh surfaces: the class from the volume's `semantics` grid, in geometry nodes ----------

def color_material(class_name: str) -> bpy.types.Material:
    """Class-colours mode where there are no vertex colours: one flat material per class."""
    name = f"XCube Colour {class_name}"
    material = bpy.data.materials.get(name)
    if material is None:
        material = bpy.data.materials.new(name)
        _Graph(material).set(base_color=importers.class_color(class_name), roughness=0.8)
        material.diffuse_color = importers.class_color(class_name)
    return material


def class_nodes(class_names: tuple[str, ...], mode: str) -> bpy.types.NodeTree:
    """A geometry node group for a Volume to Mesh surface: every face samples the ``semantics`` grid of
    the volume (input "Volume") half a voxel inside (input "Inset", metres), stores the class as the
    ``xcube_class`` face attribute and gets its class's material (``mode``: MATERIALS or COLORS)."""
    key = hashlib.sha1("|".join(class_names).encode()).hexdigest()[:8]
    name = f"XCube Classes {mode.title()} {key}"
    group = bpy.data.node_groups.get(name)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    for socket, kind, io in (("Geometry", "NodeSocketGeometry", "INPUT"), ("Volume", "NodeSocketObject", "INPUT"),
                             ("Inset", "NodeSocketFloat", "INPUT"), ("Geometry", "NodeSocketGeometry", "OUTPUT")):
        group.interface.new_socket(socket, in_out=io, socket_type=kind)
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    info = nodes.new("GeometryNodeObjectInfo")
    links.new(gin.outputs["Volume"], info.inputs["Object"])
    grid = nodes.new("GeometryNodeGetNamedGrid")
    grid.data_type = "FLOAT"
    grid.inputs["Name"].default_value = "semantics"
    links.new(info.outputs["Geometry"], grid.inputs["Volume"])
    inward = nodes.new("ShaderNodeVectorMath")  # position - normal * inset
    inward.operation = "MULTIPLY_ADD"
    links.new(nodes.new("GeometryNodeInputNormal").outputs[0], inward.inputs[0])
    negate = nodes.new("ShaderNodeMath")
    negate.operation = "MULTIPLY"
    negate.inputs[1].default_value = -1.0
    links.new(gin.outputs["Inset"], negate.inputs[0])
    links.new(negate.outputs[0], inward.inputs[1])
    links.new(nodes.new("GeometryNodeInputPosition").outputs[0], inward.inputs[2])
    sample = nodes.new("GeometryNodeSampleGrid")
    sample.data_type = "FLOAT"
    sample.inputs["Interpolation"].default_value = "Nearest Neighbor"
    links.new(grid.outputs["Grid"], sample.inputs["Grid"])
    links.new(inward.outputs[0], sample.inputs["Position"])
    store = nodes.new("GeometryNodeStoreNamedAttribute")
    store.data_type, store.domain = "INT", "FACE"
    store.inputs["Name"].default_value = CLASS_ATTRIBUTE
    links.new(gin.outputs["Geometry"], store.inputs["Geometry"])
    links.new(sample.outputs[0], store.inputs["Value"])
    geometry = store.outputs["Geometry"]
    for class_id, class_name in enumerate(class_names):
        geometry = _set_class_material(nodes, links, geometry, class_id, class_name, mode)
    links.new(geometry, gout.inputs["Geometry"])
    return group


def _set_class_material(nodes, links, geometry, class_id: int, class_name: str, mode: str):
    read = nodes.new("GeometryNodeInputNamedAttribute")
    read.data_type = "INT"
    read.inputs["Name"].default_value = CLASS_ATTRIBUTE
    equal = nodes.new("FunctionNodeCompare")
    equal.data_type, equal.operation = "INT", "EQUAL"
    links.new(read.outputs["Attribute"], equal.inputs[2])
    equal.inputs[3].default_value = class_id
    setter = nodes.new("GeometryNodeSetMaterial")
    setter.inputs["Material"].default_value = class_material(class_name) if mode == "MATERIALS" \
        else color_material(class_name)
    links.new(geometry, setter.inputs["Geometry"])
    links.new(equal.outputs["Result"], setter.inputs["Selection"])
    return setter.outputs["Geometry"]


def add_class_nodes(mesh_obj, volume_obj, class_names: tuple[str, ...], voxel_size: float, mode: str) -> None:
    """Adds the class node group after the Volume to Mesh modifier (``restyle`` swaps its group)."""
    modifier = mesh_obj.modifiers.new("XCube Classes", "NODES")
    modifier.node_group = class_nodes(tuple(class_names), mode)
    for item in modifier.node_group.interface.items_tree:
        if getattr(item, "in_out", "") == "INPUT" and item.name in {"Volume", "Inset"}:
            modifier[item.identifier] = volume_obj if item.name == "Volume" else 0.5 * float(voxel_size)
    mesh_obj[NAMES_KEY] = list(class_names)
