"""Fixtures of the trainer tests: the toy task, a fast CPU config, quiet trainer options."""

from __future__ import annotations

import pytest

from xcube_core.train.config import TrainConfig
from xcube_core.train.toy import make_toy_task


@pytest.fixture
def toy():
    """Factory of the toy regression: 16 items (4 batches of 4 per epoch), input noise and dropout on."""

    def make(level: int = 0, **overrides):
        return make_toy_task(level, None, {"items": 16, "noise_std": 0.1, "dropout": 0.2, **overrides})

    return make


@pytest.fixture
def fast_config():
    """Factory of a small CPU float32 TrainConfig with warm-up, cosine LR and EMA."""

    def make(**changes) -> TrainConfig:
        base = dict(max_steps=6, batch_size=4, lr=1e-2, ema_decay=0.9, precision="fp32", device="cpu",
                    log_every=2, ckpt_every=100, warmup_steps=2, lr_schedule="cosine", seed=3)
        base.update(changes)
        return TrainConfig(**base)

    return make


@pytest.fixture
def quiet() -> dict:
    """Trainer keyword arguments for tests: no bar, no TensorBoard."""
    return {"progress": False, "tensorboard": False}
