"""Exponential moving average of model parameters (Polyak averaging), as used for sampling weights.

``shadow <- d * shadow + (1 - d) * param`` after each optimiser step, with the decay warmed up as
``d_n = min(decay, (1 + n) / (10 + n))`` (n = updates so far) so that early, random weights are
forgotten quickly. Shadows are float32 copies on the parameters' device.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """EMA of the trainable parameters of one model.

    Pass the bare model (``ddp_model.module``), so that parameter names carry no ``module.`` prefix.
    Only parameters with ``requires_grad=True`` at construction are tracked; buffers (e.g. running
    statistics) are not averaged and keep the live model's values.

    Args:
        model: the model being trained.
        decay: the target decay in [0, 1).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` for update ``n``; else always ``decay``.
        update_after_step: updates requested before this many calls just copy the parameters.

    Example::

        ema = EMA(unet, decay=0.999)
        for batch in loader:
            loss.backward(); opt.step(); ema.update(unet)
        with ema.swapped(unet):
            sample(unet)        # uses the averaged weights, restored afterwards
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True, update_after_step: int = 0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"EMA needs an nn.Module, got {type(model).__name__}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.update_after_step = int(update_after_step)
        self.num_updates = 0  # calls of update()
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().to(torch.float32, copy=True) for name, p in model.named_parameters() if p.requires_grad
        }
        if not self.shadow:
            raise ValueError("the model has no trainable parameters to average")

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        n = self.num_updates - self.update_after_step
        if n < 0:
            return 0.0
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current parameters into the shadows (call after ``optimizer.step()``)."""
        d = self.current_decay()
        params = self._matching_params(model)
        for name, shadow in self.shadow.items():
            p = params[name].detach()
            shadow.lerp_(p.to(device=shadow.device, dtype=shadow.dtype), 1.0 - d)  # s + (1-d)(p - s)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (cast to each parameter's dtype/device)."""
        params = self._matching_params(model)
        for name, shadow in self.shadow.items():
            params[name].copy_(shadow)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model``; the live ones are restored on exit."""
        params = self._matching_params(model)
        backup = {name: params[name].detach().clone() for name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def to(self, device: torch.device | str) -> "EMA":
        """Move the shadows to ``device``; returns self."""
        self.shadow = {name: s.to(device) for name, s in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "warmup", "update_after_step", "num_updates", "shadow": {name: tensor}}``."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "update_after_step": self.update_after_step,
            "num_updates": self.num_updates,
            "shadow": {name: s.clone() for name, s in self.shadow.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the parameter names must match exactly."""
        shadow = state.get("shadow")
        if not isinstance(shadow, dict):
            raise ValueError("EMA state has no 'shadow' dict; fix: pass the output of EMA.state_dict()")
        if set(shadow) != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
            raise ValueError(f"EMA state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for name, value in shadow.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(
                    f"EMA shadow {name!r} has shape {tuple(value.shape)}, expected {tuple(self.shadow[name].shape)}"
                )
        self.shadow = {name: shadow[name].to(self.shadow[name].device, torch.float32).clone() for name in self.shadow}
        self.decay = float(state.get("decay", self.decay))
        self.warmup = bool(state.get("warmup", self.warmup))
        self.update_after_step = int(state.get("update_after_step", self.update_after_step))
        self.num_updates = int(state.get("num_updates", 0))

    def _matching_params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [name for name in self.shadow if name not in params]
        if missing:
            raise ValueError(
                f"model lacks {len(missing)} averaged parameters (e.g. {missing[:3]}); pass the same bare "
                "model the EMA was built from (for DDP use ddp_model.module)"
            )
        for name, shadow in self.shadow.items():
            if params[name].shape != shadow.shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(params[name].shape)}, EMA holds {tuple(shadow.shape)}"
                )
        return params
