"""The noise schedule and sampler defaults that travel with a diffusion model (``scheduler_config.json``).

Training and inference must agree on the betas and on what the network predicts; otherwise a model
silently samples garbage. After diffusers, the schedule is saved beside the network that was trained
with it (``level{i}/unet/scheduler_config.json`` in a pipeline folder, ``RUN/model/`` after training)
and read back at inference. It also holds the sampler settings the model was tuned for (sampler,
steps, eta, guidance), which the pipeline uses when a caller does not choose them.

A folder without the file (models made before it existed, e.g. the shipped v1) gets the defaults
below, which are exactly what v1 was trained and tuned with, and a logged warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

from xcube_core.diffusion.schedule import BETA_SCHEDULES, PREDICTION_TYPES, TIMESTEP_SPACINGS, NoiseSchedule, SamplerBase
from xcube_core.errors import ModelLoadError
from xcube_core.fileio import atomic_write_text
from xcube_core.models.base import config_from_dict, config_to_dict

__all__ = ["SAMPLERS", "SCHEDULER_FILE", "SchedulerConfig", "load_scheduler_config", "save_scheduler_config"]

logger = logging.getLogger(__name__)

SCHEDULER_FILE = "scheduler_config.json"
SAMPLERS = ("ddim", "ddpm")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Training noise schedule + default sampling settings of one level's diffusion model.

    Attributes:
        num_train_timesteps: ``T`` of training.
        beta_schedule: ``"linear"`` or ``"scaled_linear"``.
        beta_start, beta_end: first and last beta.
        prediction_type: ``"v_prediction"`` or ``"epsilon"`` (the training target and how samplers
            read the output).
        timestep_spacing: ``"trailing"`` or ``"leading"`` inference timesteps.
        sampler: default sampler, ``"ddim"`` or ``"ddpm"``.
        num_inference_steps: default sampling steps.
        eta: default DDIM eta (0 = deterministic) or DDPM noise scale.
        guidance_scale: default classifier-free guidance scale.
        guidance_interval: ``(lo, hi)`` as fractions of ``T``: guidance applies only at timesteps
            ``lo * T <= t <= hi * T`` and other steps use the conditional prediction alone (scale 1,
            one U-Net pass instead of two). Guidance at the noisiest steps mostly costs diversity
            (Kynkaenniemi et al. 2024, "Applying guidance in a limited interval"); (0, 1) = always;
            an empty interval (lo == hi) = never: the level samples with its conditional prediction
            alone whatever scale a request gives (a level whose layout, not its text, decides it).
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"
    timestep_spacing: str = "trailing"
    sampler: str = "ddim"
    num_inference_steps: int = 25
    eta: float = 0.0
    guidance_scale: float = 3.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        checks = (("beta_schedule", BETA_SCHEDULES), ("prediction_type", PREDICTION_TYPES),
                  ("timestep_spacing", TIMESTEP_SPACINGS), ("sampler", SAMPLERS))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"scheduler {name}={getattr(self, name)!r}: expected one of {allowed}")
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an int >= 2, got {self.num_train_timesteps!r}")
        if not isinstance(self.num_inference_steps, int) or not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be an int in 1..{self.num_train_timesteps}, "
                             f"got {self.num_inference_steps!r}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.eta < 0 or self.guidance_scale < 0:
            raise ValueError(f"eta and guidance_scale must be >= 0, got {self.eta}, {self.guidance_scale}")
        lo_hi = tuple(self.guidance_interval)
        if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi) or not 0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0:
            raise ValueError(f"guidance_interval must be (lo, hi) with 0 <= lo <= hi <= 1 (lo == hi: never), "
                             f"got {self.guidance_interval!r}")
        object.__setattr__(self, "guidance_interval", (float(lo_hi[0]), float(lo_hi[1])))

    def guidance_at(self, t: int, scale: float) -> float:
        """The guidance scale to use at timestep ``t``: ``scale`` inside `guidance_interval`, else 1."""
        lo, hi = self.guidance_interval
        return scale if lo < hi and lo * self.num_train_timesteps <= t <= hi * self.num_train_timesteps else 1.0

    def noise_schedule(self) -> NoiseSchedule:
        """The forward process of training."""
        return NoiseSchedule(self.num_train_timesteps, self.beta_start, self.beta_end, self.prediction_type,
                             self.beta_schedule)

    def make_sampler(self, sampler: str | None = None) -> SamplerBase:
        """A DDIM or DDPM sampler on this schedule (``sampler`` overrides the default)."""
        from xcube_core.diffusion.ddim import DDIMScheduler
        from xcube_core.diffusion.ddpm import DDPMScheduler

        kind = sampler or self.sampler
        if kind not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {kind!r}")
        cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
        return cls(num_train_timesteps=self.num_train_timesteps, beta_start=self.beta_start, beta_end=self.beta_end,
                   prediction_type=self.prediction_type, timestep_spacing=self.timestep_spacing,
                   beta_schedule=self.beta_schedule)


def save_scheduler_config(config: SchedulerConfig, directory: str | pathlib.Path) -> pathlib.Path:
    """Write ``directory/scheduler_config.json`` (atomically); returns its path."""
    path = pathlib.Path(directory) / SCHEDULER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"class": "SchedulerConfig", **config_to_dict(config)}
    atomic_write_text(path, json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


def load_scheduler_config(directory: str | pathlib.Path) -> SchedulerConfig:
    """Read ``directory/scheduler_config.json``; the defaults (with a warning) when there is none.

    Raises:
        ModelLoadError: the file exists but is not valid JSON or holds unknown or invalid fields.
    """
    path = pathlib.Path(directory) / SCHEDULER_FILE
    if not path.is_file():
        d = SchedulerConfig()
        logger.warning("%s not found: using the defaults (%s betas %g..%g, T=%d, %s; %s %d steps, guidance %g); "
                       "re-assemble the model to record its own", path, d.beta_schedule, d.beta_start, d.beta_end,
                       d.num_train_timesteps, d.prediction_type, d.sampler, d.num_inference_steps, d.guidance_scale)
        return SchedulerConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("class", None)
        return config_from_dict(SchedulerConfig, data)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"{path} is not a valid scheduler config: {exc}; fix: re-export the model "
                             "or correct the file") from exc
