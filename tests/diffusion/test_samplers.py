"""DDIM and DDPM samplers against analytic references: a perfect model and a Gaussian toy."""

from __future__ import annotations

import pytest
import torch

from xcube_core.diffusion import DDIMScheduler, DDPMScheduler, NoiseSchedule, randn_like


def perfect_v(sched: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
    """The true v of a sample whose clean value x0 is known (a 'perfect' denoiser)."""
    a = sched.alphas_cumprod[int(t)].item()
    eps = (x_t - a**0.5 * x0) / (1 - a) ** 0.5
    return a**0.5 * eps - (1 - a) ** 0.5 * x0


def gaussian_oracle_v(sched: NoiseSchedule, x_t: torch.Tensor, t, mu: float, s: float) -> torch.Tensor:
    """Bayes-optimal v for data x0 ~ N(mu, s^2): E[x0 | x_t] is the Gaussian posterior mean."""
    a = sched.alphas_cumprod[int(t)].item()
    x0 = mu + a**0.5 * s**2 / (a * s**2 + 1 - a) * (x_t - a**0.5 * mu)
    eps = (x_t - a**0.5 * x0) / (1 - a) ** 0.5
    return a**0.5 * eps - (1 - a) ** 0.5 * x0


def run(sched, x, model, eta, generator):
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x, eta=eta, generator=generator)
    return x


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_ddim_eta0_recovers_x0_with_a_perfect_model(spacing, steps, generator):
    sched = DDIMScheduler(timestep_spacing=spacing)
    sched.set_timesteps(steps)
    x0 = torch.randn(2, 3, 4, 4, 4, generator=generator, dtype=torch.float64)
    x = randn_like(x0, generator)
    out = run(sched, x, lambda x_t, t: perfect_v(sched, x0, x_t, t), 0.0, generator)
    torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)


def test_ddim_sparse_rows_and_float32(generator):
    sched = DDIMScheduler()
    sched.set_timesteps(8)
    x0 = torch.randn(50, 4, generator=generator)  # (N, C) rows of a sparse latent
    x = randn_like(x0, generator)
    out = run(sched, x, lambda x_t, t: perfect_v(sched, x0, x_t, t), 0.0, generator)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_ddim_with_noise_still_ends_at_x0_and_is_deterministic_per_generator():
    sched = DDIMScheduler()
    sched.set_timesteps(6)
    x0 = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        x = randn_like(x0, g)
        return run(sched, x, lambda x_t, t: perfect_v(sched, x0, x_t, t), 1.0, g)

    torch.testing.assert_close(sample(0), x0, atol=1e-9, rtol=0)  # the last step has sigma = 0
    # intermediate states differ between seeds, are equal for the same seed
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    t = sched.timesteps[0]
    v = perfect_v(sched, x0, x, t)
    a = sched.step(v, t, x, eta=1.0, generator=g1)
    b = sched.step(v, t, x, eta=1.0, generator=g2)
    c = sched.step(v, t, x, eta=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddim_eta0_matches_the_probability_flow_on_a_gaussian(generator):
    mu, s = 1.5, 0.5
    sched = DDIMScheduler()
    sched.set_timesteps(250)
    x = torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    out = run(sched, x, lambda x_t, t: gaussian_oracle_v(sched, x_t, t, mu, s), 0.0, generator)
    assert out.mean().item() == pytest.approx(mu, abs=0.03)
    assert out.std().item() == pytest.approx(s, rel=0.03)


@pytest.mark.parametrize("steps,std_rel", [(1000, 0.03), (200, 0.08)])
def test_ddpm_samples_a_gaussian_with_the_right_statistics(steps, std_rel, generator):
    mu, s = 1.5, 0.5
    sched = DDPMScheduler()
    sched.set_timesteps(steps)
    x = torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    out = run(sched, x, lambda x_t, t: gaussian_oracle_v(sched, x_t, t, mu, s), 1.0, generator)
    assert out.mean().item() == pytest.approx(mu, abs=0.03)
    assert out.std().item() == pytest.approx(s, rel=std_rel)


def test_ddpm_last_step_returns_the_posterior_mean_without_noise(generator):
    sched = DDPMScheduler()
    sched.set_timesteps(10)
    x0 = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    x = randn_like(x0, generator)
    out = run(sched, x, lambda x_t, t: perfect_v(sched, x0, x_t, t), 1.0, generator)
    torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)


@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_sampling_is_reproducible_with_a_generator(cls):
    sched = cls()
    sched.set_timesteps(5)
    model = lambda x_t, t: 0.1 * x_t  # noqa: E731 - any fixed function

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return run(sched, randn_like(torch.empty(3, 4), g), model, 1.0, g)

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))


def test_epsilon_prediction_also_supported(generator):
    sched = DDIMScheduler(prediction_type="epsilon")
    sched.set_timesteps(5)
    x0 = torch.randn(3, 2, generator=generator, dtype=torch.float64)

    def perfect_eps(x_t, t):
        a = sched.alphas_cumprod[int(t)].item()
        return (x_t - a**0.5 * x0) / (1 - a) ** 0.5

    out = run(sched, randn_like(x0, generator), perfect_eps, 0.0, generator)
    torch.testing.assert_close(out, x0, atol=1e-9, rtol=0)


def test_step_rejects_unknown_or_batched_timesteps():
    sched = DDIMScheduler()
    sched.set_timesteps(10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="not among"):
        sched.step(x, 500, x)
    with pytest.raises(ValueError, match="one timestep"):
        sched.step(x, torch.tensor([999, 899]), x)
    with pytest.raises(ValueError):
        sched.step(x, 999, x, eta=-1.0)
    with pytest.raises(ValueError):
        DDPMScheduler(variance_type="learned")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_cuda_sampling_with_a_cpu_generator_matches_cpu(cls):
    sched = cls()
    sched.set_timesteps(5)
    model = lambda x_t, t: 0.1 * x_t  # noqa: E731

    def sample(device):
        g = torch.Generator().manual_seed(0)  # a CPU generator drives CUDA samples too
        x = randn_like(torch.empty(3, 4, dtype=torch.float64, device=device), g)
        return run(sched, x, model, 1.0, g).cpu()

    torch.testing.assert_close(sample("cuda"), sample("cpu"))
