"""Exact resume: stop a run with a real SIGINT after step 3, resume to step 6, match the uninterrupted run."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from xcube_core.train.checkpoint import list_checkpoints
from xcube_core.train.trainer import Trainer


def _tensors(path):
    return load_file(str(path))


@pytest.mark.parametrize(("num_workers", "precision"), [(0, "fp32"), (1, "fp32"), (0, "bf16")])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, toy, fast_config, quiet, num_workers, precision):
    # 6 steps = 1.5 epochs of 4 batches: crosses an epoch end
    cfg = fast_config(num_workers=num_workers, precision=precision)
    full = Trainer(toy(), cfg, tmp_path / "full", **quiet).fit()
    assert full.step == 6 and len(full.losses) == 6 and not full.interrupted
    assert all(math.isfinite(x) for x in full.losses)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the trainer finishes the step, checkpoints and returns

    first = Trainer(toy(), cfg, tmp_path / "split", on_step=interrupt, **quiet).fit()
    assert first.interrupted and first.step == 3 and first.checkpoint.name == "step_00000003"
    assert first.export_dir is None
    second = Trainer(toy(), cfg, tmp_path / "split", resume=True, **quiet).fit()
    assert second.step == 6 and not second.interrupted

    assert first.losses + second.losses == full.losses  # bitwise: same data, noise, dropout, AdamW, LR
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = _tensors(full.checkpoint / name), _tensors(second.checkpoint / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    exported_a = _tensors(full.export_dir / "model.safetensors")
    exported_b = _tensors(second.export_dir / "model.safetensors")
    assert all(torch.equal(exported_a[k], exported_b[k]) for k in exported_a)
    # the export holds the EMA weights, not the live ones
    live = _tensors(full.checkpoint / "model.safetensors")
    assert not torch.equal(exported_a["net.0.weight"], live["net.0.weight"])
    ema = _tensors(full.checkpoint / "ema.safetensors")
    assert torch.equal(exported_a["net.0.weight"], ema["net.0.weight"])


def test_signal_handlers_are_restored(tmp_path, toy, fast_config, quiet):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    Trainer(toy(), fast_config(max_steps=1), tmp_path, **quiet).fit()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_periodic_checkpoints_keep_last(tmp_path, toy, fast_config, quiet):
    Trainer(toy(), fast_config(max_steps=5, ckpt_every=1, keep_last=2), tmp_path, **quiet).fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000005"]


def test_resume_with_more_steps_and_global_rng_untouched(tmp_path, toy, fast_config, quiet):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Trainer(toy(), fast_config(max_steps=2), tmp_path, **quiet).fit()
    assert torch.equal(torch.rand(3), expected)  # the trainer seeds inside fork_rng only
    more = Trainer(toy(), fast_config(max_steps=4), tmp_path, resume=True, **quiet).fit()
    assert more.step == 4 and len(more.losses) == 2
    again = Trainer(toy(), fast_config(max_steps=4), tmp_path, resume=True, **quiet).fit()
    assert again.step == 4 and again.losses == [] and again.checkpoint.name == "step_00000004"
