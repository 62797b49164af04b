"""`XCubePipeline`: load a hierarchy of per-level models and generate a scene level by level.

Inference only (training lives in `xcube_core.train`). ``generate`` is an iterator: it yields each
finished `Level` coarse to fine, so callers (CLI, server, add-on) show the coarse scene while finer
levels still compute. Progress and cancellation go through one callback and one event.

A model folder holds ``pipeline.json`` and per level ``level{i}/vae``, ``level{i}/unet`` and optional
``level{i}/refine`` folders written by ``save_pretrained`` (safetensors + config.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import threading
import time
from typing import Callable, Iterator

import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.errors import CancelledError, InvalidInputError, ModelLoadError
from xcube_core.level import Level
from xcube_core.models.base import atomic_write_text
from xcube_core.models.refine import RefineConfig, RefineNet
from xcube_core.models.unet import SparseUNet, UNetConfig
from xcube_core.models.vae import SparseStructureVAE, VAEConfig
from xcube_core.nn import PlanCache
from xcube_core.sparse import GridBatch

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 1000
MAX_STEPS = 1000
MAX_SCALE = 8
PIPELINE_FILE = "pipeline.json"
DEFAULT_MODEL_DIR = pathlib.Path(__file__).parent / "assets" / "default_model"

ProgressCallback = Callable[[int, int, int], None]


@dataclasses.dataclass
class LevelModels:
    """The networks of one level and the latent scale measured on training data."""

    vae: SparseStructureVAE
    unet: SparseUNet
    refine: RefineNet | None
    latent_scale: float


class XCubePipeline:
    """Generate sparse voxel hierarchies from text (see module docstring)."""

    def __init__(self, levels: list[LevelModels], text_encoder, model_id: str,
                 class_names: tuple[str, ...] = CLASS_NAMES, device: str | torch.device = "cpu",
                 precision: str = "auto") -> None:
        if not levels:
            raise ModelLoadError("a pipeline needs at least one level")
        self.levels = levels
        self.text_encoder = text_encoder
        self.model_id = model_id
        self.class_names = tuple(class_names)
        self.device = torch.device(device)
        self.precision = precision
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
                                      float(lv["latent_scale"])))
        text = build_text_encoder(meta["text_encoder"])
        return cls(levels, text, meta.get("model_id", root.name), tuple(meta.get("class_names", CLASS_NAMES)),
                   device, precision)

    def save_pretrained(self, path: str | pathlib.Path) -> pathlib.Path:
        root = pathlib.Path(path)
        for i, lv in enumerate(self.levels):
            d = root / f"level{i}"
            lv.vae.save_pretrained(d / "vae")
            lv.unet.save_pretrained(d / "unet")
            if lv.refine is not None:
                lv.refine.save_pretrained(d / "refine")
        meta = {"format": 1, "model_id": self.model_id, "class_names": list(self.class_names),
                "text_encoder": self.text_encoder.config(),
                "levels": [{"latent_scale": lv.latent_scale, "voxel_size": lv.vae.config.voxel_size}
                           for lv in self.levels]}
        atomic_write_text(root / PIPELINE_FILE, json.dumps(meta, indent=2) + "\n")
        return root

    @classmethod
    def tiny(cls, seed: int = 0, device: str | torch.device = "cpu") -> "XCubePipeline":
        """A random-weight two-level model (16 m scene, 2 m and 1 m voxels) for fast tests."""
        from xcube_core.models.text import HashTextEncoder

        torch_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)  # restored below: the library never leaves the global RNG changed
            text = HashTextEncoder(dim=32)
            levels = [_tiny_level((8, 8, 4), 2.0, dense=True, cond=False, ctx=text.dim),
                      _tiny_level((16, 16, 8), 1.0, dense=False, cond=True, ctx=text.dim)]
        finally:
            torch.random.set_rng_state(torch_state)
        return cls(levels, text, f"tiny-{seed}", CLASS_NAMES, device)

    # --- generation ---------------------------------------------------------------------------
    def validate(self, prompt: str, steps: int, guidance: float, num_levels: int | None,
                 condition: Level | None) -> int:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InvalidInputError("prompt is empty; describe the scene, e.g. 'a quiet suburban street'")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInputError(f"prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise InvalidInputError(f"steps must be an integer in 1..{MAX_STEPS}, got {steps!r}")
        if not (isinstance(guidance, (int, float)) and 0.0 <= float(guidance) <= 30.0):
            raise InvalidInputError(f"guidance must be a number in 0..30, got {guidance!r}")
        n = self.num_levels if num_levels is None else num_levels
        if not isinstance(n, int) or not 1 <= n <= self.num_levels:
            raise InvalidInputError(f"num_levels must be in 1..{self.num_levels} for this model, got {num_levels!r}")
        if condition is not None:
            check_condition(condition, self.coarse_shape, self.voxel_sizes[0])
            if n < 2:
                raise InvalidInputError("a condition grid replaces level 0; ask for num_levels >= 2")
        return n

    @torch.no_grad()
    def generate(self, prompt: str, *, seed: int = 0, steps: int = 25, guidance: float = 3.0,
                 num_levels: int | None = None, condition: Level | None = None,
                 callback: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 eta: float = 0.0, scale: int = 1) -> Iterator[Level]:
        """Yield each level coarse to fine. See the module docstring and `Level`.

        ``scale`` (1..MAX_SCALE) multiplies the scene's X/Y extent: the coarsest dense latent grows
        with it and every finer level stays sparse, so a 4x scene (e.g. 256 m x 256 m with a
        1024 x 1024 finest footprint for the default model) costs memory in proportion to its voxels.

        Raises:
            InvalidInputError: bad arguments (checked before any work).
            CancelledError: ``cancel`` was set; checked before every diffusion step.
        """
        n = self.validate(prompt, steps, guidance, num_levels, condition)
        if not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
            raise InvalidInputError(f"scale must be an integer in 1..{MAX_SCALE}, got {scale!r}")
        if condition is not None and scale != 1:
            raise InvalidInputError("a layout condition fixes the scene size; use scale=1 with it")
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        text = self.text_encoder.encode([prompt, ""])
        meta = {"prompt": prompt, "seed": int(seed), "model_id": self.model_id, "steps": steps,
                "guidance": float(guidance), "scale": scale}
        prev: Level | None = None
        for i in range(n):
            t0 = time.perf_counter()
            if i == 0 and condition is not None:
                level = _condition_level(condition, self.class_names)
            else:
                level = self._generate_level(i, prev, text, gen, steps, float(guidance), eta, callback, cancel,
                                             scale)
            level.seconds = time.perf_counter() - t0
            level.metadata = {**meta, **level.metadata, "level": i}
            logger.info("level %d: %d voxels at %.3g m in %.2f s", i, level.num_voxels, level.voxel_size,
                        level.seconds)
            yield level
            prev = level

    def _generate_level(self, i, prev, text, gen, steps, guidance, eta, callback, cancel, scale=1,
                        shape=None, known=None) -> Level:
        """One level. ``shape`` overrides the level's box (a tiling window); ``known`` (an
        `xcube_core.inpaint.KnownLatent`) holds part of the latent to given values (RePaint)."""
        from xcube_core.diffusion.ddim import DDIMScheduler
        from xcube_core.diffusion.guidance import guide_doubled

        lv = self.levels[i]
        vcfg = lv.vae.config
        if shape is None:
            shape = (vcfg.grid_shape[0] * scale, vcfg.grid_shape[1] * scale, vcfg.grid_shape[2])
        if i == 0:
            proto = GridBatch.from_ijk(torch.zeros(1, 3, dtype=torch.int64, device=self.device), vcfg.voxel_size)
            lat_grid = lv.vae.latent_grid_for(proto, shape)
            cond_n = cond_s = None
        else:
            lat_grid = prev_grid = prev.grid(self.device)
            # attributes of the coarser level, in the grid's voxel order
            order = prev_grid.ijk_to_index(prev.ijk.to(self.device))
            cond_n = torch.zeros(prev_grid.total_voxels, 3, device=self.device)
            cond_n[order] = prev.normals.to(self.device).float()
            cond_s = torch.full((prev_grid.total_voxels,), -1, dtype=torch.long, device=self.device)
            if prev.semantics is not None:
                cond_s[order] = prev.semantics.to(self.device).long()
        if lat_grid.total_voxels == 0:
            raise InvalidInputError(f"level {i - 1} came out empty, so level {i} has nothing to refine; "
                                    "try another seed or prompt")
        sched = DDIMScheduler()
        sched.set_timesteps(steps)
        x = torch.randn(lat_grid.total_voxels, lv.unet.config.latent_channels, generator=gen).to(self.device)
        grid2 = GridBatch.cat([lat_grid, lat_grid])
        plans = PlanCache()  # same grid at every step: kernel maps are built once per level
        tokens, mask, pooled = text.tokens, text.mask, text.pooled

        def denoise(x, t):
            tt = torch.full((2,), int(t), dtype=torch.long, device=self.device)
            out = lv.unet(torch.cat([x, x]), grid2, tt, tokens, mask, pooled, _twice(cond_n), _twice(cond_s),
                          plans=plans)
            return sched.step(guide_doubled(out.float(), guidance), t, x, eta=eta, generator=gen)

        with self._autocast():
            for k, t in enumerate(sched.timesteps):
                if cancel is not None and cancel.is_set():
                    raise CancelledError(f"cancelled at level {i}, step {k}/{steps}")
                x = denoise(x, t) if known is None else known.step(x, t, denoise, sched, gen)
                if callback is not None:
                    callback(i, k + 1, steps)
            if known is not None:
                x = known.finish(x)
            dec = lv.vae.decode(x / lv.latent_scale, lat_grid, max_voxels=_voxel_budget(shape), grid_shape=shape)
            grid, normals, sem = dec.grid, dec.normals, dec.semantics
            if lv.refine is not None and grid.total_voxels:
                ref = lv.refine(grid, normals, sem, bounds=shape)
                grid, normals, sem = ref.grid, ref.normals, ref.semantics
            if i > 0:  # the hierarchy nests: keep only voxels inside the coarser level's voxels
                parents = torch.div(grid.ijk.jdata.long(), 2 ** vcfg.num_down, rounding_mode="floor")
                inside = prev_grid.coords_in_grid(parents)
                grid, normals = grid.pruned_grid(inside), normals[inside]
                sem = None if sem is None else sem[inside]
        return Level(index=i, ijk=grid.ijk.jdata.cpu(), voxel_size=float(vcfg.voxel_size),
                     origin=tuple(grid.origins[0].tolist()), normals=normals.float().cpu(),
                     semantics=None if sem is None else sem.cpu(), class_names=self.class_names)

    def _autocast(self):
        from xcube_core.precision import autocast_context

        return autocast_context(self.device, self.precision)


def _twice(a: torch.Tensor | None) -> torch.Tensor | None:
    """Rows repeated for the conditional and unconditional halves of a guided batch."""
    return None if a is None else torch.cat([a, a])


def _voxel_budget(shape: tuple[int, int, int]) -> int:
    """Upper bound on voxels at a level's resolution: a quarter of its dense box (memory safety;
    surface scenes use a few percent)."""
    x, y, z = shape
    return max(1, (x * y * z) // 4)


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


def estimate_normals(grid: GridBatch) -> torch.Tensor:
    """Outward normals of an occupancy grid from the 6-neighbour gradient. Returns (N, 3) unit."""
    ijk = grid.ijk.jdata.long()
    n = torch.zeros(ijk.shape[0], 3)
    for axis in range(3):
        d = torch.zeros(3, dtype=torch.long)
        d[axis] = 1
        plus = (grid.ijk_to_index(grid.ijk.jagged_like(ijk + d)).jdata >= 0).float()
        minus = (grid.ijk_to_index(grid.ijk.jagged_like(ijk - d)).jdata >= 0).float()
        n[:, axis] = minus - plus  # points from occupied to empty
    up = torch.tensor([0.0, 0.0, 1.0])
    n = torch.where(n.norm(dim=1, keepdim=True) > 0, n, up)
    return torch.nn.functional.normalize(n, dim=1)


def _condition_level(condition: Level, class_names) -> Level:
    grid = condition.grid()
    order = grid.ijk_to_index(condition.ijk)
    normals = condition.normals
    if normals is None:
        est = estimate_normals(grid)
        normals = est[order]
    sem = condition.semantics
    return Level(index=0, ijk=condition.ijk.to(torch.int32), voxel_size=float(condition.voxel_size),
                 origin=condition.origin, normals=normals.float(),
                 semantics=None if sem is None else sem.long(), class_names=class_names,
                 metadata={"source": "condition"})


def _tiny_level(shape, voxel_size, dense, cond, ctx) -> LevelModels:
    channels = (8, 8, 16) if dense else (8, 16)  # level 1's latent lives on level 0's grid (2x coarser)
    vae = SparseStructureVAE(VAEConfig(grid_shape=shape, voxel_size=voxel_size, channels=channels,
                                       latent_channels=4, dense_latent=dense, sem_embed_dim=4))
    latent_shape = vae.config.latent_shape
    unet = SparseUNet(UNetConfig(latent_channels=4, grid_shape=latent_shape, cond_normals=cond,
                                 cond_classes=len(CLASS_NAMES) if cond else 0, sem_embed_dim=4, pos_freqs=2,
                                 model_channels=8, channel_mult=(1, 2), cross_attention_levels=(1,),
                                 context_dim=ctx, heads=2))
    # Untrained keep heads would drop everything or nothing; bias them so tiny scenes are non-trivial.
    for head in vae.keep_heads:
        torch.nn.init.constant_(head.bias, 1.0)
    refine = RefineNet(RefineConfig(channels=8, blocks=1, sem_embed_dim=4, voxel_size=voxel_size))
    torch.nn.init.constant_(refine.keep.bias, 2.0)
    return LevelModels(vae, unet, refine, latent_scale=1.0)
