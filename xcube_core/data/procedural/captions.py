"""Captions for procedural scenes, written from the measured scene facts with varied wording.

Each attribute (style, building height, trees, water, vehicles, roofs) has several synonymous
phrasings and the sentence frame varies too, so a text encoder sees paraphrases of the same facts.
The facts the words come from are kept in the metadata (``height_class``, ``tree_density``,
``has_water``, ...), so evaluation can test a caption's attributes explicitly.
"""

from __future__ import annotations

import numpy as np

STYLE_PHRASES = {
    "downtown": ("a dense downtown block", "a city centre block", "a busy business district",
                 "a downtown street grid", "an urban core"),
    "suburban": ("a quiet suburban street", "a residential neighbourhood", "a leafy suburb",
                 "a suburban street", "a small residential street"),
    "park": ("a city park", "a public park", "a green park", "a landscaped park", "a park"),
    "industrial": ("an industrial estate", "a warehouse district", "an industrial park",
                   "a factory yard", "an industrial zone"),
    "rural": ("a rural farmstead", "a countryside farm", "a farm in the countryside",
              "a rural homestead", "a farmyard"),
    "parking_lot": ("a large parking lot", "a car park", "an open-air parking area", "a parking lot",
                    "a supermarket car park"),
    "riverside": ("a riverside street", "a waterfront district", "a neighbourhood along a river",
                  "a quay by the river", "a street on the river bank"),
    "object": ("a single object", "one object", "an isolated object"),
}

_HEIGHT_ADJ = {
    "tall": ("tall", "high-rise", "towering", "soaring"),
    "mid": ("mid-rise", "medium-height", "three-storey", "mid-sized"),
    "low": ("low", "single-storey", "small", "low-rise"),
}
_TALL_SPECIAL = ("tall glass towers", "skyscrapers", "high-rise towers", "tall office towers")
# style -> (plural nouns, singular nouns) for its buildings
_BUILDING_NOUNS = {
    "downtown": (("towers", "office buildings", "blocks", "buildings"), ("tower", "office building")),
    "suburban": (("houses", "homes", "family houses", "detached houses"), ("house", "home")),
    "rural": (("farm buildings", "barns and farmhouses", "farmhouses"), ("farmhouse", "barn")),
    "park": (("pavilions", "park buildings"), ("pavilion", "gazebo", "kiosk")),
    "parking_lot": (("stores", "shop buildings"), ("store", "supermarket", "shop building")),
    "riverside": (("buildings", "apartment blocks", "houses", "waterfront buildings"), ("building",)),
}
_SHED_WORDS = ("low wide sheds", "large warehouses", "wide factory halls", "big flat-roofed sheds")
_ROOF_WORDS = {"gabled": ("gabled roofs", "pitched roofs", "steep gable roofs"),
               "hipped": ("hipped roofs", "hip roofs"), "pyramid": ("pointed pyramid roofs",),
               "flat": ("flat roofs",)}
_TREE_COUNT = {"few": ("few trees", "a handful of trees", "sparse trees", "only a few trees"),
               "some": ("scattered trees", "some trees", "trees here and there", "a number of trees"),
               "many": ("many trees", "lots of trees", "dense trees", "plenty of trees", "a thick cover of trees")}
_TREE_KIND = {"oak": ("oak trees", "broad oaks", "leafy oak trees"),
              "conifer": ("pine trees", "conifers", "fir trees"),
              "poplar": ("poplars", "tall poplar trees")}
_NO_TREES = ("no trees", "hardly any greenery", "no vegetation to speak of")
_WATER = {"pond": ("a pond", "a small lake", "a pool of water"), "river": ("a river", "a canal", "a stream")}
_VEHICLES = {"few": ("a few cars", "some parked cars", "a couple of cars"),
             "many": ("rows of parked cars", "many parked cars", "lots of cars", "a crowd of parked cars")}
_FRAMES = ("{place} with {items}", "{place}, with {items}", "an aerial view of {place} with {items}",
           "{place} featuring {items}", "{place} that has {items}", "a 3D scene of {place} with {items}")


def height_class(mean_height: float) -> str:
    """"low" (< 8 m), "mid" (8-15 m) or "tall" (>= 15 m)."""
    return "tall" if mean_height >= 15.0 else ("mid" if mean_height >= 8.0 else "low")


def tree_density(tree_count: int) -> str:
    """"none" (0), "few" (1-5), "some" (6-20) or "many" (> 20)."""
    return "none" if tree_count == 0 else ("few" if tree_count <= 5 else ("some" if tree_count <= 20 else "many"))


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _building_phrase(facts: dict, rng: np.random.Generator) -> str:
    style, height = facts["style"], height_class(facts["mean_building_height"])
    if style == "industrial":
        return _pick(rng, _SHED_WORDS)
    if style == "downtown" and height == "tall" and rng.random() < 0.4:
        words = _pick(rng, _TALL_SPECIAL)
    else:
        plural, singular = _BUILDING_NOUNS[style]
        one = facts["building_count"] == 1
        noun = _pick(rng, singular if one else plural)
        words = f"{_pick(rng, _HEIGHT_ADJ[height])} {noun}"
        words = _article(words) if one else words
    roof = facts.get("dominant_roof")
    if roof in ("gabled", "hipped") and rng.random() < 0.6:
        words = f"{words} with {_pick(rng, _ROOF_WORDS[roof])}"
    return words


def scene_caption(facts: dict, rng: np.random.Generator) -> str:
    """A caption for a scene from its facts.

    Args:
        facts: the scene metadata: ``style``, ``building_count``, ``mean_building_height``,
            ``dominant_roof``, ``tree_count``, ``dominant_tree``, ``has_water``, ``water_kind``,
            ``vehicle_count``.
        rng: the caption's own generator (wording only).
    """
    style = facts["style"]
    items: list[str] = []
    if facts["building_count"] > 0:
        items.append(_building_phrase(facts, rng))
    density = tree_density(facts["tree_count"])
    if density == "none":
        if rng.random() < 0.5:
            items.append(_pick(rng, _NO_TREES))
    elif rng.random() < 0.5 and facts.get("dominant_tree") in _TREE_KIND:
        kind = _pick(rng, _TREE_KIND[facts["dominant_tree"]])
        items.append(kind if density != "few" else f"a few {kind}")
    else:
        items.append(_pick(rng, _TREE_COUNT[density]))
    if facts["has_water"]:
        items.append(_pick(rng, _WATER[facts.get("water_kind", "pond")]))
    if facts["vehicle_count"] > 0 and (style == "parking_lot" or rng.random() < 0.5):
        items.append(_pick(rng, _VEHICLES["many" if facts["vehicle_count"] > 10 else "few"]))
    if not items:
        items.append("open ground")
    if len(items) > 2 and rng.random() < 0.5:  # vary the order of the minor items
        rest = items[1:]
        rng.shuffle(rest)
        items = items[:1] + rest
    frame = _pick(rng, _FRAMES)
    return frame.format(place=_pick(rng, STYLE_PHRASES[style]), items=_join(items))



def recaption(caption: str, metadata: dict | None, variant: int) -> str:
    """Caption number ``variant`` of the same procedural scene, written from the facts in its metadata.

    Caption augmentation for training: a stored scene has one caption, so most scenes never say
    "many trees" although their facts do; other wordings of the same facts let the text encoder see
    every attribute of every scene. A variant is deterministic per (scene seed, variant), so a
    training run draws from a small fixed pool per scene whose text embeddings stay cached.
    Samples that are not procedural scenes keep ``caption``.
    """
    if not metadata or metadata.get("kind") != "procedural_scene":
        return caption
    try:
        return scene_caption(metadata, np.random.default_rng([int(metadata.get("seed", 0)), 11, int(variant)]))
    except (KeyError, TypeError):  # metadata from an older writer without every fact
        return caption

_OBJECT_WORDS = {
    "house": ("a small house", "a cottage", "a little house", "a family home"),
    "tower": ("a tall tower", "a skyscraper", "a high-rise building", "an office tower"),
    "tree": ("a tree", "a single tree", "a lone tree"),
    "car": ("a car", "a small car", "a parked car"),
    "truck": ("a truck", "a lorry", "a delivery truck"),
    "lamp": ("a street lamp", "a lamp post", "a street light"),
}


def object_caption(facts: dict, rng: np.random.Generator) -> str:
    """A caption for a single object from ``facts['kind']`` (and roof / tree kind when known)."""
    words = _pick(rng, _OBJECT_WORDS[facts["kind"]])
    if facts.get("roof") in _ROOF_WORDS and facts["kind"] in ("house", "tower") and rng.random() < 0.7:
        words = f"{words} with {_article(_pick(rng, _ROOF_WORDS[facts['roof']])[:-1])}"
    if facts.get("tree_kind") in _TREE_KIND and rng.random() < 0.7:
        words = _article(_pick(rng, _TREE_KIND[facts["tree_kind"]])[:-1])
    return _pick(rng, ("{w}", "a 3D model of {w}", "{w}, isolated", "a voxel model of {w}")).format(w=words)


def _article(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase
