"""Diffusion math: the noise schedule, DDIM/DDPM samplers, guidance, losses and EMA.

Schedulers hold only math (no weights): ``set_timesteps``, ``step``, ``add_noise``. Randomness
always comes from a passed ``torch.Generator``.
"""

from xcube_core.diffusion.ddim import DDIMScheduler
from xcube_core.diffusion.ddpm import DDPMScheduler
from xcube_core.diffusion.ema import EMA
from xcube_core.diffusion.guidance import (
    apply_drop,
    classifier_free_guidance,
    drop_mask,
    drop_prompts,
    guide_doubled,
)
from xcube_core.diffusion.losses import per_item_mse, v_prediction_loss
from xcube_core.diffusion.schedule import (
    NoiseSchedule,
    ScheduleConfig,
    make_timesteps,
    randn_like,
    sample_timesteps,
)

__all__ = [
    "DDIMScheduler",
    "DDPMScheduler",
    "EMA",
    "NoiseSchedule",
    "ScheduleConfig",
    "apply_drop",
    "classifier_free_guidance",
    "drop_mask",
    "drop_prompts",
    "guide_doubled",
    "make_timesteps",
    "per_item_mse",
    "randn_like",
    "sample_timesteps",
    "v_prediction_loss",
]
