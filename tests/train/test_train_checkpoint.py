"""Checkpoint files: atomic writes survive a crash, optimiser/RNG state round trips, clear load errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from xcube_core.errors import ModelLoadError
from xcube_core.train import checkpoint as ckpt_io
from xcube_core.train.trainer import Trainer


def _adamw_after_steps(generator, steps: int = 3):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.AdamW([{"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},
                             {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}], lr=1e-2, betas=(0.8, 0.9))
    names = ["0.weight", "2.weight", "0.bias", "2.bias"]
    for _ in range(steps):
        model(torch.randn(5, 3, generator=generator)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt, names


def test_optimizer_state_round_trip(generator):
    model, opt, names = _adamw_after_steps(generator)
    tensors, info = ckpt_io.flatten_optimizer_state(opt.state_dict(), names)
    assert set(tensors) == {f"state.{n}.{k}" for n in names for k in ("step", "exp_avg", "exp_avg_sq")}
    info = json.loads(json.dumps(info))  # through JSON and safetensors bytes like the real files
    tensors = safetensors.torch.load(safetensors.torch.save(tensors))
    clone = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW([{"params": [clone[0].weight, clone[2].weight]}, {"params": [clone[0].bias, clone[2].bias]}])
    opt2.load_state_dict(ckpt_io.unflatten_optimizer_state(tensors, info, names))
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9) and opt2.param_groups[0]["weight_decay"] == 0.1
    x = torch.randn(5, 3, generator=generator)
    for m, o in ((model, opt), (clone, opt2)):  # one more identical step on both
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_rng_round_trip(generator):
    gen = torch.Generator().manual_seed(5)
    state = ckpt_io.capture_rng(gen)
    expected = (torch.rand(4), torch.rand(4, generator=gen), np.random.rand(3), random.random(), random.gauss(0, 1))
    torch.rand(10), torch.rand(10, generator=gen), np.random.rand(7), random.random()
    ckpt_io.restore_rng(state, gen)
    got = (torch.rand(4), torch.rand(4, generator=gen), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert np.array_equal(got[2], expected[2]) and got[3:] == expected[3:]


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, toy, fast_config, quiet, monkeypatch):
    Trainer(toy(), fast_config(max_steps=2, ckpt_every=1), tmp_path, **quiet).fit()
    good = ckpt_io.latest_checkpoint(tmp_path)
    assert good.name == "step_00000002"

    real_save = safetensors.torch.save_file
    calls = []

    def crash_on_second_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the model file is written, the EMA file is half-written, then "power loss"
            with open(filename, "wb") as fh:
                fh.write(b"\x00" * 10)
            raise OSError("simulated crash while writing")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", crash_on_second_file)
    with pytest.raises(OSError, match="simulated crash"):
        Trainer(toy(), fast_config(max_steps=4, ckpt_every=1), tmp_path, resume=True, **quiet).fit()
    monkeypatch.undo()
    assert ckpt_io.latest_checkpoint(tmp_path) == good
    assert not list((tmp_path / "checkpoints").glob(".*"))  # the temporary folder was removed
    # a hard kill (no cleanup) leaves a hidden temporary folder: it is ignored
    leftover = tmp_path / "checkpoints" / ".step_00000003.abc.tmp"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert ckpt_io.latest_checkpoint(tmp_path) == good
    resumed = Trainer(toy(), fast_config(max_steps=3, ckpt_every=1), tmp_path, resume=True, **quiet).fit()
    assert resumed.step == 3 and len(resumed.losses) == 1


def test_damaged_checkpoint_is_a_clear_error(tmp_path, toy, fast_config, quiet):
    Trainer(toy(), fast_config(max_steps=1), tmp_path, **quiet).fit()
    latest = ckpt_io.latest_checkpoint(tmp_path)
    (latest / "optimizer.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="optimizer.safetensors is unreadable"):
        Trainer(toy(), fast_config(max_steps=2), tmp_path, resume=True, **quiet).fit()
    (latest / "optimizer.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="is missing"):
        Trainer(toy(), fast_config(max_steps=2), tmp_path, resume=True, **quiet).fit()
    (latest / "trainer.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="trainer.json is unreadable"):
        ckpt_io.read_meta(latest)


def test_shared_tensors_and_no_pickle(tmp_path):
    lin = nn.Linear(2, 2)
    state = {"a.weight": lin.weight, "b.weight": lin.weight, "a.bias": lin.bias}
    path = ckpt_io.save_checkpoint(tmp_path, 1, model_state=state, optimizer_state={"state": {}, "param_groups": []},
                                   param_names=[], rng=[{"torch_cpu": torch.get_rng_state()}], meta={})
    loaded = ckpt_io.load_checkpoint(path, [])
    assert torch.equal(loaded.model["b.weight"], lin.weight.detach()) and set(loaded.model) == set(state)
    for file in path.iterdir():  # every tensor file is safetensors, the rest JSON
        assert file.suffix in (".safetensors", ".json")


def test_load_weights_for_evaluation(tmp_path, toy, fast_config, quiet):
    result = Trainer(toy(), fast_config(max_steps=3), tmp_path, **quiet).fit()
    ema = safetensors.torch.load_file(str(result.checkpoint / "ema.safetensors"))
    live = safetensors.torch.load_file(str(result.checkpoint / "model.safetensors"))
    model = ckpt_io.load_weights(toy().build_model(), tmp_path)  # run folder -> newest checkpoint, EMA
    assert all(torch.equal(p, ema[n]) for n, p in model.named_parameters())
    model = ckpt_io.load_weights(toy().build_model(), result.checkpoint, ema=False)
    assert all(torch.equal(p, live[n]) for n, p in model.named_parameters())
    with pytest.raises(ModelLoadError, match="does not fit ToyMLP.*net.0.weight"):
        ckpt_io.load_weights(toy(hidden=3).build_model(), tmp_path)
    with pytest.raises(ModelLoadError, match="neither a checkpoint folder"):
        ckpt_io.load_weights(toy().build_model(), tmp_path / "empty")
