"""``Scene.xcube``: the generation settings and the state of the running job, shown in the panel."""

from __future__ import annotations

import bpy

from .history import XCUBE_PG_history_item

OUTPUT_ITEMS = (
    ("VOLUME", "Volume", "Each level becomes a Volume object (density and semantic colours)"),
    ("MESH", "Mesh", "Each level becomes a Mesh (the volume's surface at density 0.5)"),
    ("BOTH", "Both", "Each level becomes a Volume and a Mesh"),
)

STATUS_ITEMS = (
    ("IDLE", "Idle", "Nothing is running"),
    ("CONNECTING", "Connecting", "Connecting to the server"),
    ("QUEUED", "Queued", "Waiting in the server's queue"),
    ("RUNNING", "Running", "The server is generating"),
    ("DONE", "Done", "All levels arrived"),
    ("CANCELLED", "Cancelled", "Stopped by the user"),
    ("ERROR", "Error", "Something went wrong; see the message"),
)

SHADING_ITEMS = (
    ("MATERIALS", "Materials", "Render-ready procedural materials per class (grass, asphalt, walls, roof tiles, "
                               "foliage, paint, metal, water)"),
    ("COLORS", "Class Colours", "One flat colour per class (fast to read in the viewport)"),
)


def _shading_update(self, context):
    from . import materials

    materials.apply_to_all(self.shading)


BUSY_STATES = {"CONNECTING", "QUEUED", "RUNNING"}


class XCUBE_PG_settings(bpy.types.PropertyGroup):
    # What to generate.
    prompt: bpy.props.StringProperty(
        name="Prompt", description="Describe the scene, e.g. 'a quiet street with trees and parked cars'",
        default="a small town with houses, trees and a road",
    )
    seed: bpy.props.IntProperty(
        name="Seed", description="Same seed and settings give the same scene", default=0, min=0,
    )
    levels: bpy.props.IntProperty(
        name="Levels", description="How many levels to generate, coarse to fine (0 = all the model has)",
        default=0, min=0, max=16,
    )
    steps: bpy.props.IntProperty(
        name="Steps", description="Diffusion steps per level (0 = the server's default)",
        default=0, min=0, max=1000,
    )
    guidance: bpy.props.FloatProperty(
        name="Guidance", description="How strongly the scene follows the prompt (classifier-free guidance)",
        default=3.0, min=0.0, max=30.0,
    )
    keep_layout_classes: bpy.props.BoolProperty(
        name="Keep Layout Classes",
        description="Refine Selection keeps the class each part's name gives at every level (a part named "
                    "'Building' stays building, roof included); off lets the model relabel details",
        default=False,
    )
    output: bpy.props.EnumProperty(name="Output", items=OUTPUT_ITEMS, default="VOLUME")
    shading: bpy.props.EnumProperty(
        name="Shading", items=SHADING_ITEMS, default="MATERIALS", update=_shading_update,
        description="How generated levels are shaded; switching restyles every generated object in the file",
    )

    # State of the current/last job (written only by the main-thread queue drain).
    status: bpy.props.EnumProperty(name="Status", items=STATUS_ITEMS, default="IDLE")
    message: bpy.props.StringProperty(name="Message", default="")
    job_id: bpy.props.StringProperty(name="Job", default="")
    collection_name: bpy.props.StringProperty(name="Collection", default="")
    level: bpy.props.IntProperty(name="Level", default=0)
    num_levels: bpy.props.IntProperty(name="Levels", default=0)
    step: bpy.props.IntProperty(name="Step", default=0)
    total_steps: bpy.props.IntProperty(name="Steps", default=0)
    levels_done: bpy.props.IntProperty(name="Levels Done", default=0)
    progress: bpy.props.FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")

    # Every generation of this file (history.py), newest last.
    history: bpy.props.CollectionProperty(type=XCUBE_PG_history_item)
    history_index: bpy.props.IntProperty(name="History", default=-1)

    @property
    def busy(self) -> bool:
        return self.status in BUSY_STATES
