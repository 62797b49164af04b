"""`xcube eval generation | vae | upsampling | prompts` end to end on the fake pipeline and a real on-disk dataset."""

from __future__ import annotations

import json

import pytest

from eval_fakes import FakePipeline, fake_scene, write_reference  # tests/eval/eval_fakes.py (conftest puts it on sys.path)
from xcube_core.cli import main
from xcube_core.data.storage import load_sample, read_manifest
from xcube_core.eval import runners
from xcube_core.eval.metrics import voxel_iou


@pytest.fixture
def fake(monkeypatch) -> FakePipeline:
    pipe = FakePipeline()
    monkeypatch.setattr(runners, "load_pipeline", lambda spec, device="cpu": pipe)
    return pipe


def test_eval_help_lists_tasks(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("generation", "vae", "prompts", "1-NNA", "COV", "IoU"):
        assert word in out
    with pytest.raises(SystemExit):
        main(["eval", "generation", "--help"])
    assert "--reference" in capsys.readouterr().out


def test_generation_against_copies_of_the_reference(fake, reference_dir, tmp_path):
    # The fake reproduces each reference exactly (same caption and seed), so every reference is covered,
    # 1-NNA sits at or below chance and the class fractions agree.
    out = tmp_path / "gen.json"
    code = main(["eval", "generation", "--model", "fake", "--reference", str(reference_dir), "--num", "6",
                 "--seed", "0", "--points", "2048", "--steps", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["metrics"]["COV-CD"] == 1.0
    assert r["metrics"]["1-NNA-CD"] <= 0.5
    assert r["class_fractions"]["total_variation"] == pytest.approx(0.0, abs=1e-12)
    assert [s["prompt"] for s in r["scenes"]] == [row["caption"] for row in read_manifest(reference_dir)]
    assert r["failed_scenes"] == 0 and r["finest_voxel_size"] == 1.0
    # the fake makes exact copies of the references: same hierarchy figures on both sides
    gen, data = r["hierarchy"]["generated"]["L0-L1"], r["hierarchy"]["reference"]["L0-L1"]
    assert gen["orphan_rate"] == data["orphan_rate"] == 0.0 and gen["scenes"] == data["scenes"] == 6
    assert gen["class_agreement"] == pytest.approx(data["class_agreement"])


def test_generation_with_one_prompt_loses_coverage(fake, reference_dir, tmp_path):
    out = tmp_path / "gen.json"
    assert main(["eval", "generation", "--model", "fake", "--reference", str(reference_dir), "--num", "6",
                 "--prompt", "a quiet field", "--points", "256", "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["num"] == 6
    assert r["metrics"]["COV-CD"] <= 2 / 6  # identical fields cover one or two references at most
    assert r["metrics"]["1-NNA-CD"] > 0.5


def test_generation_reports_missing_data(fake, reference_dir, tmp_path, capsys):
    code = main(["eval", "generation", "--reference", str(reference_dir), "--num", "50", "--no-progress",
                 "--out", str(tmp_path / "x.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "has 6 samples, need 50" in err and "xcube data procedural" in err
    assert main(["eval", "generation", "--reference", str(tmp_path / "nowhere"), "--num", "2"]) == 2
    assert "no dataset manifest" in capsys.readouterr().err


def test_vae_iou_matches_direct_computation(fake, reference_dir, tmp_path):
    out = tmp_path / "vae.json"
    assert main(["eval", "vae", "--model", "fake", "--reference", str(reference_dir), "--num", "3",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    rows = read_manifest(reference_dir)[:3]
    for li in (0, 1):
        expected = []
        for row in rows:
            lvl = load_sample(reference_dir / row["file"]).levels[li]
            kept = lvl.ijk[lvl.ijk[:, 0] != 0]  # the fake VAE drops the i == 0 slice
            expected.append(voxel_iou(lvl.ijk, kept))
        got = r["levels"][str(li)]
        assert got["mean_iou"] == pytest.approx(sum(expected) / 3)
        assert 0 < got["mean_iou"] < 1 and got["mean_semantic_accuracy"] == 1.0
        # every dropped voxel has a kept neighbour at i == 1: a hit at 1-voxel tolerance, a miss for IoU
        assert got["mean_precision_1"] == 1.0 and got["mean_fscore_1"] == 1.0


def test_upsampling_scores_finer_levels_from_the_true_coarse_level(fake, reference_dir, tmp_path, capsys):
    """`xcube eval upsampling`: the fake makes reference i again for seed i (IoU 1); other seeds change
    the buildings' footprints, and the scores are those computed directly against the stored scenes."""
    out = tmp_path / "up.json"
    assert main(["eval", "upsampling", "--model", "fake", "--reference", str(reference_dir), "--num", "4",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["task"] == "upsampling" and list(r["levels"]) == ["1"]
    assert r["levels"]["1"]["mean_iou"] == 1.0 and r["levels"]["1"]["mean_semantic_accuracy"] == 1.0
    assert "Finer levels generated from the true coarsest level" in capsys.readouterr().out
    assert main(["eval", "upsampling", "--model", "fake", "--reference", str(reference_dir), "--num", "4",
                 "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    rows = read_manifest(reference_dir)[:4]
    expected = [voxel_iou(load_sample(reference_dir / row["file"]).levels[1].ijk,
                          fake_scene(row["caption"], i + 1).ijk) for i, row in enumerate(rows)]
    assert r["levels"]["1"]["mean_iou"] == pytest.approx(sum(expected) / 4)
    assert r["levels"]["1"]["mean_iou"] < 1.0  # the tall / low buildings moved
    assert set(r["hierarchy"]["generated"]) == set(r["hierarchy"]["reference"]) == {"L0-L1"}
    fake.voxel_sizes = [1.0]
    assert main(["eval", "upsampling", "--model", "fake", "--reference", str(reference_dir), "--num", "1"]) == 2
    assert "no finer level" in capsys.readouterr().err


def test_vae_rejects_unknown_level(fake, reference_dir, capsys):
    assert main(["eval", "vae", "--reference", str(reference_dir), "--num", "1", "--levels", "5"]) == 2
    assert "levels 0..1" in capsys.readouterr().err


def test_prompts_cli_writes_report(fake, tmp_path, capsys):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"attribute": "tall", "positive": "tall towers", "negative": "low houses"},
                                 {"attribute": "water", "positive": "water", "negative": "dry", "kind": "caption"}]))
    out = tmp_path / "p.json"
    assert main(["eval", "prompts", "--model", "fake", "--pairs", str(pairs), "--seeds", "3", "--steps", "1",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["summary"]["overall"]["trials"] == 6 and r["summary"]["overall"]["success_rate"] == 1.0
    assert r["seeds"] == [0, 1, 2]
    text = capsys.readouterr().out
    assert "Prompt control" in text and "overall" in text
    assert main(["eval", "prompts", "--seeds", "0"]) == 2


def test_builtin_prompts_on_fake_pipeline(fake, tmp_path):
    out = tmp_path / "p.json"
    assert main(["eval", "prompts", "--model", "fake", "--attributes", "tall", "--kinds", "caption",
                 "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    # The fake knows only the words "tall" and "low": the downtown pair (tall vs mid-rise) succeeds, the
    # other two ("high-rise" / "low-rise", "medium-height" / "single-storey") tie at height 0.
    by_prompt = {o["positive"]: o["success"] for o in r["outcomes"]}
    assert by_prompt["a dense downtown block with tall office buildings"] is True
    assert r["num_pairs"] == 3
    assert r["summary"]["overall"]["successes"] == 1 and r["summary"]["overall"]["ties"] == 2


def test_reference_files_round_trip(tmp_path):
    root = write_reference(tmp_path / "r", [("tall towers", 0)], split="val")
    refs = runners.load_references(root, 1, split="val")
    assert refs[0].caption == "tall towers" and refs[0].level_at(1.0).voxel_size == 1.0
    assert refs[0].level_at(3.0) is refs[0].levels[-1]


def test_generation_from_stored_samples(reference_dir, tmp_path):
    # The same dataset as "generated" and reference: every sample has its exact copy.
    gen = write_reference(tmp_path / "gen", [(row["caption"], row["seed"]) for row in read_manifest(reference_dir)],
                          split="val")
    out = tmp_path / "oracle.json"
    assert main(["eval", "generation", "--reference", str(reference_dir), "--generated", str(gen), "--num", "6",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["metrics"]["COV-CD"] == 1.0 and r["metrics"]["1-NNA-CD"] <= 0.5
    assert r["generated"].endswith("(val)")


def test_eval_with_tiny_pipeline(reference_dir, tmp_path):
    """The real XCubePipeline.tiny() (random weights) through `xcube eval prompts` and `xcube eval vae`."""
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"attribute": "trees", "positive": "many trees", "negative": "no trees"}]))
    out = tmp_path / "p.json"
    assert main(["eval", "prompts", "--model", "tiny", "--pairs", str(pairs), "--seeds", "1", "--steps", "1",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["model_id"] == "tiny-0" and r["summary"]["overall"]["trials"] == 1
    (o,) = r["outcomes"]
    assert o["statistic"] == "tree_fraction" and 0.0 <= o["positive_value"] <= 1.0
    # The fake references use the tiny model's voxel sizes (2 m, 1 m), so both VAEs apply.
    out = tmp_path / "v.json"
    assert main(["eval", "vae", "--model", "tiny", "--reference", str(reference_dir), "--num", "1", "--refine",
                 "--out", str(out), "--no-progress"]) == 0
    v = json.loads(out.read_text())
    assert set(v["levels"]) == {"0", "1"} and v["refine"] is True
    assert all(0.0 <= lv["mean_iou"] <= 1.0 for lv in v["levels"].values())
    # the real pipeline takes the reference's level 0 as its layout (low scenes: the tiny model's box is
    # 4 coarse voxels high)
    low = write_reference(tmp_path / "low", [("low houses", 0), ("a field with trees", 1)])
    out = tmp_path / "u.json"
    assert main(["eval", "upsampling", "--model", "tiny", "--reference", str(low), "--num", "2",
                 "--steps", "1", "--out", str(out), "--no-progress"]) == 0
    u = json.loads(out.read_text())
    assert list(u["levels"]) == ["1"] and 0.0 <= u["levels"]["1"]["mean_iou"] <= 1.0
    assert 0.0 <= u["hierarchy"]["generated"]["L0-L1"]["orphan_rate"] <= 1.0
    assert u["hierarchy"]["reference"]["L0-L1"]["orphan_rate"] == 0.0 and u["hierarchy"]["generated"]["L0-L1"]["scenes"] == 2


def test_vae_from_a_single_trained_vae_folder(reference_dir, tmp_path):
    """`--model` may be one VAE folder (as a training run writes it) instead of a whole pipeline."""
    import torch

    from xcube_core.models.vae import SparseStructureVAE, VAEConfig

    torch.manual_seed(0)
    vae = SparseStructureVAE(VAEConfig(grid_shape=(16, 16, 16), voxel_size=1.0, channels=(8, 16), latent_channels=4,
                                       dense_latent=True, sem_embed_dim=4))
    vae.save_pretrained(tmp_path / "run" / "model")
    out = tmp_path / "v.json"
    assert main(["eval", "vae", "--model", str(tmp_path / "run" / "model"), "--reference", str(reference_dir),
                 "--num", "2", "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["model_id"] == "run/vae" and list(r["levels"]) == ["0"]
    assert r["levels"]["0"]["voxel_size"] == 1.0 and 0.0 <= r["levels"]["0"]["mean_iou"] <= 1.0
