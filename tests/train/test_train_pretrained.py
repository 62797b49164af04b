"""PretrainedMixin: save/load round trip, config reconstruction, clear errors on mismatch or damage."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from xcube_core.errors import ModelLoadError
from xcube_core.models.base import (
    PretrainedMixin,
    config_from_dict,
    config_hash,
    config_to_dict,
)


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    classes: int = 3
    names: tuple[str, ...] = ("a", "b", "c")


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    width: int = 4
    mults: tuple[int, int] = (1, 2)
    scale: float = 1.0
    head: HeadConfig = HeadConfig()
    dropout: float | None = None


class Tiny(PretrainedMixin, nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.width, config.width * config.mults[1])
        self.out = nn.Linear(config.width * config.mults[1], config.head.classes)
        self.tied = self.out  # shared weights are saved once and restored
        self.register_buffer("stat", torch.arange(3, dtype=torch.float64))


class Other(PretrainedMixin, nn.Module):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.width, 1)


def test_config_dict_round_trip():
    cfg = TinyConfig(width=5, mults=(2, 3), scale=2, head=HeadConfig(2, ("x", "y")), dropout=0.1)
    data = json.loads(json.dumps(config_to_dict(cfg)))
    assert data["mults"] == [2, 3]
    back = config_from_dict(TinyConfig, data)
    assert back == cfg and isinstance(back.mults, tuple) and isinstance(back.head, HeadConfig)
    assert config_hash(back) == config_hash(cfg)
    with pytest.raises(ValueError, match="unknown TinyConfig field"):
        config_from_dict(TinyConfig, {"widht": 3})


def test_round_trip(tmp_path, generator):
    model = Tiny(TinyConfig(width=6, mults=(1, 3)))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    model.save_pretrained(tmp_path / "m", extra={"encoder": "minilm"})
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["class"] == "Tiny" and meta["config"]["mults"] == [1, 3] and meta["extra"] == {"encoder": "minilm"}
    loaded = Tiny.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config == model.config
    assert loaded.tied is loaded.out
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 6, generator=generator)
    assert torch.equal(model.out(model.lin(x)), loaded.out(loaded.lin(x)))
    assert not list(tmp_path.glob("m/.*.tmp"))  # no temporary files left behind


def test_class_mismatch(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="holds a Tiny.*not a Other"):
        Other.from_pretrained(tmp_path)


def test_shape_mismatch_and_torn_pair(tmp_path):
    Tiny(TinyConfig(width=4)).save_pretrained(tmp_path / "a")
    Tiny(TinyConfig(width=8)).save_pretrained(tmp_path / "b")
    # weights of b with the config of a: caught by the config hash in the safetensors metadata
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="different saves"):
        Tiny.from_pretrained(tmp_path / "a")
    # a config edited by hand to another width: the message names the differing tensor shapes
    meta = json.loads((tmp_path / "b" / "config.json").read_text())
    meta["config"]["width"] = 5
    meta.pop("config_sha256")
    (tmp_path / "b" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"shape mismatch.*lin.weight"):
        Tiny.from_pretrained(tmp_path / "b")


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Tiny.from_pretrained(tmp_path / "nope")
    Tiny(TinyConfig()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        Tiny.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        Tiny.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Tiny.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"class": "Tiny", "config": {"bogus": 1}}))
    with pytest.raises(ModelLoadError, match="unknown TinyConfig field"):
        Tiny.from_pretrained(tmp_path)
