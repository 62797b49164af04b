"""Clear errors: wrong data folder, level/config/architecture mismatch on resume, unknown task, bad data."""

from __future__ import annotations

import pytest

from xcube_core.errors import DataError, InvalidInputError, ModelLoadError, XCubeError
from xcube_core.train.task import get_task, register_task
from xcube_core.train.toy import ToyTask, make_toy_task
from xcube_core.train.trainer import Trainer


@pytest.fixture
def trained(tmp_path, toy, fast_config, quiet):
    Trainer(toy(), fast_config(max_steps=1), tmp_path, **quiet).fit()
    return tmp_path


def test_existing_run_needs_resume(trained, toy, fast_config, quiet):
    with pytest.raises(XCubeError, match="already holds checkpoints.*--resume"):
        Trainer(toy(), fast_config(max_steps=2), trained, **quiet).fit()


def test_level_mismatch(trained, toy, fast_config, quiet):
    with pytest.raises(ModelLoadError, match="level: checkpoint 0, now 1"):
        Trainer(toy(level=1), fast_config(max_steps=2), trained, resume=True, **quiet).fit()


def test_architecture_mismatch_names_config_and_tensors(trained, toy, fast_config, quiet):
    with pytest.raises(ModelLoadError) as info:
        Trainer(toy(hidden=32), fast_config(max_steps=2), trained, resume=True, **quiet).fit()
    message = str(info.value)
    assert "hidden: checkpoint 16, now 32" in message
    assert "tensor net.0.weight" in message and "[16, 6]" in message and "[32, 6]" in message


def test_other_task_kind(trained, fast_config, quiet):
    class OtherToy(ToyTask):
        name = "other-toy"

    register_task("other-toy", lambda level, data, overrides: OtherToy(make_toy_task(level, data, overrides).toy))
    task = get_task("other-toy", 0, None, {"items": 16, "noise_std": 0.1, "dropout": 0.2})
    with pytest.raises(ModelLoadError, match="task: checkpoint 'toy', now 'other-toy'"):
        Trainer(task, fast_config(max_steps=2), trained, resume=True, **quiet).fit()


def test_data_errors(tmp_path, fast_config, quiet):
    task = get_task("toy", 0, tmp_path / "no-such-folder", {})
    with pytest.raises(DataError, match="no-such-folder does not exist"):
        Trainer(task, fast_config(), tmp_path / "run", **quiet).fit()
    small = get_task("toy", 0, None, {"items": 3})
    with pytest.raises(DataError, match="3 items, fewer than one global batch of 4"):
        Trainer(small, fast_config(), tmp_path / "run", **quiet).fit()


def test_unknown_task_and_options():
    with pytest.raises(InvalidInputError, match="unknown training task 'vea'.*known: .*toy"):
        get_task("vea", 0, None, {})
    with pytest.raises(InvalidInputError, match="unknown toy task option"):
        get_task("toy", 0, None, {"hiden": 3})
    with pytest.raises(InvalidInputError, match="cannot import task factory"):
        get_task("no_such_module_xyz:factory", 0, None, {})
    assert get_task("xcube_core.train.toy:make_toy_task", 2, None, {}).config()["level"] == 2


def test_non_finite_loss(tmp_path, toy, fast_config, quiet):
    class Diverging(ToyTask):
        calls = 0

        def loss(self, model, batch, generator):
            loss, logs = super().loss(model, batch, generator)
            self.calls += 1
            return (loss / 0.0 if self.calls == 3 else loss), logs  # +inf at the third step

    with pytest.raises(XCubeError, match="loss became inf at step 3.*lower --lr"):
        Trainer(Diverging(toy().toy), fast_config(), tmp_path, **quiet).fit()
