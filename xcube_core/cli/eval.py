"""`xcube eval generation | vae | upsampling | prompts | contact-sheet`: measure a model, write a JSON report.

Examples::

    xcube data procedural --out data/scenes --split test --count 100
    xcube eval generation --model default --reference data/scenes --num 100 --seed 0 --out gen.json
    xcube eval vae --model default --reference data/scenes --num 32 --out vae.json
    xcube eval upsampling --model default --reference data/scenes --num 32 --out up.json
    xcube eval prompts --model default --pairs builtin --seeds 8 --out prompts.json
    xcube eval prompts --model runs/m1/export --pairs my_pairs.json --kinds paraphrase
    xcube eval contact-sheet --model runs/v2 --compare default --out docs/images/contact_sheet.png

generation: N scenes generated from the captions of N held-out test scenes (seed S + i), compared
    with those scenes: MMD, COV and 1-NNA on the Chamfer distance between 2048 points sampled on each
    finest level's surface, every shape normalised into [-1, 1]^3 (as LION / XCube do), plus the
    mean per-class voxel fractions, the orphan rate (coarse voxels with no child in the next level)
    and parent/child class agreement, each next to the same figure on the held-out data.
vae: voxel IoU, F-score at 1 voxel (26-neighbourhood) and semantic agreement of each level's VAE
    reconstruction of held-out scenes.
upsampling: the finer levels generated from each held-out scene's true coarsest level (the layout
    condition), scored like the VAE against the scene's own finer levels: what the finer levels'
    diffusion adds, which whole-scene metrics hardly see.
prompts: pairs of prompts with / without an attribute (tall buildings, trees, water, density),
    generated with the same seeds; how often the scene moves the right way. Built-in pairs come in
    two kinds: 'caption' (training-caption wording) and 'paraphrase' (wording never in training).

contact-sheet: 8 fixed prompts x 2 seeds, all levels side by side in one PNG (--compare: two models).

Targets of the default model v2 (issue 11): 1-NNA <= 58 % and COV >= 50 % at N = 64, VAE IoU >= 0.95 /
0.85 (1 m / 0.25 m), F-score at 1 voxel >= 0.97, orphan rate <= 2 %, class agreement within 2 points
of the data, prompt control >= 90 % (every attribute >= 80 %).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib

from xcube_core.errors import InvalidInputError

log = logging.getLogger(__name__)

_GENERATION_HELP = (
    "Generate N scenes from the captions of N held-out scenes (scene i with seed S + i) and compare the "
    "two sets: MMD, COV and 1-NNA on the Chamfer distance between 2048 points sampled on each finest "
    "level's surface (uniform on the exposed voxel faces), every shape normalised into [-1, 1]^3 as "
    "LION / XCube do; plus the mean per-class voxel fractions, and the orphan rate (share of coarse "
    "voxels with no child in the next level: holes, hollow roofs) and parent/child class agreement of the "
    "generated hierarchies next to the same figures on the held-out data (orphan rate 0 there by "
    "construction). Targets (v2): 1-NNA <= 58 %, COV >= 50 % at N = 64, orphan rate <= 2 %, class "
    "agreement within 2 points of the data.")
_PROMPTS_HELP = (
    "Pairs of prompts with / without an attribute (tall buildings, trees, water, density), generated "
    "with the same seeds; reports how often the scene moves the right way. Built-in pairs come in two "
    "kinds: 'caption' (training-caption wording) and 'paraphrase' (wording never in the training "
    "captions).")


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ev = sub.add_parser("eval", help="evaluate a model: generation metrics, VAE IoU, prompt control",
                        description=__doc__, formatter_class=fmt)
    esub = ev.add_subparsers(dest="eval_command", metavar="TASK")

    g = esub.add_parser("generation", help="MMD / COV / 1-NNA (Chamfer) vs held-out scenes, class fractions",
                        description=_GENERATION_HELP)
    _model_args(g)
    _reference_args(g, default_num=64)
    g.add_argument("--seed", type=int, default=0, help="seed of scene 0; scene i uses seed+i (default 0)")
    g.add_argument("--prompt", default=None, help="one prompt for every scene (default: each reference's caption)")
    g.add_argument("--generated", type=pathlib.Path, default=None, metavar="DIR",
                   help="compare stored samples from this dataset folder instead of generating (e.g. the "
                   "val split: what a perfect generator would score); --model is then ignored")
    g.add_argument("--generated-split", default="val", help="split of --generated (default val)")
    g.add_argument("--points", type=int, default=2048, help="points sampled per shape (default 2048)")
    g.add_argument("--normalize", choices=("box", "sphere", "none"), default="box",
                   help="per-shape normalisation: box = [-1,1]^3 (LION/XCube, default), sphere = unit sphere")
    g.add_argument("--backend", choices=("auto", "kdtree", "torch"), default="auto",
                   help="Chamfer backend: kdtree (CPU), torch (chunked brute force, GPU); default auto")
    _generation_args(g)
    _out_arg(g, "eval_generation.json")
    g.set_defaults(func=run_generation)

    v = esub.add_parser("vae", help="voxel IoU of VAE reconstructions of held-out scenes",
                        description="Encode each held-out scene's level to the VAE posterior mean, decode it "
                        "by structure prediction and report the voxel IoU with the input (and the semantic "
                        "agreement on shared voxels), per model level. --model may also be one trained VAE "
                        "folder (config.json + model.safetensors, e.g. a training run's model/), to check a "
                        "VAE before the pipeline is assembled. Also the F-score at a 1-voxel tolerance "
                        "(precision: reconstructed voxels with a true voxel in their 26-neighbourhood; "
                        "recall: the other way round). Targets (v2): IoU >= 0.95 / 0.85 at 1 m / 0.25 m, "
                        "F-score >= 0.97.")
    _model_args(v)
    _reference_args(v, default_num=32)
    v.add_argument("--levels", type=int, nargs="+", default=None, metavar="L",
                   help="model levels to evaluate (default all)")
    v.add_argument("--refine", action="store_true",
                   help="also run each level's refinement net on the decoded grid, as generation does")
    _out_arg(v, "eval_vae.json")
    v.set_defaults(func=run_vae)

    u = esub.add_parser("upsampling", help="finer levels generated from the true coarsest level vs the truth",
                        description="For each held-out scene, give the model the scene's true coarsest level "
                        "as a layout (with its caption, scene i with seed S + i) and generate the finer levels; "
                        "score each against the scene's own level of that voxel size: voxel IoU, F-score at 1 "
                        "voxel (26-neighbourhood), semantic accuracy on shared voxels, and parent/child class "
                        "agreement next to the data's. Whole-scene metrics (`xcube eval generation`) are set by "
                        "the coarse layout; this one sees what the finer levels' diffusion adds. Scenes wider "
                        "than the model's native one (e.g. `xcube data procedural --extent 192 192`) are made "
                        "as large scenes are: the finer levels in boxes with halos (`generate_extent`).")
    _model_args(u)
    _reference_args(u, default_num=32)
    u.add_argument("--seed", type=int, default=0, help="seed of scene 0; scene i uses seed+i (default 0)")
    _generation_args(u)
    u.add_argument("--global-attention", action="store_true",
                   help="self-attention over each whole window however large, as before round 9 (default: "
                        "native-sized windows beyond the native scene); to compare")
    _out_arg(u, "eval_upsampling.json")
    u.set_defaults(func=run_upsampling)

    p = esub.add_parser("prompts", help="prompt control: do attributes in the prompt move the scene?",
                        description=_PROMPTS_HELP
                        + "\n\nA pair succeeds when the statistic of its attribute (90th-percentile building "
                        "height; tree+bush, water or building+roof voxel fraction) is higher for the prompt "
                        "with the attribute. Target (v2): >= 90 % overall, every attribute >= 80 %.")
    _model_args(p)
    p.add_argument("--pairs", default="builtin",
                   help="'builtin' or a JSON file: [{attribute, positive, negative, kind}, ...]")
    p.add_argument("--seeds", type=int, default=8, help="seeds per pair (default 8)")
    p.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--attributes", nargs="+", default=None, metavar="A",
                   help="only these attributes (tall, trees, water, dense)")
    p.add_argument("--kinds", nargs="+", default=None, choices=("caption", "paraphrase"),
                   help="only these kinds of pairs")
    _generation_args(p)
    _out_arg(p, "eval_prompts.json")
    p.set_defaults(func=run_prompts)
    _register_contact_sheet(esub)
    ev.set_defaults(func=lambda args: ev.print_help() or 2)


def _register_contact_sheet(esub) -> None:
    from xcube_core.eval.contact_sheet import CONTACT_PROMPTS, CONTACT_SEEDS

    c = esub.add_parser(
        "contact-sheet", help="one PNG: 8 fixed prompts x 2 seeds, every level side by side (optionally 2 models)",
        description="Generate the same fixed prompts with the same seeds and lay out every level of every "
        "scene side by side, labelled (prompt, seed, level, voxel size, voxel count); --compare adds a "
        "second model's column group, e.g. v1 next to v2. The prompts (one per scene style):\n  "
        + "\n  ".join(CONTACT_PROMPTS), formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(c)
    c.add_argument("--compare", default=None, metavar="PATH|default",
                   help="a second model shown to the right of --model (e.g. --model NEW --compare default)")
    c.add_argument("--seeds", type=int, nargs="+", default=list(CONTACT_SEEDS),
                   help=f"seeds per prompt (default {' '.join(map(str, CONTACT_SEEDS))})")
    c.add_argument("--prompts", type=pathlib.Path, default=None, metavar="FILE",
                   help="a text file with one prompt per line instead of the fixed 8")
    c.add_argument("--tile", default="240x180", metavar="WxH", help="size of one level's image (default 240x180)")
    _generation_args(c)
    c.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/images/contact_sheet.png"),
                   metavar="FILE.png", help="PNG to write (default docs/images/contact_sheet.png)")
    c.set_defaults(func=run_contact_sheet)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", metavar="PATH|default|tiny",
                   help="model folder, 'default' (the shipped model) or 'tiny' (random weights, smoke test)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _reference_args(p: argparse.ArgumentParser, default_num: int | None) -> None:
    p.add_argument("--reference", type=pathlib.Path, required=True, metavar="DIR",
                   help="dataset folder with manifest.jsonl (from `xcube data procedural`)")
    p.add_argument("--split", default="test", help="held-out split to compare with (default test)")
    p.add_argument("--num", type=int, default=default_num,
                   help="number of scenes, the first of the split (default: all of the split)"
                   if default_num is None else f"number of scenes (default {default_num})")


def _generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None,
                   help="diffusion steps per level (default: the model's scheduler_config.json, 25 for v1)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's, 3 for v1)")


def _out_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path(default), metavar="FILE.json",
                   help=f"JSON report (default {default})")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


@contextlib.contextmanager
def _quiet_pipeline(args):
    """Per-level generation logs would break the progress bars; keep them for ``xcube -v eval``."""
    loggers = [logging.getLogger(name) for name in ("xcube_core.pipeline", "xcube_core.tiling")]  # tiles too
    old = [lg.level for lg in loggers]
    if not getattr(args, "verbose", False):
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


def _finish(result: dict, out: pathlib.Path) -> int:
    from xcube_core.eval.report import print_report, write_json

    print_report(result)
    path = write_json(result, out)
    print(f"wrote {path}")
    return 0


def run_generation(args) -> int:
    from xcube_core.eval import runners

    _check_positive(num=1 if args.num is None else args.num, points=args.points,
                    steps=1 if args.steps is None else args.steps)
    refs = runners.load_references(args.reference, args.num, args.split)
    if args.generated is not None:
        gen = runners.load_references(args.generated, args.num, args.generated_split)
        n = min(len(gen), len(refs))  # equal set sizes keep 1-NNA's 50 % meaning
        gen, refs = gen[:n], refs[:n]
        result = runners.evaluate_dataset_as_generated(
            gen, refs, seed=args.seed, num_points=args.points, normalize=args.normalize, backend=args.backend,
            device=args.device, progress=not args.no_progress)
        result["generated"] = f"{args.generated} ({args.generated_split})"
        result["reference"] = f"{args.reference} ({args.split})"
        return _finish(result, args.out)
    with _quiet_pipeline(args):
        pipe = runners.load_pipeline(args.model, args.device)
        result = runners.evaluate_generation(
            pipe, refs, seed=args.seed, steps=args.steps, guidance=args.guidance, prompt=args.prompt,
            num_points=args.points, normalize=args.normalize, backend=args.backend,
            progress=not args.no_progress)
    result["reference"] = str(args.reference)
    return _finish(result, args.out)


def run_vae(args) -> int:
    from xcube_core.eval import runners

    _check_positive(num=args.num)
    refs = runners.load_references(args.reference, args.num, args.split)
    pipe = runners.load_vae_model(args.model, args.device)
    n = len(pipe.voxel_sizes)
    bad = [lv for lv in (args.levels or ()) if not 0 <= lv < n]
    if bad:
        raise InvalidInputError(f"--levels {bad} out of range; this model has levels 0..{n - 1}")
    result = runners.evaluate_vae(pipe, refs, levels=args.levels, refine=args.refine,
                                  progress=not args.no_progress)
    result["reference"] = str(args.reference)
    return _finish(result, args.out)


def run_upsampling(args) -> int:
    from xcube_core.eval import runners

    _check_positive(num=args.num, steps=1 if args.steps is None else args.steps)
    refs = runners.load_references(args.reference, args.num, args.split)
    with _quiet_pipeline(args):
        pipe = runners.load_pipeline(args.model, args.device)
        if args.global_attention:  # (windowed is every pipeline's default)
            pipe.set_windowed_attention(False)
        result = runners.evaluate_upsampling(pipe, refs, seed=args.seed, steps=args.steps, guidance=args.guidance,
                                             progress=not args.no_progress)
    result["reference"] = str(args.reference)
    result["attention"] = "global" if args.global_attention else "windowed"
    return _finish(result, args.out)


def run_prompts(args) -> int:
    from xcube_core.eval import runners
    from xcube_core.eval.prompt_control import load_pairs

    _check_positive(seeds=args.seeds, steps=1 if args.steps is None else args.steps)
    pairs = load_pairs(args.pairs, args.attributes, args.kinds)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    with _quiet_pipeline(args):
        pipe = runners.load_pipeline(args.model, args.device)
        result = runners.evaluate_prompts(pipe, pairs, seeds, steps=args.steps, guidance=args.guidance,
                                          progress=not args.no_progress)
    result["pairs_source"] = args.pairs
    return _finish(result, args.out)


def _parse_tile(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        tile = (int(w), int(h))
    except ValueError:
        tile = (0, 0)
    if not sep or not (64 <= tile[0] <= 1024 and 48 <= tile[1] <= 1024):
        raise InvalidInputError(f"--tile {text!r}: expected WxH with 64 <= W <= 1024 and 48 <= H <= 1024, e.g. 240x180")
    return tile


def run_contact_sheet(args) -> int:
    from PIL import Image
    from tqdm.auto import tqdm

    from xcube_core.eval import runners
    from xcube_core.eval.contact_sheet import CONTACT_PROMPTS, compose_sheet, generate_cells

    tile = _parse_tile(args.tile)
    prompts = list(CONTACT_PROMPTS)
    if args.prompts is not None:
        if not args.prompts.is_file():
            raise InvalidInputError(f"--prompts {args.prompts} does not exist; pass a text file, one prompt a line")
        prompts = [line.strip() for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise InvalidInputError(f"--prompts {args.prompts} holds no prompt")
    _check_positive(seeds=len(args.seeds), steps=1 if args.steps is None else args.steps)
    specs = [args.model] + ([args.compare] if args.compare else [])
    columns, levels = [], []
    with _quiet_pipeline(args):
        for spec in specs:
            pipe = runners.load_pipeline(spec, args.device)
            bar = tqdm(total=len(prompts) * len(args.seeds), desc=f"{pipe.model_id}", disable=args.no_progress)
            with bar:
                columns.append(generate_cells(pipe, prompts, args.seeds, steps=args.steps, guidance=args.guidance,
                                              tile=tile, on_cell=lambda: bar.update(1)))
            levels.append(pipe.num_levels)
            del pipe
    title = " vs ".join(c[0].model_id for c in columns) + f": {len(prompts)} prompts x {len(args.seeds)} seeds"
    sheet = compose_sheet(columns, levels, tile=tile, title=title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out, format="PNG", optimize=True)
    failed = sum(c.error is not None for col in columns for c in col)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}, {failed} failed scenes)")
    return 0
