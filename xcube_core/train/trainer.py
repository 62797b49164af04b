"""The generic training loop: AdamW, EMA, bf16 autocast, checkpoints, exact resume, DDP, logging.

One :class:`Trainer` drives any :class:`~xcube_core.train.task.TrainTask`::

    task = get_task("vae", level=0, data_dir="data/procedural", overrides={})
    result = Trainer(task, TrainConfig(max_steps=2000), "runs/vae0").fit()

Run it under ``torchrun --nproc_per_node N`` for data parallelism (each process trains on
``batch_size`` items of every global batch; gradients are averaged by DDP).

Determinism and resume: the trainer seeds torch inside :func:`torch.random.fork_rng` (the caller's
global RNG is untouched afterwards), draws the data order from the seeded
:class:`~xcube_core.train.distributed.ResumableBatchSampler`, and passes the task a seeded
``torch.Generator``. A checkpoint holds the model, optimiser, EMA, sampler position and every RNG
state, so ``resume=True`` continues with exactly the losses the uninterrupted run would have had.
SIGINT/SIGTERM are caught: the current step finishes, a checkpoint is written and :meth:`Trainer.fit`
returns with ``interrupted=True`` (a second signal aborts at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
import threading
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from xcube_core.errors import DataError, ModelLoadError, XCubeError
from xcube_core.models.base import atomic_write_text
from xcube_core.train import checkpoint as ckpt_io
from xcube_core.train.config import TrainConfig, resolve_device, resolve_precision
from xcube_core.train.distributed import (
    DistInfo,
    ResumableBatchSampler,
    all_gather_tensors,
    init_distributed,
    shutdown_distributed,
)
from xcube_core.train.monitor import Monitor
from xcube_core.train.task import TrainTask
from xcube_core.train.validation import Validator

__all__ = ["TrainResult", "Trainer", "move_to_device"]

logger = logging.getLogger(__name__)

RUN_CONFIG = "train_config.json"
EXPORT_DIR = "model"


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    Attributes:
        step: optimiser steps done in total (including those before a resume).
        losses: the loss of each step this call ran, on this process.
        interrupted: stopped by SIGINT/SIGTERM (a checkpoint was written).
        checkpoint: the last checkpoint written or resumed from.
        export_dir: where the inference model was exported, if it was.
    """

    step: int
    losses: list[float]
    interrupted: bool = False
    checkpoint: pathlib.Path | None = None
    export_dir: pathlib.Path | None = None


@dataclasses.dataclass
class _Run:
    """The live objects of one fit (kept together so helpers stay short)."""

    info: DistInfo
    device: torch.device
    precision: str
    model: torch.nn.Module
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: Any
    names: list[str]
    arch: dict[str, Any]
    dataset: torch.utils.data.Dataset | None
    sampler: ResumableBatchSampler | None
    generator: torch.Generator
    step: int = 0
    checkpoint: pathlib.Path | None = None


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (and object with a ``.to``) moved to ``device``; containers kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: move_to_device(getattr(batch, f.name), device)
                                             for f in dataclasses.fields(batch) if f.init})
    if hasattr(batch, "to") and callable(batch.to) and device.type != "cpu":
        return batch.to(device)
    return batch


def _make_ema(model: torch.nn.Module, decay: float):
    from xcube_core.diffusion.ema import EMA

    return EMA(model, decay=decay)


def _build_optimizer(model: torch.nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, list[str]]:
    """AdamW with weight decay on matrices/kernels only (not biases or norm scales, as in nanoGPT)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append((name, p))
    if not decay and not no_decay:
        raise XCubeError(f"{type(model).__name__} has no trainable parameters")
    groups = [g for g in ({"params": [p for _, p in decay], "weight_decay": config.weight_decay},
                          {"params": [p for _, p in no_decay], "weight_decay": 0.0}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)
    return opt, [n for n, _ in decay] + [n for n, _ in no_decay]


class Trainer:
    """Trains ``task``'s model into ``out_dir`` (checkpoints, TensorBoard, exported model).

    Args:
        task: the model's training recipe.
        config: trainer hyper-parameters.
        out_dir: run folder (``checkpoints/``, ``tb/``, ``metrics.jsonl``, ``train_config.json``,
            ``model/``).
        resume: continue from the newest checkpoint in ``out_dir`` (fresh start when there is none).
        progress: show a tqdm bar (rank 0).
        tensorboard: write TensorBoard scalars to ``out_dir/tb`` (rank 0).
        on_step: called as ``on_step(step, loss)`` after every optimiser step.
        handle_signals: catch SIGINT/SIGTERM to checkpoint and stop (main thread only).
        task_overrides: the options the task was built with; saved with checkpoints so that
            ``xcube train --resume`` can rebuild the same task.
        init_from: start a fresh run (no checkpoint yet) from the weights of this pipeline, run or
            model folder (see :mod:`xcube_core.train.init_from`); a new optimiser and EMA. Ignored
            when resuming from a checkpoint of this run, whose weights already contain it.

    Raises (from :meth:`fit`):
        XCubeError: ``out_dir`` already holds checkpoints and ``resume`` is False; non-finite loss.
        ModelLoadError: the checkpoint to resume is from another task/config/architecture or damaged.
        DataError: the task's data is missing or smaller than one global batch.
    """

    def __init__(self, task: TrainTask, config: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True, tensorboard: bool = True,
                 on_step: Callable[[int, float], None] | None = None, handle_signals: bool = True,
                 task_overrides: dict[str, Any] | None = None, init_from: str | os.PathLike | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.task, self.config, self.out_dir = task, config, pathlib.Path(out_dir)
        self.resume, self.progress, self.tensorboard = resume, progress, tensorboard
        self.on_step, self.handle_signals = on_step, handle_signals
        self.task_overrides = dict(task_overrides or {})
        self.init_from = init_from
        self._init_report: dict[str, Any] | None = None
        self._signal: int | None = None

    # ------------------------------------------------------------------ public
    def fit(self) -> TrainResult:
        """Train up to ``config.max_steps``; checkpoint periodically, at the end and on a signal."""
        existing = ckpt_io.latest_checkpoint(self.out_dir)
        if existing is not None and not self.resume:
            raise XCubeError(
                f"{self.out_dir} already holds checkpoints (newest {existing.name}); fix: pass --resume to "
                "continue that run, or choose another --out folder"
            )
        return self._with_process(lambda device, info: self._fit(device, info))

    def export(self, checkpoint: str | os.PathLike | None = None) -> pathlib.Path:
        """Export the EMA (or live) weights of ``checkpoint`` (default: newest) without training."""
        path = pathlib.Path(checkpoint) if checkpoint else ckpt_io.latest_checkpoint(self.out_dir)
        if path is None:
            raise ModelLoadError(f"no checkpoint in {self.out_dir / ckpt_io.CHECKPOINTS}; train first")

        def job(device: torch.device, info: DistInfo) -> pathlib.Path:
            run = self._setup(device, info, with_data=False)
            self._restore(run, path)
            return self._export(run)

        return self._with_process(job)

    # ------------------------------------------------------------------ setup
    def _with_process(self, job: Callable[[torch.device, DistInfo], Any]) -> Any:
        device = resolve_device(self.config, int(os.environ.get("LOCAL_RANK", "0")))
        info = init_distributed(device)
        devices = [device] if device.type == "cuda" else []
        finished = False
        try:
            with torch.random.fork_rng(devices=devices):  # seeding below never leaks to the caller
                result = job(device, info)
            finished = True
            return result
        finally:
            shutdown_distributed(info, finished=finished)

    def _setup(self, device: torch.device, info: DistInfo, with_data: bool = True) -> _Run:
        cfg = self.config
        precision = resolve_precision(cfg.precision, device)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = self.task.build_model().to(device)
        optimizer, names = _build_optimizer(model, cfg)
        ema = _make_ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        dataset = sampler = None
        if with_data:
            dataset = self.task.build_dataset("train")
            try:
                num_items = len(dataset)
            except TypeError as exc:
                raise DataError(f"the {self.task.name} dataset has no length; tasks must return map-style datasets") from exc
            sampler = ResumableBatchSampler(num_items, cfg.batch_size, cfg.seed, info.rank, info.world_size)
        # a CPU generator even when training on CUDA: tasks draw on the CPU (or via diffusion.randn_like)
        # and move, so losses do not depend on the device and one code path serves both
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + info.rank)
        torch.manual_seed(cfg.seed * 104729 + 1 + info.rank)  # per-rank global RNG (dropout etc.)
        return _Run(info=info, device=device, precision=precision, model=model, wrapped=model, optimizer=optimizer,
                    ema=ema, names=names, arch=ckpt_io.arch_signature(model), dataset=dataset, sampler=sampler,
                    generator=generator)

    def _restore(self, run: _Run, path: pathlib.Path) -> None:
        meta = ckpt_io.read_meta(path)
        ckpt_io.check_compatible(meta, self.task.name, self.task.config(), run.arch, path)
        ckpt = ckpt_io.load_checkpoint(path, run.names)
        try:
            run.model.load_state_dict(ckpt.model, strict=True)
            run.optimizer.load_state_dict(ckpt.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load checkpoint {path}: {exc}") from exc
        if run.ema is not None:
            if ckpt.ema is not None:
                run.ema.load_state_dict(ckpt.ema)
            else:
                logger.warning("%s has no EMA; the EMA restarts from the current weights", path)
        if run.sampler is not None and "sampler" in meta:
            run.sampler.load_state_dict(meta["sampler"])
        if len(ckpt.rng) == run.info.world_size:
            ckpt_io.restore_rng(ckpt.rng[run.info.rank], run.generator, run.device)
        else:
            logger.warning("checkpoint saved by %d processes, now %d: RNG streams are re-seeded, resume is not exact",
                           len(ckpt.rng), run.info.world_size)
            run.generator.manual_seed(self.config.seed * 7919 + run.info.rank + 1_000_003 * ckpt.step)
        self._log_config_changes(meta.get("train_config", {}))
        run.step, run.checkpoint = ckpt.step, path
        logger.info("resumed from %s (step %d)", path, ckpt.step)

    def _init_weights(self, run: _Run) -> None:
        from xcube_core.train.init_from import load_init_weights, resolve_init_dir

        level = getattr(self.task, "level", 0)
        source = resolve_init_dir(self.init_from, self.task.name, level)
        report = load_init_weights(run.model, source)
        if run.ema is not None:  # the EMA starts from the loaded weights, not from the random init
            run.ema = _make_ema(run.model, self.config.ema_decay)
        self._init_report = report.to_dict()

    def _log_config_changes(self, saved: dict[str, Any]) -> None:
        now = self.config.to_dict()
        changed = {k: (saved[k], now[k]) for k in now if k in saved and saved[k] != now[k]}
        if changed:
            logger.info("train config changed since the checkpoint: %s",
                        ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))

    def _write_run_config(self, run: _Run) -> None:
        body = {"task": self.task.name, "task_config": self.task.config(), "train_config": self.config.to_dict(),
                "task_overrides": self.task_overrides, "init_from": self._init_report,
                "resolved": {"device": str(run.device), "precision": run.precision, "world_size": run.info.world_size,
                             "global_batch": self.config.batch_size * run.info.world_size,
                             "start_step": run.step, "parameters": sum(p.numel() for p in run.model.parameters())}}
        text = json.dumps(body, indent=2, sort_keys=True)
        if run.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / RUN_CONFIG, text + "\n")
            logger.info("training %s:\n%s", self.task.name, text)

    # ------------------------------------------------------------------ loop
    def _fit(self, device: torch.device, info: DistInfo) -> TrainResult:
        run = self._setup(device, info)
        if self.resume:
            latest = ckpt_io.latest_checkpoint(self.out_dir)
            if latest is None:
                logger.info("--resume: no checkpoint in %s yet, starting at step 0", self.out_dir)
            else:
                self._restore(run, latest)
        if self.init_from is not None and run.checkpoint is None:
            self._init_weights(run)
        self._write_run_config(run)
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            run.wrapped = DistributedDataParallel(run.model, device_ids=[device] if device.type == "cuda" else None,
                                                  find_unused_parameters=self.config.ddp_find_unused)
        result = TrainResult(step=run.step, losses=[], checkpoint=run.checkpoint)
        monitor = Monitor(self.out_dir, run.step, self.config.max_steps, enabled=info.is_main,
                          progress=self.progress, tensorboard=self.tensorboard)
        validator = Validator(self.task, self.config, run.device, run.precision) if info.is_main else None
        with monitor, self._signals():
            self._loop(run, monitor, result, validator)
            if result.interrupted:
                monitor.message(f"interrupted at step {run.step}: checkpoint {result.checkpoint}; continue with --resume")
        if not result.interrupted and self.config.export_at_end:
            result.export_dir = self._export(run)
        result.step = run.step
        return result

    def _loop(self, run: _Run, monitor: Monitor, result: TrainResult, validator: Validator | None = None) -> None:
        cfg = self.config
        window: dict[str, float] = {}
        batches = self._batches(run)
        while run.step < cfg.max_steps:
            loss, logs = self._train_step(run, next(batches))
            result.losses.append(loss)
            monitor.step(loss)
            for key, value in {"loss": loss, **logs}.items():
                window[key] = window.get(key, 0.0) + value
            window["_n"] = window.get("_n", 0.0) + 1
            if self.on_step is not None:
                self.on_step(run.step, loss)
            if run.step % cfg.log_every == 0 or run.step == cfg.max_steps:
                monitor.log(run.step, self._reduce_window(run, window))
                window = {}
            if validator is not None and cfg.val_every and (run.step % cfg.val_every == 0 or run.step == cfg.max_steps):
                scalars = validator(run.model)
                if scalars is not None:
                    monitor.log_val(run.step, scalars)
            stop = self._should_stop(run)
            if stop or run.step % cfg.ckpt_every == 0 or run.step == cfg.max_steps:
                result.checkpoint = self._save(run)
            if stop:
                result.interrupted = True
                return

    def _batches(self, run: _Run) -> Iterator[Any]:
        cfg = self.config
        while True:
            epoch = run.sampler.epoch
            loader = torch.utils.data.DataLoader(
                run.dataset, batch_sampler=run.sampler, collate_fn=self.task.collate, num_workers=cfg.num_workers,
                pin_memory=run.device.type == "cuda",
                generator=torch.Generator().manual_seed(cfg.seed * 8191 + epoch),  # worker seeds per epoch
            )
            for batch in loader:
                yield move_to_device(batch, run.device)
            if run.sampler.epoch == epoch:  # the loader stopped early: never loop forever
                raise DataError(f"the {self.task.name} data loader ended before its epoch did")

    def _train_step(self, run: _Run, batch: Any) -> tuple[float, dict[str, float]]:
        cfg = self.config
        lr = cfg.lr_at(run.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.wrapped.train()
        autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16")
        with autocast:
            loss, logs = self.task.loss(run.wrapped, batch, run.generator)
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise XCubeError(
                f"the {self.task.name} loss became {value} at step {run.step + 1}; fix: lower --lr, use --fp32 "
                f"or resume from an earlier checkpoint in {self.out_dir / ckpt_io.CHECKPOINTS}"
            )
        loss.backward()
        logs = {k: float(v) for k, v in (logs or {}).items()}
        params = [p for p in run.model.parameters() if p.grad is not None]
        if cfg.grad_clip > 0 and params:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.update(run.model)
        run.sampler.advance()
        run.step += 1
        logs["lr"] = lr
        return value, logs

    def _reduce_window(self, run: _Run, window: dict[str, float]) -> dict[str, float]:
        """Window means; the loss is averaged over ranks (other logs are rank 0's: tasks may log
        different keys on different ranks, and a collective over mismatched keys would hang)."""
        count = window.pop("_n", 1.0)
        means = {k: v / count for k, v in window.items()}
        if run.info.distributed:
            t = torch.tensor([means["loss"]], dtype=torch.float64,
                             device=run.device if run.info.backend == "nccl" else "cpu")
            dist.all_reduce(t)
            means["loss"] = float(t.item()) / run.info.world_size
        return means

    def _should_stop(self, run: _Run) -> bool:
        flag = self._signal is not None
        if run.info.distributed:  # every rank must stop at the same step (checkpointing is collective)
            t = torch.tensor([1.0 if flag else 0.0], device=run.device if run.info.backend == "nccl" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item() > 0)
        return flag

    # ------------------------------------------------------------------ save / export
    def _save(self, run: _Run) -> pathlib.Path:
        rng = all_gather_tensors(ckpt_io.capture_rng(run.generator, run.device), run.info, run.device)
        path = self.out_dir / ckpt_io.CHECKPOINTS / f"{ckpt_io.PREFIX}{run.step:08d}"
        if run.info.is_main:
            meta = {"task": self.task.name, "task_config": self.task.config(), "arch": run.arch,
                    "train_config": self.config.to_dict(), "sampler": run.sampler.state_dict(),
                    "task_overrides": self.task_overrides, "init_from": self._init_report,
                    "precision": run.precision}
            path = ckpt_io.save_checkpoint(
                self.out_dir, run.step, model_state=run.model.state_dict(),
                optimizer_state=run.optimizer.state_dict(), param_names=run.names, rng=rng, meta=meta,
                ema_state=run.ema.state_dict() if run.ema is not None else None, keep_last=self.config.keep_last)
        if run.info.distributed:
            dist.barrier()
        run.checkpoint = path
        return path

    def _export(self, run: _Run) -> pathlib.Path:
        target = self.out_dir / EXPORT_DIR
        if run.info.is_main:
            run.model.eval()
            ctx = run.ema.swapped(run.model) if run.ema is not None else contextlib.nullcontext(run.model)
            with ctx, torch.no_grad():
                self.task.export(run.model, target)
            logger.info("exported the %s model (%s weights) to %s", self.task.name,
                        "EMA" if run.ema is not None else "live", target)
        if run.info.distributed:
            dist.barrier()
        return target

    # ------------------------------------------------------------------ signals
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None:  # second signal: stop now
                signal.signal(signum, previous[signum] if callable(previous[signum]) else signal.SIG_DFL)
                raise KeyboardInterrupt
            self._signal = signum
            logger.warning("%s received: finishing the step and writing a checkpoint (send again to abort)",
                           signal.Signals(signum).name)

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    @property
    def stop_signal(self) -> int | None:
        """The signal that interrupted :meth:`fit`, if any."""
        return self._signal
