"""`xcube addon build`: the zip is what Blender's own extension tooling accepts and installs."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap
import tomllib
import zipfile

import pytest

from tests.deps import require

from xcube_core.cli import addon as addon_cli

require("bpy")


def test_zip_layout_and_manifest_pass_blenders_validation(addon_zip):
    assert addon_cli.validate_with_blender(addon_zip) == []
    with zipfile.ZipFile(addon_zip) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert {"blender_manifest.toml", "__init__.py", "net.py", "_vendor/xcube_client/client.py",
            "_vendor/xcube_client/_proto/xcube/v1/xcube_pb2.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert manifest["type"] == "add-on" and "network" in manifest["permissions"]
    assert manifest["blender_version_min"] >= "4.2.0" and "wheels" not in manifest  # --no-wheels
    # The add-on never imports torch or xcube_core: it speaks only the proto.
    with zipfile.ZipFile(addon_zip) as zf:
        for name in (n for n in names if n.endswith(".py")):
            for node in ast.walk(ast.parse(zf.read(name))):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                           [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(m.split(".")[0] in {"torch", "xcube_core", "server"} for m in modules), name


def test_blender_rejects_what_we_must_not_ship(tmp_path, addon_zip):
    """The validator is the real one: a tagline ending in '.' and a missing wheel are refused."""
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(addon_zip) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "blender_manifest.toml":
                text = data.decode().replace('with a local XCube server"', 'with a local XCube server."')
                data = addon_cli.manifest_with_wheels(text, ["./wheels/grpcio-1.0-cp311-cp311-win_amd64.whl"]).encode()
            dst.writestr(item, data)
    errors = addon_cli.validate_with_blender(bad)
    assert any("tagline" in e for e in errors), errors
    text = (addon_cli.ADDON_DIR / "blender_manifest.toml").read_text()
    fixed = addon_cli.manifest_with_wheels(text, ["./wheels/grpcio-1.0-cp311-cp311-win_amd64.whl"])
    assert tomllib.loads(fixed)["wheels"] == ["./wheels/grpcio-1.0-cp311-cp311-win_amd64.whl"]
    assert tomllib.loads(fixed)["permissions"]["network"]  # tables after the inserted key survive


def test_cli_builds_offline_without_wheels(tmp_path):
    from xcube_core.cli import main

    assert main(["addon", "build", "--out", str(tmp_path), "--no-wheels"]) == 0
    assert (tmp_path / "xcube-0.1.0.zip").is_file()


def test_bundled_wheels_install_through_blenders_installer(tmp_path):
    """With the wheel cache filled by a previous online build, Blender installs the zip and the
    grpcio/protobuf wheels of this platform into its extension site-packages (fresh user folder)."""
    try:
        zip_path = addon_cli.build_addon(tmp_path / "out", wheels=True, offline=True)
    except addon_cli.BuildError as exc:
        pytest.skip(f"wheel cache not filled (run `xcube addon build --out DIR` once online): {exc}")
    assert addon_cli.validate_with_blender(zip_path) == []
    with zipfile.ZipFile(zip_path) as zf:
        wheels = tomllib.loads(zf.read("blender_manifest.toml").decode())["wheels"]
    for tag in ("cp311", "cp313"):
        for plat in ("manylinux", "win_amd64", "macosx"):
            assert any(tag in w and plat in w for w in wheels if "grpcio" in w), (tag, plat)
    # Install a Linux/CPython 3.11-only build (same code path, a tenth of the bytes to unpack).
    zip_path = addon_cli.build_addon(tmp_path / "linux", wheels=True, offline=True,
                                     python_versions=("3.11",), platforms=("linux-x64",))
    user = tmp_path / "user"
    script = textwrap.dedent(f"""
        import bpy, os
        repo = bpy.context.preferences.extensions.repos.new(
            name="xt", module="xt", custom_directory={str(tmp_path / 'repo')!r}, source="USER")
        assert bpy.ops.extensions.package_install_files(
            filepath={str(zip_path)!r}, repo="xt", enable_on_install=True) == {{"FINISHED"}}
        assert "bl_ext.xt.xcube" in bpy.context.preferences.addons
        site = os.path.join({str(user)!r}, "extensions", ".local", "lib", "python3.11", "site-packages")
        print("SITE", sorted(os.listdir(site)))
    """)
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    site_line = next(line for line in result.stdout.splitlines() if line.startswith("SITE"))
    assert "grpc" in site_line and "google" in site_line and "typing_extensions.py" in site_line
    assert "grpc_health" in site_line  # the client's health check uses its generated stubs


def test_the_health_stubs_are_bundled_with_grpcio(tmp_path):
    """The client imports grpc_health (grpcio-health-checking's generated stubs), so the zip vendors it."""
    versions = addon_cli.pinned_versions()
    for name, version in versions.items():
        if name != "grpcio-health-checking":
            folder = tmp_path / f"{name}-{version}" / "cp311-linux-x64"
            folder.mkdir(parents=True)
            (folder / f"{name}-{version}-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(addon_cli.BuildError, match="grpcio-health-checking"):
        addon_cli.collect_wheels(("3.11",), ("linux-x64",), tmp_path, offline=True)


def test_pinned_wheel_versions_match_the_generated_stubs():
    stub = pathlib.Path(addon_cli.CLIENT_DIR, "_proto/xcube/v1/xcube_pb2_grpc.py").read_text()
    generated = stub.split("GRPC_GENERATED_VERSION = '")[1].split("'")[0]
    assert tuple(map(int, addon_cli.pinned_versions()["grpcio"].split("."))) >= tuple(map(int, generated.split(".")))
