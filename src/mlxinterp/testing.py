"""Tiny random-init models of many mlx-lm architectures, for tests (yours and ours).

No model can be downloaded in CI, and interpretability code has to be checked on every
architecture it claims to support. This module builds a *real* mlx-lm model — through
mlx-lm's own class resolver, so the module tree, parameter names and forward pass are exactly
those of the hub checkpoints — from a small config dict, with deterministic random weights.

Example:
    >>> from mlxinterp.testing import tiny_model, FIXTURE_ARCHS
    >>> model = tiny_model("llama")
    >>> import mlx.core as mx
    >>> model(mx.array([[1, 2, 3]])).shape
    (1, 3, 64)
    >>> "gpt2" in FIXTURE_ARCHS
    True

`save_tiny_model(arch, folder)` writes the same model as a local folder in the hub layout
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) that
``mlx_lm.load(folder)`` reads unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

__all__ = [
    "FIXTURE_ARCHS",
    "GPT2_SMALL_CONFIG",
    "fixture_config",
    "tiny_model",
    "save_tiny_model",
    "word_tokenizer_files",
]

VOCAB = 64

# Shared by the llama-like family; each entry below overrides what it must.
_LLAMA_LIKE: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB,
    "max_position_embeddings": 128,
}

_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**_LLAMA_LIKE, "model_type": "llama", "tie_word_embeddings": False},
    "mistral": {**_LLAMA_LIKE, "model_type": "mistral", "tie_word_embeddings": False},
    "qwen2": {**_LLAMA_LIKE, "model_type": "qwen2", "tie_word_embeddings": True},
    "qwen3": {
        **_LLAMA_LIKE,
        "model_type": "qwen3",
        "head_dim": 8,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
    "gemma": {**_LLAMA_LIKE, "model_type": "gemma", "head_dim": 8, "num_key_value_heads": 1},
    "gemma2": {
        **_LLAMA_LIKE,
        "model_type": "gemma2",
        "head_dim": 8,
        "query_pre_attn_scalar": 8,
    },
    "gemma3_text": {
        **_LLAMA_LIKE,
        "model_type": "gemma3_text",
        "head_dim": 8,
        "query_pre_attn_scalar": 8,
        "sliding_window": 4,
        "sliding_window_pattern": 2,
    },
    "phi3": {**_LLAMA_LIKE, "model_type": "phi3", "num_key_value_heads": 4},
    "gpt2": {
        "model_type": "gpt2",
        "n_ctx": 128,
        "n_embd": 32,
        "n_head": 4,
        "n_layer": 3,
        "n_positions": 128,
        "layer_norm_epsilon": 1e-5,
        "vocab_size": VOCAB,
    },
    "gpt_neox": {
        "model_type": "gpt_neox",
        "max_position_embeddings": 128,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "layer_norm_eps": 1e-5,
        "vocab_size": VOCAB,
        "rotary_emb_base": 10000,
        "rotary_pct": 0.5,
        "use_parallel_residual": True,
    },
    "olmo2": {**_LLAMA_LIKE, "model_type": "olmo2", "tie_word_embeddings": False},
    "starcoder2": {
        "model_type": "starcoder2",
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "intermediate_size": 48,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "tie_word_embeddings": True,
    },
    "mixtral": {
        **_LLAMA_LIKE,
        "model_type": "mixtral",
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "tie_word_embeddings": False,
    },
    "qwen2_moe": {
        **_LLAMA_LIKE,
        "model_type": "qwen2_moe",
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "tie_word_embeddings": False,
    },
}

FIXTURE_ARCHS: tuple[str, ...] = tuple(_CONFIGS)

GPT2_SMALL_CONFIG: dict[str, Any] = {
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "layer_norm_epsilon": 1e-5,
    "vocab_size": 50257,
}
"""GPT-2-small's shape (124M parameters), for benchmarks: ``tiny_model(config=...)``."""
"""Architectures `tiny_model` knows how to build (mlx-lm ``model_type`` names)."""


def fixture_config(arch: str, **overrides: Any) -> dict[str, Any]:
    """The config dict `tiny_model(arch)` uses, with ``overrides`` applied.

    Example:
        >>> fixture_config("gpt2", n_layer=1)["n_layer"]
        1
    """
    if arch not in _CONFIGS:
        raise ValueError(
            f"no fixture for architecture {arch!r}; known: {', '.join(FIXTURE_ARCHS)}. "
            "For another mlx-lm architecture pass a full config dict to tiny_model(config=...)."
        )
    return {**copy.deepcopy(_CONFIGS[arch]), **overrides}


def _randomize(model: nn.Module, seed: int) -> None:
    """Give every parameter deterministic random values independent of MLX's global PRNG.

    Matrices get N(0, 1/fan_in), embeddings N(0, 1), biases N(0, 0.1), and norm scales their
    default plus N(0, 0.1) so that no norm is a silent identity.
    """
    key = mx.random.key(seed)
    params = tree_flatten(model.parameters())
    keys = mx.random.split(key, len(params))
    new = []
    for (name, p), k in zip(params, keys):
        if not mx.issubdtype(p.dtype, mx.floating):
            new.append((name, p))
            continue
        if p.ndim >= 2:
            fan_in = p.shape[-1]
            is_embedding = any(s in name for s in ("embed", "wte", "wpe"))
            std = 1.0 if is_embedding else fan_in**-0.5
            new.append((name, mx.random.normal(p.shape, key=k) * std))
        elif name.endswith("bias"):  # default biases are random: replace them entirely
            new.append((name, 0.1 * mx.random.normal(p.shape, key=k)))
        else:  # norm scales: a deterministic default (ones, or zeros for offset norms)
            new.append((name, p + 0.1 * mx.random.normal(p.shape, key=k)))
    model.update(tree_unflatten(new))
    mx.eval(model.parameters())


def tiny_model(
    arch: str | None = None,
    *,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    dtype: mx.Dtype = mx.float32,
    **overrides: Any,
) -> nn.Module:
    """Build a random-init mlx-lm model of architecture ``arch`` (or from a full ``config``).

    The model class comes from mlx-lm's own resolver (``mlx_lm.utils._get_classes``), so its
    module paths and forward pass are those of the real architecture. Weights are seeded and
    deterministic; ``dtype=mx.float64`` gives a model suitable for finite-difference checks.

    Example:
        >>> m = tiny_model("gpt2", n_layer=2)
        >>> len(m.model.h)
        2
    """
    from mlx_lm.utils import _get_classes

    if config is None:
        if arch is None:
            raise ValueError("tiny_model needs an architecture name or config=")
        config = fixture_config(arch, **overrides)
    elif overrides:
        config = {**config, **overrides}
    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    _randomize(model, seed)
    if dtype != mx.float32:
        model.set_dtype(dtype)
    model.eval()
    return model


def word_tokenizer_files(
    words: list[str], folder: str | Path, *, add_bos: bool = False, punctuation: bool = False
) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` for a word-level tokenizer.

    ``words`` become ids in order after the specials ``<unk>`` (0), ``<s>`` (1), ``</s>`` (2).
    Text splits on whitespace (and, with ``punctuation=True``, punctuation becomes tokens of
    its own, rejoined on decoding: ``"store, John"`` round-trips). ``add_bos=True`` makes
    ``encode`` prepend ``<s>``. Uses the ``tokenizers`` library (a dependency of mlx-lm).

    Example:
        >>> import tempfile
        >>> from tokenizers import Tokenizer
        >>> folder = tempfile.mkdtemp()
        >>> word_tokenizer_files(["the", "cat"], folder, add_bos=True)
        >>> Tokenizer.from_file(f"{folder}/tokenizer.json").encode("the cat sat").ids
        [1, 3, 4, 0]
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    split = [pre_tokenizers.WhitespaceSplit()]
    if punctuation:
        split.append(pre_tokenizers.Punctuation("isolated"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(split)
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=punctuation)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
        )
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "unk_token": "<unk>",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "add_bos_token": add_bos,
                "clean_up_tokenization_spaces": punctuation,
                "model_max_length": 1_000_000,
            },
            indent=2,
        )
    )


def save_tiny_model(arch: str, folder: str | Path, *, seed: int = 0, **overrides: Any) -> Path:
    """Write ``tiny_model(arch)`` as a local mlx-lm model folder; returns the folder.

    The tokenizer is a whitespace word tokenizer over ``w0 w1 ...``. transformers 5 forces
    its own tokenizer class for some model types (qwen2: a byte-level BPE), which does not
    read a word-level ``tokenizer.json``: weights load, but text does not round-trip there.

    Example:
        >>> import tempfile, mlx_lm
        >>> path = save_tiny_model("llama", tempfile.mkdtemp())
        >>> model, tokenizer = mlx_lm.load(str(path))
        >>> tokenizer.decode(tokenizer.encode("w5 w6", add_special_tokens=False))
        'w5 w6'
    """
    from mlx_lm.utils import save_config, save_model

    folder = Path(folder)
    config = fixture_config(arch, **overrides)
    model = tiny_model(config=config, seed=seed)
    save_model(folder, model)
    save_config(config, folder / "config.json")
    n_words = config["vocab_size"] - 3
    word_tokenizer_files([f"w{i}" for i in range(n_words)], folder)
    return folder
