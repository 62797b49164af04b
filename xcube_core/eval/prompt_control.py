"""Prompt control: does the generated scene move the way a caption attribute says?

For each attribute (tall vs low buildings, many vs no trees, with vs without water, dense vs sparse
buildings) we generate a *pair* of scenes with the same seed: one from a prompt with the attribute
("positive") and one from the same prompt without it or with its opposite ("negative"). We measure
one statistic on each finest level; the pair succeeds when ``stat(positive) > stat(negative)``
(ties fail). The success rate over pairs x seeds is the prompt-control score.

Two kinds of prompt pairs are built in:

* ``caption``: worded with the training captions' vocabulary and sentence frames
  (`xcube_core.data.procedural.captions`), i.e. in-distribution wording;
* ``paraphrase``: our own wording that the caption generator never produces (other words for the
  attribute, other sentence frames), to test whether the text encoder carries meaning beyond the
  training templates. `caption_corpus` + `shared_ngrams` check this.

Statistics (on the finest level, using its semantic classes; world z in metres):

* ``building_height``: 90th percentile of z over building + roof voxels minus the median z of ground
  + road voxels (0 without buildings);
* ``tree_fraction``: fraction of voxels of class tree or bush;
* ``water_fraction``: fraction of voxels of class water;
* ``building_fraction``: fraction of voxels of class building or roof.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from collections import defaultdict
from typing import Any, Iterable

import torch

from xcube_core.errors import InvalidInputError

log = logging.getLogger(__name__)

KINDS = ("caption", "paraphrase")


@dataclasses.dataclass(frozen=True)
class Attribute:
    """A caption attribute and the statistic that should grow when the prompt has it."""

    name: str
    statistic: str
    description: str


ATTRIBUTES: dict[str, Attribute] = {
    a.name: a for a in (
        Attribute("tall", "building_height", "tall vs low buildings (90th-percentile building height, m)"),
        Attribute("trees", "tree_fraction", "many trees vs no trees (tree + bush voxel fraction)"),
        Attribute("water", "water_fraction", "with vs without water (water voxel fraction)"),
        Attribute("dense", "building_fraction", "many vs few buildings (building + roof voxel fraction)"),
    )
}


@dataclasses.dataclass(frozen=True)
class PromptPair:
    """Two prompts that differ in one attribute; ``positive`` should score higher on its statistic."""

    attribute: str
    positive: str
    negative: str
    kind: str = "paraphrase"


def _pairs(attribute: str, kind: str, rows: Iterable[tuple[str, str]]) -> list[PromptPair]:
    return [PromptPair(attribute, p, n, kind) for p, n in rows]


# In-distribution wording: place phrases, adjectives, nouns and frames of the training captions, and
# only attribute values that occur together with that style in the training data (e.g. downtown
# buildings are "tall" or "mid-rise", never "low"; downtown has "no" or "a handful of" trees).
_CAPTION_PAIRS = (
    _pairs("tall", "caption", [
        ("a dense downtown block with tall office buildings",
         "a dense downtown block with mid-rise office buildings"),
        ("a riverside street with high-rise apartment blocks",
         "a riverside street with low-rise apartment blocks"),
        ("a suburban street featuring medium-height houses and some trees",
         "a suburban street featuring single-storey houses and some trees"),
    ])
    + _pairs("trees", "caption", [
        ("a quiet suburban street with low houses and many trees",
         "a quiet suburban street with low houses and some trees"),
        ("a rural farmstead with small farm buildings and plenty of trees",
         "a rural farmstead with small farm buildings and some trees"),
        ("a dense downtown block with tall towers and a handful of trees",
         "a dense downtown block with tall towers and no trees"),
    ])
    + _pairs("water", "caption", [
        ("a public park with scattered trees and a pond", "a public park with scattered trees"),
        ("a residential neighbourhood with low houses and a small lake",
         "a residential neighbourhood with low houses"),
        ("an industrial estate with large warehouses and a canal", "an industrial estate with large warehouses"),
    ])
    + _pairs("dense", "caption", [
        ("a dense downtown block with mid-rise office buildings", "a city park with a handful of trees"),
        ("an urban core with tall towers", "a farm in the countryside with scattered trees"),
    ])
)

# Our own wording; `tests/eval` checks that none of it is what the caption generator writes.
_PARAPHRASE_PAIRS = (
    _pairs("tall", "paraphrase", [
        ("a business quarter where glittering skyscrapers pierce the clouds",
         "a business quarter of squat one-floor shopfronts"),
        ("an avenue lined by very tall residential spires, dozens of floors each",
         "an avenue lined by bungalows barely above head height"),
        ("imposing multi-storey blocks looming over the pavement",
         "modest ground-floor-only cottages hugging the pavement"),
    ])
    + _pairs("trees", "paraphrase", [
        ("homes surrounded by a lush forest canopy", "homes on bare treeless land"),
        ("a green space overflowing with leafy foliage and shrubbery",
         "a green space paved over, without a single plant"),
        ("a village hidden in thick woodland", "a village on a barren, empty plain"),
    ])
    + _pairs("water", "paraphrase", [
        ("cottages gathered around a shimmering lagoon", "cottages gathered around a dusty courtyard"),
        ("offices overlooking a broad waterway", "offices overlooking a dry gravel yard"),
        ("a garden with an ornamental reflecting basin", "a garden with an ornamental gravel bed"),
    ])
    + _pairs("dense", "paraphrase", [
        ("a crowded metropolis packed wall to wall with buildings", "an empty meadow with nothing built on it"),
        ("tightly packed city blocks, hardly a gap between structures", "open farmland with one lonely shed"),
    ])
)

BUILTIN_PAIRS: tuple[PromptPair, ...] = tuple(_CAPTION_PAIRS + _PARAPHRASE_PAIRS)


def load_pairs(spec: str = "builtin", attributes: Iterable[str] | None = None,
               kinds: Iterable[str] | None = None) -> list[PromptPair]:
    """The built-in pairs or pairs from a JSON file, optionally filtered.

    Args:
        spec: ``"builtin"`` or a path to a JSON list of objects with ``attribute``, ``positive``,
            ``negative`` and optional ``kind`` (default ``"paraphrase"``).
        attributes: keep only these attribute names (see `ATTRIBUTES`).
        kinds: keep only these kinds (``"caption"``, ``"paraphrase"``).

    Raises:
        InvalidInputError: unknown attribute or kind, or a malformed file.
    """
    if spec == "builtin":
        pairs = list(BUILTIN_PAIRS)
    else:
        path = pathlib.Path(spec)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            pairs = [PromptPair(str(r["attribute"]), str(r["positive"]), str(r["negative"]),
                                str(r.get("kind", "paraphrase"))) for r in rows]
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}: expected a JSON list of {{attribute, positive, negative, kind}} "
                                    f"objects ({type(exc).__name__}: {exc})") from exc
    for p in pairs:
        if p.attribute not in ATTRIBUTES:
            raise InvalidInputError(f"unknown attribute {p.attribute!r}; expected one of {sorted(ATTRIBUTES)}")
    attributes = None if attributes is None else list(attributes)
    kinds = None if kinds is None else list(kinds)
    for name in attributes or ():
        if name not in ATTRIBUTES:
            raise InvalidInputError(f"unknown attribute {name!r}; expected one of {sorted(ATTRIBUTES)}")
    pairs = [p for p in pairs if (attributes is None or p.attribute in attributes)
             and (kinds is None or p.kind in kinds)]
    if not pairs:
        raise InvalidInputError("no prompt pairs left after filtering; check --attributes / --kinds")
    return pairs


def _class_ids(class_names: tuple[str, ...], names: Iterable[str]) -> list[int]:
    return [class_names.index(n) for n in names if n in class_names]


def level_statistics(level) -> dict[str, float]:
    """The prompt-control statistics of one (finest) level; see the module docstring.

    Args:
        level: a `Level` with ``semantics`` (levels without semantics give zeros).

    Returns:
        ``{"building_height", "tree_fraction", "water_fraction", "building_fraction", "num_voxels"}``.
    """
    out = {"building_height": 0.0, "tree_fraction": 0.0, "water_fraction": 0.0, "building_fraction": 0.0,
           "num_voxels": float(level.num_voxels)}
    sem = level.semantics
    if sem is None or level.num_voxels == 0:
        return out
    sem = sem.reshape(-1).to(torch.int64)
    names = tuple(level.class_names)

    def mask_of(*classes: str) -> torch.Tensor:
        ids = _class_ids(names, classes)
        if not ids:
            return torch.zeros_like(sem, dtype=torch.bool)
        return torch.isin(sem, torch.tensor(ids, dtype=torch.int64))

    n = float(sem.numel())
    out["tree_fraction"] = float(mask_of("tree", "bush").sum()) / n
    out["water_fraction"] = float(mask_of("water").sum()) / n
    build = mask_of("building", "roof")
    out["building_fraction"] = float(build.sum()) / n
    if bool(build.any()):
        import numpy as np  # np.percentile: linear interpolation, no size limit (torch.quantile has one)

        z = (level.ijk[:, 2].to(torch.float64) * float(level.voxel_size) + float(level.origin[2])).numpy()
        ground = mask_of("ground", "road").numpy()
        base = float(np.median(z[ground])) if ground.any() else 0.0
        out["building_height"] = float(np.percentile(z[build.numpy()], 90)) - base
    return out


@dataclasses.dataclass
class PairOutcome:
    """One pair at one seed: the two statistics and whether the positive prompt scored higher."""

    attribute: str
    kind: str
    positive: str
    negative: str
    seed: int
    statistic: str
    positive_value: float
    negative_value: float

    @property
    def success(self) -> bool:
        return self.positive_value > self.negative_value

    @property
    def tie(self) -> bool:
        return self.positive_value == self.negative_value

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "success": self.success, "tie": self.tie}


def outcome(pair: PromptPair, seed: int, stats_positive: dict[str, float],
            stats_negative: dict[str, float]) -> PairOutcome:
    """Score one pair from the `level_statistics` of its two scenes."""
    stat = ATTRIBUTES[pair.attribute].statistic
    return PairOutcome(pair.attribute, pair.kind, pair.positive, pair.negative, int(seed), stat,
                       float(stats_positive[stat]), float(stats_negative[stat]))


def _rate(items: list[PairOutcome]) -> dict[str, Any]:
    n = len(items)
    wins = sum(o.success for o in items)
    return {"success_rate": wins / n if n else float("nan"), "successes": wins, "trials": n,
            "ties": sum(o.tie for o in items),
            "mean_delta": sum(o.positive_value - o.negative_value for o in items) / n if n else float("nan")}


def summarize(outcomes: list[PairOutcome]) -> dict[str, Any]:
    """Success rates overall, per kind, per attribute and per (attribute, kind).

    Returns:
        ``{"overall": {...}, "by_kind": {kind: {...}}, "by_attribute": {attr: {...}},
        "by_attribute_kind": {"attr/kind": {...}}}``, each ``{...}`` holding ``success_rate``,
        ``successes``, ``trials``, ``ties`` and ``mean_delta`` (positive minus negative statistic).
    """
    groups: dict[str, dict[str, list[PairOutcome]]] = {
        "by_kind": defaultdict(list), "by_attribute": defaultdict(list), "by_attribute_kind": defaultdict(list)}
    for o in outcomes:
        groups["by_kind"][o.kind].append(o)
        groups["by_attribute"][o.attribute].append(o)
        groups["by_attribute_kind"][f"{o.attribute}/{o.kind}"].append(o)
    out: dict[str, Any] = {"overall": _rate(outcomes)}
    for name, g in groups.items():
        out[name] = {k: _rate(v) for k, v in sorted(g.items())}
    return out


def caption_corpus(num: int = 20000, seed: int = 0) -> list[str]:
    """Captions written by the training caption generator for random scene facts (all styles).

    Used to check that paraphrase prompts are not training captions (see `shared_ngrams`).
    """
    import numpy as np

    from xcube_core.data.procedural.captions import scene_caption
    from xcube_core.data.procedural.names import STYLES

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(num)):
        facts = {
            "style": str(rng.choice(STYLES)),
            "building_count": int(rng.choice([0, 1, 5, 12])),
            "mean_building_height": float(rng.uniform(3, 40)),
            "dominant_roof": str(rng.choice(["flat", "gabled", "hipped", "pyramid"])),
            "tree_count": int(rng.choice([0, 3, 12, 40])),
            "dominant_tree": str(rng.choice(["oak", "conifer", "poplar"])),
            "has_water": bool(rng.random() < 0.5),
            "water_kind": str(rng.choice(["pond", "river"])),
            "vehicle_count": int(rng.choice([0, 4, 20])),
        }
        out.append(scene_caption(facts, rng))
    return out


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.lower().replace(",", " ").split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def corpus_ngrams(corpus: Iterable[str], n: int = 4) -> set[tuple[str, ...]]:
    """All word n-grams of a caption corpus (lower-cased), for repeated `shared_ngrams` checks."""
    seen: set[tuple[str, ...]] = set()
    for c in corpus:
        seen |= _ngrams(c, n)
    return seen


def shared_ngrams(prompt: str, corpus: Iterable[str] | set[tuple[str, ...]], n: int = 4) -> set[tuple[str, ...]]:
    """Word n-grams of ``prompt`` that also occur in ``corpus`` (captions, or `corpus_ngrams` of them)."""
    grams = corpus if isinstance(corpus, set) else corpus_ngrams(corpus, n)
    return _ngrams(prompt, n) & grams
