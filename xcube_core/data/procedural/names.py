"""Names of the procedural styles, object kinds and splits (no heavy imports, for CLI choices)."""

STYLES = ("downtown", "suburban", "park", "industrial", "rural", "parking_lot", "riverside")
OBJECT_KINDS = ("house", "tower", "tree", "car", "truck", "lamp")
SPLITS = ("train", "val", "test")
