"""The failures that fallbacks used to hide now surface: broken imports fail, they do not skip or fake."""

from __future__ import annotations

import sys

import pytest

from tests.deps import require


def test_require_skips_only_a_package_that_is_not_installed():
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require("xcube_surely_not_installed_pkg")


def test_require_fails_on_an_installed_package_whose_import_breaks(tmp_path, monkeypatch):
    pkg = tmp_path / "xcube_broken_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import xcube_missing_dependency_of_broken_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="xcube_missing_dependency_of_broken_pkg"):
        require("xcube_broken_pkg")  # pytest.importorskip would have skipped here
    sys.modules.pop("xcube_broken_pkg", None)


def test_the_tiny_model_raises_when_a_module_it_needs_is_broken(monkeypatch):
    """The server and add-on fixtures call this directly; it used to be wrapped in
    ``except ImportError: FakePipeline()`` (server) and ``pytest.skip`` (add-on)."""
    from xcube_core.testing import tiny_pipeline

    monkeypatch.setitem(sys.modules, "xcube_core.models.text", None)  # `import` of it raises ImportError
    with pytest.raises(ImportError):
        tiny_pipeline()

