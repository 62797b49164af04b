"""TrainConfig: JSON/YAML round trips, layered overrides, validation, LR schedule, precision detection."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch
import yaml

from xcube_core.errors import InvalidInputError
from xcube_core.train.config import (
    TrainConfig,
    cpu_has_native_bf16,
    load_config_file,
    merge_config,
    resolve_precision,
)


def test_json_round_trip():
    cfg = TrainConfig(lr=3e-4, betas=(0.8, 0.95), batch_size=2, precision="bf16", lr_schedule="cosine")
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.betas, tuple)
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_sections_and_override_order(tmp_path, suffix):
    body = {"train": {"lr": 1e-3, "batch_size": 8}, "task": {"latent_channels": 8}}
    path = tmp_path / f"cfg{suffix}"
    path.write_text(yaml.safe_dump(body) if suffix == ".yaml" else json.dumps(body))
    train, task = load_config_file(path)
    assert train == {"lr": 1e-3, "batch_size": 8} and task == {"latent_channels": 8}
    cfg = merge_config(merge_config(None, train), {"batch_size": 2})  # command line wins over the file
    assert (cfg.lr, cfg.batch_size, cfg.max_steps) == (1e-3, 2, TrainConfig().max_steps)
    flat = tmp_path / "flat.yaml"
    flat.write_text("lr: 0.5\nseed: 7\n")
    assert load_config_file(flat) == ({"lr": 0.5, "seed": 7}, {})


def test_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(InvalidInputError, match="cannot parse"):
        load_config_file(bad)
    bad.write_text("train: {}\nmodel: {}\n")
    with pytest.raises(InvalidInputError, match="unknown sections"):
        load_config_file(bad)
    with pytest.raises(InvalidInputError, match="unknown train option.*'lrr'"):
        merge_config(None, {"lrr": 1.0})
    for field, value in [("batch_size", 0), ("lr", -1.0), ("precision", "fp16"), ("ema_decay", 1.0),
                         ("lr_schedule", "step"), ("device", "tpu")]:
        with pytest.raises(InvalidInputError, match=field):
            TrainConfig(**{field: value})


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=14, lr_schedule="cosine", min_lr_ratio=0.1)
    assert [cfg.lr_at(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cfg.lr_at(4) == pytest.approx(1.0)
    assert cfg.lr_at(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cfg.lr_at(14) == pytest.approx(0.1)
    assert TrainConfig(lr=0.3).lr_at(1000) == 0.3


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    flags = pathlib.Path("/proc/cpuinfo").read_text().split() if pathlib.Path("/proc/cpuinfo").exists() else None
    if flags is not None:  # detected from the CPU flags, not assumed
        assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_move_to_device_keeps_containers():
    import collections
    import dataclasses

    from xcube_core.train.trainer import move_to_device

    Pair = collections.namedtuple("Pair", "a b")

    @dataclasses.dataclass
    class Item:
        x: torch.Tensor
        tag: str

    batch = {"p": Pair(torch.ones(2), [torch.zeros(1), "s"]), "i": Item(torch.arange(3), "t"), "n": 3}
    moved = move_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["p"], Pair) and isinstance(moved["i"], Item) and moved["n"] == 3
    assert torch.equal(moved["p"].a, torch.ones(2)) and moved["p"].b[1] == "s" and moved["i"].tag == "t"
