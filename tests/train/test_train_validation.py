"""Validation loss: logged every val_every steps on fixed val batches, deterministic, harmless to training."""

from __future__ import annotations

import json

import pytest
import torch

from xcube_core.errors import DataError
from xcube_core.train.trainer import Trainer
from xcube_core.train.validation import VAL_SEED, Validator


def _val_lines(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_loss" in r]


def test_val_loss_is_logged_every_val_every_steps_and_is_deterministic(tmp_path, toy, fast_config, quiet):
    config = fast_config(val_every=2, val_batches=2)
    a = Trainer(toy(), config, tmp_path / "a", **quiet).fit()
    b = Trainer(toy(), config, tmp_path / "b", **quiet).fit()
    va, vb = _val_lines(tmp_path / "a"), _val_lines(tmp_path / "b")
    assert [r["step"] for r in va] == [2, 4, 6]
    assert va == vb  # same batches, same generator: identical values run to run
    assert all({"val_loss", "val_mae"} <= set(r) for r in va)
    assert len({r["val_loss"] for r in va}) == 3  # the model changes between validations
    # validation forks the RNG: the training losses are those of a run without it
    c = Trainer(toy(), fast_config(val_every=0), tmp_path / "c", **quiet).fit()
    assert a.losses == c.losses and a.losses == b.losses
    assert _val_lines(tmp_path / "c") == []


def test_validator_matches_a_hand_computed_loss_on_the_first_val_items(toy, fast_config):
    task = toy()
    config = fast_config(val_batches=2)
    torch.manual_seed(0)
    model = task.build_model()
    got = Validator(task, config, torch.device("cpu"), "fp32")(model)
    ds = task.build_dataset("val")
    gen = torch.Generator().manual_seed(VAL_SEED)
    model.eval()
    losses, maes = [], []
    with torch.no_grad():
        for lo in (0, 4):  # batch_size 4, two batches: items 0..7 in order
            loss, logs = task.loss(model, task.collate([ds[i] for i in range(lo, lo + 4)]), gen)
            losses.append(float(loss))
            maes.append(logs["mae"])
    assert abs(got["val_loss"] - sum(losses) / 2) < 1e-7
    assert abs(got["val_mae"] - sum(maes) / 2) < 1e-7
    assert model.training is False  # restored to the mode it was given in


def test_a_task_without_val_split_trains_on_with_a_warning(tmp_path, toy, fast_config, quiet, caplog):
    task = toy()
    train_only = task.build_dataset

    def build_dataset(split):
        if split != "train":
            raise DataError(f"no '{split}' samples")
        return train_only(split)

    task.build_dataset = build_dataset
    result = Trainer(task, fast_config(val_every=2), tmp_path / "r", **quiet).fit()
    assert result.step == 6 and _val_lines(tmp_path / "r") == []
    assert any("no validation loss" in r.message for r in caplog.records)


def test_val_scalars_reach_tensorboard_and_the_cli_documents_the_options(tmp_path, toy, fast_config, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from xcube_core.cli import main

    Trainer(toy(), fast_config(val_every=3), tmp_path / "tb", progress=False, tensorboard=True).fit()
    events = EventAccumulator(str(tmp_path / "tb" / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "val/loss", "val/mae"} <= set(tags)
    assert [e.step for e in events.Scalars("val/loss")] == [3, 6]
    val = _val_lines(tmp_path / "tb")
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx([r["val_loss"] for r in val])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--val-every" in text and "--val-batches" in text and "--recipe" in text
