"""`XCubePipeline`: load a hierarchy of per-level models and generate a scene level by level.

Inference only (training lives in `xcube_core.train`). ``generate`` is an iterator: it yields each
finished `Level` coarse to fine, so callers (CLI, server, add-on) show the coarse scene while finer
levels still compute. Progress and cancellation go through one callback and one event.

A model folder holds ``pipeline.json`` and per level ``level{i}/vae``, ``level{i}/unet`` and optional
``level{i}/refine`` folders written by ``save_pretrained`` (safetensors + config.json). Beside each
U-Net, ``scheduler_config.json`` holds the noise schedule it was trained with and its default sampler
settings (sampler, steps, eta, guidance); a folder without it gets the defaults and a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import threading
import time
from typing import Callable, Iterator

import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.diffusion.scheduler_config import SchedulerConfig, load_scheduler_config, save_scheduler_config
from xcube_core.errors import CancelledError, InvalidInputError, ModelLoadError
from xcube_core.level import Level
from xcube_core.models.base import atomic_write_text
from xcube_core.models.decode_budget import decode_voxel_budget
from xcube_core.models.refine import RefineNet
from xcube_core.models.unet import SparseUNet
from xcube_core.models.vae import SparseStructureVAE
from xcube_core.nn import PlanCache
from xcube_core.sparse import GridBatch

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 1000
MAX_STEPS = 1000
MAX_SCALE = 8
PIPELINE_FILE = "pipeline.json"
DEFAULT_MODEL_DIR = pathlib.Path(__file__).parent / "assets" / "default_model"

ProgressCallback = Callable[[int, int, int], None]


@dataclasses.dataclass(frozen=True)
class LevelSettings:
    """The per-request settings every level of one `XCubePipeline.generate` call uses.

    ``steps``, ``guidance`` and ``eta`` may be None: each level then uses its own sampler defaults
    (`for_level`, from the level's ``scheduler_config.json``).
    """

    steps: int | None
    guidance: float | None
    eta: float | None = 0.0
    scale: int = 1
    callback: "ProgressCallback | None" = None
    cancel: threading.Event | None = None
    class_prior: float | None = None  # None: each level's own (`LevelModels.class_prior`)

    def for_level(self, scheduler: SchedulerConfig) -> "LevelSettings":
        """These settings with every None replaced by ``scheduler``'s default."""
        return dataclasses.replace(
            self, steps=scheduler.num_inference_steps if self.steps is None else self.steps,
            guidance=float(scheduler.guidance_scale if self.guidance is None else self.guidance),
            eta=scheduler.eta if self.eta is None else self.eta)


@dataclasses.dataclass
class LevelModels:
    """The networks of one level, the latent scale measured on training data, and the noise schedule
    and sampler defaults the U-Net was trained with.

    ``class_prior``: nats added to the semantic logits of the class of each voxel's parent in the
    coarser level (0 = off; see ``SparseStructureVAE.decode``). ``keep_support``: the decoder keeps
    at least one child of every coarser voxel (no orphans; on by default). Both are stored per level
    in pipeline.json.
    """

    vae: SparseStructureVAE
    unet: SparseUNet
    refine: RefineNet | None
    latent_scale: float
    class_prior: float = 0.0
    keep_support: bool = True
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)


class XCubePipeline:
    """Generate sparse voxel hierarchies from text (see module docstring)."""

    def __init__(self, levels: list[LevelModels], text_encoder, model_id: str,
                 class_names: tuple[str, ...] = CLASS_NAMES, device: str | torch.device = "cpu",
                 precision: str = "auto", max_voxel_fraction: float | None = None) -> None:
        if not levels:
            raise ModelLoadError("a pipeline needs at least one level")
        self.levels = levels
        self.text_encoder = text_encoder
        self.model_id = model_id
        self.class_names = tuple(class_names)
        self.device = torch.device(device)
        self.precision = precision
        if max_voxel_fraction is not None and not 0.0 < float(max_voxel_fraction) <= 1.0:
            raise ModelLoadError(f"max_voxel_fraction must be in (0, 1], got {max_voxel_fraction!r}")
        self.max_voxel_fraction = max_voxel_fraction  # optional cap: this share of each level's dense box
        for i in range(1, len(levels)):
            cfg, prev = levels[i].vae.config, levels[i - 1].vae.config
            if cfg.dense_latent or abs(cfg.voxel_size * 2 ** cfg.num_down - prev.voxel_size) > 1e-9:
                raise ModelLoadError(
                    f"level {i} must have a sparse latent on level {i - 1}'s grid: its voxel size "
                    f"{cfg.voxel_size} m x 2^{cfg.num_down} should equal {prev.voxel_size} m")
        for lv in levels:
            for m in (lv.vae, lv.unet, lv.refine):
                if m is not None:
                    m.to(self.device).eval()
        self.text_encoder.to(self.device)

    # --- properties of the contract -------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def voxel_sizes(self) -> list[float]:
        return [float(lv.vae.config.voxel_size) for lv in self.levels]

    @property
    def coarse_shape(self) -> tuple[int, int, int]:
        return tuple(self.levels[0].vae.config.grid_shape)

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path | None = None, device: str | torch.device = "cpu",
                        precision: str = "auto") -> "XCubePipeline":
        """Load a model folder; ``None`` loads the default model shipped inside the package."""
        from xcube_core.models.text import build_text_encoder

        root = pathlib.Path(path) if path is not None else DEFAULT_MODEL_DIR
        meta_path = root / PIPELINE_FILE
        if not meta_path.is_file():
            hint = ("the package was installed without its default model; reinstall it"
                    if path is None else "pass a folder written by `python -m xcube_core.train.assemble` or save_pretrained")
            raise ModelLoadError(f"{meta_path} not found: {hint}")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{meta_path} is not valid JSON: {exc}") from exc
        device = torch.device(device)
        levels = []
        for i, lv in enumerate(meta["levels"]):
            d = root / f"level{i}"
            refine = RefineNet.from_pretrained(d / "refine", device) if (d / "refine").is_dir() else None
            levels.append(LevelModels(SparseStructureVAE.from_pretrained(d / "vae", device),
                                      SparseUNet.from_pretrained(d / "unet", device), refine,
                                      float(lv["latent_scale"]), float(lv.get("class_prior", 0.0)),
                                      bool(lv.get("keep_support", True)), load_scheduler_config(d / "unet")))
        text = build_text_encoder(meta["text_encoder"])
        return cls(levels, text, meta.get("model_id", root.name), tuple(meta.get("class_names", CLASS_NAMES)),
                   device, precision, max_voxel_fraction=meta.get("max_voxel_fraction"))

    def save_pretrained(self, path: str | pathlib.Path) -> pathlib.Path:
        root = pathlib.Path(path)
        for i, lv in enumerate(self.levels):
            d = root / f"level{i}"
            lv.vae.save_pretrained(d / "vae")
            lv.unet.save_pretrained(d / "unet")
            save_scheduler_config(lv.scheduler, d / "unet")
            if lv.refine is not None:
                lv.refine.save_pretrained(d / "refine")
        meta = {"format": 1, "model_id": self.model_id, "class_names": list(self.class_names),
                "text_encoder": self.text_encoder.config(),
                "levels": [{"latent_scale": lv.latent_scale, "voxel_size": lv.vae.config.voxel_size,
                            "class_prior": lv.class_prior, "keep_support": lv.keep_support}
                           for lv in self.levels]}
        if self.max_voxel_fraction is not None:
            meta["max_voxel_fraction"] = self.max_voxel_fraction
        atomic_write_text(root / PIPELINE_FILE, json.dumps(meta, indent=2) + "\n")
        return root

    @classmethod
    def tiny(cls, seed: int = 0, device: str | torch.device = "cpu") -> "XCubePipeline":
        """A random-weight two-level model for fast tests (see `xcube_core.testing.tiny_pipeline`)."""
        from xcube_core.testing import tiny_pipeline

        return tiny_pipeline(seed, device)

    def set_windowed_attention(self, windowed: bool) -> None:
        """Self-attention within native-sized windows on grids larger than a native scene (the default),
        or over each whole grid, however large (``False``: the behaviour before round 9, to compare)."""
        for lv in self.levels:
            lv.unet.windowed_attention = bool(windowed)

    # --- generation ---------------------------------------------------------------------------
    def validate(self, prompt: str, steps: int, guidance: float, num_levels: int | None,
                 condition: Level | None, class_prior: float | None = None) -> int:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InvalidInputError("prompt is empty; describe the scene, e.g. 'a quiet suburban street'")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInputError(f"prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if steps is not None and (not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
            raise InvalidInputError(f"steps must be an integer in 1..{MAX_STEPS}, got {steps!r}")
        if guidance is not None and not (isinstance(guidance, (int, float)) and 0.0 <= float(guidance) <= 30.0):
            raise InvalidInputError(f"guidance must be a number in 0..30, got {guidance!r}")
        if class_prior is not None and (isinstance(class_prior, bool) or not isinstance(class_prior, (int, float))
                                        or math.isnan(class_prior) or class_prior < 0):
            raise InvalidInputError(f"class prior must be a number of nats >= 0 (inf keeps every parent's class), "
                                    f"got {class_prior!r}")
        n = self.num_levels if num_levels is None else num_levels
        if not isinstance(n, int) or not 1 <= n <= self.num_levels:
            raise InvalidInputError(f"num_levels must be in 1..{self.num_levels} for this model, got {num_levels!r}")
        if condition is not None:
            check_condition(condition, self.coarse_shape, self.voxel_sizes[0])
            if n < 2:
                raise InvalidInputError("a condition grid replaces level 0; ask for num_levels >= 2")
        return n

    @torch.no_grad()
    def generate(self, prompt: str, *, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                 num_levels: int | None = None, condition: Level | None = None,
                 callback: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 eta: float | None = None, scale: int = 1, class_prior: float | None = None) -> Iterator[Level]:
        """Yield each level coarse to fine. See the module docstring and `Level`.

        ``steps``, ``guidance`` and ``eta`` default (None) to each level's ``scheduler_config.json``
        (25, 3 and 0 for the shipped model); a value given applies to every level.

        ``scale`` (1..MAX_SCALE) multiplies the scene's X/Y extent: the coarsest dense latent grows
        with it and every finer level stays sparse, so a 4x scene (e.g. 256 m x 256 m with a
        1024 x 1024 finest footprint for the default model) costs memory in proportion to its voxels.

        ``class_prior`` (nats, >= 0; None = each level's own, 2 for the shipped model's level 1) favours
        each voxel's parent class when finer levels pick classes; ``math.inf`` keeps every parent's
        class (e.g. the classes of a layout's parts, for a user whose part names are authoritative).

        Raises:
            InvalidInputError: bad arguments (checked before any work).
            CancelledError: ``cancel`` was set; checked before every diffusion step.
        """
        n = self.validate(prompt, steps, guidance, num_levels, condition, class_prior)
        if not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
            raise InvalidInputError(f"scale must be an integer in 1..{MAX_SCALE}, got {scale!r}")
        if condition is not None and scale != 1:
            raise InvalidInputError("a layout condition fixes the scene size; use scale=1 with it")
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        text = self.text_encoder.encode([prompt, ""])
        meta = {"prompt": prompt, "seed": int(seed), "model_id": self.model_id, "scale": scale}
        settings = LevelSettings(steps, None if guidance is None else float(guidance), eta, scale, callback, cancel,
                                 class_prior)
        prev: Level | None = None
        for i in range(n):
            t0 = time.perf_counter()
            if i == 0 and condition is not None:
                level = _condition_level(condition, self.class_names)
            else:
                lv_settings = settings.for_level(self.levels[i].scheduler)
                level = self._generate_level(i, prev, text, gen, lv_settings)
                level.metadata = {**level.metadata, "steps": lv_settings.steps, "guidance": lv_settings.guidance,
                                  # where the scale applies ([0, 0]: nowhere, e.g. the shipped level 1)
                                  "guidance_interval": list(self.levels[i].scheduler.guidance_interval),
                                  "sampler": self.levels[i].scheduler.sampler}
            level.seconds = time.perf_counter() - t0
            level.metadata = {**meta, **level.metadata, "level": i}
            logger.info("level %d: %d voxels at %.3g m in %.2f s", i, level.num_voxels, level.voxel_size,
                        level.seconds)
            yield level
            prev = level

    def _generate_level(self, i: int, prev: Level | None, text, gen: torch.Generator,
                        settings: "LevelSettings", shape: tuple[int, int, int] | None = None,
                        known=None, decode_mask: torch.Tensor | None = None, latent_sink=None,
                        origin: torch.Tensor | None = None) -> Level:
        """Denoise level ``i``'s latent (on ``prev``'s grid beyond level 0), decode and refine it.

        ``shape`` overrides the level's box (a tiling window); ``known`` (an
        `xcube_core.inpaint.KnownLatent`) holds part of the latent to given values (RePaint);
        ``decode_mask`` (N_lat,) bool, beyond level 0, decodes only those latent voxels;
        ``latent_sink(lat_grid, x)`` receives the denoised latent before decoding (tiling keeps it);
        ``origin`` (3,) is the scene latent cell of the window's cell (0, 0, 0), where the U-Net's
        self-attention windows lie (`SparseUNet.forward`).
        """
        lv = self.levels[i]
        vcfg = lv.vae.config
        if shape is None:
            shape = (vcfg.grid_shape[0] * settings.scale, vcfg.grid_shape[1] * settings.scale, vcfg.grid_shape[2])
        cond_n = cond_s = prev_grid = None
        if i == 0:
            proto = GridBatch.from_ijk(torch.zeros(1, 3, dtype=torch.int64, device=self.device), vcfg.voxel_size)
            lat_grid = lv.vae.latent_grid_for(proto, shape)
        else:
            lat_grid, cond_n, cond_s = prev.grid_attributes(self.device)  # the coarser level, in grid order
            prev_grid = lat_grid
            if cond_s is None:
                cond_s = torch.full((lat_grid.total_voxels,), -1, dtype=torch.long, device=self.device)
        if lat_grid.total_voxels == 0:
            raise InvalidInputError(f"level {i - 1} came out empty, so level {i} has nothing to refine; "
                                    "try another seed or prompt")
        with self._autocast():
            x = self._denoise(i, lat_grid, text, gen, settings, cond_n, cond_s, known, origin)
            if latent_sink is not None:
                latent_sink(lat_grid, x)
            if decode_mask is not None and i > 0:
                keep = decode_mask.to(self.device)
                lat_grid = prev_grid = lat_grid.pruned_grid(keep)
                x, cond_s = x[keep], cond_s[keep]
            prior = lv.class_prior if settings.class_prior is None else settings.class_prior
            return self._decode(i, x, lat_grid, prev_grid, shape, cond_s, prior)

    def _denoise(self, i, lat_grid: GridBatch, text, gen, settings: "LevelSettings", cond_n, cond_s,
                 known=None, origin=None) -> torch.Tensor:
        """The level's sampler (DDIM by default) with classifier-free guidance on ``lat_grid``.
        Returns the latent (N_lat, C_lat)."""
        from xcube_core.diffusion.guidance import guide_doubled

        lv = self.levels[i]
        sched = lv.scheduler.make_sampler()  # the schedule the U-Net was trained with
        if settings.steps > sched.num_train_timesteps:
            raise InvalidInputError(f"steps={settings.steps} exceeds level {i}'s {sched.num_train_timesteps} "
                                    "training steps")
        sched.set_timesteps(settings.steps)
        x = torch.randn(lat_grid.total_voxels, lv.unet.config.latent_channels, generator=gen).to(self.device)
        grid2 = GridBatch.cat([lat_grid, lat_grid])
        plans = PlanCache()  # same grid at every step: kernel maps are built once per level
        # a U-Net trained with known inputs sees the held latent too (None: nothing held)
        held = known.inputs().to(self.device) if known is not None and lv.unet.config.known_inputs else None

        def denoise(x, t):
            w = lv.scheduler.guidance_at(int(t), settings.guidance)
            if w == 1.0:  # no guidance at this step: the conditional half alone (text row 0)
                tt = torch.full((1,), int(t), dtype=torch.long, device=self.device)
                out = lv.unet(x, lat_grid, tt, text.tokens[:1], text.mask[:1], text.pooled[:1], cond_n, cond_s,
                              plans=plans, known=held, origin=origin)
                return sched.step(out.float(), t, x, eta=settings.eta, generator=gen)
            tt = torch.full((2,), int(t), dtype=torch.long, device=self.device)
            out = lv.unet(torch.cat([x, x]), grid2, tt, text.tokens, text.mask, text.pooled, _twice(cond_n),
                          _twice(cond_s), plans=plans, known=_twice(held), origin=origin)
            return sched.step(guide_doubled(out.float(), w), t, x, eta=settings.eta, generator=gen)

        for k, t in enumerate(sched.timesteps):
            if settings.cancel is not None and settings.cancel.is_set():
                raise CancelledError(f"cancelled at level {i}, step {k}/{settings.steps}")
            x = denoise(x, t) if known is None else known.step(x, t, denoise, sched, gen)
            if settings.callback is not None:
                settings.callback(i, k + 1, settings.steps)
        return x if known is None else known.finish(x)

    def _decode(self, i, x, lat_grid: GridBatch, prev_grid: GridBatch | None, shape, cond_s=None,
                class_prior: float = 0.0) -> Level:
        """VAE decode within the device's memory budget, refinement, and nesting in the coarser level."""
        lv = self.levels[i]
        vcfg = lv.vae.config
        budget = decode_voxel_budget(vcfg.channels[0], self.device)
        if self.max_voxel_fraction is not None:
            budget = budget.capped(int(shape[0] * shape[1] * shape[2] * self.max_voxel_fraction), "max_voxel_fraction")
        dec = lv.vae.decode(x / lv.latent_scale, lat_grid, max_voxels=budget.max_voxels, grid_shape=shape,
                            parent_semantics=cond_s, class_prior=class_prior,
                            keep_support=None if lv.keep_support else False)
        grid, normals, sem = dec.grid, dec.normals, dec.semantics
        metadata = {}
        if dec.budget_dropped:
            metadata["voxel_budget"] = budget.as_metadata(grid.total_voxels, dec.budget_dropped)
            by_model = budget.source == "max_voxel_fraction"  # the model's own cap: by design, not memory
            logger.log(logging.INFO if by_model else logging.WARNING,
                       "level %d: the decoder wanted %d more voxels than its budget of %d (set by %s; "
                       "%.1f GiB free); kept those with the highest keep logits", i, dec.budget_dropped,
                       budget.max_voxels, budget.source, budget.free_bytes / 2**30)
        if lv.refine is not None and grid.total_voxels:
            ref = lv.refine(grid, normals, sem, bounds=shape)
            grid, normals, sem = ref.grid, ref.normals, ref.semantics
        if prev_grid is not None:  # the hierarchy nests: keep only voxels inside the coarser level's voxels
            parents = torch.div(grid.ijk.jdata.long(), 2 ** vcfg.num_down, rounding_mode="floor")
            inside = prev_grid.coords_in_grid(parents)
            grid, normals = grid.pruned_grid(inside), normals[inside]
            sem = None if sem is None else sem[inside]
            if sem is not None and cond_s is not None and math.isinf(class_prior):  # keep: after refinement too
                parent_class = cond_s[prev_grid.ijk_to_index(parents[inside]).long()]
                sem = torch.where(parent_class >= 0, parent_class.to(sem.dtype), sem)
        return Level(index=i, ijk=grid.ijk.jdata.cpu(), voxel_size=float(vcfg.voxel_size),
                     origin=tuple(grid.origins[0].tolist()), normals=normals.float().cpu(),
                     semantics=None if sem is None else sem.cpu(), class_names=self.class_names,
                     metadata=metadata)

    def _autocast(self):
        from xcube_core.precision import autocast_context

        return autocast_context(self.device, self.precision)


def _twice(a: torch.Tensor | None) -> torch.Tensor | None:
    """Rows repeated for the conditional and unconditional halves of a guided batch."""
    return None if a is None else torch.cat([a, a])


def check_condition(condition: Level, shape: tuple[int, int, int], voxel_size: float) -> None:
    """Raise InvalidInputError unless ``condition`` is a level-0 grid of this model."""
    if not isinstance(condition, Level):
        raise InvalidInputError(f"condition must be a Level, got {type(condition).__name__}")
    if abs(float(condition.voxel_size) - voxel_size) > 1e-6 * voxel_size:
        raise InvalidInputError(f"condition voxel size is {condition.voxel_size} m; this model's coarsest level "
                                f"uses {voxel_size} m (a {shape[0]}x{shape[1]}x{shape[2]} grid); re-voxelise it")
    ijk = condition.ijk
    if ijk.dim() != 2 or ijk.shape[1] != 3 or ijk.shape[0] == 0:
        raise InvalidInputError(f"condition needs (N, 3) voxel coordinates with N >= 1, got {tuple(ijk.shape)}")
    lo, hi = ijk.min(0).values, ijk.max(0).values
    if bool((lo < 0).any()) or any(int(hi[a]) >= shape[a] for a in range(3)):
        raise InvalidInputError(f"condition voxels span {lo.tolist()}..{hi.tolist()}; they must lie in "
                                f"[0, {list(shape)}) at the coarsest resolution")


def _condition_level(condition: Level, class_names) -> Level:
    normals = condition.normals if condition.normals is not None else condition.occupancy_normals()
    sem = condition.semantics
    return Level(index=0, ijk=condition.ijk.to(torch.int32), voxel_size=float(condition.voxel_size),
                 origin=condition.origin, normals=normals.float(),
                 semantics=None if sem is None else sem.long(), class_names=class_names,
                 metadata={"source": "condition"})
