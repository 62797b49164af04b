"""DDPM ancestral sampler (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"), eqs. 6-7.

Same interface as :class:`~xcube_core.diffusion.ddim.DDIMScheduler`. With fewer inference steps than
training steps the chain is respaced (Nichol & Dhariwal 2021): between consecutive inference steps
``t -> s`` the effective ``beta = 1 - alpha_bar_t / alpha_bar_s``.
"""

from __future__ import annotations

import torch

from xcube_core.diffusion.schedule import SamplerBase, Timesteps, as_coef, randn_like, scalar_timestep

__all__ = ["DDPMScheduler"]

VARIANCE_TYPES = ("fixed_small", "fixed_large")


class DDPMScheduler(SamplerBase):
    """Ancestral sampling ``x_s ~ q(x_s | x_t, x0_hat)``.

    Args:
        num_train_timesteps: ``T`` of the training schedule.
        beta_start: first beta of the linear schedule.
        beta_end: last beta of the linear schedule.
        prediction_type: ``"v_prediction"`` (default) or ``"epsilon"``.
        beta_schedule: ``"linear"`` (default) or ``"scaled_linear"``.
        timestep_spacing: ``"trailing"`` (default) or ``"leading"``.
        variance_type: ``"fixed_small"`` (the posterior variance ``beta_tilde``, default) or
            ``"fixed_large"`` (``beta``), DDPM section 3.2.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "v_prediction",
        timestep_spacing: str = "trailing",
        variance_type: str = "fixed_small",
        beta_schedule: str = "linear",
    ) -> None:
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
        super().__init__(num_train_timesteps, beta_start, beta_end, prediction_type, timestep_spacing, beta_schedule)
        self.variance_type = variance_type

    def step(
        self,
        model_output: torch.Tensor,
        t: Timesteps,
        sample: torch.Tensor,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One ancestral step ``x_t -> x_s`` (``s`` = the next inference timestep, or clean).

        Args:
            model_output: the network's ``v`` (or ``eps``) at ``(sample, t)``; shape of ``sample``.
            t: the current timestep, an int or 1-element tensor from :attr:`timesteps`.
            sample: ``x_t``. Shape: (B, C, D, H, W) dense or (N, C) sparse, float.
            eta: scale of the noise standard deviation; 1 is DDPM (kept for interface parity
                with DDIM; 0 returns the posterior mean).
            generator: source of the added noise (none is drawn on the final step).

        Returns:
            ``x_s``, shape and dtype of ``sample``.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        t_int = scalar_timestep(t)
        prev_t = self.previous_timestep(t_int)
        x0, _ = self.pred_x0_and_eps(model_output, t_int, sample)
        a_t = self.alphas_cumprod[t_int]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64)
        alpha = a_t / a_prev  # effective alpha of the (respaced) step t -> s
        beta = 1.0 - alpha
        # DDPM eq. 7: posterior mean of q(x_s | x_t, x0)
        c0 = a_prev.sqrt() * beta / (1.0 - a_t)
        ct = alpha.sqrt() * (1.0 - a_prev) / (1.0 - a_t)
        mean = as_coef(c0, sample) * x0 + as_coef(ct, sample) * sample
        if prev_t < 0 or eta == 0:
            return mean
        var = (1.0 - a_prev) / (1.0 - a_t) * beta if self.variance_type == "fixed_small" else beta
        std = eta * var.clamp(min=0.0).sqrt()
        return mean + as_coef(std, sample) * randn_like(sample, generator)
