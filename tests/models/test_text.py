"""Text encoders: MiniLM semantics (offline), shapes/masks, cache, open_clip random init, factory."""

from __future__ import annotations

import copy
import json
import socket
import threading

import pytest
import torch

from xcube_core.compat.torchvision_ops import ensure_torchvision_importable
from xcube_core.errors import ModelLoadError
from xcube_core.models.text import (
    ALIASES,
    HashTextEncoder,
    MiniLMTextEncoder,
    OpenCLIPTextEncoder,
    TextEmbedding,
    build_text_encoder,
)

TINY_CLIP = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}

# (anchor, paraphrase, unrelated): the paraphrase must rank above the unrelated prompt
TRIPLES = [
    (
        "a dense downtown block with tall glass towers",
        "a business district where skyscrapers tower over narrow streets",
        "a neighbourhood of single-storey bungalows",
    ),
    (
        "a quiet village with small stone cottages around a church",
        "a rural hamlet of little stone houses near a chapel",
        "a container port with cranes and stacked shipping boxes",
    ),
    (
        "a forest clearing with a wooden cabin",
        "a log hut in a glade surrounded by trees",
        "a multi-lane highway interchange with overpasses",
    ),
    (
        "a city park with a pond and walking paths",
        "green public gardens with a small lake and footpaths",
        "an industrial zone of warehouses and factories",
    ),
]


@pytest.fixture(scope="module")
def minilm():
    """One MiniLM load per module, with every outgoing connection recorded (there must be none)."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        encoder = MiniLMTextEncoder(cache_size=64)
        encoder.encode(["warm up"])
    assert attempts == [], f"MiniLM tried to reach the network: {attempts}"
    return encoder


@pytest.fixture(scope="module")
def tiny_clip():
    return OpenCLIPTextEncoder(text_cfg=TINY_CLIP, seed=0)


# ------------------------------------------------------------------ MiniLM (loaded once)
def test_minilm_paraphrases_rank_above_unrelated_prompts(minilm):
    emb = minilm.encode([p for triple in TRIPLES for p in triple])
    pooled = emb.pooled
    for i, (anchor, _, _) in enumerate(TRIPLES):
        a, para, other = pooled[3 * i], pooled[3 * i + 1], pooled[3 * i + 2]
        sim_para, sim_other = float(a @ para), float(a @ other)
        assert sim_para > sim_other + 0.1, f"{anchor!r}: paraphrase {sim_para:.3f} vs unrelated {sim_other:.3f}"


def test_minilm_shapes_masks_pooling_and_batch_independence(minilm):
    prompts = ["tall towers", "a long prompt about a harbour town with many small fishing boats", ""]
    emb = minilm.encode(prompts)
    b, t, d = emb.tokens.shape
    assert (b, d) == (3, 384) and minilm.dim == 384 and emb.pooled.shape == (3, 384)
    assert emb.tokens.dtype == torch.float32 and emb.mask.dtype == torch.bool
    lengths = emb.mask.sum(dim=1)
    assert int(lengths.max()) == t and int(lengths.min()) >= 2  # [CLS] ... [SEP]; "" still has 2 tokens
    for i in range(3):  # a valid prefix, zeros after it
        assert emb.mask[i, : lengths[i]].all() and not emb.mask[i, lengths[i] :].any()
        assert emb.tokens[i, lengths[i] :].abs().sum() == 0
    # pooled = L2-normalised mean of the valid tokens
    m = emb.mask.unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((emb.tokens * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(emb.pooled, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.pooled.norm(dim=-1), torch.ones(3))
    # each prompt alone (no cache) gives the same embedding as inside the padded batch
    minilm.clear_cache()
    alone = minilm.encode([prompts[0]])
    torch.testing.assert_close(alone.tokens[0], emb.tokens[0, : alone.tokens.shape[1]], atol=1e-4, rtol=0)
    torch.testing.assert_close(alone.pooled[0], emb.pooled[0], atol=1e-5, rtol=0)
    assert not emb.tokens.requires_grad and not any(p.requires_grad for p in minilm.parameters())


def test_minilm_cache_hits_and_config(minilm):
    minilm.clear_cache()
    before = minilm.cache_info()
    first = minilm.encode(["a harbour", "a harbour", "a castle"])
    again = minilm.encode(["a castle", "a harbour"])
    info = minilm.cache_info()
    assert info["misses"] - before["misses"] == 3 and info["hits"] - before["hits"] == 2
    torch.testing.assert_close(again.pooled, first.pooled[[2, 0]])
    cfg = minilm.config()
    assert ALIASES["minilm"] == cfg["name"]  # so {"name": "minilm"} builds this encoder too
    assert cfg["name"] == "minilm-l6-v2" and cfg["dim"] == 384 and json.loads(json.dumps(cfg)) == cfg
    torch.testing.assert_close(minilm.null(2).tokens, minilm.encode(["", ""]).tokens)


# ------------------------------------------------------------------ open_clip (random init)
def test_open_clip_random_init_shapes_and_masks(tiny_clip):
    emb = tiny_clip.encode(["", "a dense downtown block", "towers"])
    # SOT + EOT for ""; T runs through the longest prompt's EOT
    lengths = emb.mask.sum(dim=1).tolist()
    assert lengths[0] == 2 and lengths[2] == 3 and emb.tokens.shape == (3, max(lengths), 32)
    assert emb.pooled.shape == (3, 32) and tiny_clip.dim == 32 and tiny_clip.max_length == 77
    assert torch.isfinite(emb.tokens).all() and emb.tokens[0, 2:].abs().sum() == 0
    tiny_clip.clear_cache()  # causal tower: a prompt alone == the same prompt inside a batch
    alone = tiny_clip.encode(["towers"])
    torch.testing.assert_close(alone.tokens[0], emb.tokens[2, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone.pooled[0], emb.pooled[2], atol=1e-5, rtol=0)


def test_open_clip_seeded_init_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = OpenCLIPTextEncoder(text_cfg=TINY_CLIP, seed=3).encode(["glass towers"])
    b = OpenCLIPTextEncoder(text_cfg=TINY_CLIP, seed=3).encode(["glass towers"])
    c = OpenCLIPTextEncoder(text_cfg=TINY_CLIP, seed=4).encode(["glass towers"])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.tokens, b.tokens) and not torch.allclose(a.tokens, c.tokens)


def test_open_clip_loads_a_real_clip_checkpoint_and_matches_encode_text(tmp_path):
    ensure_torchvision_importable()
    import open_clip
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
        clip = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=TINY_CLIP).eval()
    path = tmp_path / "open_clip_model.safetensors"  # a full CLIP state dict: image tower, logit_scale, ...
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    loaded = OpenCLIPTextEncoder(text_cfg=TINY_CLIP, seed=99, weights_path=path)
    prompts = ["a harbour town", "tall glass towers at night", ""]
    with torch.no_grad():
        reference = clip.encode_text(open_clip.tokenize(prompts))  # CLIP's text feature = EOT projection
    torch.testing.assert_close(loaded.encode(prompts).pooled, reference, atol=1e-5, rtol=1e-5)
    rebuilt = build_text_encoder(json.loads(json.dumps(loaded.config())))
    torch.testing.assert_close(rebuilt.encode(prompts).tokens, loaded.encode(prompts).tokens)

    wrong = dict(TINY_CLIP, width=16, heads=2)
    with pytest.raises(ModelLoadError, match="does not fit"):
        OpenCLIPTextEncoder(text_cfg=wrong, weights_path=path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        OpenCLIPTextEncoder(text_cfg=TINY_CLIP, weights_path=tmp_path / "missing.safetensors")
    with pytest.raises(ModelLoadError, match="no model config"):
        OpenCLIPTextEncoder("not-a-clip")


# ------------------------------------------------------------------ hash encoder, cache, factory
def test_hash_encoder_is_deterministic_and_bag_of_words_like():
    enc = HashTextEncoder(dim=16, seed=1)
    emb = enc.encode(["Tall glass towers", "tall GLASS towers!", "a bungalow", ""])
    torch.testing.assert_close(emb.tokens[0], emb.tokens[1])  # same words, same tokens
    assert emb.mask.sum(dim=1).tolist() == [4, 4, 3, 1]  # [BOS] + words
    assert float(emb.pooled[0] @ emb.pooled[1]) == pytest.approx(1.0)
    again = HashTextEncoder(dim=16, seed=1).encode(["a bungalow"])
    torch.testing.assert_close(again.pooled[0], emb.pooled[2])


def test_lru_cache_evicts_oldest_and_to_clears_it():
    enc = HashTextEncoder(cache_size=2)
    enc.encode(["a", "b"])
    enc.encode(["a"])  # refreshes "a"; "b" is now the oldest
    enc.encode(["c"])  # evicts "b"
    assert list(enc._cache) == ["a", "c"]
    hits = enc.cache_info()["hits"]
    enc.encode(["a"])
    assert enc.cache_info()["hits"] == hits + 1
    enc.to("cpu")
    assert enc.cache_info()["size"] == 0
    clone = copy.deepcopy(enc)  # the lock and cached tensors are not copied
    torch.testing.assert_close(clone.encode(["a"]).tokens, enc.encode(["a"]).tokens)
    off = HashTextEncoder(cache_size=0)
    off.encode(["a", "a"])
    assert off.cache_info()["size"] == 0


def test_concurrent_encodes_agree():
    enc = HashTextEncoder(cache_size=8)
    prompts = [f"prompt {i % 12}" for i in range(48)]
    expected = HashTextEncoder(cache_size=0).encode(prompts).pooled
    results = [None] * 4

    def work(k):
        results[k] = enc.encode(prompts[k:] + prompts[:k]).pooled

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k, out in enumerate(results):
        torch.testing.assert_close(out, torch.cat([expected[k:], expected[:k]]))


def test_encode_validates_prompts_and_stays_frozen():
    enc = HashTextEncoder()
    with pytest.raises(TypeError, match="single str"):
        enc.encode("a prompt")
    with pytest.raises(ValueError):
        enc.encode([])
    with pytest.raises(TypeError):
        enc.encode(["ok", 3])
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_factory_round_trip_and_errors(tiny_clip):
    for enc in (HashTextEncoder(dim=8, vocab_size=64, seed=5), tiny_clip):
        cfg = json.loads(json.dumps(enc.config()))
        rebuilt = build_text_encoder(cfg)
        assert type(rebuilt) is type(enc) and rebuilt.config() == enc.config()
        prompts = ["a windmill on a hill", ""]
        torch.testing.assert_close(rebuilt.encode(prompts).tokens, enc.encode(prompts).tokens)
    assert isinstance(build_text_encoder({"name": "clip", "text_cfg": TINY_CLIP}), OpenCLIPTextEncoder)
    with pytest.raises(ModelLoadError, match="unknown text encoder"):
        build_text_encoder({"name": "bert-9000"})
    with pytest.raises(ModelLoadError, match="unknown keys"):
        build_text_encoder({"name": "hash", "colour": "red"})
    with pytest.raises(ModelLoadError, match="recorded with dim 99"):
        build_text_encoder(dict(tiny_clip.config(), dim=99))
    with pytest.raises(ModelLoadError, match="no config.json"):
        build_text_encoder({"name": "minilm-l6-v2", "model_dir": "/nonexistent"})
    with pytest.raises(ModelLoadError):
        build_text_encoder({"dim": 3})


def test_text_embedding_cat_pad_select():
    enc = HashTextEncoder(dim=4)
    a, b = enc.encode(["one two three"]), enc.null(2)
    both = TextEmbedding.cat([a, b])
    assert both.tokens.shape == (3, 4, 4) and both.mask.sum(dim=1).tolist() == [4, 1, 1]
    torch.testing.assert_close(both.select([1]).pooled, b.pooled[:1])
    assert both.pad_to(7).tokens.shape == (3, 7, 4) and not both.pad_to(7).mask[:, 4:].any()
    with pytest.raises(ValueError):
        both.pad_to(2)


def test_torchvision_shim_is_idempotent():
    ensure_torchvision_importable()
    ensure_torchvision_importable()
    import torchvision  # noqa: F401 - importable after the shim

    assert hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_encoders_move_to_cuda(tiny_clip):
    enc = HashTextEncoder().to("cuda")
    assert enc.encode(["a"]).tokens.device.type == "cuda"
    clip = OpenCLIPTextEncoder(text_cfg=TINY_CLIP, device="cuda")
    emb = clip.encode(["a harbour"])
    assert emb.tokens.device.type == "cuda"
    torch.testing.assert_close(emb.pooled.cpu(), tiny_clip.encode(["a harbour"]).pooled, atol=1e-4, rtol=1e-4)
