"""The forward (noising) process of DDPM with a linear beta schedule, and v-prediction algebra.

Notation (Ho et al. 2020; Salimans & Ho 2022 for v):

* ``beta_t`` linear from ``beta_start`` to ``beta_end`` over ``T`` training steps, ``t = 0..T-1``
  (``beta_schedule="linear"``), or linear in ``sqrt(beta)`` (``"scaled_linear"``, Stable Diffusion's).
* ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``; we write ``a = alpha_bar_t`` below.
* ``x_t = sqrt(a) * x0 + sqrt(1 - a) * eps``                   (:meth:`NoiseSchedule.add_noise`)
* ``v   = sqrt(a) * eps - sqrt(1 - a) * x0``                   (:meth:`NoiseSchedule.get_velocity`)
* ``x0  = sqrt(a) * x_t - sqrt(1 - a) * v``                    (:meth:`NoiseSchedule.pred_x0_from_v`)
* ``eps = sqrt(1 - a) * x_t + sqrt(a) * v``                    (:meth:`NoiseSchedule.pred_eps_from_v`)

Every function accepts two layouts of samples:

* **dense**: shape ``(B, ...)``, e.g. ``(B, C, D, H, W)``; ``t`` has one entry per batch item.
* **sparse**: shape ``(N, C)`` rows of a jagged batch (``JaggedTensor.jdata``), with ``jidx`` of
  shape ``(N,)`` giving the batch item of each row; ``t`` has one entry per batch item and is
  broadcast to rows through ``jidx``.

``t`` may also be a Python int or a 0-d tensor, which applies to every row. The schedule itself is
kept in float64 on the CPU; coefficients are gathered, cast to the sample's dtype and moved to its
device at each call, so the code is device and dtype agnostic.
"""

from __future__ import annotations

import dataclasses
from typing import Union

import torch

Timesteps = Union[int, torch.Tensor]

__all__ = [
    "NoiseSchedule",
    "SamplerBase",
    "ScheduleConfig",
    "make_timesteps",
    "randn_like",
    "sample_timesteps",
]

TIMESTEP_SPACINGS = ("leading", "trailing")
BETA_SCHEDULES = ("linear", "scaled_linear")
PREDICTION_TYPES = ("v_prediction", "epsilon")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Hyper-parameters of the training noise schedule (JSON-able via ``dataclasses.asdict``).

    Attributes:
        num_train_timesteps: number of diffusion steps ``T`` used in training.
        beta_start: ``beta_0``.
        beta_end: ``beta_{T-1}``.
        prediction_type: what the network predicts: ``"v_prediction"`` (default) or ``"epsilon"``.
        beta_schedule: ``"linear"`` (default) or ``"scaled_linear"`` (linear in ``sqrt(beta)``).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"
    beta_schedule: str = "linear"


class NoiseSchedule:
    """Linear-beta DDPM forward process and the v-prediction conversions.

    Args:
        num_train_timesteps: ``T``, at least 2.
        beta_start: first beta, in (0, 1).
        beta_end: last beta, in [beta_start, 1).
        prediction_type: ``"v_prediction"`` or ``"epsilon"``; used by samplers' ``step``.
        beta_schedule: ``"linear"`` or ``"scaled_linear"``.

    Attributes:
        betas: Shape: (T,), float64, CPU.
        alphas: ``1 - betas``. Shape: (T,), float64, CPU.
        alphas_cumprod: ``alpha_bar_t``. Shape: (T,), float64, CPU.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "v_prediction",
        beta_schedule: str = "linear",
    ) -> None:
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an int >= 2, got {num_train_timesteps!r}")
        if not (0.0 < beta_start <= beta_end < 1.0):
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
            )
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        self.config = ScheduleConfig(num_train_timesteps, float(beta_start), float(beta_end), prediction_type,
                                     beta_schedule)
        if beta_schedule == "linear":
            self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        else:  # scaled_linear
            self.betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    @classmethod
    def from_config(cls, config: ScheduleConfig | dict) -> "NoiseSchedule":
        """Build from a :class:`ScheduleConfig` or its ``asdict`` form (extra keys are rejected)."""
        if isinstance(config, ScheduleConfig):
            config = dataclasses.asdict(config)
        return cls(**config)

    @property
    def num_train_timesteps(self) -> int:
        """``T``, the number of training timesteps."""
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ coefficients
    def alpha_bar(self, t: Timesteps, like: torch.Tensor, jidx: torch.Tensor | None = None) -> torch.Tensor:
        """``alpha_bar_t`` broadcastable against ``like``.

        Args:
            t: int, 0-d tensor, or integer tensor of shape (B,) with values in [0, T).
            like: the sample the coefficient multiplies; gives dtype, device and rank.
            jidx: per-row batch index for sparse samples. Shape: (N,), int; ``like.shape[0] == N``.

        Returns:
            Shape: (1,)*like.ndim for scalar t, (B, 1, ...) dense, (N, 1, ...) sparse; like's dtype.
        """
        t = self._check_t(t)
        a = self.alphas_cumprod[t]  # float64 on CPU; shape () or (B,)
        return _broadcast(a, like, jidx)

    def _check_t(self, t: Timesteps) -> torch.Tensor:
        if isinstance(t, bool) or not isinstance(t, (int, torch.Tensor)):
            raise TypeError(f"t must be an int or an integer tensor, got {type(t).__name__}")
        t = torch.as_tensor(t).detach().to("cpu")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer timesteps, got dtype {t.dtype}; fix: t.long()")
        if t.ndim > 1:
            raise ValueError(f"t must be a scalar or of shape (B,), got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps):
            raise ValueError(
                f"timesteps must lie in [0, {self.num_train_timesteps}), got min {int(t.min())}, max {int(t.max())}"
            )
        return t.long()

    # ------------------------------------------------------------------ forward process
    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, t: Timesteps, jidx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x_t = sqrt(a) x0 + sqrt(1-a) eps`` (DDPM eq. 4).

        Args:
            x0: clean sample. Shape: (B, ...) dense or (N, C) sparse, float.
            noise: ``eps``, same shape and dtype as ``x0``.
            t: timesteps, see :meth:`alpha_bar`.
            jidx: per-row batch index for sparse samples. Shape: (N,).

        Returns:
            ``x_t``, same shape and dtype as ``x0``.
        """
        _check_pair(x0, noise, "x0", "noise")
        a = self.alpha_bar(t, x0, jidx)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def get_velocity(
        self, x0: torch.Tensor, noise: torch.Tensor, t: Timesteps, jidx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The v-prediction target ``v = sqrt(a) eps - sqrt(1-a) x0``; shapes as in :meth:`add_noise`."""
        _check_pair(x0, noise, "x0", "noise")
        a = self.alpha_bar(t, x0, jidx)
        return a.sqrt() * noise - (1.0 - a).sqrt() * x0

    def pred_x0_from_v(
        self, x_t: torch.Tensor, v: torch.Tensor, t: Timesteps, jidx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x0 = sqrt(a) x_t - sqrt(1-a) v``; shapes as in :meth:`add_noise`."""
        _check_pair(x_t, v, "x_t", "v")
        a = self.alpha_bar(t, x_t, jidx)
        return a.sqrt() * x_t - (1.0 - a).sqrt() * v

    def pred_eps_from_v(
        self, x_t: torch.Tensor, v: torch.Tensor, t: Timesteps, jidx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``eps = sqrt(1-a) x_t + sqrt(a) v``; shapes as in :meth:`add_noise`."""
        _check_pair(x_t, v, "x_t", "v")
        a = self.alpha_bar(t, x_t, jidx)
        return (1.0 - a).sqrt() * x_t + a.sqrt() * v

    def pred_x0_and_eps(
        self, model_output: torch.Tensor, t: Timesteps, sample: torch.Tensor, jidx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a network output into ``(x0, eps)`` according to ``prediction_type``.

        Args:
            model_output: ``v`` or ``eps`` prediction, same shape as ``sample``.
            t: timesteps, see :meth:`alpha_bar`.
            sample: ``x_t``. Shape: (B, ...) or (N, C).
            jidx: per-row batch index for sparse samples.

        Returns:
            ``(x0, eps)``, each like ``sample``.
        """
        if self.config.prediction_type == "v_prediction":
            return (
                self.pred_x0_from_v(sample, model_output, t, jidx),
                self.pred_eps_from_v(sample, model_output, t, jidx),
            )
        _check_pair(sample, model_output, "sample", "model_output")
        a = self.alpha_bar(t, sample, jidx)
        x0 = (sample - (1.0 - a).sqrt() * model_output) / a.sqrt()
        return x0, model_output

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, t: Timesteps, jidx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the network should output for ``x_t = add_noise(x0, noise, t)``: ``v`` or ``eps``."""
        if self.config.prediction_type == "v_prediction":
            return self.get_velocity(x0, noise, t, jidx)
        _check_pair(x0, noise, "x0", "noise")
        return noise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dataclasses.asdict(self.config)})"


class SamplerBase(NoiseSchedule):
    """Shared bookkeeping of samplers: the inference timesteps and each one's successor.

    Subclasses implement ``step(model_output, t, sample, eta=..., generator=...) -> prev_sample``.

    Args:
        num_train_timesteps, beta_start, beta_end, prediction_type, beta_schedule: see :class:`NoiseSchedule`.
        timestep_spacing: ``"trailing"`` (default) or ``"leading"``, see :func:`make_timesteps`.

    Attributes:
        timesteps: descending inference timesteps. Shape: (n,), int64, CPU. All ``T`` steps until
            :meth:`set_timesteps` is called.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "v_prediction",
        timestep_spacing: str = "trailing",
        beta_schedule: str = "linear",
    ) -> None:
        super().__init__(num_train_timesteps, beta_start, beta_end, prediction_type, beta_schedule)
        make_timesteps(num_train_timesteps, 1, timestep_spacing)  # validates the spacing name
        self.timestep_spacing = timestep_spacing
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose ``num_inference_steps`` timesteps; returns them (descending, int64, CPU)."""
        self.timesteps = make_timesteps(self.num_train_timesteps, num_inference_steps, self.timestep_spacing)
        ts = self.timesteps.tolist()
        self._prev = {t: (ts[i + 1] if i + 1 < len(ts) else -1) for i, t in enumerate(ts)}
        return self.timesteps

    def previous_timestep(self, t: Timesteps) -> int:
        """The timestep that follows ``t`` in :attr:`timesteps` (-1 after the last one)."""
        t_int = scalar_timestep(t)
        if t_int not in self._prev:
            raise ValueError(
                f"timestep {t_int} is not among this scheduler's {len(self.timesteps)} timesteps "
                f"(first ones: {self.timesteps.tolist()[:4]}); fix: iterate over scheduler.timesteps "
                "after set_timesteps(n)"
            )
        return self._prev[t_int]

    def __len__(self) -> int:
        return len(self.timesteps)


# ---------------------------------------------------------------------- helpers
def scalar_timestep(t: Timesteps) -> int:
    """A single timestep as a Python int (samplers step every batch item at the same t)."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"step() takes one timestep shared by the batch, got a tensor of shape {tuple(t.shape)}")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"timestep must be an integer, got dtype {t.dtype}")
        return int(t.item())
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"timestep must be an int or a 1-element integer tensor, got {type(t).__name__}")
    return t


def as_coef(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A scalar (float64 CPU tensor or float) as a 0-d tensor of ``like``'s dtype on its device."""
    return torch.as_tensor(value, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


def _check_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"{name_a} and {name_b} must be tensors, got {type(a).__name__}, {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _broadcast(values: torch.Tensor, like: torch.Tensor, jidx: torch.Tensor | None) -> torch.Tensor:
    """Cast per-item ``values`` (shape () or (B,)) to ``like``'s dtype/device and broadcast shape."""
    values = values.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)
    if values.ndim == 0:
        return values.reshape((1,) * max(like.ndim, 1))
    if jidx is not None:
        if jidx.ndim != 1 or jidx.shape[0] != like.shape[0]:
            raise ValueError(
                f"jidx must have shape (N,) with N = rows of the sample = {like.shape[0]}, got {tuple(jidx.shape)}"
            )
        if jidx.numel() and int(jidx.max()) >= values.shape[0]:
            raise ValueError(
                f"jidx refers to batch item {int(jidx.max())} but t has only {values.shape[0]} entries; "
                "fix: pass one timestep per batch item"
            )
        values = values[jidx.to(device=values.device, dtype=torch.long)]
    elif like.ndim == 0 or values.shape[0] != like.shape[0]:
        raise ValueError(
            f"t has {values.shape[0]} entries but the dense sample has batch size "
            f"{like.shape[0] if like.ndim else 0} (shape {tuple(like.shape)}); "
            "fix: pass one timestep per batch item, or jidx for sparse (N, C) samples"
        )
    return values.reshape(values.shape[:1] + (1,) * (like.ndim - 1))


def make_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str = "trailing") -> torch.Tensor:
    """Descending inference timesteps, as in diffusers' ``timestep_spacing``.

    ``trailing`` (default; Lin et al. 2023, "Common diffusion noise schedules ... are flawed") always
    starts at ``T-1``, so sampling begins from the noisiest step; ``leading`` starts at
    ``(n-1) * (T // n)`` and always ends at 0.

    Args:
        num_train_timesteps: ``T``.
        num_inference_steps: ``n`` in [1, T].
        spacing: ``"trailing"`` or ``"leading"``.

    Returns:
        Strictly decreasing timesteps. Shape: (n,), int64, CPU.
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
        raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}")
    n, T = num_inference_steps, num_train_timesteps
    if spacing == "trailing":
        ratio = T / n
        steps = torch.round(T - ratio * torch.arange(n, dtype=torch.float64)).long() - 1
    elif spacing == "leading":
        steps = torch.arange(n - 1, -1, -1, dtype=torch.int64) * (T // n)
    else:
        raise ValueError(f"timestep spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    return steps


def randn_like(sample: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``sample``, drawn from ``generator``.

    The generator may live on another device than ``sample`` (e.g. a CPU generator for CUDA
    latents, which makes results identical across devices); noise is then drawn where the generator
    lives and moved. With ``generator=None`` torch's global RNG is used (never seeded here).
    """
    if generator is not None and generator.device != sample.device:
        noise = torch.randn(sample.shape, generator=generator, device=generator.device, dtype=sample.dtype)
        return noise.to(sample.device)
    return torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)


def sample_timesteps(
    batch_size: int,
    num_train_timesteps: int = 1000,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform training timesteps. Returns shape (B,), int64, on ``device`` (default: generator's)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    t = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=gen_device)
    return t.to(device) if device is not None else t
