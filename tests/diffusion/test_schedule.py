"""NoiseSchedule: closed-form values, forward process and v algebra (dense and sparse+jidx)."""

from __future__ import annotations

import math

import pytest
import torch

from xcube_core.diffusion import NoiseSchedule, make_timesteps, randn_like, sample_timesteps


def test_alpha_bar_matches_closed_form():
    sched = NoiseSchedule()
    T = 1000
    for t in (0, 1, 17, 500, 999):
        # alpha_bar_t = prod_{s<=t} (1 - beta_s), beta_s = 1e-4 + s (0.02 - 1e-4) / (T - 1)
        expected = math.prod(1.0 - (1e-4 + s * (0.02 - 1e-4) / (T - 1)) for s in range(t + 1))
        assert sched.alphas_cumprod[t].item() == pytest.approx(expected, rel=1e-12)
    assert sched.betas[0].item() == pytest.approx(1e-4) and sched.betas[-1].item() == pytest.approx(0.02)
    assert torch.all(sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1])


def test_configurable_schedule_and_from_config():
    sched = NoiseSchedule(num_train_timesteps=10, beta_start=0.1, beta_end=0.5)
    assert sched.alphas_cumprod.shape == (10,)
    expected = math.prod(1 - b for b in torch.linspace(0.1, 0.5, 10, dtype=torch.float64).tolist())
    assert sched.alphas_cumprod[-1].item() == pytest.approx(expected, rel=1e-12)
    again = NoiseSchedule.from_config(sched.config)
    assert torch.equal(again.alphas_cumprod, sched.alphas_cumprod)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_add_noise_and_v_round_trips(dtype, generator):
    sched = NoiseSchedule()
    x0 = torch.randn(3, 4, 2, 5, 6, generator=generator, dtype=dtype)
    eps = torch.randn(x0.shape, generator=generator, dtype=dtype)
    t = torch.tensor([0, 500, 999])
    x_t = sched.add_noise(x0, eps, t)
    v = sched.get_velocity(x0, eps, t)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(sched.pred_x0_from_v(x_t, v, t), x0, atol=tol, rtol=0)
    torch.testing.assert_close(sched.pred_eps_from_v(x_t, v, t), eps, atol=tol, rtol=0)
    # per-item reference with a scalar alpha_bar
    for b in range(3):
        a = sched.alphas_cumprod[t[b]].item()
        torch.testing.assert_close(x_t[b], math.sqrt(a) * x0[b] + math.sqrt(1 - a) * eps[b])
        torch.testing.assert_close(v[b], math.sqrt(a) * eps[b] - math.sqrt(1 - a) * x0[b])
    assert x_t.dtype == dtype


def test_sparse_rows_broadcast_through_jidx(generator):
    sched = NoiseSchedule()
    jidx = torch.tensor([0, 0, 2, 1, 1, 1, 2])  # unsorted rows on purpose
    x0 = torch.randn(7, 8, generator=generator, dtype=torch.float64)
    eps = torch.randn(7, 8, generator=generator, dtype=torch.float64)
    t = torch.tensor([10, 400, 990])
    x_t = sched.add_noise(x0, eps, t, jidx)
    v = sched.get_velocity(x0, eps, t, jidx)
    for row in range(7):  # dense reference row by row
        a = sched.alphas_cumprod[t[jidx[row]]].item()
        torch.testing.assert_close(x_t[row], math.sqrt(a) * x0[row] + math.sqrt(1 - a) * eps[row])
    torch.testing.assert_close(sched.pred_x0_from_v(x_t, v, t, jidx), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(sched.pred_eps_from_v(x_t, v, t, jidx), eps, atol=1e-12, rtol=0)


def test_scalar_t_and_non_contiguous_input(generator):
    sched = NoiseSchedule()
    x0 = torch.randn(6, 4, generator=generator).t()  # (4, 6), non-contiguous
    eps = torch.randn(6, 4, generator=generator).t()
    x_t = sched.add_noise(x0, eps, 250)
    a = sched.alphas_cumprod[250].item()
    torch.testing.assert_close(x_t, math.sqrt(a) * x0 + math.sqrt(1 - a) * eps)


def test_bad_inputs_raise_clear_errors():
    sched = NoiseSchedule()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="timesteps must lie in"):
        sched.add_noise(x, x, 1000)
    with pytest.raises(TypeError, match="integer"):
        sched.add_noise(x, x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="batch size"):
        sched.add_noise(x, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="same shape"):
        sched.add_noise(x, torch.zeros(2, 4), 0)
    with pytest.raises(ValueError, match="jidx"):
        sched.add_noise(x, x, torch.tensor([1]), jidx=torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        NoiseSchedule(beta_start=0.1, beta_end=0.01)


def test_make_timesteps_spacings():
    assert make_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert make_timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert make_timesteps(1000, 1000).tolist() == list(range(999, -1, -1))
    assert make_timesteps(1000, 1).tolist() == [999]
    with pytest.raises(ValueError):
        make_timesteps(1000, 0)
    with pytest.raises(ValueError):
        make_timesteps(1000, 10, "linspace-ish")


def test_noise_and_timesteps_follow_the_generator():
    like = torch.zeros(5, 3)
    a = randn_like(like, torch.Generator().manual_seed(3))
    b = randn_like(like, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == like.shape
    t1 = sample_timesteps(64, 1000, torch.Generator().manual_seed(1))
    t2 = sample_timesteps(64, 1000, torch.Generator().manual_seed(1))
    assert torch.equal(t1, t2) and t1.dtype == torch.int64 and 0 <= int(t1.min()) and int(t1.max()) < 1000
