"""The VAE decode's voxel budget comes from the device's free memory and is reported when it bites."""

from __future__ import annotations

import logging

import pytest

from xcube_core.models import decode_budget as B
from xcube_core.testing import tiny_pipeline


def test_host_memory_reads_meminfo_then_falls_back(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  16000000 kB\nMemAvailable:  2000000 kB\n")
    assert B.host_free_memory(str(meminfo)) == (2_000_000 * 1024, "/proc/meminfo")
    free, source = B.host_free_memory(str(tmp_path / "absent"))  # e.g. macOS: no /proc
    assert source == "sysconf" and free > 0

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(B.os, "sysconf", no_sysconf)  # e.g. Windows
    assert B.host_free_memory(str(tmp_path / "absent")) == (B.ASSUMED_BYTES, "assumed")


def test_budget_follows_free_memory(device, monkeypatch):
    free, source = B.free_memory(device)
    assert free > 0 and source in {"cuda", "/proc/meminfo", "sysconf", "assumed"}
    monkeypatch.setattr(B, "free_memory", lambda dev: (1 << 30, "test"))
    budget = B.decode_voxel_budget(32, device)
    assert budget.max_voxels * budget.bytes_per_voxel <= (1 << 30) * B.MEMORY_FRACTION
    assert budget.max_voxels >= 0.9 * (1 << 30) * B.MEMORY_FRACTION / budget.bytes_per_voxel
    # The bound it replaces: a quarter of the 1024 x 1024 x 512 box, 134 M voxels, ~100x what 1 GiB holds.
    assert 1024 * 1024 * 512 // 4 > 100 * budget.max_voxels
    assert budget.capped(10, "cap").max_voxels == 10 and budget.capped(10**12, "cap") is budget


def test_a_biting_budget_warns_and_is_in_the_levels_metadata(monkeypatch, caplog):
    import xcube_core.pipeline as P

    pipe = tiny_pipeline()
    pipe.max_voxel_fraction = None  # only the device budget
    levels = list(pipe.generate("a quiet lane", seed=3, steps=2))
    assert all("voxel_budget" not in lv.metadata for lv in levels)  # plenty of memory: nothing dropped
    monkeypatch.setattr(P, "decode_voxel_budget",
                        lambda channels, device: B.VoxelBudget(40, 1000, 40_000 * 2, "test device"))
    with caplog.at_level(logging.WARNING, logger="xcube_core.pipeline"):
        capped = list(pipe.generate("a quiet lane", seed=3, steps=2))
    for lv, full in zip(capped, levels):
        meta = lv.metadata["voxel_budget"]
        assert meta["max_voxels"] == 40 and meta["source"] == "test device" and meta["dropped"] > 0
        assert meta["kept"] <= 40 < full.num_voxels
    assert sum("budget of 40" in r.getMessage() for r in caplog.records) == len(capped)


def test_a_bad_cap_is_refused():
    from xcube_core.errors import ModelLoadError
    from xcube_core.pipeline import XCubePipeline

    pipe = tiny_pipeline()
    with pytest.raises(ModelLoadError, match="max_voxel_fraction"):
        XCubePipeline(pipe.levels, pipe.text_encoder, "x", max_voxel_fraction=1.5)
