"""DDP: two gloo processes (torchrun) with batch B end with the parameters of one process with batch 2B."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from xcube_core.train.checkpoint import latest_checkpoint
from xcube_core.train.config import TrainConfig
from xcube_core.train.task import get_task
from xcube_core.train.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASK = {"dtype": "float64", "noise_std": 0.0, "dropout": 0.0, "items": 32}
STEPS = 5  # 32 items / global batch 8 = 4 batches per epoch: step 5 starts the second epoch


@pytest.mark.timeout(240)
def test_two_gloo_processes_match_one_with_double_batch(tmp_path):
    single = Trainer(get_task("toy", 0, None, TASK),
                     TrainConfig(batch_size=8, max_steps=STEPS, lr=1e-2, ema_decay=0.9, precision="fp32",
                                 device="cpu", weight_decay=0.1, warmup_steps=1),
                     tmp_path / "single", progress=False, tensorboard=False).fit()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "xcube_core", "train", "toy", "--out", str(tmp_path / "ddp"), "--batch-size", "4",
           "--max-steps", str(STEPS), "--lr", "0.01", "--ema-decay", "0.9", "--fp32", "--device", "cpu",
           "--weight-decay", "0.1", "--warmup-steps", "1", "--no-progress", "--no-tensorboard"]
    cmd += [arg for key, value in TASK.items() for arg in ("-o", f"{key}={value}")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 1/2" in proc.stderr and "backend gloo" in proc.stderr

    ddp_ckpt = latest_checkpoint(tmp_path / "ddp")
    assert ddp_ckpt.name == single.checkpoint.name
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(single.checkpoint / name)), load_file(str(ddp_ckpt / name))
        for key in a:
            assert a[key].dtype == b[key].dtype
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-12, msg=f"{name}:{key}")
    rng = load_file(str(ddp_ckpt / "rng.safetensors"))
    assert {k.split(".")[0] for k in rng} == {"rank0", "rank1"}  # both ranks' RNG states are kept
    # control: one process with the un-doubled batch ends elsewhere, so the match above is not vacuous
    half = Trainer(get_task("toy", 0, None, TASK),
                   TrainConfig(batch_size=4, max_steps=STEPS, lr=1e-2, ema_decay=0.9, precision="fp32",
                               device="cpu", weight_decay=0.1, warmup_steps=1),
                   tmp_path / "half", progress=False, tensorboard=False).fit()
    a, c = load_file(str(ddp_ckpt / "model.safetensors")), load_file(str(half.checkpoint / "model.safetensors"))
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-4
