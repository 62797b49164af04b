"""The panel and preferences draw code, checked against Blender's own RNA (no window in background mode).

A recording layout stands in for ``UILayout``; it checks every property name against the data's
``bl_rna``, every operator against ``bpy.ops`` and every icon against Blender's icon enum, which is
exactly what Blender would reject when drawing.
"""

from __future__ import annotations

import types

import pytest

from tests.deps import require

bpy = require("bpy")

from addon_support import ADDON_MODULE  # noqa: E402

ICONS = {item.identifier for item in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items}


class OperatorProperties:
    """What ``layout.operator`` returns: only the operator's own properties may be set."""

    def __init__(self, rna, log, idname) -> None:
        object.__setattr__(self, "_rna", rna)
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_idname", idname)

    def __setattr__(self, name, value):
        assert name in self._rna.properties, f"{self._idname} has no property {name!r}"
        self._log.append(("operator_property", self._rna.identifier, name, value))


class RecordingLayout:
    def __init__(self, log: list) -> None:
        self.log = log
        self.enabled = True
        self.scale_y = 1.0

    def _child(self, *args, **kwargs):
        return RecordingLayout(self.log)

    column = row = box = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        category, _, op = idname.partition(".")
        assert hasattr(getattr(bpy.ops, category), op), f"no operator {idname}"
        self._icon(kwargs.get("icon"))
        self.log.append(("operator", idname))
        return OperatorProperties(getattr(getattr(bpy.ops, category), op).get_rna_type(), self.log, idname)

    def label(self, text="", icon="NONE"):
        self._icon(icon)
        self.log.append(("label", text, icon))

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **kwargs):
        assert hasattr(bpy.types, list_type), f"no UIList {list_type}"
        assert prop in data.bl_rna.properties and active_prop in active_data.bl_rna.properties
        self.log.append(("list", list_type, prop))

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.log.append(("progress", factor, text))

    @staticmethod
    def _icon(icon):
        assert icon is None or icon in ICONS, f"unknown icon {icon!r}"


def _draw_panel() -> list:
    log: list = []
    bpy.types.XCUBE_PT_main.draw(types.SimpleNamespace(layout=RecordingLayout(log)), bpy.context)
    return log


def test_panel_idle_offers_every_setting_and_generate(addon, settings):
    settings.status, settings.message = "IDLE", ""
    log = _draw_panel()
    props = {entry[1] for entry in log if entry[0] == "prop"}
    assert {"prompt", "seed", "levels", "steps", "guidance", "output"} <= props
    ops = [entry[1] for entry in log if entry[0] == "operator"]
    assert ops == ["xcube.randomize_seed", "xcube.generate", "xcube.refine_selection"] + \
        ["xcube.extend_scene"] * 4 + ["xcube.regenerate_region"]
    sides = [entry[3] for entry in log if entry[0] == "operator_property"]
    assert sides == ["+X", "-X", "+Y", "-Y"]


def test_panel_running_shows_level_step_progress_and_cancel(addon, settings):
    settings.status, settings.level, settings.num_levels = "RUNNING", 1, 3
    settings.step, settings.total_steps, settings.progress = 5, 10, 0.5
    settings.message = "Level 2/3, step 5/10"
    log = _draw_panel()
    progress = [entry for entry in log if entry[0] == "progress"]
    assert progress == [("progress", 0.5, "Level 2/3  step 5/10")]
    assert ("operator", "xcube.cancel") in log and ("operator", "xcube.generate") not in log


def test_panel_error_message_is_shown_with_what_to_do(addon, settings):
    settings.status = "ERROR"
    settings.message = "Server not reachable at 127.0.0.1:1. Start the server (`python -m server --cpu`) and retry"
    log = _draw_panel()
    labels = [entry for entry in log if entry[0] == "label"]
    assert labels[0][2] == "ERROR"
    shown = " ".join(entry[1] for entry in labels)
    assert "python -m server --cpu" in shown and all(len(entry[1]) <= 60 for entry in labels)


def test_preferences_draw_flags_a_pasted_url(addon, settings):
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.address = "https://gpu-box:50051/"
    prefs.connection_status = "Connected to gpu-box:50051: SERVING\nServer 0.1.0"
    log: list = []

    class Proxy:  # the real preferences, drawn into the recording layout
        layout = RecordingLayout(log)

        def __getattr__(self, name):
            return getattr(prefs, name)

    type(prefs).draw(Proxy(), bpy.context)
    errors = [entry for entry in log if entry[0] == "label" and entry[2] == "ERROR"]
    assert errors and "enter 'gpu-box:50051'" in errors[0][1]
    assert ("operator", "xcube.test_connection") in log
    assert ("label", "Server 0.1.0", "NONE") in log
