"""The interface between the generic trainer and one model's training recipe, and the task registry.

A *task* knows one model: how to build it, its data, its loss and how to export it for inference.
The :class:`~xcube_core.train.trainer.Trainer` knows everything else (optimiser, EMA, precision,
checkpoints, resume, DDP, logging). Tasks for the XCube models live in ``xcube_core.train.tasks``,
which exposes ``TASKS = {"vae": factory, "diffusion": factory, "refine": factory}`` with
``factory(level: int, data_dir: pathlib.Path | None, overrides: dict) -> TrainTask``.

Kinds resolve in this order: tasks registered with :func:`register_task`, the built-in ``"toy"``
task (a tiny regression for smoke tests of the machinery), ``xcube_core.train.tasks.TASKS``, and
finally ``"package.module:factory"`` for tasks defined outside this package.
"""

from __future__ import annotations

import importlib
import logging
import pathlib
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from xcube_core.errors import InvalidInputError

__all__ = ["TrainTask", "TaskFactory", "available_tasks", "get_task", "register_task"]

logger = logging.getLogger(__name__)


@runtime_checkable
class TrainTask(Protocol):
    """One model's training recipe. Implementations must be deterministic given the generator.

    Attributes:
        name: the task kind, e.g. ``"vae"``, ``"diffusion"``, ``"refine"``.
    """

    name: str

    def config(self) -> dict:
        """JSON-able task config (model config, level, loss weights, data settings).

        Saved with every checkpoint and compared on ``--resume``: any difference stops the resume
        with a message naming the differing keys.
        """

    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (the trainer seeds torch before calling this)."""

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        """The map-style dataset of ``split`` (``"train"`` or ``"val"``); items must be
        deterministic functions of their index. Raise :class:`~xcube_core.errors.DataError` for a
        missing or malformed data directory."""

    def collate(self, items: list) -> Any:
        """Batch a list of dataset items (tensors, dicts, GridBatch/JaggedTensor, ...)."""

    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to minimise (mean over the batch) and named float logs (e.g. KL, BCE).

        ``model`` may be DDP-wrapped: call it, do not reach into ``model.module`` for the forward.
        All randomness must come from ``generator`` (or torch's global RNG, which is checkpointed).
        ``generator`` is a CPU generator even when training on CUDA: draw on the CPU and move (e.g.
        ``xcube_core.diffusion.randn_like``), so that losses do not depend on the device.
        """

    def export(self, model: torch.nn.Module, out_dir: pathlib.Path) -> None:
        """Write the inference model (safetensors + config.json) to ``out_dir``; ``model`` carries
        the EMA weights when an EMA is used."""


TaskFactory = Callable[[int, "pathlib.Path | None", dict], TrainTask]
_REGISTRY: dict[str, TaskFactory] = {}
XCUBE_KINDS = ("vae", "diffusion", "refine")


def register_task(kind: str, factory: TaskFactory) -> None:
    """Make ``get_task(kind, ...)`` call ``factory(level, data_dir, overrides)``."""
    if not kind or not isinstance(kind, str):
        raise TypeError(f"task kind must be a non-empty str, got {kind!r}")
    _REGISTRY[kind] = factory


def _project_tasks() -> dict[str, TaskFactory]:
    try:
        module = importlib.import_module("xcube_core.train.tasks")
    except ModuleNotFoundError as exc:
        if exc.name != "xcube_core.train.tasks":
            raise
        return {}
    return dict(getattr(module, "TASKS", {}))


def available_tasks() -> list[str]:
    """Kinds :func:`get_task` accepts without a ``module:factory`` path."""
    from xcube_core.train import toy

    kinds = set(_REGISTRY) | set(_project_tasks()) | {toy.TOY_KIND}
    return sorted(kinds)


def get_task(kind: str, level: int = 0, data_dir: str | pathlib.Path | None = None, overrides: dict | None = None) -> TrainTask:
    """Build the task ``kind`` for ``level`` on ``data_dir`` with task ``overrides``.

    Raises:
        InvalidInputError: unknown kind (the message lists the known ones), or a factory that does
            not return something with the :class:`TrainTask` methods.
    """
    overrides = dict(overrides or {})
    data_path = None if data_dir is None else pathlib.Path(data_dir)
    factory = _REGISTRY.get(kind)
    if factory is None:
        from xcube_core.train import toy

        if kind == toy.TOY_KIND:
            factory = toy.make_toy_task
    if factory is None:
        factory = _project_tasks().get(kind)
    if factory is None and ":" in kind:
        factory = _import_factory(kind)
    if factory is None:
        hint = " (xcube_core.train.tasks is not written yet)" if kind in XCUBE_KINDS else ""
        raise InvalidInputError(f"unknown training task {kind!r}{hint}; known: {available_tasks()}")
    task = factory(int(level), data_path, overrides)
    missing = [m for m in ("config", "build_model", "build_dataset", "collate", "loss", "export") if not hasattr(task, m)]
    if missing or not isinstance(getattr(task, "name", None), str):
        raise InvalidInputError(f"task factory for {kind!r} returned {type(task).__name__}, lacking {missing or ['name']}")
    return task


def _import_factory(spec: str) -> TaskFactory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"cannot import task factory {spec!r}: {exc}") from exc
