"""tests/eval fixtures; puts `eval_fakes` on sys.path whether or not tests/ is a package."""

from __future__ import annotations

import pathlib
import sys

import pytest

_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from eval_fakes import FakePipeline, write_reference  # noqa: E402


@pytest.fixture
def fake_pipeline() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def reference_dir(tmp_path) -> pathlib.Path:
    prompts = ["a town with tall towers and trees", "low houses by the water", "a field with trees",
               "tall towers by the water", "low houses", "a quiet field"]
    return write_reference(tmp_path / "ref", [(p, s) for s, p in enumerate(prompts)])
