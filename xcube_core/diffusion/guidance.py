"""Classifier-free guidance (Ho & Salimans 2022): combine at sampling, condition dropout in training.

Sampling: run the model on a batch that holds the conditional items followed by the unconditional
ones (``cat([cond, uncond])`` along dim 0; for sparse (N, C) rows, the conditional rows followed by
the same rows again), then ``guide_doubled(output, w)``.

Training: drop the text of a random 10 % of the items (replace by the empty prompt, whose encoding
is the encoder's ``null`` embedding), drawn from a passed ``torch.Generator``.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["classifier_free_guidance", "guide_doubled", "drop_mask", "drop_prompts", "apply_drop"]

NULL_PROMPT = ""


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)``.

    ``scale = 1`` returns ``cond``; ``scale = 0`` returns ``uncond``; larger values push further
    toward the condition. Works for any prediction type (v, eps, x0), since all are affine in it.

    Args:
        cond: conditional model output. Any shape, float.
        uncond: unconditional model output, same shape.
        scale: guidance weight ``w``.
    """
    if cond.shape != uncond.shape:
        raise ValueError(f"cond and uncond must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}")
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def guide_doubled(output: torch.Tensor, scale: float) -> torch.Tensor:
    """Split a batch-doubled output ``[cond; uncond]`` along dim 0 and guide it.

    Args:
        output: Shape: (2B, ...) dense or (2N, C) sparse rows, conditional half first.
        scale: guidance weight.

    Returns:
        Shape: (B, ...) or (N, C).
    """
    if output.shape[0] % 2:
        raise ValueError(f"a batch-doubled output needs an even first dimension, got shape {tuple(output.shape)}")
    cond, uncond = output.chunk(2, dim=0)
    return classifier_free_guidance(cond, uncond, scale)


def drop_mask(
    batch_size: int,
    p: float = 0.1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which batch items lose their condition: independent Bernoulli(p) draws.

    Returns:
        Shape: (B,), bool; True = use the null condition. On ``device`` (default: the generator's).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    mask = torch.rand(batch_size, generator=generator, device=gen_device) < p
    return mask.to(device) if device is not None else mask


def drop_prompts(
    prompts: Sequence[str], p: float = 0.1, generator: torch.Generator | None = None
) -> tuple[list[str], torch.Tensor]:
    """Replace each prompt by the empty (null) prompt with probability ``p``.

    Returns:
        ``(prompts_out, mask)``: the new list and the bool mask of shape (B,) (True = dropped).
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, got a single str; fix: wrap it in a list")
    mask = drop_mask(len(prompts), p, generator)
    return [NULL_PROMPT if m else s for s, m in zip(prompts, mask.tolist())], mask


def apply_drop(cond: torch.Tensor, null: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per batch item, take ``null`` where ``mask`` is True, else ``cond``.

    Args:
        cond: Shape: (B, ...).
        null: Shape: (1, ...) or (B, ...) (or ``cond.shape[1:]``), broadcast over the batch.
        mask: Shape: (B,), bool.

    Returns:
        Shape: (B, ...), dtype of ``cond``.
    """
    if mask.ndim != 1 or mask.shape[0] != cond.shape[0]:
        raise ValueError(f"mask must have shape (B,) = ({cond.shape[0]},), got {tuple(mask.shape)}")
    m = mask.to(device=cond.device, dtype=torch.bool).reshape((-1,) + (1,) * (cond.ndim - 1))
    return torch.where(m, null.to(device=cond.device, dtype=cond.dtype), cond)
