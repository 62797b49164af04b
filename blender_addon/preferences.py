"""Add-on preferences: where the XCube server is, its token, timeouts and the output folder.

``parse_address`` is plain Python (no bpy) so the worker thread and the tests can use it too.
"""

from __future__ import annotations

import re

import bpy

DEFAULT_ADDRESS = "127.0.0.1:50051"

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-\.]*[A-Za-z0-9])?$")


def parse_address(text: str) -> str:
    """Validates a gRPC server address and returns it normalised as ``host:port``.

    Args:
        text: what the user typed, e.g. ``"127.0.0.1:50051"``, ``"gpu-box:50051"`` or
            ``"[::1]:50051"``.

    Returns:
        ``host:port`` with surrounding whitespace removed.

    Raises:
        ValueError: the text is not ``host:port``; the message says what to type instead (a pasted
            URL such as ``http://host:50051/`` gets the bare ``host:50051`` suggested).
    """
    value = (text or "").strip()
    if not value:
        raise ValueError(f"The server address is empty: enter host:port, e.g. {DEFAULT_ADDRESS}")
    if "://" in value or value.endswith("/"):
        bare = value.split("://", 1)[-1].split("/", 1)[0]
        raise ValueError(
            f"'{value}' looks like a URL; gRPC needs only host:port without a scheme or path: "
            f"enter '{bare or DEFAULT_ADDRESS}'"
        )
    if any(c.isspace() for c in value):
        raise ValueError(f"The server address '{value}' contains spaces: enter host:port, e.g. {DEFAULT_ADDRESS}")
    if value.startswith("["):  # IPv6 literal: [::1]:50051
        host, sep, port = value[1:].partition("]:")
        if not sep or not host:
            raise ValueError(f"'{value}' is not [ipv6]:port; enter e.g. [::1]:50051")
        host_out = f"[{host}]"
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f"'{value}' has no port: enter host:port, e.g. {value}:50051")
        if not host or not _HOST_RE.match(host):
            raise ValueError(f"'{host}' is not a host name or IPv4 address; enter host:port, e.g. {DEFAULT_ADDRESS}")
        host_out = host
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"The port '{port}' must be a number from 1 to 65535, e.g. {host_out}:50051")
    return f"{host_out}:{int(port)}"


def address_error(text: str) -> str:
    """The message of ``parse_address``'s error, or "" when the address is valid."""
    try:
        parse_address(text)
    except ValueError as exc:
        return str(exc)
    return ""


LOCAL_DEVICE_ITEMS = (
    ("CPU", "CPU", "Run the local server on the processor (slow, works everywhere)"),
    ("GPU", "GPU", "Run the local server on an NVIDIA GPU (CUDA)"),
)


def get_preferences(context=None):
    """This add-on's preferences, or None when the add-on is loaded without being enabled."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


class XCUBE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    address: bpy.props.StringProperty(
        name="Server Address",
        description="host:port of the XCube server (start it with `python -m server --cpu` or `--gpu 0`)",
        default=DEFAULT_ADDRESS,
    )
    token: bpy.props.StringProperty(
        name="Token",
        description="Access token, needed only when the server was started with --token",
        subtype="PASSWORD",
        default="",
    )
    connect_timeout: bpy.props.FloatProperty(
        name="Connect Timeout",
        description="Seconds to wait for the server to answer before giving up",
        default=5.0, min=0.5, max=120.0, unit="TIME_ABSOLUTE",
    )
    request_timeout: bpy.props.FloatProperty(
        name="Generate Timeout",
        description="Seconds a whole generation may take before it is stopped (0 = no limit)",
        default=0.0, min=0.0, max=24 * 3600.0, unit="TIME_ABSOLUTE",
    )
    output_dir: bpy.props.StringProperty(
        name="Output Folder",
        description="Where generated .vdb files are written (empty = the extension's user folder)",
        subtype="DIR_PATH",
        default="",
    )
    connection_status: bpy.props.StringProperty(
        name="Connection", description="Result of the last Test Connection", default="",
    )
    # The local server (see local_server_ops): a `python -m server` this Blender starts and stops.
    local_python: bpy.props.StringProperty(
        name="Python", subtype="FILE_PATH", default="",
        description="The python of the environment where XCube is installed, e.g. <project>/.venv/bin/python "
                    "(the magnifier looks for one)",
    )
    local_device: bpy.props.EnumProperty(name="Device", items=LOCAL_DEVICE_ITEMS, default="CPU")
    local_gpu: bpy.props.IntProperty(name="GPU", description="CUDA device index", default=0, min=0, max=63)
    local_port: bpy.props.IntProperty(
        name="Port", description="Port on 127.0.0.1 (0 = any free port)", default=0, min=0, max=65535,
    )
    local_model: bpy.props.StringProperty(
        name="Model Folder", subtype="DIR_PATH", default="",
        description="Model folder to serve (empty = the model shipped with XCube)",
    )
    local_tiny: bpy.props.BoolProperty(
        name="Tiny Test Model", default=False,
        description="Serve a random-weight tiny model: starts in a second, meaningless scenes (to check the setup)",
    )
    local_autostart: bpy.props.BoolProperty(
        name="Start on Generate", default=False,
        description="Generate starts the local server when it is not running and waits until it is ready",
    )

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "address")
        if error := address_error(self.address):
            col.label(text=error, icon="ERROR")
        col.prop(self, "token")
        row = col.row(align=True)
        row.prop(self, "connect_timeout")
        row.prop(self, "request_timeout")
        col.prop(self, "output_dir")
        row = layout.row()
        row.operator("xcube.test_connection", icon="LINKED")
        for line in self.connection_status.split("\n"):
            if line:
                layout.label(text=line)
        from . import local_server_ops

        local_server_ops.draw_preferences(self, layout)
