"""Storage: bit-exact round trips, clear errors for corrupt files, atomic writes, manifests."""

from __future__ import annotations

import json
import os

import pytest
import torch

from xcube_core.data.hierarchy import VoxelSample, build_hierarchy
from xcube_core.data.storage import (load_sample, read_manifest, sample_to_tensors, save_sample,
                                     write_manifest)
from xcube_core.errors import DataError
from xcube_core.level import Level


def _sample(generator, big=False, semantics=True) -> VoxelSample:
    hi = 40000 if big else 60
    ijk = torch.unique(torch.randint(0, hi, (500, 3), generator=generator, dtype=torch.int32), dim=0)
    normals = torch.nn.functional.normalize(torch.randn(len(ijk), 3, generator=generator), dim=1)
    sem = torch.randint(-1, 9, (len(ijk),), generator=generator) if semantics else None
    finest = Level(index=2, ijk=ijk, voxel_size=0.25, normals=normals, semantics=sem)
    return VoxelSample(build_hierarchy(finest, 3), caption="a test scene — with ünïcode",
                       metadata={"style": "park", "grid_shape": [hi, hi, hi], "nested": {"a": [1, 2]}})


@pytest.mark.parametrize("big", [False, True])
def test_round_trip_is_bit_exact(tmp_path, generator, big):
    sample = _sample(generator, big=big)
    path = tmp_path / "s.safetensors"
    save_sample(sample, path)
    back = load_sample(path)
    assert back.caption == sample.caption and back.metadata == sample.metadata
    tensors, _ = sample_to_tensors(sample)
    assert tensors["ijk_2"].dtype == (torch.int32 if big else torch.int16)
    for a, b in zip(sample.levels, back.levels):
        assert torch.equal(a.ijk, b.ijk) and b.ijk.dtype == torch.int32
        assert torch.equal(a.normals.half().float(), b.normals)  # stored as float16, nothing else lost
        assert torch.equal(a.semantics, b.semantics)
        assert (a.voxel_size, a.origin, a.index) == (b.voxel_size, b.origin, b.index)
    # saving what was loaded reproduces the file byte for byte
    save_sample(back, tmp_path / "t.safetensors")
    assert (tmp_path / "s.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()


def test_missing_attributes_and_level_subset(tmp_path, generator):
    sample = _sample(generator, semantics=False)
    save_sample(sample, tmp_path / "s.safetensors")
    back = load_sample(tmp_path / "s.safetensors", levels=[2])
    assert len(back.levels) == 1 and back.levels[0].index == 2 and back.levels[0].semantics is None
    with pytest.raises(DataError, match="asked for levels"):
        load_sample(tmp_path / "s.safetensors", levels=[3])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "header"])
def test_corrupt_file_raises_data_error_naming_it(tmp_path, generator, damage):
    path = tmp_path / f"bad_{damage}.safetensors"
    save_sample(_sample(generator), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(data[:8] + os.urandom(len(data) - 8))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # valid safetensors, but not our format
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(3)}, str(path), metadata={"xcube": json.dumps({"format": "other"})})
    with pytest.raises(DataError, match=path.name):
        load_sample(path)


def test_write_is_atomic(tmp_path, generator, monkeypatch):
    path = tmp_path / "s.safetensors"
    save_sample(_sample(generator), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # interrupted between writing and renaming

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_sample(_sample(torch.Generator().manual_seed(5)), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]  # no temporary left behind
    load_sample(path)


def test_manifest_round_trip_and_errors(tmp_path):
    rows = [{"file": "b.safetensors", "split": "val", "caption": "x"}, {"file": "a.safetensors", "split": "train"}]
    write_manifest(rows, tmp_path)
    assert [r["file"] for r in read_manifest(tmp_path)] == ["a.safetensors", "b.safetensors"]
    (tmp_path / "manifest.jsonl").write_text('{"file": "a"}\nnot json\n')
    with pytest.raises(DataError, match=":2:"):
        read_manifest(tmp_path)
