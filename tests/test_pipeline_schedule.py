"""The noise schedule travels with the model: scheduler_config.json is saved, read back and honoured."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from xcube_core.diffusion.scheduler_config import SCHEDULER_FILE, SchedulerConfig, load_scheduler_config
from xcube_core.errors import ModelLoadError
from xcube_core.pipeline import DEFAULT_MODEL_DIR, XCubePipeline


def _normals(pipe, **kw):
    return [lv.normals for lv in pipe.generate("a farm", seed=2, **kw)]


def _edit(folder, level, **changes):
    path = folder / f"level{level}" / "unet" / SCHEDULER_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def saved(tmp_path):
    pipe = XCubePipeline.tiny(seed=0)
    pipe.save_pretrained(tmp_path / "m")
    return pipe, tmp_path / "m"


def test_saved_schedule_round_trips_and_defaults_match_the_in_memory_model(saved):
    pipe, folder = saved
    for i in range(pipe.num_levels):
        assert load_scheduler_config(folder / f"level{i}" / "unet") == SchedulerConfig()
    loaded = XCubePipeline.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(_normals(pipe, steps=2), _normals(loaded, steps=2)))


@pytest.mark.parametrize("changes", [{"prediction_type": "epsilon"}, {"num_train_timesteps": 500},
                                     {"beta_schedule": "scaled_linear", "beta_end": 0.012}])
def test_a_folder_whose_schedule_differs_is_honoured_at_inference(saved, changes):
    pipe, folder = saved
    _edit(folder, 0, **changes)
    loaded = XCubePipeline.from_pretrained(folder)
    assert loaded.levels[0].scheduler == dataclasses.replace(SchedulerConfig(), **changes)
    got = _normals(loaded, steps=2, num_levels=1)
    # reference: the in-memory model given the same schedule by hand
    pipe.levels[0].scheduler = dataclasses.replace(SchedulerConfig(), **changes)
    try:
        want = _normals(pipe, steps=2, num_levels=1)
    finally:
        pipe.levels[0].scheduler = SchedulerConfig()
    default = _normals(pipe, steps=2, num_levels=1)
    assert torch.equal(got[0], want[0])
    assert got[0].shape != default[0].shape or not torch.equal(got[0], default[0])


def test_sampler_defaults_apply_when_the_caller_gives_none(saved):
    _, folder = saved
    _edit(folder, 0, num_inference_steps=3, guidance_scale=1.5)
    _edit(folder, 1, num_inference_steps=2, sampler="ddpm", eta=1.0)
    loaded = XCubePipeline.from_pretrained(folder)
    calls = []
    levels = list(loaded.generate("a farm", seed=2, callback=lambda i, k, n: calls.append((i, n))))
    assert sorted(set(calls)) == [(0, 3), (1, 2)]
    assert [lv.metadata["steps"] for lv in levels] == [3, 2]
    assert levels[0].metadata["guidance"] == 1.5 and levels[1].metadata["sampler"] == "ddpm"
    # an explicit choice wins over the folder's defaults
    calls.clear()
    list(loaded.generate("a farm", seed=2, steps=4, callback=lambda i, k, n: calls.append((i, n))))
    assert sorted(set(calls)) == [(0, 4), (1, 4)]


def test_a_folder_without_the_file_gets_defaults_and_a_warning(saved, caplog):
    _, folder = saved
    (folder / "level1" / "unet" / SCHEDULER_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        loaded = XCubePipeline.from_pretrained(folder)
    assert loaded.levels[1].scheduler == SchedulerConfig()
    assert any(SCHEDULER_FILE in r.getMessage() for r in caplog.records)
    (folder / "level0" / "unet" / SCHEDULER_FILE).write_text('{"prediction_type": "x0"}')
    with pytest.raises(ModelLoadError, match="prediction_type"):
        XCubePipeline.from_pretrained(folder)


def test_the_shipped_folder_loads_with_the_schedule_it_was_trained_with():
    """v2: level 0 guides only below 0.7 T (round 3 of docs/default-model.md); v8: level 1 never guides
    (round 9); the rest is the default."""
    assert load_scheduler_config(DEFAULT_MODEL_DIR / "level0" / "unet") == SchedulerConfig(guidance_interval=(0.0, 0.7))
    assert load_scheduler_config(DEFAULT_MODEL_DIR / "level1" / "unet") == SchedulerConfig(guidance_interval=(0.0, 0.0))
    assert XCubePipeline.from_pretrained().levels[0].scheduler.guidance_interval == (0.0, 0.7)


def test_guidance_interval_guides_only_inside_it_with_one_unet_pass_outside(saved):
    """Outside `guidance_interval` a step is the conditional prediction alone, computed by one U-Net
    pass on the undoubled batch; that pass gives what the conditional half of the doubled batch gives."""
    pipe, folder = saved
    _edit(folder, 0, guidance_interval=[0.0, 0.5])
    loaded = XCubePipeline.from_pretrained(folder)
    assert loaded.levels[0].scheduler.guidance_interval == (0.0, 0.5)
    batches = []
    hook = loaded.levels[0].unet.register_forward_hook(lambda m, args, out: batches.append(int(args[2].shape[0])))
    try:
        steps = 6
        list(loaded.generate("a farm", seed=2, steps=steps, guidance=3.0, num_levels=1))
    finally:
        hook.remove()
    sampler = loaded.levels[0].scheduler.make_sampler()
    sampler.set_timesteps(steps)
    assert batches == [1 if int(t) > 500 else 2 for t in sampler.timesteps]
    # guidance 1 everywhere: the single pass and the doubled pass (forced) agree
    single = _normals(pipe, steps=3, guidance=1.0, num_levels=1)[0]
    cfg = pipe.levels[0].scheduler
    pipe.levels[0].scheduler = dataclasses.replace(cfg)
    object.__setattr__(pipe.levels[0].scheduler, "guidance_at", lambda t, scale: 1.0 + 1e-12)
    try:
        doubled = _normals(pipe, steps=3, guidance=1.0, num_levels=1)[0]
    finally:
        pipe.levels[0].scheduler = cfg
    torch.testing.assert_close(single, doubled, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="guidance_interval"):
        SchedulerConfig(guidance_interval=(0.6, 0.4))


def test_an_empty_guidance_interval_never_guides_whatever_the_scale(saved):
    """lo == hi: the level takes one U-Net pass per step at any guidance scale and samples what scale 1
    samples; the other levels still follow the request's scale."""
    pipe, folder = saved
    _edit(folder, 1, guidance_interval=[0.0, 0.0])
    loaded = XCubePipeline.from_pretrained(folder)
    assert loaded.levels[1].scheduler.guidance_at(0, 7.0) == 1.0
    batches = {0: [], 1: []}
    hooks = [loaded.levels[i].unet.register_forward_hook(
        lambda m, args, out, i=i: batches[i].append(int(args[2].shape[0]))) for i in (0, 1)]
    try:
        layout, fine = list(loaded.generate("a farm", seed=2, steps=3, guidance=3.0))
    finally:
        for h in hooks:
            h.remove()
    assert batches[1] == [1, 1, 1] and 2 in batches[0]
    assert fine.metadata["guidance_interval"] == [0.0, 0.0] and layout.metadata["guidance_interval"] == [0.0, 1.0]
    finer = [list(loaded.generate("a farm", seed=2, steps=3, guidance=g, condition=layout))[1] for g in (1.0, 3.0, 7.0)]
    for other in finer[1:]:
        assert torch.equal(other.ijk, finer[0].ijk) and torch.equal(other.normals, finer[0].normals)
