"""DDIM sampler (Song et al. 2021, "Denoising Diffusion Implicit Models"), eq. 12.

Usage::

    sched = DDIMScheduler()                  # linear betas 1e-4..0.02, T=1000, v-prediction
    sched.set_timesteps(50)                  # trailing spacing: 999, 979, ..., 19
    x = randn_like(latent, generator)
    for t in sched.timesteps:
        v = unet(x, t, ...)
        x = sched.step(v, t, x, eta=0.0, generator=generator)

The last step goes to ``alpha_bar = 1`` (``set_alpha_to_one``), so the loop ends at the model's
clean estimate. Samples may be dense (B, C, D, H, W) or sparse (N, C): the step coefficients depend
only on the (shared) timestep, so no batch index is needed here.
"""

from __future__ import annotations

import torch

from xcube_core.diffusion.schedule import SamplerBase, Timesteps, as_coef, randn_like, scalar_timestep

__all__ = ["DDIMScheduler"]


class DDIMScheduler(SamplerBase):
    """Deterministic (eta=0) to DDPM-like (eta=1) DDIM sampling over a sub-sequence of steps.

    Args:
        num_train_timesteps: ``T`` of the training schedule.
        beta_start: first beta of the linear schedule.
        beta_end: last beta of the linear schedule.
        prediction_type: ``"v_prediction"`` (default) or ``"epsilon"``.
        beta_schedule: ``"linear"`` (default) or ``"scaled_linear"``.
        timestep_spacing: ``"trailing"`` (default) or ``"leading"``, see ``make_timesteps``.
        set_alpha_to_one: if True the final step targets ``alpha_bar = 1`` (returns the clean
            estimate); if False it targets ``alpha_bar_0`` as the original DDIM code does.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "v_prediction",
        timestep_spacing: str = "trailing",
        set_alpha_to_one: bool = True,
        beta_schedule: str = "linear",
    ) -> None:
        super().__init__(num_train_timesteps, beta_start, beta_end, prediction_type, timestep_spacing, beta_schedule)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        one = torch.tensor(1.0, dtype=torch.float64)
        self.final_alpha_cumprod = one if self.set_alpha_to_one else self.alphas_cumprod[0]

    def step(
        self,
        model_output: torch.Tensor,
        t: Timesteps,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One DDIM update ``x_t -> x_{t_prev}``.

        Args:
            model_output: the network's ``v`` (or ``eps``) at ``(sample, t)``; shape of ``sample``.
            t: the current timestep, an int or 1-element tensor from :attr:`timesteps`.
            sample: ``x_t``. Shape: (B, C, D, H, W) dense or (N, C) sparse, float.
            eta: 0 gives deterministic DDIM; 1 gives the DDPM posterior variance.
            generator: source of the added noise when ``eta > 0`` (no noise is drawn when 0).

        Returns:
            ``x_{t_prev}``, shape and dtype of ``sample``.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        t_int = scalar_timestep(t)
        prev_t = self.previous_timestep(t_int)
        x0, eps = self.pred_x0_and_eps(model_output, t_int, sample)
        a_t = self.alphas_cumprod[t_int]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        # DDIM eq. 16: sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
        sigma = eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)).clamp(min=0.0).sqrt()
        dir_coef = (1.0 - a_prev - sigma**2).clamp(min=0.0).sqrt()
        # DDIM eq. 12: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z
        prev = as_coef(a_prev.sqrt(), sample) * x0 + as_coef(dir_coef, sample) * eps
        if float(sigma) > 0:
            prev = prev + as_coef(sigma, sample) * randn_like(sample, generator)
        return prev
