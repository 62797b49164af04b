"""The ``toy`` task: a tiny MLP regression on synthetic data, to smoke-test the training machinery.

``xcube train toy --out /tmp/toy --max-steps 50`` exercises configs, checkpoints, resume, EMA,
TensorBoard and (under ``torchrun``) DDP in seconds, without data or the XCube models. The tests of
``xcube_core.train`` use it as their reference task. Items are deterministic functions of their
index; the optional input noise comes from the passed generator, so resume exactness covers it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import torch
from torch import nn

from xcube_core.errors import DataError, InvalidInputError
from xcube_core.models.base import PretrainedMixin, config_to_dict

__all__ = ["TOY_KIND", "ToyConfig", "ToyMLP", "ToyTask", "make_toy_task"]

TOY_KIND = "toy"
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Config of the toy regression.

    Attributes:
        in_dim: input features.
        hidden: hidden width of the MLP.
        out_dim: regression targets.
        items: dataset size.
        noise_std: std of the input noise drawn from the loss generator (0 = none).
        dropout: dropout probability (uses torch's global RNG, which checkpoints also capture).
        dtype: ``"float32"`` or ``"float64"``.
        level: stored only so that level mismatches can be tested like the real tasks.
        data_seed: seed of the synthetic data and target weights.
    """

    in_dim: int = 6
    hidden: int = 16
    out_dim: int = 2
    items: int = 64
    noise_std: float = 0.01
    dropout: float = 0.0
    dtype: str = "float32"
    level: int = 0
    data_seed: int = 1234


class ToyMLP(PretrainedMixin, nn.Module):
    """Two-layer MLP. Shape: (B, in_dim) -> (B, out_dim), dtype of the config."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        dtype = _DTYPES[config.dtype]
        self.net = nn.Sequential(
            nn.Linear(config.in_dim, config.hidden, dtype=dtype),
            nn.Tanh(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.out_dim, dtype=dtype),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ToyDataset(torch.utils.data.Dataset):
    """``items`` pairs ``(x, y)`` with ``y = tanh(x @ W)``; item i depends only on (data_seed, i)."""

    def __init__(self, config: ToyConfig, split: str):
        self.config = config
        self.offset = 0 if split == "train" else 1_000_000
        dtype = _DTYPES[config.dtype]
        gen = torch.Generator().manual_seed(config.data_seed)
        self.weight = torch.randn(config.in_dim, config.out_dim, generator=gen, dtype=torch.float64).to(dtype)

    def __len__(self) -> int:
        return self.config.items

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        gen = torch.Generator().manual_seed(self.config.data_seed * 7919 + self.offset + int(index))
        x = torch.randn(self.config.in_dim, generator=gen, dtype=torch.float64).to(self.weight.dtype)
        return x, torch.tanh(x @ self.weight)


class ToyTask:
    """:class:`~xcube_core.train.task.TrainTask` of the toy regression."""

    name = TOY_KIND

    def __init__(self, config: ToyConfig, data_dir: pathlib.Path | None = None):
        self.toy = config
        self.data_dir = data_dir

    def config(self) -> dict:
        return config_to_dict(self.toy)

    def build_model(self) -> nn.Module:
        return ToyMLP(self.toy)

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        if split not in ("train", "val"):
            raise InvalidInputError(f"split must be 'train' or 'val', got {split!r}")
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise DataError(f"data directory {self.data_dir} does not exist (the toy task needs none; omit --data)")
        return ToyDataset(self.toy, split)

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["x"]
        if self.toy.noise_std > 0:
            noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
            x = x + self.toy.noise_std * noise.to(x.device)
        pred = model(x)
        loss = torch.mean((pred.to(batch["y"].dtype) - batch["y"]) ** 2)
        return loss, {"mae": float((pred.detach() - batch["y"]).abs().mean())}

    def export(self, model: nn.Module, out_dir: pathlib.Path) -> None:
        model.save_pretrained(out_dir, extra={"task": self.name})


def make_toy_task(level: int, data_dir: pathlib.Path | None, overrides: dict) -> ToyTask:
    """Factory for the registry: ``overrides`` are :class:`ToyConfig` fields."""
    known = {f.name for f in dataclasses.fields(ToyConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InvalidInputError(f"unknown toy task option(s) {unknown}; known: {sorted(known)}")
    if overrides.get("dtype", "float32") not in _DTYPES:
        raise InvalidInputError(f"toy dtype must be one of {sorted(_DTYPES)}, got {overrides['dtype']!r}")
    return ToyTask(ToyConfig(**{**overrides, "level": int(level)}), data_dir)
