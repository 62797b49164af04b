"""Start a training run from the weights of a shipped or exported model (``xcube train --init-from``).

Training accumulates: every run starts from the last shipped weights and adds to them, instead of
starting from random weights. Only the weights are taken; the optimiser, EMA, step and RNG start
fresh (that is what distinguishes ``--init-from`` from ``--resume``).

``--init-from`` accepts any of:

* a pipeline folder (``pipeline.json`` + ``level{N}/{vae,unet,refine}``), e.g. the shipped
  ``xcube_core/assets/default_model``: the task's own part of its level is used;
* a training run folder (its exported ``model/`` is used);
* a model folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors``).

Tensors whose names and shapes match are copied (float16 storage is cast back to the model's dtype).
A tensor that *grew* (every dimension at least the stored one, e.g. a convolution given extra input
channels) gets the stored values in its leading block and zeros elsewhere, so a layer widened on
its input side computes exactly what it did before. The others keep their fresh initialisation, and
the report says which. This lets a run widen part of an architecture and keep what was learned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import torch

from xcube_core.errors import ModelLoadError

logger = logging.getLogger(__name__)

# task name -> the part of a pipeline level folder that holds its network
TASK_PART = {"vae": "vae", "diffusion": "unet", "refine": "refine"}
_CONFIG, _WEIGHTS, _PIPELINE = "config.json", "model.safetensors", "pipeline.json"


@dataclasses.dataclass
class InitReport:
    """What ``--init-from`` loaded: the folder, and tensor names copied / re-initialised / unused."""

    source: pathlib.Path
    loaded: list[str]
    grown: list[str]           # stored values copied into a larger tensor, zeros elsewhere
    reinitialised: list[str]   # in the model, absent or of another shape in the source
    unused: list[str]          # in the source, absent from the model

    def to_dict(self) -> dict:
        return {"source": str(self.source), "loaded": len(self.loaded), "grown": self.grown,
                "reinitialised": self.reinitialised, "unused": self.unused}


def resolve_init_dir(path: str | pathlib.Path, task_name: str, level: int) -> pathlib.Path:
    """The model folder inside ``path`` that holds ``task_name``'s network of ``level``.

    Raises:
        ModelLoadError: ``path`` is none of a pipeline, run or model folder, or lacks the part.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"--init-from {path} is not a folder; fix: pass a pipeline folder "
                             "(e.g. xcube_core/assets/default_model), a run folder or a model folder")
    if (path / _PIPELINE).is_file():
        part = TASK_PART.get(task_name)
        if part is None:
            raise ModelLoadError(f"--init-from a pipeline folder works for tasks {sorted(TASK_PART)}, "
                                 f"not {task_name!r}; pass the model folder itself")
        path = path / f"level{level}" / part
        if not path.is_dir():
            raise ModelLoadError(f"{path} does not exist: the pipeline has no {part} for level {level}; "
                                 "fix: drop --init-from for this stage, or pass another model")
    elif (path / "model" / _CONFIG).is_file():
        path = path / "model"
    if not (path / _CONFIG).is_file() or not (path / _WEIGHTS).is_file():
        raise ModelLoadError(f"{path} holds no {_CONFIG} + {_WEIGHTS}; fix: pass a folder written by "
                             "save_pretrained, `xcube train` (its model/) or the assembler")
    return path


def load_init_weights(model: torch.nn.Module, directory: pathlib.Path) -> InitReport:
    """Copy every tensor of ``directory``'s weights whose name and shape match into ``model``.

    Raises:
        ModelLoadError: the folder holds another class of network, or no tensor fits at all.
    """
    from safetensors import safe_open

    meta = json.loads((directory / _CONFIG).read_text(encoding="utf-8"))
    if meta.get("class") not in (None, type(model).__name__):
        raise ModelLoadError(f"{directory} holds a {meta.get('class')}, the task trains a {type(model).__name__}; "
                             "fix: pass the folder of the same kind of network")
    own = model.state_dict()
    loaded, grown, unused = [], [], []
    with safe_open(str(directory / _WEIGHTS), framework="pt") as fh:
        with torch.no_grad():
            for name in fh.keys():
                if name not in own:
                    unused.append(name)
                    continue
                tensor = fh.get_tensor(name).to(own[name].dtype)
                if tuple(tensor.shape) == tuple(own[name].shape):
                    own[name].copy_(tensor)
                    loaded.append(name)
                elif tensor.dim() == own[name].dim() and all(a <= b for a, b in zip(tensor.shape, own[name].shape)):
                    own[name].zero_()
                    own[name][tuple(slice(0, n) for n in tensor.shape)] = tensor
                    grown.append(name)
    if not loaded:
        raise ModelLoadError(f"no tensor of {directory / _WEIGHTS} fits {type(model).__name__} "
                             "(names or shapes all differ); fix: pass a model of the same architecture")
    reinit = sorted(set(own) - set(loaded) - set(grown))
    report = InitReport(directory, loaded, grown, reinit, sorted(unused))
    logger.info("--init-from %s: %d tensors loaded, %d grown %s, %d re-initialised%s", directory, len(loaded),
                len(grown), grown, len(reinit),
                f" ({', '.join(reinit[:6])}{', ...' if len(reinit) > 6 else ''})" if reinit else "")
    return report
