"""Prompt-control statistics, scoring, built-in pairs (paraphrases vs training captions), runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval_fakes import FakePipeline, fake_scene  # tests/eval/eval_fakes.py (conftest puts it on sys.path)
from xcube_core.errors import InvalidInputError
from xcube_core.eval.prompt_control import (
    ATTRIBUTES,
    BUILTIN_PAIRS,
    PromptPair,
    caption_corpus,
    corpus_ngrams,
    level_statistics,
    load_pairs,
    outcome,
    shared_ngrams,
    summarize,
)
from xcube_core.eval.runners import evaluate_prompts
from xcube_core.level import Level


def test_level_statistics_against_numpy():
    lvl = fake_scene("tall towers with trees by the water", seed=0)  # footprint 2 x 2, roof at k = 13
    sem = lvl.semantics.numpy()
    z = lvl.ijk[:, 2].numpy() * 1.0 + 0.5
    build = np.isin(sem, [2, 3])
    expected_h = np.percentile(z[build], 90) - np.median(z[np.isin(sem, [0, 1])])
    st = level_statistics(lvl)
    assert st["building_height"] == pytest.approx(expected_h)
    assert 10.0 <= st["building_height"] <= 12.0  # the roof sits 12 voxels above the ground surface
    n = len(sem)
    assert st["tree_fraction"] == pytest.approx(9 / n)
    assert st["water_fraction"] == pytest.approx(64 / n)
    assert st["building_fraction"] == pytest.approx(build.sum() / n)
    assert st["num_voxels"] == n


def test_level_statistics_without_semantics_or_buildings():
    ijk = torch.zeros(4, 3, dtype=torch.int32)
    assert level_statistics(Level(1, ijk, 1.0))["building_height"] == 0.0
    field = level_statistics(fake_scene("a field", 0))
    assert field["building_height"] == 0.0 and field["tree_fraction"] == 0.0
    empty = level_statistics(Level(1, ijk[:0], 1.0, semantics=torch.zeros(0, dtype=torch.int64)))
    assert empty["tree_fraction"] == 0.0


def test_shared_ngrams():
    corpus = ["a quiet suburban street with low houses", "a city park with a pond"]
    assert shared_ngrams("houses on a quiet suburban street", corpus, n=3) == {("a", "quiet", "suburban"),
                                                                           ("quiet", "suburban", "street")}
    assert shared_ngrams("a lagoon", corpus, n=2) == set()


def test_outcome_and_summary():
    pairs = [PromptPair("tall", "a", "b", "caption"), PromptPair("trees", "c", "d", "paraphrase")]
    hi, lo = {"building_height": 9.0, "tree_fraction": 0.2}, {"building_height": 3.0, "tree_fraction": 0.2}
    outs = [outcome(pairs[0], 0, hi, lo), outcome(pairs[0], 1, lo, hi), outcome(pairs[1], 0, hi, lo)]
    assert [o.success for o in outs] == [True, False, False]
    assert outs[2].tie
    s = summarize(outs)
    assert s["overall"]["success_rate"] == pytest.approx(1 / 3) and s["overall"]["ties"] == 1
    assert s["by_kind"]["caption"]["success_rate"] == 0.5
    assert s["by_attribute"]["trees"]["trials"] == 1
    assert s["by_attribute_kind"]["tall/caption"]["mean_delta"] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return caption_corpus(4000, seed=0)


def _words(text: str) -> set[str]:
    return set(text.lower().replace(",", " ").split())


def test_paraphrases_never_occur_in_training_captions(corpus):
    vocab = set().union(*(_words(c) for c in corpus))
    captions = set(corpus)
    grams = corpus_ngrams(corpus, 4)
    paraphrases = [p for p in BUILTIN_PAIRS if p.kind == "paraphrase"]
    assert {p.attribute for p in paraphrases} == set(ATTRIBUTES)
    for pair in paraphrases:
        for text in (pair.positive, pair.negative):
            assert text not in captions
            assert shared_ngrams(text, grams, n=4) == set(), text
            assert _words(text) - vocab, f"{text!r} uses only training-caption words"


def test_caption_pairs_use_the_training_vocabulary(corpus):
    vocab = set().union(*(_words(c) for c in corpus))
    captions = [p for p in BUILTIN_PAIRS if p.kind == "caption"]
    assert {p.attribute for p in captions} == set(ATTRIBUTES)
    for pair in captions:
        for text in (pair.positive, pair.negative):
            assert _words(text) <= vocab, f"{text!r}: {_words(text) - vocab} not in the training captions"


def test_load_pairs_filters_and_reads_json(tmp_path):
    assert all(p.attribute == "water" for p in load_pairs(attributes=["water"]))
    assert all(p.kind == "caption" for p in load_pairs(kinds=["caption"]))
    f = tmp_path / "pairs.json"
    f.write_text(json.dumps([{"attribute": "tall", "positive": "tall towers", "negative": "low houses"}]))
    (pair,) = load_pairs(str(f))
    assert pair == PromptPair("tall", "tall towers", "low houses", "paraphrase")
    f.write_text(json.dumps([{"attribute": "colour", "positive": "red", "negative": "blue"}]))
    with pytest.raises(InvalidInputError, match="unknown attribute"):
        load_pairs(str(f))
    f.write_text("{not json")
    with pytest.raises(InvalidInputError, match="JSON list"):
        load_pairs(str(f))
    with pytest.raises(InvalidInputError, match="no prompt pairs"):
        load_pairs(attributes=["water"], kinds=[])


def test_evaluate_prompts_on_fake_pipeline():
    pipe = FakePipeline()
    pairs = [
        PromptPair("tall", "tall towers", "low houses", "caption"),       # 12 vs 4 voxels high: success
        PromptPair("trees", "a field with trees", "a field", "caption"),  # trees vs none: success
        PromptPair("water", "a field", "a field with water", "paraphrase"),  # reversed: failure
        PromptPair("tall", "a field", "a meadow", "paraphrase"),          # both 0: tie, failure
    ]
    r = evaluate_prompts(pipe, pairs, seeds=[0, 1], steps=2, progress=False)
    s = r["summary"]
    assert s["overall"]["trials"] == 8 and s["overall"]["successes"] == 4 and s["overall"]["ties"] == 2
    assert s["by_kind"]["caption"]["success_rate"] == 1.0
    assert s["by_kind"]["paraphrase"]["success_rate"] == 0.0
    assert s["by_attribute"]["water"]["mean_delta"] < 0
    # Every (prompt, seed) is generated once even when pairs share a prompt ("a field").
    assert len(pipe.calls) == len(set(pipe.calls)) == 6 * 2 == r["scenes_generated"]


def test_evaluate_prompts_counts_failed_scenes_as_empty():
    pipe = FakePipeline(empty_prompts=("low houses",))
    r = evaluate_prompts(pipe, [PromptPair("tall", "tall towers", "low houses")], seeds=[0], progress=False)
    assert r["summary"]["overall"]["success_rate"] == 1.0
    assert len(r["failed"]) == 1 and "empty" in r["failed"][0]["error"]


@pytest.mark.parametrize("attribute, style, plus, minus", [
    ("tall", "downtown", {"building_height": 26.0}, {"building_height": 8.0}),
    ("trees", "suburban", {"tree_count": 30}, {"tree_count": 0}),
    ("water", "park", {"has_water": True}, {"has_water": False}),
    ("dense", "downtown", {"building_density": 1.0}, {"building_density": 0.0}),
])
def test_statistics_follow_procedural_scene_attributes(attribute, style, plus, minus):
    """On real procedural scenes (same seed, one parameter changed) each statistic moves the right way."""
    from xcube_core.data.procedural import SceneConfig, generate_scene

    cfg = SceneConfig(extent=(32.0, 32.0), height=32.0, voxel_size=0.5)
    pair = PromptPair(attribute, "with", "without")
    with_attr = generate_scene(3, cfg, num_levels=1, style=style, **plus).levels[-1]
    without = generate_scene(3, cfg, num_levels=1, style=style, **minus).levels[-1]
    o = outcome(pair, 3, level_statistics(with_attr), level_statistics(without))
    assert o.success, o
