"""`xcube data procedural | voxelize | info` end to end (in-process workers to stay fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from xcube_core.cli import main
from xcube_core.data.storage import load_sample, read_manifest


@pytest.mark.parametrize("job", ["procedural", "voxelize", "info"])
def test_help(job, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", job, "--help"])
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out or job == "info"


def test_procedural_writes_samples_and_manifest(tmp_path, capsys):
    out = tmp_path / "scenes"
    args = ["data", "procedural", "--out", str(out), "--count", "2", "--split", "val", "--levels", "2",
            "--extent", "16", "16", "--height", "16", "--voxel-size", "0.5", "--workers", "1"]
    assert main(args) == 0
    rows = read_manifest(out)
    assert [r["file"] for r in rows] == ["val_0000000.safetensors", "val_0000001.safetensors"]
    assert all(r["split"] == "val" and r["caption"] for r in rows)
    first = load_sample(out / rows[0]["file"])
    assert first.metadata["seed"] == 10_000_000 and len(first.levels) == 2
    # extending the set keeps the old rows and adds the new ones
    assert main(args[:5] + ["1", "--start", "2"] + args[6:]) == 0
    assert len(read_manifest(out)) == 3
    assert main(["data", "info", str(out)]) == 0
    assert "3 samples" in capsys.readouterr().out
    # scenes are windows of a larger site by default; --context 0 lays each out for its own frame
    assert first.metadata["site_extent_m"] == [80.0, 80.0]
    framed = tmp_path / "framed"
    assert main(args[:3] + [str(framed)] + args[4:] + ["--context", "0"]) == 0
    assert load_sample(framed / rows[0]["file"]).metadata["site_window_m"] == [0.0, 16.0, 0.0, 16.0]


def test_procedural_refuses_a_negative_context(tmp_path, capsys):
    rc = main(["data", "procedural", "--out", str(tmp_path / "x"), "--count", "1", "--context", "-4"])
    assert rc == 2 and "--context must be >= 0 metres, got -4" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_voxelize_skips_broken_files(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    trimesh.creation.torus(1.0, 0.3).export(src / "torus.obj")
    (src / "torus.txt").write_text("a ring")
    (src / "broken.obj").write_text("v 1 2\nf 1 2 9\n")
    (src / "empty.stl").write_bytes(b"")
    np.savez(src / "scan.npz", points=np.random.default_rng(0).uniform(0, 5, (2000, 3)))
    out = tmp_path / "out"
    rc = main(["data", "voxelize", str(src), "--out", str(out), "--levels", "2", "--resolution", "32",
               "--workers", "1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken.obj" in err and "empty.stl" in err
    rows = {r["file"]: r for r in read_manifest(out)}
    assert set(rows) == {"torus.safetensors", "scan.safetensors"}
    assert rows["torus.safetensors"]["caption"] == "a ring"
    assert load_sample(out / "scan.safetensors").metadata["normalization"]["mode"] == "metric"
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["file"] == "scan.safetensors"


def test_voxelize_with_nothing_to_do_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "voxelize", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no mesh or point-cloud files" in capsys.readouterr().err


def test_bad_sizes_are_clear_errors(tmp_path, capsys):
    assert main(["data", "voxelize", str(tmp_path), "--out", str(tmp_path / "o"), "--resolution", "100",
                 "--levels", "4"]) == 2
    assert "multiple of 2**(levels-1) = 8" in capsys.readouterr().err
    assert main(["data", "procedural", "--out", str(tmp_path / "p"), "--count", "1", "--voxel-size", "0"]) == 2
    assert "--voxel-size must be > 0" in capsys.readouterr().err
