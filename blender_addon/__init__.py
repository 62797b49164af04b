"""XCube Scene Generator: generate 3D scenes from text on a local XCube server, inside Blender.

3D Viewport > Sidebar (N) > XCube. The add-on speaks only the ``xcube.v1`` gRPC API through the
vendored ``xcube_client``; the network runs on worker threads and every change to Blender data goes
through one main-thread queue (see ``jobs``).
"""

import bpy

from . import handlers, history, jobs, local_server_ops, operators, ops_extend, panel, preferences, properties

classes = (
    preferences.XCUBE_AP_preferences,
    history.XCUBE_PG_history_item,
    properties.XCUBE_PG_settings,
    operators.XCUBE_OT_generate,
    operators.XCUBE_OT_refine_selection,
    ops_extend.XCUBE_OT_extend_scene,
    ops_extend.XCUBE_OT_regenerate_region,
    operators.XCUBE_OT_cancel,
    operators.XCUBE_OT_randomize_seed,
    operators.XCUBE_OT_test_connection,
    local_server_ops.XCUBE_OT_server_start,
    local_server_ops.XCUBE_OT_server_stop,
    local_server_ops.XCUBE_OT_server_detect_python,
    history.XCUBE_UL_history,
    history.XCUBE_OT_history_select,
    history.XCUBE_OT_history_copy,
    history.XCUBE_OT_history_rerun,
    panel.XCUBE_PT_main,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.xcube = bpy.props.PointerProperty(type=properties.XCUBE_PG_settings)
    bpy.app.handlers.load_post.append(handlers.on_load_post)
    bpy.app.handlers.load_post.append(history.on_load_post)
    jobs.install_handler(handlers.handle, handlers.handle_internal_error)


def unregister():
    local_server_ops.unregister()  # stops the local server this Blender started, if any
    jobs.cancel_all()
    for handler in (handlers.on_load_post, history.on_load_post):
        if handler in bpy.app.handlers.load_post:
            bpy.app.handlers.load_post.remove(handler)
    jobs.stop_timer()
    jobs.install_handler(None)
    handlers.set_status_bar(None)
    del bpy.types.Scene.xcube
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
