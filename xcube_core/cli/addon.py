"""`xcube addon build --out DIR`: write the installable Blender extension zip of the XCube add-on.

The zip holds, at its root, ``blender_manifest.toml`` (with ``wheels = [...]`` filled in), the
add-on's modules from ``blender_addon/``, the torch-free client as ``_vendor/xcube_client/`` and, in
``wheels/``, grpcio, grpcio-health-checking, protobuf and their dependencies for CPython 3.11 and 3.13 on Linux x64,
Windows x64 and macOS (arm64 and x64). Blender installs the wheels matching the user's platform and
Python when the extension is installed, so nothing is downloaded when the add-on runs.

The wheels are fetched with ``pip download --only-binary=:all: --no-deps`` at build time (the only
step that needs the package registry) and cached under ``.cache/addon-wheels``; ``--no-wheels``
builds an add-on that uses the grpcio/protobuf already importable in Blender's Python (tests, offline
builds). Versions are pinned to the installed grpcio/protobuf so the generated stubs match them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

from xcube_core.errors import DataError, XCubeError

log = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADDON_DIR = ROOT / "blender_addon"
CLIENT_DIR = ROOT / "xcube_client"
# In a checkout: the repository's ignored .cache/; in an installed package: the user's cache folder.
CACHE_DIR = (ROOT / ".cache" / "addon-wheels" if (ROOT / "pyproject.toml").is_file()
             else pathlib.Path.home() / ".cache" / "xcube" / "addon-wheels")
MANIFEST = "blender_manifest.toml"

PYTHON_VERSIONS = ("3.11", "3.13")
# Blender platform -> pip --platform tags, best first (universal2 covers both macOS machines).
PLATFORM_TAGS = {
    "linux-x64": ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64", "macosx_11_0_universal2", "macosx_10_9_universal2"),
    "macos-x64": ("macosx_10_14_x86_64", "macosx_10_9_x86_64", "macosx_11_0_universal2",
                  "macosx_10_9_universal2"),
}
# Runtime dependencies of xcube_client (grpcio needs typing-extensions; protobuf needs nothing;
# grpcio-health-checking is pure Python: the generated grpc.health.v1 stubs the client checks health with).
WHEEL_PACKAGES = ("grpcio", "protobuf", "typing-extensions", "grpcio-health-checking")
_FALLBACK_VERSIONS = {"grpcio": "1.85.1", "protobuf": "7.36.2", "typing-extensions": "4.16.0",
                      "grpcio-health-checking": "1.85.1"}


class BuildError(XCubeError):
    """The add-on could not be built; the message says why and what to do."""


def register(sub) -> None:
    parser = sub.add_parser("addon", help="build the Blender extension zip of the XCube add-on",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    addon_sub = parser.add_subparsers(dest="addon_command", metavar="ACTION")
    build = addon_sub.add_parser("build", help="write the installable extension zip",
                                 description="Write xcube-<version>.zip into --out, ready for Blender's "
                                             "Edit > Preferences > Get Extensions > Install from Disk.")
    build.add_argument("--out", required=True, type=pathlib.Path, help="folder for the zip (created if missing)")
    build.add_argument("--no-wheels", action="store_true",
                       help="bundle no wheels (Blender's Python must already have grpcio and protobuf)")
    build.add_argument("--python", nargs="+", default=list(PYTHON_VERSIONS), metavar="X.Y",
                       help=f"CPython versions to bundle wheels for (default: {' '.join(PYTHON_VERSIONS)})")
    build.add_argument("--platform", nargs="+", default=list(PLATFORM_TAGS), choices=list(PLATFORM_TAGS),
                       dest="platforms", metavar="PLATFORM",
                       help=f"Blender platforms to bundle wheels for (default: all of {', '.join(PLATFORM_TAGS)})")
    build.add_argument("--cache", type=pathlib.Path, default=CACHE_DIR,
                       help="wheel cache folder (default: .cache/addon-wheels in the repository)")
    build.add_argument("--offline", action="store_true",
                       help="use only wheels already in the cache; fail instead of downloading")
    build.set_defaults(func=_run_build)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _run_build(args: argparse.Namespace) -> int:
    path = build_addon(args.out, wheels=not args.no_wheels, python_versions=tuple(args.python),
                       platforms=tuple(args.platforms), cache=args.cache, offline=args.offline)
    errors = validate_with_blender(path)
    if errors is None:
        log.info("Blender's extension validator is not importable here (no bpy); skipped validation")
    elif errors:
        raise BuildError(f"{path} fails Blender's extension validation: " + "; ".join(errors))
    print(path)
    return 0


def build_addon(out: pathlib.Path | str, *, wheels: bool = True, python_versions: tuple[str, ...] = PYTHON_VERSIONS,
                platforms: tuple[str, ...] = tuple(PLATFORM_TAGS), cache: pathlib.Path | str = CACHE_DIR,
                offline: bool = False) -> pathlib.Path:
    """Builds the extension zip and returns its path.

    Args:
        out: output folder (created).
        wheels: bundle the grpcio/grpcio-health-checking/protobuf wheels (downloaded once into ``cache``).
        python_versions: CPython versions ("3.11", "3.13") to bundle wheels for.
        platforms: Blender platforms (keys of ``PLATFORM_TAGS``).
        cache: wheel cache folder.
        offline: never download; a wheel missing from the cache is an error.

    Raises:
        BuildError: sources missing, a bad manifest or a wheel that cannot be downloaded.
    """
    out = pathlib.Path(out)
    for required in (ADDON_DIR / MANIFEST, ADDON_DIR / "__init__.py", CLIENT_DIR / "client.py"):
        if not required.is_file():
            raise BuildError(f"missing {required}; run from a complete checkout of the repository")
    manifest_text = (ADDON_DIR / MANIFEST).read_text(encoding="utf-8")
    try:
        manifest = tomllib.loads(manifest_text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{ADDON_DIR / MANIFEST} is not valid TOML: {exc}") from exc
    wheel_files = collect_wheels(python_versions, platforms, pathlib.Path(cache), offline) if wheels else []
    wheel_entries = sorted({f"./wheels/{w.name}" for w in wheel_files})
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"{manifest['id']}-{manifest['version']}.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, manifest_with_wheels(manifest_text, wheel_entries))
        for path in sorted(ADDON_DIR.rglob("*.py")):
            if "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(ADDON_DIR).as_posix())
        for path in sorted(CLIENT_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in {".py", ".pyi", ".typed"}:
                zf.write(path, "_vendor/xcube_client/" + path.relative_to(CLIENT_DIR).as_posix())
        seen = set()
        for wheel in wheel_files:
            if wheel.name not in seen:
                seen.add(wheel.name)
                zf.write(wheel, f"wheels/{wheel.name}", compress_type=zipfile.ZIP_STORED)
    log.info("wrote %s (%d wheels, %.1f MB)", zip_path, len(seen), zip_path.stat().st_size / 1e6)
    return zip_path


def manifest_with_wheels(manifest_text: str, wheel_entries: list[str]) -> str:
    """The manifest text with a top-level ``wheels = [...]`` inserted before the first table."""
    if re.search(r"^wheels\s*=", manifest_text, flags=re.M):
        raise BuildError(f"{ADDON_DIR / MANIFEST} already lists wheels; leave them to `xcube addon build`")
    if not wheel_entries:
        return manifest_text
    block = "wheels = [\n" + "".join(f'  "{w}",\n' for w in wheel_entries) + "]\n\n"
    match = re.search(r"^\[", manifest_text, flags=re.M)
    at = match.start() if match else len(manifest_text)
    return manifest_text[:at] + block + manifest_text[at:]


def pinned_versions() -> dict[str, str]:
    """Versions of the bundled wheels: the installed ones (the stubs were made for them)."""
    versions = {}
    for name in WHEEL_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = _FALLBACK_VERSIONS[name]
    return versions


def collect_wheels(python_versions: tuple[str, ...], platforms: tuple[str, ...], cache: pathlib.Path,
                   offline: bool = False) -> list[pathlib.Path]:
    """Every wheel the zip needs, from the cache or downloaded into it (one folder per target)."""
    files: list[pathlib.Path] = []
    versions = pinned_versions()
    targets = [(py, plat) for py in python_versions for plat in platforms]
    try:
        from tqdm import tqdm

        targets_iter = tqdm(targets, desc="wheels", unit="target", disable=None)
    except ImportError:  # pragma: no cover
        targets_iter = targets
    for py, plat in targets_iter:
        if plat not in PLATFORM_TAGS:
            raise BuildError(f"unknown platform {plat!r}; expected one of {sorted(PLATFORM_TAGS)}")
        for name, version in versions.items():
            folder = cache / f"{name}-{version}" / f"cp{py.replace('.', '')}-{plat}"
            found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
            if not found and offline:
                raise BuildError(f"{name}=={version} for CPython {py} on {plat} is not in the wheel cache "
                                 f"{cache}; build once without --offline (needs the package registry)")
            if not found:
                found = _pip_download(name, version, py, PLATFORM_TAGS[plat], folder)
            files.extend(found)
    return files


def _pip_download(name: str, version: str, python: str, tags: tuple[str, ...], folder: pathlib.Path) -> list[pathlib.Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
           "--python-version", python, "--implementation", "cp", "--dest", str(folder)]
    for tag in tags:
        cmd += ["--platform", tag]
    cmd.append(f"{name}=={version}")
    log.info("downloading %s==%s for CPython %s (%s)", name, version, python, tags[0])
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or not found:
        raise BuildError(
            f"could not download the {name}=={version} wheel for CPython {python} on {tags[0]}: "
            f"{(result.stderr or result.stdout).strip()[-400:]}\n"
            "The build needs the package registry once (wheels are cached in .cache/addon-wheels); "
            "use --no-wheels for an offline build"
        )
    return found


def blender_ext_module():
    """Blender's own extension tool (``bl_pkg/cli/blender_ext.py`` inside bpy), or None without bpy."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    base = pathlib.Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(base.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not candidates:
        return None
    module_spec = importlib.util.spec_from_file_location("_xcube_blender_ext", candidates[-1])
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def validate_with_blender(zip_path: pathlib.Path | str) -> list[str] | None:
    """Checks the zip the way Blender's installer does (strict manifest checks, layout, wheels).

    Returns:
        A list of error messages (empty = valid), or None when Blender's tool is not importable.
    """
    ext = blender_ext_module()
    if ext is None:
        return None
    errors: list[str] = []
    with zipfile.ZipFile(zip_path) as zf:
        subdir = ext.pkg_zipfile_detect_subdir_or_none(zf)
        if subdir is None:
            return [f"no {MANIFEST} found in the archive"]
        manifest = ext.pkg_manifest_from_zipfile_and_validate_all_errors(zf, subdir, strict=True)
        if isinstance(manifest, list):
            return manifest
        if manifest.type == "add-on" and subdir + "__init__.py" not in zf.NameToInfo:
            errors.append("the add-on has no __init__.py at the archive root")
        for wheel in manifest.wheels or ():
            if subdir + wheel.removeprefix("./") not in zf.NameToInfo:
                errors.append(f"manifest lists {wheel} but the archive does not contain it")
        if manifest.wheels:
            versions = ext.python_versions_from_wheels(manifest.wheels)
            if isinstance(versions, str):
                errors.append(versions)
    return errors
