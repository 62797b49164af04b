"""Guidance, condition dropout, v-prediction loss and EMA against direct references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xcube_core.diffusion import (
    EMA,
    NoiseSchedule,
    apply_drop,
    classifier_free_guidance,
    drop_mask,
    drop_prompts,
    guide_doubled,
    per_item_mse,
    v_prediction_loss,
)


# ---------------------------------------------------------------- guidance
def test_cfg_combine(generator):
    cond = torch.randn(2, 3, 4, generator=generator)
    uncond = torch.randn(2, 3, 4, generator=generator)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 3.0), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0), uncond)
    doubled = torch.cat([cond, uncond])
    torch.testing.assert_close(guide_doubled(doubled, 2.5), uncond + 2.5 * (cond - uncond))
    with pytest.raises(ValueError):
        guide_doubled(torch.zeros(3, 2), 2.0)


def test_text_dropout_rate_and_determinism():
    mask = drop_mask(20000, 0.1, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool
    assert mask.float().mean().item() == pytest.approx(0.1, abs=0.01)
    prompts = [f"scene {i}" for i in range(50)]
    out1, m1 = drop_prompts(prompts, 0.1, torch.Generator().manual_seed(4))
    out2, m2 = drop_prompts(prompts, 0.1, torch.Generator().manual_seed(4))
    assert out1 == out2 and torch.equal(m1, m2)
    assert all((o == "") == bool(m) for o, m in zip(out1, m1))
    assert all(o in ("", p) for o, p in zip(out1, prompts))
    assert drop_prompts(prompts, 0.0)[0] == prompts and set(drop_prompts(prompts, 1.0)[0]) == {""}
    with pytest.raises(TypeError):
        drop_prompts("one prompt")


def test_apply_drop(generator):
    cond = torch.randn(4, 3, 2, generator=generator)
    null = torch.randn(1, 3, 2, generator=generator)
    mask = torch.tensor([True, False, False, True])
    out = apply_drop(cond, null, mask)
    torch.testing.assert_close(out[mask], null.expand(2, 3, 2))
    torch.testing.assert_close(out[~mask], cond[~mask])


# ---------------------------------------------------------------- losses
def test_v_loss_dense_equals_mse(generator):
    sched = NoiseSchedule()
    x0 = torch.randn(3, 2, 4, 4, 4, generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([5, 500, 900])
    target = sched.get_velocity(x0, eps, t)
    pred = target + 0.1 * torch.randn(x0.shape, generator=generator)
    # equal-sized items: mean per item then over batch == plain mean
    torch.testing.assert_close(v_prediction_loss(pred, target), torch.nn.functional.mse_loss(pred, target))
    assert v_prediction_loss(target, target).item() == 0.0


def test_v_loss_sparse_weighs_items_equally(generator):
    jidx = torch.tensor([0] * 10 + [1] * 2 + [2] * 5)[torch.randperm(17, generator=generator)]
    pred = torch.randn(17, 3, generator=generator, requires_grad=True)
    target = torch.randn(17, 3, generator=generator)
    loss = v_prediction_loss(pred, target, jidx)
    ref = torch.stack([((pred[jidx == b] - target[jidx == b]) ** 2).mean() for b in range(3)]).mean()
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_v_loss_skips_empty_items_and_supports_weights(generator):
    jidx = torch.tensor([0, 0, 2, 2, 2])  # item 1 and item 3 have no voxels
    pred = torch.randn(5, 2, generator=generator, requires_grad=True)
    target = torch.zeros(5, 2)
    per_item = per_item_mse(pred, target, jidx, batch_size=4)
    assert per_item.shape == (4,) and torch.isnan(per_item[1]) and torch.isnan(per_item[3])
    loss = v_prediction_loss(pred, target, jidx, batch_size=4)
    ref = ((pred[:2] ** 2).mean() + (pred[2:] ** 2).mean()) / 2
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    w = torch.tensor([1.0, 5.0, 3.0, 1.0])
    weighted = v_prediction_loss(pred.detach(), target, jidx, batch_size=4, weights=w)
    torch.testing.assert_close(weighted, ((pred[:2] ** 2).mean() + 3 * (pred[2:] ** 2).mean()).detach() / 4)
    with pytest.raises(ValueError, match="no voxels"):
        v_prediction_loss(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), batch_size=2)


# ---------------------------------------------------------------- EMA
def _model() -> nn.Module:
    """A small model with generator-drawn weights (tests never seed torch globally)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Linear(4, 1))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def test_ema_matches_a_scalar_reference_with_warmup():
    model = _model()
    ema = EMA(model, decay=0.9, warmup=True)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    for n_update in range(25):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (n_update + 1))
        d = min(0.9, (1 + n_update) / (10 + n_update))
        for name, p in model.named_parameters():
            ref[name] = d * ref[name] + (1 - d) * p.detach()
        ema.update(model)
    for name in ref:
        torch.testing.assert_close(ema.shadow[name], ref[name])


def test_ema_without_warmup_is_geometric():
    model = _model()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema = EMA(model, decay=0.5, warmup=False)
    ema.shadow = {n: v.clone() for n, v in init.items()}
    for _ in range(3):
        ema.update(model)
    for name, p in model.named_parameters():  # constant target: s_k = d^k s_0 + (1 - d^k) p
        torch.testing.assert_close(ema.shadow[name], 0.125 * init[name] + 0.875 * p.detach())


def test_ema_copy_swap_and_state_dict_round_trip():
    model = _model()
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    ema.update(model)
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.swapped(model):
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), ema.shadow[name])
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), live[name])

    state = ema.state_dict()
    other = EMA(_model(), decay=0.5)
    other.load_state_dict(state)
    assert other.num_updates == 1 and other.decay == 0.99
    target = _model()
    other.copy_to(target)
    for name, p in target.named_parameters():
        torch.testing.assert_close(p.detach(), ema.shadow[name])
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(2, 2)).load_state_dict(state)


def test_ema_ignores_frozen_parameters():
    model = _model()
    model[0].weight.requires_grad_(False)
    ema = EMA(model)
    assert "0.weight" not in ema.shadow and "0.bias" in ema.shadow
