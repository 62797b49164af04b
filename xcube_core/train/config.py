"""Trainer configuration: a frozen dataclass, loadable from YAML/JSON, overridable, saved as JSON.

A config file is either flat (trainer fields only) or has two sections::

    train:            # TrainConfig fields
      lr: 2.0e-4
      batch_size: 4
    task:             # passed to the task as overrides (model width, loss weights, ...)
      latent_channels: 8

Precision ``"auto"`` is resolved at run time by :func:`resolve_precision`: bf16 autocast where the
hardware has native bf16 (CUDA devices that report it; CPUs with the ``avx512_bf16`` or
``amx_bf16`` flags), float32 elsewhere. It is detected, never assumed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from typing import Any

import torch

from xcube_core import precision as precision_mod
from xcube_core.precision import PRECISIONS, cpu_has_native_bf16  # noqa: F401 (re-exported)
from xcube_core.errors import InvalidInputError
from xcube_core.models.base import config_from_dict, config_to_dict

__all__ = ["TrainConfig", "load_config_file", "merge_config", "resolve_device", "resolve_precision"]

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the generic training loop (the model's own live in the task config).

    Attributes:
        lr: peak learning rate of AdamW.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        eps: AdamW epsilon.
        batch_size: items per process and step (the global batch is ``batch_size * world_size``).
        max_steps: optimiser steps of the whole run (a resumed run continues up to this).
        warmup_steps: linear learning-rate warm-up from 0.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decays to ``min_lr_ratio * lr`` at max_steps).
        min_lr_ratio: floor of the cosine schedule, relative to ``lr``.
        grad_clip: max global gradient norm; 0 disables clipping.
        ema_decay: EMA decay of the exported weights; 0 disables the EMA.
        precision: ``"bf16"``, ``"fp32"`` or ``"auto"`` (bf16 autocast where natively supported).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        log_every: steps between progress/TensorBoard scalars.
        val_every: steps between validation losses on the ``val`` split (0 disables them; a task
            without a val split logs a warning and trains on). Each validation uses the same
            ``val_batches`` batches and the same generator, so its values are comparable across steps.
        val_batches: batches of the val split per validation (the first ``val_batches * batch_size``
            items, in order).
        ckpt_every: steps between checkpoints (one is also written at the end and on SIGINT/SIGTERM).
        keep_last: checkpoints kept on disk (older ones are deleted).
        seed: seeds the model init, the data order and the loss generator.
        num_workers: DataLoader worker processes.
        export_at_end: write the inference model (EMA weights) to ``out/model`` when training ends.
        ddp_find_unused: let DDP tolerate parameters that get no gradient in a step (costs a graph
            walk per step; needed when a model skips a head, e.g. text layers on dropped prompts).
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 4
    max_steps: int = 1000
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "auto"
    device: str = "auto"
    log_every: int = 10
    val_every: int = 250
    val_batches: int = 4
    ckpt_every: int = 500
    keep_last: int = 3
    seed: int = 0
    num_workers: int = 0
    export_at_end: bool = True
    ddp_find_unused: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> InvalidInputError:
            return InvalidInputError(f"train config {name}={getattr(self, name)!r}: expected {expected}")

        positive_ints = ("batch_size", "max_steps", "log_every", "ckpt_every", "keep_last", "val_batches")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "an integer >= 1")
        for name in ("warmup_steps", "num_workers", "seed", "val_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, "an integer >= 0")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise bad("lr", "a number > 0")
        for name in ("weight_decay", "grad_clip", "eps"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                raise bad(name, "a number >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise bad("ema_decay", "a number in [0, 1) (0 disables the EMA)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad("min_lr_ratio", "a number in [0, 1]")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise bad("betas", "two numbers in [0, 1)")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"one of {PRECISIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"one of {LR_SCHEDULES}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InvalidInputError`."""
        try:
            return config_from_dict(cls, data)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"bad train config: {exc}") from exc

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based): warm-up, then constant or cosine."""
        import math

        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        span = max(1, self.max_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))


def load_config_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a YAML or JSON config file; returns ``(train_overrides, task_overrides)``.

    Raises:
        InvalidInputError: the file is missing, unparsable, or has unknown top-level sections.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InvalidInputError(f"config file {path} does not exist; fix: pass a .yaml or .json file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise InvalidInputError(f"cannot parse config file {path}: {exc}") from exc
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    if set(data) & {"train", "task"}:
        unknown = sorted(set(data) - {"train", "task"})
        if unknown:
            raise InvalidInputError(f"config file {path}: unknown sections {unknown}; expected 'train' and 'task'")
        train, task = data.get("train") or {}, data.get("task") or {}
    else:
        train, task = data, {}
    if not isinstance(train, dict) or not isinstance(task, dict):
        raise InvalidInputError(f"config file {path}: 'train' and 'task' must be mappings")
    return dict(train), dict(task)


def merge_config(base: TrainConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    """``base`` (default config when None) with ``overrides`` applied; validated."""
    data = TrainConfig().to_dict() if base is None else base.to_dict() if isinstance(base, TrainConfig) else dict(base)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise InvalidInputError(
            f"unknown train option(s) {unknown}; known: {sorted(f.name for f in dataclasses.fields(TrainConfig))}"
        )
    data.update(overrides)
    return TrainConfig.from_dict(data)


def resolve_device(config: TrainConfig, local_rank: int = 0) -> torch.device:
    """The device to train on for this process (``cuda:local_rank`` under torchrun with CUDA)."""
    if config.device == "cpu":
        return torch.device("cpu")
    if config.device == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InvalidInputError(f"device={config.device!r} but CUDA is not available; fix: use --device cpu")
    if config.device.startswith("cuda:"):
        return torch.device(config.device)
    return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for ``precision`` in ("auto", "bf16", "fp32") on ``device``."""
    return precision_mod.resolve_precision(device, precision)
