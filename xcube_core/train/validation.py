"""Validation loss during training: the task's loss on a fixed part of the ``val`` split.

Every validation uses the same batches (the first ``val_batches * batch_size`` items of the split, in
order) and a generator seeded with the same number, with the model in eval mode and no gradients, so
its values are comparable across steps and across runs: a falling training loss with a rising
validation loss is over-fitting, not progress. Torch's global RNG is forked around it, so training
continues exactly as it would have without validation (resume stays exact).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from xcube_core.errors import DataError, InvalidInputError
from xcube_core.train.config import TrainConfig
from xcube_core.train.task import TrainTask

__all__ = ["VAL_SEED", "Validator"]

logger = logging.getLogger(__name__)

VAL_SEED = 20_261_121  # one fixed stream for every validation of every run


class Validator:
    """Computes ``val_loss`` and ``val_<term>`` (the task's logged terms) on fixed val batches.

    Args:
        task: the task whose ``build_dataset("val")``, ``collate`` and ``loss`` are used.
        config: gives ``val_batches`` and ``batch_size``.
        device: where the batches go.
        precision: ``"bf16"`` or ``"fp32"`` (the autocast training uses).
    """

    def __init__(self, task: TrainTask, config: TrainConfig, device: torch.device, precision: str) -> None:
        self.task, self.config, self.device, self.precision = task, config, device, precision
        self._batches: list[Any] | None = None
        self.disabled_reason: str | None = None

    def _load(self) -> list[Any]:
        from xcube_core.train.trainer import move_to_device

        if self._batches is None:
            try:
                dataset = self.task.build_dataset("val")
            except (DataError, InvalidInputError) as exc:
                self.disabled_reason = str(exc)
                logger.warning("no validation loss for this run: %s", exc)
                self._batches = []
                return self._batches
            bs, n = self.config.batch_size, min(len(dataset), self.config.val_batches * self.config.batch_size)
            self._batches = [move_to_device(self.task.collate([dataset[i] for i in range(lo, min(lo + bs, n))]),
                                            self.device) for lo in range(0, n, bs)]
        return self._batches

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float] | None:
        """Mean loss and terms over the fixed val batches; None when the task has no val split.

        ``model`` must be the unwrapped model (not DDP): validation runs on one process only.
        """
        batches = self._load()
        if not batches:
            return None
        devices = [self.device] if self.device.type == "cuda" else []
        was_training = model.training
        sums: dict[str, float] = {}
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(VAL_SEED)
            generator = torch.Generator().manual_seed(VAL_SEED)
            model.eval()
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
            try:
                for batch in batches:
                    with autocast:
                        loss, logs = self.task.loss(model, batch, generator)
                    for key, value in {"loss": float(loss), **{k: float(v) for k, v in (logs or {}).items()}}.items():
                        sums[key] = sums.get(key, 0.0) + value
            finally:
                model.train(was_training)
        return {f"val_{k}": v / len(batches) for k, v in sums.items()}
