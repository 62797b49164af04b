"""Real Blender (bpy 5.0.1, headless) with the add-on installed from the zip `xcube addon build` writes,
talking to a real in-process XCube gRPC server on a free loopback port.

The add-on is installed through Blender's own extension installer into a temporary repository, so the
tests exercise the same code path as a user's "Install from Disk".
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import threading
import time

import pytest

from tests.deps import require

bpy = require("bpy")

if str(pathlib.Path(__file__).parent) not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, str(pathlib.Path(__file__).parent))

from addon_support import ADDON_MODULE, REPO_MODULE, ScenePipeline, make_server  # noqa: E402


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory):
    from xcube_core.cli.addon import build_addon

    return build_addon(tmp_path_factory.mktemp("addon_build"), wheels=False)


@pytest.fixture(scope="session")
def addon(addon_zip, tmp_path_factory):
    """The add-on installed and enabled through Blender's extension installer; yields its package."""
    repo_dir = tmp_path_factory.mktemp("extensions")
    prefs = bpy.context.preferences
    repo = prefs.extensions.repos.new(name=REPO_MODULE, module=REPO_MODULE, custom_directory=str(repo_dir),
                                      source="USER")
    result = bpy.ops.extensions.package_install_files(filepath=str(addon_zip), repo=REPO_MODULE,
                                                      enable_on_install=True)
    assert result == {"FINISHED"}
    module = importlib.import_module(ADDON_MODULE)
    addon_prefs = prefs.addons[ADDON_MODULE].preferences
    addon_prefs.output_dir = str(tmp_path_factory.mktemp("levels"))
    addon_prefs.connect_timeout = 5.0
    yield module
    import addon_utils

    addon_utils.disable(ADDON_MODULE)
    prefs.extensions.repos.remove(repo)  # prints "not enabled": the add-on was already disabled above


@pytest.fixture(scope="session")
def pipeline():
    return ScenePipeline()


@pytest.fixture(scope="session")
def server(pipeline):
    srv, port = make_server(pipeline)
    yield srv
    srv.stop(grace=0)


@pytest.fixture
def settings(addon, server, pipeline):
    """A fresh scene's ``Scene.xcube``, with the add-on pointed at the test server."""
    bpy.ops.wm.read_homefile(use_empty=True)
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.address = server.address
    pipeline.step_delay = 0.0
    settings = bpy.context.scene.xcube
    settings.prompt = "a small town with houses and a road"
    settings.seed = 7
    settings.steps = 2
    settings.levels = 0
    yield settings
    addon.jobs.cancel_all()


def _wait_until(predicate, timeout: float = 30.0, drain=None) -> bool:
    """Pumps the add-on's queue until ``predicate()`` holds (timers never fire in background mode)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if drain is not None:
            drain()
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _occupy(address: str, prompt: str = "keep the server busy") -> threading.Thread:
    """Starts a generation from a plain client in a thread (to fill the server's queue)."""
    from xcube_client.client import XCubeClient

    def run():
        try:
            with XCubeClient(address) as client:
                for _ in client.generate(prompt, steps=50):
                    pass
        except Exception:  # noqa: BLE001 - cancelled at the end of the test
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def wait_until():
    return _wait_until


@pytest.fixture
def occupy():
    return _occupy


@pytest.fixture
def server_factory():
    """Starts extra servers (own pipeline) and stops them at the end of the test."""
    servers = []

    def start(pipeline=None, **kwargs):
        srv, _ = make_server(pipeline or ScenePipeline(), **kwargs)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop(grace=0)
