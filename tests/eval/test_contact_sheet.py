"""`xcube eval contact-sheet`: layout, labels, failed scenes, --compare; tiles are the preview renderer's."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eval_fakes import FakePipeline, fake_scene  # tests/eval/eval_fakes.py (conftest puts it on sys.path)
from xcube_core.cli import main
from xcube_core.eval import runners
from xcube_core.eval.contact_sheet import CONTACT_PROMPTS, CONTACT_SEEDS, compose_sheet, generate_cells
from xcube_core.io.preview import render_preview

TW, TH, PAD, HEAD, LABEL = 96, 64, 6, 44, 20  # the layout constants of compose_sheet


@pytest.fixture
def fakes(monkeypatch):
    pipes = {"a": FakePipeline(), "b": FakePipeline(empty_prompts=("tall towers",))}
    pipes["b"].model_id = "other"
    monkeypatch.setattr(runners, "load_pipeline", lambda spec, device="cpu": pipes[spec])
    return pipes


def test_defaults_are_8_prompts_and_2_seeds():
    assert len(CONTACT_PROMPTS) == 8 and len(set(CONTACT_PROMPTS)) == 8 and CONTACT_SEEDS == (0, 1)


def test_contact_sheet_cli_lays_out_every_level_and_compares_two_models(fakes, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("low houses\ntall towers\n")
    out = tmp_path / "sheet.png"
    code = main(["eval", "contact-sheet", "--model", "a", "--compare", "b", "--prompts", str(prompts),
                 "--seeds", "0", "1", "--tile", f"{TW}x{TH}", "--out", str(out), "--no-progress"])
    assert code == 0 and "2 failed scenes" in capsys.readouterr().out  # b fails "tall towers" at both seeds
    sheet = np.asarray(Image.open(out).convert("RGB"))
    group = 2 * 2 * (TW + PAD) + PAD  # 2 seeds x 2 levels per model
    assert sheet.shape == (HEAD + 2 * (LABEL + TH + PAD) + PAD, 2 * group + PAD, 3)
    # model a, prompt 1 ("tall towers"), seed 1, level 1: exactly the preview of the fake's scene
    x = PAD + (1 * 2 + 1) * (TW + PAD)
    y = HEAD + 1 * (LABEL + TH + PAD) + LABEL
    want = render_preview(fake_scene("tall towers", 1), width=TW, height=TH)
    assert np.array_equal(sheet[y + 16:y + TH, x:x + TW], want[16:])  # below the caption strip
    # model b failed "tall towers" after level 0: its level-1 tile is blank with a red frame
    xb = group + PAD + (0 * 2 + 1) * (TW + PAD)
    assert tuple(sheet[y + TH - 1, xb + 10]) == (200, 60, 60)
    assert not np.array_equal(sheet[y + 16:y + TH, xb:xb + TW], want[16:])


def test_compose_rejects_mismatched_models_and_cli_rejects_bad_tiles(fakes, tmp_path, capsys):
    a = generate_cells(fakes["a"], ["low houses"], [0], tile=(TW, TH))
    b = generate_cells(fakes["a"], ["low houses"], [0, 1], tile=(TW, TH))
    assert len(a) == 1 and len(a[0].images) == 2 and a[0].error is None
    with pytest.raises(Exception, match="same cells"):
        compose_sheet([a, b], [2, 2], tile=(TW, TH))
    assert main(["eval", "contact-sheet", "--model", "a", "--tile", "9x9", "--out", str(tmp_path / "x.png")]) == 2
    assert "--tile" in capsys.readouterr().err
