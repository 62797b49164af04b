"""Training checkpoints: safetensors for every tensor, one JSON for the rest, written atomically.

Layout of ``OUT/checkpoints/step_00001000/``:

* ``model.safetensors``      the live model's ``state_dict`` (shared tensors stored once);
* ``ema.safetensors``        EMA shadows (absent when the EMA is off);
* ``optimizer.safetensors``  the optimiser state flattened to ``state.<param name>.<key>``;
* ``rng.safetensors``        ``rank<r>.<source>`` RNG states of every rank (torch CPU/CUDA, the loss
  generator, numpy, python ``random``) as integer/float tensors;
* ``trainer.json``           step, configs, architecture signature, sampler position, optimiser
  hyper-parameters, EMA scalars, versions.

A checkpoint is written into a hidden temporary folder which is renamed into place with
:func:`os.replace` once every file is on disk, so a crash mid-write never damages the previous
checkpoints; :func:`latest_checkpoint` ignores leftovers. Nothing is pickled and nothing is read
with ``torch.load``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import random
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import torch

from xcube_core.errors import ModelLoadError

__all__ = [
    "Checkpoint",
    "arch_signature",
    "capture_rng",
    "check_compatible",
    "flatten_optimizer_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "prune_checkpoints",
    "restore_rng",
    "save_checkpoint",
    "unflatten_optimizer_state",
]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
PREFIX = "step_"
META = "trainer.json"
FORMAT_VERSION = 1


@dataclasses.dataclass
class Checkpoint:
    """Everything a checkpoint holds, as loaded by :func:`load_checkpoint`.

    Attributes:
        path: the checkpoint folder.
        step: optimiser steps done.
        model: model ``state_dict`` tensors.
        ema: EMA state (``EMA.state_dict()`` form) or None.
        optimizer: optimiser state in ``torch.optim.Optimizer.state_dict()`` form (names resolved).
        rng: per-rank RNG tensors, indexed by rank.
        meta: the parsed ``trainer.json``.
    """

    path: pathlib.Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, Any] | None
    optimizer: dict[str, Any]
    rng: list[dict[str, torch.Tensor]]
    meta: dict[str, Any]


# --------------------------------------------------------------------------- architecture
def arch_signature(model: torch.nn.Module) -> dict[str, Any]:
    """Class name and ``{tensor name: [shape, dtype]}`` of the model, plus their SHA-256."""
    tensors = {name: [list(t.shape), str(t.dtype).replace("torch.", "")] for name, t in model.state_dict().items()}
    body = {"class": type(model).__name__, "tensors": tensors}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {**body, "sha256": digest}


def _dict_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: absent in checkpoint, now {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: checkpoint {old[key]!r}, now absent")
            else:
                out.extend(_dict_diff(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or 'value'}: checkpoint {old!r}, now {new!r}"]


def check_compatible(meta: dict[str, Any], task_name: str, task_config: dict, arch: dict[str, Any], path: os.PathLike) -> None:
    """Refuse a checkpoint from another task, task config or architecture before loading tensors.

    Raises:
        ModelLoadError: naming each differing key (``level: checkpoint 0, now 1``) or tensor shape.
    """
    problems = []
    if meta.get("task") != task_name:
        problems.append(f"task: checkpoint {meta.get('task')!r}, now {task_name!r}")
    saved_cfg = json.loads(json.dumps(meta.get("task_config", {})))
    problems += _dict_diff(saved_cfg, json.loads(json.dumps(task_config)))
    saved_arch = meta.get("arch", {})
    if saved_arch.get("sha256") != arch["sha256"]:
        if saved_arch.get("class") != arch["class"]:
            problems.append(f"model class: checkpoint {saved_arch.get('class')!r}, now {arch['class']!r}")
        diff = _dict_diff(saved_arch.get("tensors", {}), arch["tensors"])
        problems += [f"tensor {d}" for d in diff[:8]] + ([f"... {len(diff) - 8} more"] if len(diff) > 8 else [])
    if problems:
        raise ModelLoadError(
            f"checkpoint {path} was trained with a different setup:\n  " + "\n  ".join(problems)
            + "\nfix: resume with the same task, --level and --config, or train into a new --out folder"
        )


# --------------------------------------------------------------------------- optimiser
def flatten_optimizer_state(state: dict[str, Any], names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and JSON scalars.

    Args:
        state: ``optimizer.state_dict()`` (parameters numbered in group order).
        names: parameter name of each number, in that order.

    Returns:
        ``({"state.<name>.<key>": tensor}, {"param_groups": [...with names], "scalars": {...}})``.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        name = names[index]
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{name}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    groups = []
    for group in state["param_groups"]:
        g = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
        g["params"] = [names[i] for i in group["params"]]
        groups.append(g)
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], info: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` for the current numbering ``names``."""
    index = {name: i for i, name in enumerate(names)}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, rest = key.split(".", 1)
        name, field = rest.rsplit(".", 1)
        if name not in index:
            raise ModelLoadError(f"optimizer state names parameter {name!r}, which the model lacks")
        state.setdefault(index[name], {})[field] = value
    for name, extra in info.get("scalars", {}).items():
        state.setdefault(index[name], {}).update(extra)
    groups = []
    for group in info["param_groups"]:
        g = {k: (tuple(v) if k == "betas" else v) for k, v in group.items() if k != "params"}
        g["params"] = [index[n] for n in group["params"]]
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- RNG
def capture_rng(generator: torch.Generator | None = None, device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """RNG states of this process as fixed-shape tensors (gatherable across ranks)."""
    out = {"torch_cpu": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        out["torch_cuda"] = torch.cuda.get_rng_state(device)
    if generator is not None:
        out["generator"] = generator.get_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    out["numpy_extra"] = torch.tensor([float(pos), float(has_gauss), float(cached)], dtype=torch.float64)
    version, internal, gauss = random.getstate()
    out["python_state"] = torch.tensor(internal, dtype=torch.int64)
    out["python_extra"] = torch.tensor([float(version), 0.0 if gauss is None else 1.0, gauss or 0.0], dtype=torch.float64)
    return out


def restore_rng(state: dict[str, torch.Tensor], generator: torch.Generator | None = None, device: torch.device | None = None) -> None:
    """Set this process's RNGs from :func:`capture_rng` output."""
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
    if device is not None and device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"].to(torch.uint8), device)
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].to(torch.uint8))
    if "numpy_keys" in state:
        pos, has_gauss, cached = state["numpy_extra"].tolist()
        np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    if "python_state" in state:
        version, has_gauss, gauss = state["python_extra"].tolist()
        random.setstate((int(version), tuple(state["python_state"].tolist()), gauss if has_gauss else None))


# --------------------------------------------------------------------------- files
def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors with storage-sharing aliases removed (safetensors refuses them) and the alias map."""
    from safetensors.torch import _remove_duplicate_names

    state = {k: v.detach() for k, v in state.items()}
    aliases = {}
    for kept, removed in _remove_duplicate_names(state).items():
        for name in removed:
            aliases[name] = kept
            del state[name]
    return {k: v.cpu().contiguous() for k, v in state.items()}, aliases


def _save_tensors(path: pathlib.Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    param_names: list[str],
    rng: list[dict[str, torch.Tensor]],
    meta: dict[str, Any],
    ema_state: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> pathlib.Path:
    """Write checkpoint ``step`` under ``out_dir/checkpoints`` atomically; prune to ``keep_last``.

    Returns:
        The final checkpoint folder.
    """
    root = pathlib.Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        model_tensors, aliases = _dedupe(model_state)
        _save_tensors(tmp / "model.safetensors", model_tensors)
        ema_meta = None
        if ema_state is not None:
            _save_tensors(tmp / "ema.safetensors", {k: v.cpu().contiguous() for k, v in ema_state["shadow"].items()})
            ema_meta = {k: v for k, v in ema_state.items() if k != "shadow"}
        opt_tensors, opt_info = flatten_optimizer_state(optimizer_state, param_names)
        _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
        _save_tensors(tmp / "rng.safetensors", {f"rank{r}.{k}": v.cpu().contiguous() for r, s in enumerate(rng) for k, v in s.items()})
        body = {**meta, "format": FORMAT_VERSION, "step": int(step), "model_aliases": aliases, "ema": ema_meta,
                "optimizer": opt_info, "world_size_saved": len(rng), "saved_at": time.time(),
                "torch_version": torch.__version__}
        with open(tmp / META, "w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step (e.g. interrupt right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("checkpoint step %d -> %s", step, final)
    if keep_last:
        prune_checkpoints(out_dir, keep_last)
    return final


def _fsync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Complete checkpoint folders under ``out_dir/checkpoints``, oldest first (temp folders ignored)."""
    root = pathlib.Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit() and (p / META).is_file():
            found.append((int(p.name[len(PREFIX):]), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> pathlib.Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def prune_checkpoints(out_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and stale temporary folders."""
    found = list_checkpoints(out_dir)
    for old in found[: max(0, len(found) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)
    root = pathlib.Path(out_dir) / CHECKPOINTS
    for tmp in root.glob(f".{PREFIX}*.tmp"):
        if time.time() - tmp.stat().st_mtime > 3600:  # a crashed writer's leftovers
            shutil.rmtree(tmp, ignore_errors=True)


def _load_tensors(path: pathlib.Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelLoadError(f"checkpoint file {path} is missing; the checkpoint is incomplete")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise ModelLoadError(f"checkpoint file {path} is unreadable ({exc})") from exc


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``trainer.json`` of checkpoint folder ``path``."""
    meta_path = pathlib.Path(path) / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{meta_path} is missing; {path} is not a checkpoint folder") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{meta_path} is unreadable ({exc})") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise ModelLoadError(f"{meta_path}: checkpoint format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return meta


def load_checkpoint(path: str | os.PathLike, param_names: list[str]) -> Checkpoint:
    """Read every file of checkpoint folder ``path`` (CPU tensors).

    Args:
        path: a folder written by :func:`save_checkpoint`.
        param_names: the current optimiser's parameter names in group order (to renumber its state).

    Raises:
        ModelLoadError: a file is missing or corrupt.
    """
    path = pathlib.Path(path)
    meta = read_meta(path)
    model = _load_tensors(path / "model.safetensors")
    for alias, kept in meta.get("model_aliases", {}).items():
        model[alias] = model[kept]
    ema = None
    if meta.get("ema") is not None:
        ema = {**meta["ema"], "shadow": _load_tensors(path / "ema.safetensors")}
    optimizer = unflatten_optimizer_state(_load_tensors(path / "optimizer.safetensors"), meta["optimizer"], param_names)
    flat_rng = _load_tensors(path / "rng.safetensors")
    rng: list[dict[str, torch.Tensor]] = [{} for _ in range(int(meta.get("world_size_saved", 1)))]
    for key, value in flat_rng.items():
        rank, name = key.split(".", 1)
        rng[int(rank[4:])][name] = value
    return Checkpoint(path=path, step=int(meta["step"]), model=model, ema=ema, optimizer=optimizer, rng=rng, meta=meta)


def load_weights(model: torch.nn.Module, path: str | os.PathLike, *, ema: bool = True) -> torch.nn.Module:
    """Load a training checkpoint's EMA (default) or live weights into ``model`` (e.g. for evaluation).

    Args:
        model: a model of the checkpoint's architecture (parameters keep their device and dtype).
        path: a checkpoint folder, or a run folder (its newest checkpoint is used).
        ema: use the EMA shadows for the parameters they cover (buffers come from the live state).

    Raises:
        ModelLoadError: no checkpoint, or tensors that do not fit ``model`` (names and shapes listed).
    """
    path = pathlib.Path(path)
    if not (path / META).is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise ModelLoadError(f"{path} is neither a checkpoint folder nor a run folder with checkpoints")
        path = latest
    meta = read_meta(path)
    arch = arch_signature(model)
    if meta.get("arch", {}).get("sha256") not in (None, arch["sha256"]):
        diff = _dict_diff(meta["arch"].get("tensors", {}), arch["tensors"])
        raise ModelLoadError(f"checkpoint {path} does not fit {type(model).__name__}: " + "; ".join(diff[:8]))
    state = _load_tensors(path / "model.safetensors")
    for alias, kept in meta.get("model_aliases", {}).items():
        state[alias] = state[kept]
    if ema and meta.get("ema") is not None:
        state.update(_load_tensors(path / "ema.safetensors"))
    elif ema:
        logger.warning("%s has no EMA weights; loading the live weights", path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"cannot load {path} into {type(model).__name__}: {exc}") from exc
    return model
