"""Range-check every field of a `GenerateRequest` before a job is queued.

Each failure raises `RequestFieldError` (an `InvalidInputError`) that names the field, so the servicer
answers INVALID_ARGUMENT with a message a user can act on. Nothing here touches the filesystem: no
request field is ever a server path.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata

import numpy as np

from xcube_client._proto import xcube_pb2 as pb
from xcube_core.errors import InvalidInputError

from server.status import clip

FORMAT_NAMES = {pb.OUTPUT_FORMAT_VDB: "vdb", pb.OUTPUT_FORMAT_MESH: "mesh", pb.OUTPUT_FORMAT_RAW: "raw"}
FORMAT_BY_NAME = {v: k for k, v in FORMAT_NAMES.items()}
_DTYPES = {"int32": "<i4", "int64": "<i8"}


class RequestFieldError(InvalidInputError):
    """A request field is out of range; ``field`` names it (e.g. ``"condition.ijk"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """Bounds every request is checked against (reported by GetServerInfo)."""

    max_prompt_length: int = 1000
    min_steps: int = 1
    max_steps: int = 1000
    default_steps: int = 25
    min_guidance: float = 0.0
    max_guidance: float = 30.0
    default_guidance: float = 3.0
    max_queue: int = 16
    max_condition_voxels: int = 1 << 21
    chunk_bytes: int = 1 << 20  # 1 MiB, well under gRPC's 4 MiB default message limit
    max_client_tag: int = 128
    max_seed: int = (1 << 63) - 1
    max_layout_faces: int = 1 << 21
    max_scene_voxels: int = 1 << 20  # an EditRegion's levels together (~28 MB on the wire)
    max_extent_m: float = 4096.0


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What validation needs to know about the loaded model."""

    num_levels: int
    voxel_sizes: tuple[float, ...]
    coarse_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    @classmethod
    def of(cls, pipeline) -> ModelFacts:
        return cls(int(pipeline.num_levels), tuple(float(v) for v in pipeline.voxel_sizes),
                   tuple(int(v) for v in pipeline.coarse_shape), tuple(pipeline.class_names))


@dataclasses.dataclass
class JobParams:
    """A validated request, in pipeline terms. ``condition`` is a level-0 `Level` or None."""

    prompt: str
    seed: int
    steps: int
    guidance: float
    num_levels: int
    outputs: tuple[str, ...]
    condition: object | None
    client_tag: str
    layout: object | None = None   # server.scene_requests.LayoutArrays
    edit: object | None = None     # server.scene_requests.EditParams
    extent: tuple[float, float] | None = None
    resample: int = 1
    class_prior: float | None = None  # None: the model's own; inf keeps every parent's class


def validate_request(req: pb.GenerateRequest, limits: ServerLimits, model: ModelFacts,
                     supported_outputs: tuple[str, ...]) -> JobParams:
    """Check every field of ``req``; returns the job parameters.

    Raises:
        RequestFieldError: naming the first offending field.
    """
    prompt = _check_prompt(req.prompt, limits)
    if req.seed > limits.max_seed:
        raise RequestFieldError("seed", f"must be in 0..{limits.max_seed}, got {req.seed}")
    steps = req.steps or limits.default_steps
    if not limits.min_steps <= steps <= limits.max_steps:
        raise RequestFieldError("steps", f"must be in {limits.min_steps}..{limits.max_steps} "
                                         f"(or 0 for the default {limits.default_steps}), got {req.steps}")
    class_prior = req.class_prior if req.HasField("class_prior") else None
    if class_prior is not None and not class_prior >= 0:  # NaN fails this too
        raise RequestFieldError("class_prior", f"must be a number of nats >= 0 (inf keeps every parent's "
                                               f"class) or unset for the model's, got {class_prior}")
    guidance = req.guidance if req.HasField("guidance") else limits.default_guidance
    if not (math.isfinite(guidance) and limits.min_guidance <= guidance <= limits.max_guidance):
        raise RequestFieldError("guidance", f"must be a finite number in {limits.min_guidance}.."
                                            f"{limits.max_guidance}, got {guidance}")
    num_levels = req.num_levels or model.num_levels
    if not 1 <= num_levels <= model.num_levels:
        raise RequestFieldError("num_levels", f"must be in 1..{model.num_levels} (or 0 for all), "
                                              f"got {req.num_levels}")
    if req.HasField("condition") and num_levels < 2:
        raise RequestFieldError("num_levels", f"a condition grid replaces level 0, so ask for 2..{model.num_levels} "
                                              f"levels (or 0 for all), got {num_levels}")
    outputs = _check_outputs(list(req.outputs), supported_outputs)
    condition = _check_condition(req.condition, limits, model) if req.HasField("condition") else None
    tag = req.client_tag
    if len(tag) > limits.max_client_tag or not all(32 <= ord(c) < 127 for c in tag):
        raise RequestFieldError("client_tag", f"must be at most {limits.max_client_tag} printable ASCII "
                                              f"characters, got {len(tag)} characters")
    from server.scene_requests import check_scene_request

    scene = check_scene_request(req, limits, model)
    if scene["edit"] is not None:
        num_levels = len(scene["edit"].levels)
    return JobParams(prompt, int(req.seed), int(steps), float(guidance), int(num_levels), outputs, condition, tag,
                     class_prior=class_prior, **scene)


def _check_prompt(prompt: str, limits: ServerLimits) -> str:
    prompt = prompt.replace("\r\n", "\n").replace("\r", "\n")  # pasted Windows/old-Mac line ends
    if not prompt.strip():
        raise RequestFieldError("prompt", "is empty; describe the scene, e.g. 'a small harbour town'")
    if len(prompt) > limits.max_prompt_length:
        raise RequestFieldError("prompt", f"is {len(prompt)} characters, the limit is {limits.max_prompt_length}")
    bad = [c for c in prompt if unicodedata.category(c) == "Cc" and c not in "\n\t"]
    if bad:
        raise RequestFieldError("prompt", f"contains control character {bad[0]!r}; send plain text")
    return prompt


def _check_outputs(outputs: list[int], supported: tuple[str, ...]) -> tuple[str, ...]:
    if not outputs:
        outputs = [FORMAT_BY_NAME["vdb"]]
    names = []
    for value in outputs:
        name = FORMAT_NAMES.get(value)
        if name is None:
            raise RequestFieldError("outputs", f"unknown output format {clip(value)}; use VDB, MESH or RAW")
        if name not in supported:
            raise RequestFieldError("outputs", f"{name.upper()} is not available on this server "
                                               f"(supported: {', '.join(s.upper() for s in supported)})")
        if name in names:
            raise RequestFieldError("outputs", f"{name.upper()} is listed twice")
        names.append(name)
    return tuple(names)


def check_array_header(arr: pb.RawArray, field: str, dtypes: dict[str, str], ndim_shape: tuple,
                       max_rows: int) -> tuple[tuple[int, ...], np.dtype]:
    """Check dtype, shape (``-1`` = any length, at most ``max_rows``) and byte length by arithmetic on
    the declared sizes (Python integers: no overflow), before any byte is decoded."""
    if arr.dtype not in dtypes:
        raise RequestFieldError(f"{field}.dtype", f"must be one of {sorted(dtypes)}, got {clip(repr(arr.dtype))}")
    want = "[" + ", ".join("N" if w == -1 else str(w) for w in ndim_shape) + "]"
    if len(arr.shape) != len(ndim_shape):
        raise RequestFieldError(f"{field}.shape", f"must be {want}, got {len(arr.shape)} dimensions "
                                                  f"{clip(list(arr.shape[:8]))}")
    shape = tuple(int(s) for s in arr.shape)
    if any(w not in (-1, g) for w, g in zip(ndim_shape, shape)):
        raise RequestFieldError(f"{field}.shape", f"must be {want}, got {clip(list(shape))}")
    if any(g > max_rows for w, g in zip(ndim_shape, shape) if w == -1):
        raise RequestFieldError(f"{field}.shape", f"N must be at most {max_rows}, got {clip(list(shape))}")
    np_dtype = np.dtype(dtypes[arr.dtype])
    expected = math.prod(shape) * np_dtype.itemsize
    if len(arr.data) != expected:
        raise RequestFieldError(f"{field}.data", f"has {len(arr.data)} bytes, shape {clip(list(shape))} of "
                                                 f"{arr.dtype} needs {expected}")
    return shape, np_dtype


def decode_array(arr: pb.RawArray, field: str, dtypes: dict[str, str], ndim_shape: tuple,
                 max_rows: int = 1 << 40) -> np.ndarray:
    """Decode a RawArray, checking dtype, shape (``-1`` = any length) and byte length first."""
    shape, np_dtype = check_array_header(arr, field, dtypes, ndim_shape, max_rows)
    return np.frombuffer(arr.data, dtype=np_dtype).reshape(shape)


def _check_condition(cond: pb.ConditionGrid, limits: ServerLimits, model: ModelFacts):
    import torch

    from xcube_core.level import Level

    if not cond.HasField("ijk"):
        raise RequestFieldError("condition.ijk", "is required when a condition is given")
    # a grid cannot hold more distinct voxels than it has cells: refuse by arithmetic, decode nothing
    most = min(limits.max_condition_voxels, math.prod(model.coarse_shape))
    shape, _ = check_array_header(cond.ijk, "condition.ijk", {"int32": "<i4"}, (-1, 3), most)
    if not 1 <= shape[0] <= most:
        raise RequestFieldError("condition.ijk", f"must hold 1..{most} voxels (the coarse grid "
                                                 f"{tuple(model.coarse_shape)} has {math.prod(model.coarse_shape)} "
                                                 f"cells), got {shape[0]}")
    if cond.HasField("semantics"):
        check_array_header(cond.semantics, "condition.semantics", _DTYPES, (shape[0],), most)
    ijk = decode_array(cond.ijk, "condition.ijk", {"int32": "<i4"}, (-1, 3), most)
    n = ijk.shape[0]
    shape = np.asarray(model.coarse_shape)
    if (ijk < 0).any() or (ijk >= shape).any():
        raise RequestFieldError("condition.ijk", f"coordinates must lie in [0, {tuple(model.coarse_shape)}) "
                                                 f"(the coarse grid); got min {ijk.min(0).tolist()} max {ijk.max(0).tolist()}")
    if np.unique(ijk, axis=0).shape[0] != n:
        raise RequestFieldError("condition.ijk", "contains duplicate voxels")
    want = model.voxel_sizes[0]
    if not (math.isfinite(cond.voxel_size) and math.isclose(cond.voxel_size, want, rel_tol=1e-5)):
        raise RequestFieldError("condition.voxel_size", f"must equal the coarsest level's voxel size {want} m "
                                                        f"(see GetServerInfo.voxel_sizes), got {cond.voxel_size}")
    semantics = None
    if cond.HasField("semantics"):
        sem = decode_array(cond.semantics, "condition.semantics", _DTYPES, (n,))
        if ((sem < 0) | (sem >= len(model.class_names))).any():
            raise RequestFieldError("condition.semantics", f"class ids must be in 0..{len(model.class_names) - 1}")
        semantics = torch.from_numpy(sem.astype(np.int64))
    return Level(index=0, ijk=torch.from_numpy(ijk.astype(np.int32)), voxel_size=float(want),
                 semantics=semantics, class_names=model.class_names)
