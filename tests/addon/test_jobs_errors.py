"""The add-on's job queue knows nothing of networking or UI, and failures are described by type."""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.deps import require

bpy = require("bpy")

ADDON_DIR = pathlib.Path(__file__).resolve().parents[2] / "blender_addon"


def test_the_job_queue_imports_neither_network_nor_ui_modules():
    tree = ast.parse((ADDON_DIR / "jobs.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level
                for alias in node.names}
    assert not imported & {"net", "handlers", "operators", "panel"}, imported


def test_a_job_reports_what_its_describer_says(addon):
    jobs = addon.jobs
    seen = []

    def run(config, job):
        yield jobs.Event(job.id, "status", {"status": "CONNECTING"})
        raise KeyError("boom")

    def describe(exc, config, levels):
        seen.append((type(exc), config.kind, levels))
        return "CUSTOM", f"described {exc!r}"

    job = jobs.Job(jobs.JobConfig(kind="info", address="127.0.0.1:1"), run, describe)
    job.thread.start()
    assert job.finished.wait(10)
    events = []
    while not jobs._EVENTS.empty():
        events.append(jobs._EVENTS.get_nowait())
    assert seen == [(KeyError, "info", 0)]
    errors = [e for e in events if e.kind == "error"]
    assert errors and errors[0].data["code"] == "CUSTOM" and "boom" in errors[0].data["message"]
    assert events[-1].kind == "done"


@pytest.fixture
def net(addon):
    addon.net.client_module()  # loads the vendored client's errors, as a job does
    return addon.net


def test_errors_are_mapped_by_type_not_by_message_text(net, addon):
    cfg = addon.jobs.JobConfig(kind="generate", address="127.0.0.1:1")
    # Before: any ValueError was "LAYOUT: adjust the selected meshes", or "ADDRESS" if its text said so.
    assert net.describe_error(ValueError("weights out of range"), cfg)[0] == "INTERNAL"
    assert net.describe_error(ValueError("bad address of a buffer"), cfg)[0] == "INTERNAL"
    code, message = net.describe_error(net.LayoutError("the layout has 900 coarse voxels"), cfg)
    assert code == "LAYOUT" and message.startswith("The layout has 900") and "selected meshes" in message
    client = net.client_module()
    with pytest.raises(ValueError) as info:
        client.parse_address("http://localhost:50051/")
    code, message = net.describe_error(info.value, cfg)
    assert code == "ADDRESS" and "Invalid server address" in message and "Preferences" in message


def test_without_an_installed_handler_draining_says_so(addon):
    jobs = addon.jobs
    handler = jobs._HANDLER
    jobs.install_handler(None)
    try:
        with pytest.raises(RuntimeError, match="register the add-on"):
            jobs.drain_events()
    finally:
        jobs.install_handler(*handler)
