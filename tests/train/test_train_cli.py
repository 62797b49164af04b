"""`xcube train`: help, config layering, SIGTERM -> checkpoint -> --resume, export, TensorBoard, errors."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from xcube_core.cli import main
from xcube_core.train.checkpoint import latest_checkpoint, read_meta
from xcube_core.train.toy import ToyMLP

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUIET = ["--no-progress", "--device", "cpu", "--fp32"]


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--level", "--data", "--out", "--resume", "--max-steps", "--config", "--bf16", "--fp32",
                   "--batch-size", "--lr", "--export-only", "torchrun"):
        assert option in text


def test_config_file_and_print_config(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  lr: 0.003\n  batch_size: 2\ntask:\n  hidden: 5\n")
    code = main(["train", "toy", "--out", str(tmp_path / "run"), "--config", str(cfg), "--batch-size", "8",
                 "-o", "items=40", "--print-config"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train_config"]["lr"] == 0.003 and printed["train_config"]["batch_size"] == 8
    assert printed["task_config"]["hidden"] == 5 and printed["task_config"]["items"] == 40


def test_errors_exit_2(tmp_path, capsys):
    assert main(["train", "toy", "--out", str(tmp_path), "--data", str(tmp_path / "nope")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["train", "vea", "--out", str(tmp_path)]) == 2
    assert "unknown training task 'vea'" in capsys.readouterr().err
    assert main(["train", "toy", "--out", str(tmp_path), "-o", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_sigterm_checkpoints_then_resume_and_export(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "xcube_core", "train", "toy", "--out", str(out), "--max-steps", "1000000",
           "--ckpt-every", "1000000", "--log-every", "1", "--lr", "0.005", "-o", "hidden=12", *QUIET]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "continue with --resume" in stdout
    stopped = latest_checkpoint(out)
    step = read_meta(stopped)["step"]
    assert step >= 1 and not (out / "model").exists()

    # resume: the saved config (lr, hidden) is reused; only --max-steps changes
    assert main(["train", "toy", "--out", str(out), "--resume", "--max-steps", str(step + 2), *QUIET]) == 0
    final = latest_checkpoint(out)
    meta = read_meta(final)
    assert meta["step"] == step + 2 and meta["train_config"]["lr"] == 0.005 and meta["task_config"]["hidden"] == 12
    model = ToyMLP.from_pretrained(out / "model")
    ema = load_file(str(final / "ema.safetensors"))
    assert all(torch.equal(p.float(), ema[n]) for n, p in model.named_parameters())

    # --export-only rewrites the export from the newest checkpoint
    (out / "model" / "model.safetensors").unlink()
    assert main(["train", "toy", "--out", str(out), "--export-only", *QUIET]) == 0
    assert ToyMLP.from_pretrained(out / "model").config.hidden == 12

    # TensorBoard scalars were written
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/steps_per_s"} <= set(tags)
    # the stopped and the resumed run each wrote an event file; when both were created within the same
    # second their read order is not fixed, so the steps are compared in order
    assert sorted(e.step for e in events.Scalars("train/loss"))[-2:] == [step + 1, step + 2]
