"""`xcube train KIND`: train one level's VAE, diffusion U-Net or refinement network.

Examples::

    xcube train vae --level 0 --data data/procedural --out runs/vae0 --max-steps 2000
    xcube train vae --level 0 --data data/procedural --out runs/vae0 --resume     # continue exactly
    xcube train diffusion --level 1 --data data/procedural --out runs/diff1 --config diff1.yaml -o lr=1e-4
    torchrun --standalone --nproc_per_node 2 -m xcube_core train vae --level 0 --data D --out runs/vae0
    xcube train toy --out /tmp/toy --max-steps 50          # smoke test of the machinery, no data
    xcube train vae --level 2 --recipe my_recipe.json --data D --out runs/vae2  # a level the recipe adds
    xcube train vae --level 1 --init-from xcube_core/assets/default_model --data D --out runs/vae1b

Configuration, lowest to highest priority: defaults; with --resume, the run's saved config; the
--config file (YAML/JSON with `train:` and `task:` sections, or flat trainer fields); command-line
options. The resolved config is printed at start and saved as OUT/train_config.json and in every
checkpoint. Output: OUT/checkpoints/step_*/ (safetensors + trainer.json, last --keep-last kept),
OUT/tb/ (TensorBoard), OUT/metrics.jsonl (train scalars every --log-every steps, val_loss and its terms
every --val-every steps), and OUT/model/ (EMA weights for the pipeline; diffusion adds its
scheduler_config.json) at the end. Diffusion runs take the noise schedule and sampler defaults from
the recipe, or -o prediction_type=epsilon, -o num_train_timesteps=500, -o guidance_scale=4, ...
SIGINT/SIGTERM finish the current step, write a checkpoint and exit with 130/143.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import signal

from xcube_core.errors import DataError, InvalidInputError

logger = logging.getLogger(__name__)

# command-line option -> TrainConfig field (None = not given, so lower layers win)
_TRAIN_OPTIONS = {
    "max_steps": int, "batch_size": int, "lr": float, "weight_decay": float, "warmup_steps": int,
    "grad_clip": float, "ema_decay": float, "seed": int, "num_workers": int, "log_every": int,
    "val_every": int, "val_batches": int,
    "ckpt_every": int, "keep_last": int, "device": str, "lr_schedule": str,
}


def register(sub) -> None:
    parser = sub.add_parser(
        "train", help="train a VAE, diffusion or refinement model of one level (resumable, torchrun-ready)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", metavar="KIND",
                        help="vae | diffusion | refine (or toy, a smoke test; or package.module:factory)")
    parser.add_argument("--level", type=int, default=0, help="hierarchy level, 0 = coarsest (default 0)")
    parser.add_argument("--data", type=pathlib.Path, default=None, help="dataset folder (see `xcube data`)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="run folder for checkpoints, logs, model")
    parser.add_argument("--config", type=pathlib.Path, default=None, help="YAML/JSON config file")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--init-from", type=pathlib.Path, default=None, metavar="MODEL_DIR",
                        help="start from the weights of a shipped/exported model: a pipeline folder "
                             "(e.g. xcube_core/assets/default_model), a run folder or a model folder; "
                             "new optimiser and EMA (ignored when --resume finds a checkpoint)")
    parser.add_argument("--recipe", type=pathlib.Path, default=None, metavar="FILE_OR_MODEL_DIR",
                        help="per-level architecture to train from: a recipe JSON/YAML file or a model folder "
                             "(its recipe.json, or its networks' configs); default the built-in recipe "
                             "(xcube_core/train/recipes.py). A recipe with more levels adds levels by "
                             "configuration alone, e.g. --level 2 at 0.125 m")
    parser.add_argument("--export-only", action="store_true",
                        help="only export OUT/model from the newest checkpoint (EMA weights), no training")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    for name, kind in _TRAIN_OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                            help=_help(name))
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                      help="bf16 autocast (fast on CUDA and on CPUs with avx512_bf16/AMX)")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="full float32")
    prec.add_argument("--precision", dest="precision", choices=("auto", "bf16", "fp32"), default=None,
                      help="auto (default) = bf16 where the hardware supports it natively, else fp32")
    parser.add_argument("-o", "--task-option", dest="task_options", action="append", default=[], metavar="KEY=VALUE",
                        help="task option or field of the level's network config (YAML value), repeatable, "
                             "e.g. -o kl_weight=0.001 -o crop=64; an unknown key is an error listing the valid ones")
    parser.add_argument("--ddp-find-unused", dest="ddp_find_unused", action="store_const", const=True, default=None,
                        help="torchrun: tolerate parameters without gradient in a step (slower)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write OUT/tb")
    parser.set_defaults(func=run)


def _help(name: str) -> str:
    from xcube_core.train.config import TrainConfig

    doc = {
        "max_steps": "total optimiser steps", "batch_size": "items per process and step", "lr": "peak learning rate",
        "weight_decay": "AdamW weight decay", "warmup_steps": "linear LR warm-up steps",
        "grad_clip": "max gradient norm (0 = off)", "ema_decay": "EMA decay (0 = off)", "seed": "random seed",
        "num_workers": "DataLoader workers", "log_every": "steps between logged scalars",
        "val_every": "steps between validation losses on the val split (0 = off); logged as val_loss and "
                     "val_<term> to metrics.jsonl and TensorBoard",
        "val_batches": "val-split batches per validation (the same ones every time)",
        "ckpt_every": "steps between checkpoints", "keep_last": "checkpoints to keep",
        "device": "auto | cpu | cuda | cuda:N", "lr_schedule": "constant | cosine",
    }[name]
    return f"{doc} (default {getattr(TrainConfig(), name)!r})"


def _parse_task_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"task option {item!r}: expected KEY=VALUE, e.g. -o latent_channels=8")
        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve(args: argparse.Namespace) -> tuple[dict, dict]:
    """(train config fields, task overrides) from saved run (on --resume), --config and options."""
    from xcube_core.train import checkpoint as ckpt_io
    from xcube_core.train.config import load_config_file

    train: dict = {}
    task: dict = {}
    latest = ckpt_io.latest_checkpoint(args.out) if (args.resume or args.export_only) else None
    if latest is not None:
        meta = ckpt_io.read_meta(latest)
        train.update(meta.get("train_config", {}))
        task.update(meta.get("task_overrides", {}))
    if args.config is not None:
        file_train, file_task = load_config_file(args.config)
        train.update(file_train)
        task.update(file_task)
    train.update({k: getattr(args, k) for k in (*_TRAIN_OPTIONS, "precision", "ddp_find_unused") if getattr(args, k) is not None})
    if args.recipe is not None:
        task["recipe"] = str(args.recipe)
    task.update(_parse_task_options(args.task_options))
    return train, task


def run(args: argparse.Namespace) -> int:
    from xcube_core.train.config import merge_config
    from xcube_core.train.task import get_task
    from xcube_core.train.trainer import Trainer

    if args.data is not None and not args.data.is_dir():
        raise DataError(f"--data {args.data} is not a folder; fix: pass the dataset folder (see `xcube data --help`)")
    if args.level < 0:
        raise InvalidInputError(f"--level must be >= 0, got {args.level}")
    train_fields, task_overrides = resolve(args)
    config = merge_config(None, train_fields)
    task = get_task(args.kind, args.level, args.data, task_overrides)
    if args.print_config:
        print(json.dumps({"task": task.name, "task_config": task.config(), "task_overrides": task_overrides,
                          "train_config": config.to_dict()}, indent=2, sort_keys=True))
        return 0
    trainer = Trainer(task, config, args.out, resume=args.resume, progress=not args.no_progress,
                      tensorboard=not args.no_tensorboard, task_overrides=task_overrides,
                      init_from=args.init_from)
    if args.export_only:
        print(f"exported to {trainer.export()}")
        return 0
    result = trainer.fit()
    if result.interrupted:
        code = 128 + int(trainer.stop_signal or signal.SIGINT)
        print(f"interrupted at step {result.step}; checkpoint {result.checkpoint}; continue with --resume")
        return code
    print(f"done: step {result.step}, checkpoint {result.checkpoint}"
          + (f", model exported to {result.export_dir}" if result.export_dir else ""))
    return 0
