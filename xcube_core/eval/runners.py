"""The evaluations behind ``xcube eval``: generation quality, VAE reconstruction, finer levels from the
true coarsest level, prompt control.

Each runner takes a pipeline object with the `XCubePipeline` contract (``generate(prompt, seed=...,
steps=..., guidance=...)`` yielding `Level`s coarse to fine, ``voxel_sizes``, ``class_names``) and
returns a JSON-able dict; `xcube_core.eval.report` prints it. Reference scenes come from a dataset
folder written by ``xcube data procedural`` (manifest + one safetensors file per sample).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import torch

from xcube_core.errors import DataError, InvalidInputError, XCubeError
from xcube_core.eval import metrics as M
from xcube_core.eval.pointclouds import level_point_cloud
from xcube_core.eval.prompt_control import PromptPair, level_statistics, outcome, summarize
from xcube_core.eval.structure import voxel_fscore
from xcube_core.level import Level

log = logging.getLogger(__name__)


def load_pipeline(spec: str, device: str = "cpu"):
    """``"default"`` (shipped model), ``"tiny"`` (random-weight test model) or a model folder."""
    from xcube_core.pipeline import XCubePipeline

    if spec == "tiny":
        return XCubePipeline.tiny(seed=0, device=device)
    return XCubePipeline.from_pretrained(None if spec == "default" else spec, device=device)


@dataclasses.dataclass
class _VAEOnly:
    """One trained VAE folder presented with the attributes `evaluate_vae` reads from a pipeline."""

    levels: list
    voxel_sizes: list[float]
    model_id: str
    device: torch.device


def load_vae_model(spec: str, device: str = "cpu"):
    """A pipeline (see `load_pipeline`) or a single VAE folder (``config.json`` of a
    ``SparseStructureVAE`` + ``model.safetensors``, e.g. ``runs/vae0/model`` while training)."""
    import json
    import types

    config = pathlib.Path(spec) / "config.json"
    if spec not in ("default", "tiny") and config.is_file():
        try:
            kind = json.loads(config.read_text()).get("class")
        except (OSError, ValueError):
            kind = None
        if kind == "SparseStructureVAE":
            from xcube_core.models.vae import SparseStructureVAE

            vae = SparseStructureVAE.from_pretrained(spec, device).eval()
            return _VAEOnly([types.SimpleNamespace(vae=vae, refine=None)], [float(vae.config.voxel_size)],
                            pathlib.Path(spec).resolve().parent.name + "/vae", torch.device(device))
    return load_pipeline(spec, device)


@dataclasses.dataclass
class Reference:
    """One held-out sample: all its levels, its caption and the file it came from."""

    levels: list[Level]
    caption: str
    file: str
    metadata: dict[str, Any]

    def level_at(self, voxel_size: float | None) -> Level:
        """The level with this voxel size (the finest when None or when none matches)."""
        if voxel_size is not None:
            for lvl in self.levels:
                if math.isclose(float(lvl.voxel_size), float(voxel_size), rel_tol=1e-6):
                    return lvl
        return self.levels[-1]


def load_references(root: str | pathlib.Path, num: int | None, split: str = "test") -> list[Reference]:
    """The first ``num`` samples (manifest order) of ``split`` in a dataset folder (None: all of them).

    Raises:
        DataError: no manifest, or fewer than ``num`` samples in the split (the message says how to
            make more).
    """
    from xcube_core.data.storage import MANIFEST, load_sample, read_manifest

    root = pathlib.Path(root)
    manifest = root / MANIFEST if root.is_dir() else root
    if not manifest.is_file():
        raise DataError(f"{manifest}: no dataset manifest; create held-out scenes with "
                        f"`xcube data procedural --out {root} --split {split} --count {num}`")
    rows = [r for r in read_manifest(manifest) if r.get("split") == split]
    if not rows:
        raise DataError(f"{manifest}: no samples of split {split!r}; create them with "
                        f"`xcube data procedural --out {root} --split {split} --count 100`")
    num = len(rows) if num is None else num
    if len(rows) < num:
        raise DataError(f"{manifest}: split {split!r} has {len(rows)} samples, need {num}; make more with "
                        f"`xcube data procedural --out {root} --split {split} --count {num}` "
                        f"or pass --num {len(rows)}")
    out = []
    for r in rows[:num]:
        s = load_sample(manifest.parent / r["file"])
        out.append(Reference(s.levels, s.caption, str(r["file"]), dict(s.metadata)))
    return out


def _bar(items, progress: bool, desc: str, total: int | None = None):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total)


def generate_levels(pipe, prompt: str, seed: int, steps: int | None, guidance: float | None
                    ) -> tuple[list[Level] | None, str | None]:
    """Run the pipeline through all its levels. Returns (levels coarse to fine, None) or (None, error).

    A level that comes out empty makes the pipeline raise before the next level; that counts as a
    failed (empty) scene, not as an error of the evaluation. ``steps`` / ``guidance`` None use the
    model's own defaults (its scheduler_config.json).
    """
    levels: list[Level] = []
    try:
        for level in pipe.generate(prompt, seed=seed, steps=steps, guidance=guidance):
            levels.append(level)
    except XCubeError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not levels or levels[-1].num_voxels == 0:
        return None, "empty scene"
    return levels, None


def generate_finest(pipe, prompt: str, seed: int, steps: int | None, guidance: float | None
                    ) -> tuple[Level | None, str | None]:
    """Run the pipeline to its finest level. Returns (level, None) or (None, error message)."""
    levels, err = generate_levels(pipe, prompt, seed, steps, guidance)
    return (None, err) if levels is None else (levels[-1], None)


def hierarchy_stats(scenes: Sequence[Sequence[Level] | None]) -> dict[str, Any]:
    """Mean orphan rate and parent/child class agreement between consecutive levels of each scene.

    Failed scenes (None) are left out (they are counted by the caller). Returns
    ``{"L0-L1": {"orphan_rate", "class_agreement", "scenes"}, ...}``.
    """
    from xcube_core.eval.structure import orphan_rate, parent_child_class_agreement

    out: dict[str, Any] = {}
    for levels in scenes:
        for parent, child in zip(levels or (), (levels or ())[1:]):
            factor = int(round(float(parent.voxel_size) / float(child.voxel_size)))
            row = out.setdefault(f"L{parent.index}-L{child.index}", {"orphan": [], "agree": [],
                                                                      "factor": factor})
            row["orphan"].append(orphan_rate(parent.ijk, child.ijk, factor))
            if parent.semantics is not None and child.semantics is not None:
                a = parent_child_class_agreement(parent.ijk, parent.semantics, child.ijk, child.semantics, factor)
                if not math.isnan(a):
                    row["agree"].append(a)
    return {k: {"voxel_ratio": v["factor"], "orphan_rate": sum(v["orphan"]) / len(v["orphan"]),
                "class_agreement": sum(v["agree"]) / len(v["agree"]) if v["agree"] else float("nan"),
                "scenes": len(v["orphan"])} for k, v in out.items()}


def _clouds(levels: Sequence[Level | None], num_points: int, seed: int, normalize: str) -> torch.Tensor:
    """Normalised surface clouds; an empty/failed scene becomes a degenerate cloud at the origin,
    which lies far from every real shape and so counts against the model."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for lvl in levels:
        if lvl is None or lvl.num_voxels == 0:
            out.append(torch.zeros(num_points, 3))
        else:
            out.append(level_point_cloud(lvl, num_points, generator=g, normalize=normalize))
    return torch.stack(out)


def _mean_fractions(levels: Sequence[Level | None], class_names: tuple[str, ...]) -> torch.Tensor:
    fr = [M.class_fractions(lvl.semantics, len(class_names)) for lvl in levels
          if lvl is not None and lvl.semantics is not None and lvl.num_voxels]
    return torch.stack(fr).mean(0) if fr else torch.zeros(len(class_names), dtype=torch.float64)


def compare_sets(generated: Sequence[Level | None], reference: Sequence[Level], class_names: tuple[str, ...],
                 *, seed: int = 0, num_points: int = 2048, normalize: str = "box", backend: str = "auto",
                 device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """MMD / COV / 1-NNA (Chamfer) and class fractions between generated and reference levels.

    Args:
        generated: finest levels of the generated scenes; None or empty levels (failed scenes) become
            a degenerate cloud at the origin, far from every real shape, so they count against the model.
        reference: finest levels of the reference scenes.
        class_names: class names of the semantics (for the class-fraction table).
        seed: seeds the point sampling (generated with ``seed``, reference with ``seed + 1``).
        num_points: points per shape.
        normalize: per-shape normalisation (see `xcube_core.eval.pointclouds.normalize_points`).
        backend: Chamfer backend (see `xcube_core.eval.metrics.pairwise_chamfer`).
        device: where the Chamfer distances run ("auto" picks brute force on CUDA, KD-trees on CPU).
        progress: show progress bars.
    """
    t0 = time.perf_counter()
    gen_pts = _clouds(generated, num_points, seed, normalize).to(device)
    ref_pts = _clouds(reference, num_points, seed + 1, normalize).to(device)
    metrics = M.distribution_metrics(gen_pts, ref_pts, backend=backend, progress=progress)
    fg, fr = _mean_fractions(generated, class_names), _mean_fractions(reference, class_names)
    return {
        "metrics": metrics, "metric_seconds": time.perf_counter() - t0, "num_points": num_points,
        "normalize": normalize,
        "class_fractions": {"classes": list(class_names), "generated": fg.tolist(), "reference": fr.tolist(),
                            "total_variation": M.histogram_distance(fg, fr)},
    }


def _levels_like(ref: Reference, voxel_sizes: Sequence[float]) -> list[Level] | None:
    """The reference's levels at the model's voxel sizes, indexed like the model's (None if one is missing)."""
    out = []
    for j, vs in enumerate(voxel_sizes):
        lvl = ref.level_at(float(vs))
        if not math.isclose(float(lvl.voxel_size), float(vs), rel_tol=1e-6):
            return None
        out.append(dataclasses.replace(lvl, index=j))
    return out


def evaluate_generation(pipe, references: Sequence[Reference], *, seed: int = 0, steps: int = 25,
                        guidance: float = 3.0, prompt: str | None = None, num_points: int = 2048,
                        normalize: str = "box", backend: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Generate one scene per reference (its caption, seed ``seed + i``) and compare the two sets.

    Returns:
        A dict with ``metrics`` (MMD-CD, COV-CD, 1-NNA-CD and its per-set parts), ``class_fractions``
        (mean generated vs reference per class, and their total-variation distance), ``hierarchy``
        (orphan rate and parent/child class agreement per pair of consecutive levels, generated and
        reference side by side, see `xcube_core.eval.structure`), ``scenes``
        (prompt, seed, voxels, seconds, error per generated scene) and the settings used.
    """
    if not references:
        raise InvalidInputError("no reference scenes; pass --num >= 1")
    finest_vs = float(pipe.voxel_sizes[-1])
    generated: list[Level | None] = []
    hierarchies: list[list[Level] | None] = []
    scenes = []
    for i, ref in enumerate(_bar(references, progress, "generating")):
        text = prompt or ref.caption or "an outdoor scene"
        t0 = time.perf_counter()
        levels, err = generate_levels(pipe, text, seed + i, steps, guidance)
        lvl = None if levels is None else levels[-1]
        generated.append(lvl)
        hierarchies.append(levels)
        scenes.append({"prompt": text, "seed": seed + i, "voxels": lvl.num_voxels if lvl else 0,
                       "seconds": time.perf_counter() - t0, "error": err, "reference": ref.file})
        if err:
            log.warning("scene %d (seed %d) failed: %s", i, seed + i, err)
    ref_levels = [r.level_at(finest_vs) for r in references]
    if any(not math.isclose(float(r.voxel_size), finest_vs, rel_tol=1e-6) for r in ref_levels):
        log.warning("reference data has no level at the model's finest voxel size %.4g m; comparing with "
                    "the references' finest level (shapes are normalised, resolution differs)", finest_vs)
    result = compare_sets(generated, ref_levels, tuple(pipe.class_names), seed=seed, num_points=num_points,
                          normalize=normalize, backend=backend, device=getattr(pipe, "device", "cpu"),
                          progress=progress)
    ref_hierarchies = [_levels_like(r, pipe.voxel_sizes) for r in references]
    hierarchy = {"generated": hierarchy_stats(hierarchies), "reference": hierarchy_stats(ref_hierarchies)}
    return {
        "task": "generation", "model_id": getattr(pipe, "model_id", "?"), "num": len(references),
        "seed": seed, "steps": steps, "guidance": guidance, **result, "hierarchy": hierarchy,
        "finest_voxel_size": finest_vs, "reference_voxel_size": float(ref_levels[0].voxel_size),
        "failed_scenes": sum(s["error"] is not None for s in scenes), "scenes": scenes,
    }


def evaluate_dataset_as_generated(generated: Sequence[Reference], references: Sequence[Reference], *,
                                  seed: int = 0, num_points: int = 2048, normalize: str = "box",
                                  backend: str = "auto", device: str | torch.device = "cpu",
                                  progress: bool = True) -> dict[str, Any]:
    """The same comparison with stored samples in place of generated ones.

    With another split of the same dataset (e.g. val vs test) this measures what a perfect generator
    would score with this many samples: the floor of 1-NNA and the ceiling of COV.
    """
    if not generated or not references:
        raise InvalidInputError("need at least one generated and one reference sample")
    levels = [g.levels[-1] for g in generated]
    refs = [r.level_at(float(levels[0].voxel_size)) for r in references]
    result = compare_sets(levels, refs, tuple(levels[0].class_names), seed=seed, num_points=num_points,
                          normalize=normalize, backend=backend, device=device, progress=progress)
    return {"task": "generation", "model_id": "stored samples", "num": len(references), "seed": seed, **result,
            "finest_voxel_size": float(levels[0].voxel_size), "reference_voxel_size": float(refs[0].voxel_size),
            "failed_scenes": 0, "scenes": [{"file": g.file, "prompt": g.caption} for g in generated]}


def vae_reconstructor(pipe, level_index: int, refine: bool = False
                      ) -> Callable[[Level], tuple[torch.Tensor, torch.Tensor | None]]:
    """A function ``level -> (ijk (M, 3), semantics (M,) or None)`` reconstructing with the level's VAE.

    Works with `XCubePipeline` (``pipe.levels[i].vae.reconstruct(grid, normals, semantics)``, then,
    with ``refine``, the level's refinement net as in generation) and with any object exposing
    ``reconstruct(level, level_index) -> Level``.
    """
    if hasattr(pipe, "reconstruct"):
        def run_generic(level: Level):
            out = pipe.reconstruct(level, level_index)
            return out.ijk, out.semantics
        return run_generic
    try:
        models = pipe.levels[level_index]
        vae = models.vae
    except (AttributeError, IndexError, TypeError) as exc:
        raise InvalidInputError(f"model has no VAE for level {level_index} (expected pipe.levels[i].vae or "
                                f"pipe.reconstruct); got {type(pipe).__name__}") from exc
    refine_net = getattr(models, "refine", None) if refine else None
    device = getattr(pipe, "device", torch.device("cpu"))

    def run(level: Level):
        grid, normals, semantics = level.grid_attributes(device)
        dec = vae.reconstruct(grid, normals, semantics)
        out_grid, out_normals, sem = dec.grid, dec.normals, dec.semantics
        if refine_net is not None and out_grid.total_voxels:
            ref = refine_net(out_grid, out_normals, sem, bounds=tuple(vae.config.grid_shape))
            out_grid, sem = ref.grid, ref.semantics
        return out_grid.ijk.jdata.cpu(), None if sem is None else sem.cpu()
    return run


def evaluate_vae(pipe, references: Sequence[Reference], *, levels: Sequence[int] | None = None,
                 refine: bool = False, progress: bool = True) -> dict[str, Any]:
    """Voxel IoU, F-score at 1 voxel (26-neighbourhood; precision and recall), and semantic agreement
    on shared voxels of VAE reconstructions, per model level.

    The reference level with the model level's voxel size is encoded to the posterior mean and
    decoded by structure prediction (then refined, with ``refine``); IoU compares the decoded voxel
    set with the input.
    """
    levels = list(range(len(pipe.voxel_sizes))) if levels is None else list(levels)
    per_level = {}
    for li in levels:
        vs = float(pipe.voxel_sizes[li])
        recon = vae_reconstructor(pipe, li, refine)
        rows = []
        for ref in _bar(references, progress, f"VAE level {li}"):
            lvl = ref.level_at(vs)
            if not math.isclose(float(lvl.voxel_size), vs, rel_tol=1e-6):
                have = [float(x.voxel_size) for x in ref.levels]
                raise DataError(f"{ref.file}: no level with voxel size {vs} m for model level {li}; the data "
                                f"has {have}; build it with matching --levels / --voxel-size")
            t0 = time.perf_counter()
            with torch.no_grad():
                ijk, sem = recon(lvl)
            rows.append({"file": ref.file, **match_truth(lvl, ijk, sem), "seconds": time.perf_counter() - t0})
        per_level[str(li)] = {"voxel_size": vs, **summarise_matches(rows)}
    return {"task": "vae", "model_id": getattr(pipe, "model_id", "?"), "num": len(references),
            "refine": bool(refine), "levels": per_level}


def match_truth(truth: Level, ijk: torch.Tensor, semantics: torch.Tensor | None) -> dict[str, Any]:
    """Voxel IoU, F-score at 1 voxel (precision, recall) and semantic accuracy on shared voxels of a
    predicted voxel set against the true level."""
    acc = float("nan")
    if semantics is not None and truth.semantics is not None:
        acc = M.matched_semantic_accuracy(truth.ijk, truth.semantics, ijk, semantics)
    fs = voxel_fscore(truth.ijk, ijk, tolerance=1)
    return {"iou": M.voxel_iou(truth.ijk, ijk), "semantic_accuracy": acc, "fscore_1": fs["fscore"],
            "precision_1": fs["precision"], "recall_1": fs["recall"], "voxels": truth.num_voxels,
            "reconstructed_voxels": int(ijk.shape[0])}


def summarise_matches(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means (and the minimum IoU) of `match_truth` rows; the rows themselves under ``samples``."""
    ious = [r["iou"] for r in rows]
    accs = [r["semantic_accuracy"] for r in rows if not math.isnan(r["semantic_accuracy"])]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("fscore_1", "precision_1", "recall_1")}
    return {"mean_iou": sum(ious) / len(ious), "min_iou": min(ious), "mean_fscore_1": mean["fscore_1"],
            "mean_precision_1": mean["precision_1"], "mean_recall_1": mean["recall_1"],
            "mean_semantic_accuracy": sum(accs) / len(accs) if accs else float("nan"), "samples": rows}


def evaluate_upsampling(pipe, references: Sequence[Reference], *, seed: int = 0, steps: int | None = None,
                        guidance: float | None = None, progress: bool = True) -> dict[str, Any]:
    """The finer levels generated from each reference's *true* coarsest level (the layout condition,
    its caption, seed ``seed + i``), scored against the reference's own finer levels.

    This isolates what the finer levels' diffusion and decoders add: whole-scene metrics are set by the
    coarse layout, so a better level 1 hardly moves them. Per finer level: voxel IoU, F-score at 1
    voxel, semantic accuracy on shared voxels (as `evaluate_vae`), and the generated and true
    parent/child class agreement.

    A reference wider than the model's native scene is made as a large scene is
    (`xcube_core.tiling.generate_extent` with its true coarsest level as the layout): the finer
    levels in boxes with halos, their U-Nets' self-attention in native-sized windows.
    """
    if not references:
        raise InvalidInputError("no reference scenes; pass --num >= 1")
    if len(pipe.voxel_sizes) < 2:
        raise InvalidInputError("the model has one level: there is no finer level to generate")
    rows: dict[int, list] = {j: [] for j in range(1, len(pipe.voxel_sizes))}
    generated, truths = [], []
    for i, ref in enumerate(_bar(references, progress, "finer levels")):
        truth = _levels_like(ref, pipe.voxel_sizes)
        if truth is None:
            raise DataError(f"{ref.file}: has levels of {[float(x.voxel_size) for x in ref.levels]} m, the model "
                            f"needs {[float(v) for v in pipe.voxel_sizes]} m; build it with matching --levels / "
                            f"--voxel-size")
        t0 = time.perf_counter()
        levels = _upsample(pipe, truth[0], ref.caption or "an outdoor scene", seed + i, steps, guidance)
        seconds = time.perf_counter() - t0
        for j in rows:
            rows[j].append({"file": ref.file, **match_truth(truth[j], levels[j].ijk, levels[j].semantics),
                            "seconds": seconds})
        generated.append(levels)
        truths.append(truth)
    return {"task": "upsampling", "model_id": getattr(pipe, "model_id", "?"), "num": len(references),
            "seed": seed, "steps": steps, "guidance": guidance,
            "levels": {str(j): {"voxel_size": float(pipe.voxel_sizes[j]), **summarise_matches(r)}
                       for j, r in rows.items()},
            "hierarchy": {"generated": hierarchy_stats(generated), "reference": hierarchy_stats(truths)}}


def _upsample(pipe, coarse: Level, prompt: str, seed: int, steps, guidance) -> list[Level]:
    """All levels of a scene whose coarsest level is ``coarse``: one native scene, or tiles beyond it."""
    columns = (coarse.ijk[:, :2].long().amax(0) + 1).tolist() if coarse.num_voxels else [0, 0]
    if all(c <= n for c, n in zip(columns, pipe.coarse_shape[:2])):
        return list(pipe.generate(prompt, seed=seed, steps=steps, guidance=guidance, condition=coarse))
    from xcube_core.tiling import generate_extent, merge_tiles

    extent_m = [c * float(coarse.voxel_size) for c in columns]
    return merge_tiles(generate_extent(pipe, prompt, extent_m, seed=seed, steps=steps, guidance=guidance,
                                       layout=coarse))


def evaluate_prompts(pipe, pairs: Sequence[PromptPair], seeds: Sequence[int], *, steps: int = 25,
                     guidance: float = 3.0, progress: bool = True) -> dict[str, Any]:
    """Generate both prompts of every pair at every seed and score the direction of change.

    Scenes are cached by (prompt, seed), so a prompt shared by several pairs is generated once. A
    scene that fails or comes out empty scores all statistics 0 (and is counted in ``failed``).
    """
    cache: dict[tuple[str, int], dict[str, float]] = {}
    failed: list[dict[str, Any]] = []
    jobs = [(p, s) for p in pairs for s in seeds]
    bar = _bar(jobs, progress, "prompt pairs")
    outcomes = []
    for pair, seed in bar:
        stats = []
        for text in (pair.positive, pair.negative):
            key = (text, int(seed))
            if key not in cache:
                lvl, err = generate_finest(pipe, text, int(seed), steps, guidance)
                if err:
                    failed.append({"prompt": text, "seed": int(seed), "error": err})
                    lvl = Level(index=0, ijk=torch.zeros(0, 3, dtype=torch.int32), voxel_size=1.0)
                cache[key] = level_statistics(lvl)
            stats.append(cache[key])
        outcomes.append(outcome(pair, seed, stats[0], stats[1]))
    if failed and len(failed) == len(cache):
        raise XCubeError(f"every generation failed, e.g. {failed[0]['error']}")
    return {"task": "prompts", "model_id": getattr(pipe, "model_id", "?"), "seeds": [int(s) for s in seeds],
            "steps": steps, "guidance": guidance, "num_pairs": len(pairs), "scenes_generated": len(cache),
            "failed": failed, "summary": summarize(outcomes), "outcomes": [o.to_json() for o in outcomes]}
