"""The sidebar panel: 3D Viewport > Sidebar (N) > XCube."""

from __future__ import annotations

import bpy

from . import history, local_server, local_server_ops, preferences

_STATUS_ICONS = {"ERROR": "ERROR", "CANCELLED": "CANCEL", "DONE": "CHECKMARK"}


class XCUBE_PT_main(bpy.types.Panel):
    bl_idname = "XCUBE_PT_main"
    bl_label = "XCube Scene"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "XCube"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.xcube
        busy = settings.busy

        col = layout.column()
        col.enabled = not busy
        col.prop(settings, "prompt", text="")
        row = col.row(align=True)
        row.prop(settings, "seed")
        row.operator("xcube.randomize_seed", text="", icon="FILE_REFRESH")
        col.prop(settings, "levels")
        col.prop(settings, "steps")
        col.prop(settings, "guidance")
        col.row().prop(settings, "output", expand=True)
        col.row().prop(settings, "shading", expand=True)

        if busy:
            levels = f"/{settings.num_levels}" if settings.num_levels else ""
            text = (f"Level {settings.level + 1}{levels}  step {settings.step}/{settings.total_steps}"
                    if settings.status == "RUNNING" else settings.status.title())
            if hasattr(layout, "progress"):  # Blender 4.0+
                layout.progress(factor=settings.progress, type="BAR", text=text)
            else:
                layout.prop(settings, "progress", text=text, slider=True)
            layout.operator("xcube.cancel", icon="CANCEL")
        else:
            row = layout.row()
            row.scale_y = 1.5
            row.operator("xcube.generate", icon="PLAY")

        if settings.message:  # right under the button, where the user looks
            box = layout.box()
            icon = _STATUS_ICONS.get(settings.status, "INFO")
            for i, line in enumerate(_wrap(settings.message, 42)):
                box.label(text=line, icon=icon if i == 0 else "BLANK1")

        if not busy:
            box = layout.box()
            box.label(text="Layout to scene", icon="MESH_CUBE")
            box.prop(settings, "keep_layout_classes")
            box.operator("xcube.refine_selection", icon="MOD_REMESH")
            box = layout.box()
            box.label(text="Edit the scene", icon="MOD_BUILD")
            row = box.row(align=True)
            for side in ("+X", "-X", "+Y", "-Y"):
                row.operator("xcube.extend_scene", text=side).side = side
            box.operator("xcube.regenerate_region", icon="SELECT_SET")

        prefs = preferences.get_preferences(context)
        local = local_server.snapshot()
        if local.state != local_server.STOPPED:  # started here: its state, and what to do when it failed
            local_server_ops.draw_status(layout, local)
        if prefs is not None and not local.running:
            row = layout.row()
            row.label(text=f"Server: {prefs.address}", icon="URL")
            if error := preferences.address_error(prefs.address):
                layout.label(text=error, icon="ERROR")
        history.draw(layout, context)


def _wrap(text: str, width: int) -> list[str]:
    """Splits a message into lines of at most ``width`` characters at spaces."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines
