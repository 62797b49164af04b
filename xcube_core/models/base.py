"""`save_pretrained` / `from_pretrained` for models configured by one frozen dataclass.

A pretrained directory holds two files (after diffusers):

* ``model.safetensors``: the ``state_dict`` (shared tensors stored once), with safetensors metadata
  ``xcube_class`` and ``config_sha256`` so a weights file and a config file from different saves are
  caught on load;
* ``config.json``: ``{"format": 1, "class": "SparseVAE", "module": "...", "config": {...},
  "config_sha256": "...", "extra": {...}}``.

Both are written atomically (a temporary file in the same folder, then :func:`os.replace`), the
weights first, so a crash mid-save leaves either the old pair or a detectable mismatch, never a
silently wrong model. Nothing here pickles; safetensors only.

Also home of the small dataclass <-> JSON helpers shared with :mod:`xcube_core.train.config`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import types
import typing
from typing import Any, ClassVar, TypeVar, Union

import torch

from xcube_core.errors import ModelLoadError
from xcube_core.fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "atomic_write_bytes",
    "atomic_write_text",
    "config_from_dict",
    "config_hash",
    "config_to_dict",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1

T = TypeVar("T")
M = TypeVar("M", bound="PretrainedMixin")


# --------------------------------------------------------------------------- dataclass <-> JSON
def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen dataclass (possibly nested) as a JSON-able dict; tuples become lists, paths strings.

    Raises:
        TypeError: ``config`` is not a dataclass instance or holds a value JSON cannot store.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance as config, got {type(config).__name__}")
    hints = typing.get_type_hints(type(config))
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if hints.get(f.name) is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # so that 2 and 2.0 give the same JSON (and hash)
        out[f.name] = _to_jsonable(value, f.name)
    return out


def _to_jsonable(value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v, where) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config field {where!r} holds a {type(value).__name__}, which JSON cannot store")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild dataclass ``cls`` from :func:`config_to_dict` output (lists back to tuples by annotation).

    Raises:
        TypeError: ``cls`` is not a dataclass or ``data`` is not a dict.
        ValueError: ``data`` has keys ``cls`` does not know, or lacks a field without default.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    if not isinstance(data, dict):
        raise TypeError(f"expected a dict for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _from_jsonable(hints.get(name, Any), value) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields
        raise ValueError(f"cannot build {cls.__name__} from {sorted(data)}: {exc}") from exc


def _from_jsonable(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or len(args) != 1:
            return value
        return _from_jsonable(args[0], value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)
    if (origin is tuple or hint is tuple) and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_jsonable(args[0], v) for v in value)
        if args and len(args) == len(value):
            return tuple(_from_jsonable(a, v) for a, v in zip(args, value))
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_hash(config: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of a config dataclass or dict."""
    data = config_to_dict(config) if dataclasses.is_dataclass(config) else config
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- atomic files
# --------------------------------------------------------------------------- the mixin
class PretrainedMixin:
    """Adds ``save_pretrained(dir)`` / ``from_pretrained(dir, device)`` to an ``nn.Module``.

    The module's ``__init__(self, config)`` takes one frozen dataclass and keeps it as ``self.config``.
    The config type is ``config_class`` when a subclass sets it, else the annotation of ``__init__``'s
    ``config`` parameter.

    Example::

        @dataclasses.dataclass(frozen=True)
        class TinyConfig:
            width: int = 8

        class Tiny(PretrainedMixin, nn.Module):
            def __init__(self, config: TinyConfig):
                super().__init__()
                self.config = config
                self.lin = nn.Linear(config.width, 1)

        Tiny(TinyConfig()).save_pretrained("out/model")
        model = Tiny.from_pretrained("out/model", device="cpu")
    """

    config_class: ClassVar[type | None] = None

    def save_pretrained(self, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> pathlib.Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed).

        Args:
            directory: target folder; existing files of the same names are replaced atomically.
            extra: optional JSON-able metadata stored under ``"extra"`` (e.g. the text encoder in use).

        Returns:
            The directory as a :class:`pathlib.Path`.
        """
        from safetensors.torch import save_model

        if not isinstance(self, torch.nn.Module):
            raise TypeError(f"PretrainedMixin needs an nn.Module, got {type(self).__name__}")
        config = getattr(self, "config", None)
        config_dict = config_to_dict(config)
        digest = config_hash(config_dict)
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            save_model(self, tmp, metadata={"format": "pt", "xcube_class": type(self).__name__, "config_sha256": digest})
            os.replace(tmp, directory / WEIGHTS_NAME)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        meta = {
            "format": FORMAT_VERSION,
            "class": type(self).__name__,
            "module": type(self).__module__,
            "config": config_dict,
            "config_sha256": digest,
            "extra": dict(extra or {}),
        }
        atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        logger.info("saved %s to %s", type(self).__name__, directory)
        return directory

    @classmethod
    def config_type(cls) -> type:
        """The dataclass type ``__init__`` takes (``config_class`` or the ``config`` annotation)."""
        if cls.config_class is not None:
            return cls.config_class
        try:
            hint = typing.get_type_hints(cls.__init__).get("config")
        except Exception as exc:  # unresolved forward reference
            raise TypeError(f"{cls.__name__}: cannot resolve the config annotation ({exc}); set config_class") from exc
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            raise TypeError(f"{cls.__name__}.__init__ has no dataclass-annotated 'config' parameter; set config_class")
        return hint

    @classmethod
    def read_pretrained_config(cls, directory: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
        """Read and check ``config.json``; returns ``(config dataclass, full json dict)``.

        Raises:
            ModelLoadError: the folder or file is missing or unreadable, or holds another class.
        """
        directory = pathlib.Path(directory)
        path = directory / CONFIG_NAME
        if not directory.is_dir():
            raise ModelLoadError(f"model folder {directory} does not exist; fix: pass the folder save_pretrained wrote")
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing; fix: pass a folder written by save_pretrained")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path} is not valid JSON ({exc}); the save may be corrupt, save it again") from exc
        if not isinstance(meta, dict) or "config" not in meta or "class" not in meta:
            raise ModelLoadError(f"{path} lacks the 'class'/'config' entries of a save_pretrained folder")
        if meta["class"] != cls.__name__:
            raise ModelLoadError(
                f"{directory} holds a {meta['class']} ({meta.get('module', '?')}), not a {cls.__name__}; "
                f"fix: load it with {meta['class']}.from_pretrained"
            )
        try:
            config = config_from_dict(cls.config_type(), meta["config"])
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: config does not fit {cls.__name__}: {exc}") from exc
        return config, meta

    @classmethod
    def from_pretrained(cls: type[M], directory: str | os.PathLike, device: str | torch.device = "cpu") -> M:
        """Build the model from ``config.json`` and load ``model.safetensors`` onto ``device``.

        Raises:
            ModelLoadError: missing/corrupt files, another class, a config that does not fit, or
                weights whose names/shapes differ from the model's (the message lists them).
        """
        config, meta = cls.read_pretrained_config(directory)
        weights = pathlib.Path(directory) / WEIGHTS_NAME
        if not weights.is_file():
            raise ModelLoadError(f"{weights} is missing; fix: save the model again with save_pretrained")
        file_meta, file_shapes = _read_safetensors_header(weights)
        stored, written = file_meta.get("config_sha256"), meta.get("config_sha256")
        if stored is not None and written is not None and stored != written:
            raise ModelLoadError(
                f"{weights} and {CONFIG_NAME} come from different saves (config hash differs); save the model again"
            )
        model = cls(config)  # type: ignore[call-arg]
        model.to(device)
        _check_state_shapes(model, file_shapes, weights)
        from safetensors.torch import load_model

        try:
            load_model(model, weights, strict=True, device=str(torch.device(device)))
        except Exception as exc:
            raise ModelLoadError(f"cannot load {weights} into {cls.__name__}: {exc}") from exc
        model.eval()
        return model


def _read_safetensors_header(path: pathlib.Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, {name: shape}) of a safetensors file without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            shapes = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable safetensors file ({exc}); save the model again") from exc
    return meta, shapes


def _check_state_shapes(model: torch.nn.Module, file_shapes: dict[str, tuple[int, ...]], path: pathlib.Path) -> None:
    from safetensors.torch import _remove_duplicate_names

    state = model.state_dict()
    for group in _remove_duplicate_names(state, preferred_names=list(file_shapes)).values():
        for name in group:
            state.pop(name, None)
    missing = sorted(set(state) - set(file_shapes))
    unexpected = sorted(set(file_shapes) - set(state))
    wrong = [
        f"{name}: file {file_shapes[name]} vs model {tuple(state[name].shape)}"
        for name in sorted(set(state) & set(file_shapes))
        if tuple(state[name].shape) != file_shapes[name]
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing in file {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in model {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}{' ...' if len(wrong) > 5 else ''}")
        raise ModelLoadError(f"{path} does not match {type(model).__name__}: " + "; ".join(parts))
