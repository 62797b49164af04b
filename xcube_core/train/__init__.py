"""Generic training machinery: configs, the trainer loop, checkpoints, resume, DDP, progress.

Per-model recipes implement :class:`~xcube_core.train.task.TrainTask` (in ``xcube_core.train.tasks``);
:class:`~xcube_core.train.trainer.Trainer` does the rest. Heavy modules load on first use.
"""

from xcube_core.train.config import TrainConfig, load_config_file, merge_config
from xcube_core.train.task import TrainTask, available_tasks, get_task, register_task
from xcube_core.train.trainer import Trainer, TrainResult

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "available_tasks",
    "get_task",
    "load_config_file",
    "merge_config",
    "register_task",
]
