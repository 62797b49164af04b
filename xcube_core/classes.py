"""Semantic classes of the procedural outdoor scenes and their display colours.

Index 0 is the ground. The class id is what the ``semantics`` VDB grid stores (as a float).
"""

CLASS_NAMES: tuple[str, ...] = (
    "ground",
    "road",
    "building",
    "roof",
    "tree",
    "bush",
    "vehicle",
    "pole",
    "water",
)

# sRGB 0..255, chosen to read well in previews and in Blender's viewport.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (132, 168, 96),   # ground: grass green
    (70, 70, 76),     # road: asphalt
    (196, 184, 168),  # building: concrete
    (168, 84, 64),    # roof: terracotta
    (46, 122, 52),    # tree: foliage
    (96, 150, 70),    # bush
    (40, 90, 180),    # vehicle: blue paint
    (150, 150, 150),  # pole: steel
    (60, 130, 200),   # water
)

NUM_CLASSES = len(CLASS_NAMES)
