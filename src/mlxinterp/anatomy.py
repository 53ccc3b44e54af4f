"""Anatomy: the architecture facts of an mlx-lm model, declared per model file, never guessed.

Interpretability speaks of residual streams, heads and MLPs; model files name them
differently (``model.layers.3.self_attn.o_proj`` vs ``model.h.3.attn.c_proj``) and wire them
differently (pre-norm, post-norm, parallel attention + MLP). An `ArchSpec` says where each
part of a block is *and* which module's output is what the block adds to the residual
stream. `anatomy(model)` picks the spec by the block class's model file (``llama``,
``gemma2``, ...) and reads the sizes off the modules:

    >>> from mlxinterp.testing import tiny_model
    >>> a = anatomy(tiny_model("llama"))
    >>> a.arch, a.n_layers, a.d_model, a.n_heads, a.n_kv_heads, a.head_dim, a.d_vocab
    ('llama', 3, 32, 4, 2, 8, 64)

An unknown architecture raises `ArchitectureError` naming what could not be found and how to
declare it with `register_architecture`:

    register_architecture("my_model_file", ArchSpec(blocks="model.layers", ...))

Residual-stream identities by family (what `resid_mid`, `attn_out`, `mlp_out` mean):

- pre-norm (llama, mistral, qwen2/3, gemma, phi3, starcoder2, mixtral, qwen2_moe, gpt2):
  ``resid_mid = resid_pre + attn_out``, ``resid_post = resid_mid + mlp_out``;
- post-norm (gemma2, gemma3_text, olmo2): ``attn_out``/``mlp_out`` are the outputs of the
  post-attention / post-feed-forward norms — what is added to the residual — so the same
  identities hold; the per-head ``result`` then decomposes the *projection* output, before
  that norm;
- parallel (gpt_neox with ``use_parallel_residual``): there is no ``resid_mid``;
  ``resid_post = resid_pre + attn_out + mlp_out``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .sites import module_paths

__all__ = ["Anatomy", "ArchSpec", "ArchitectureError", "anatomy", "register_architecture"]


class ArchitectureError(LookupError):
    """The model's architecture is unknown or does not match its declared spec."""


@dataclass(frozen=True)
class ArchSpec:
    """Where things are in one architecture. Block-relative paths are below ``blocks.L``.

    ``unembed`` is a module path, or ``"tied"`` for the embedding's ``as_linear``;
    ``"lm_head|tied"`` picks ``lm_head`` when the model has one and does not tie weights.
    ``resid_mid`` / ``mlp_hidden`` may be None where they do not exist (parallel blocks,
    mixture-of-experts MLPs). ``pos_embed`` is an absolute position embedding called with
    position ids (gpt2's ``wpe``), None for rotary models. ``attn_out`` / ``mlp_out`` name
    the module whose output is added to the residual stream.
    """

    blocks: str
    embed: str
    final_norm: str
    unembed: str
    attn: str
    o_proj: str
    mlp: str
    attn_out: str
    mlp_out: str
    resid_mid: str | None
    mlp_hidden: str | None
    parallel: bool = False
    pos_embed: str | None = None
    note: str = ""


_LLAMA = ArchSpec(
    blocks="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head|tied",
    attn="self_attn",
    o_proj="self_attn.o_proj",
    mlp="mlp",
    attn_out="self_attn",
    mlp_out="mlp",
    resid_mid="post_attention_layernorm:in",
    mlp_hidden="mlp.down_proj:in",
)
_POST_NORM = replace(
    _LLAMA,
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
    resid_mid="pre_feedforward_layernorm:in",
    note="post-norm: attn_out/mlp_out are the post-attention/post-feed-forward norm outputs",
)
_NEOX = ArchSpec(
    blocks="model.h",
    embed="model.embed_in",
    final_norm="model.final_layer_norm",
    unembed="model.embed_out",
    attn="attention",
    o_proj="attention.dense",
    mlp="mlp",
    attn_out="attention",
    mlp_out="mlp",
    resid_mid=None,
    mlp_hidden="mlp.dense_4h_to_h:in",
    parallel=True,
    note="parallel attention and MLP: no resid_mid; resid_post = resid_pre + attn_out + mlp_out",
)

_SPECS: dict[str, ArchSpec] = {
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": replace(_LLAMA, unembed="tied"),
    "phi3": _LLAMA,
    "starcoder2": replace(_LLAMA, mlp_hidden="mlp.c_proj:in"),
    "mixtral": replace(
        _LLAMA,
        mlp="block_sparse_moe",
        mlp_out="block_sparse_moe",
        mlp_hidden=None,
        note="mixture of experts: no single mlp_hidden",
    ),
    "qwen2_moe": replace(_LLAMA, mlp_hidden=None, note="mixture of experts: no mlp_hidden"),
    "gemma2": replace(_POST_NORM, unembed="tied"),
    "gemma3_text": _POST_NORM,
    "olmo2": replace(
        _POST_NORM,
        resid_mid="mlp:in",
        note="post-norm without pre-norms: attn_out/mlp_out are the post-norm outputs",
    ),
    "gpt2": ArchSpec(
        blocks="model.h",
        embed="model.wte",
        final_norm="model.ln_f",
        unembed="tied",
        attn="attn",
        o_proj="attn.c_proj",
        mlp="mlp",
        attn_out="attn",
        mlp_out="mlp",
        resid_mid="ln_2:in",
        mlp_hidden="mlp.c_proj:in",
        pos_embed="model.wpe",
    ),
    "gpt_neox": _NEOX,
}


def register_architecture(model_file: str, spec: ArchSpec) -> None:
    """Declare the spec of the architecture whose block class lives in ``model_file``
    (the last part of its module name, e.g. ``"llama"`` for ``mlx_lm.models.llama``).

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> register_architecture("my_llama", anatomy(model).spec)
        >>> block = model.model.layers[0]  # pretend its class lives in my_pkg/my_llama.py:
        >>> block.__class__ = type("Block", (type(block),), {"__module__": "my_pkg.my_llama"})
        >>> anatomy(model).arch
        'my_llama'
    """
    _SPECS[model_file] = spec


def _first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        v = getattr(obj, n, None)
        if isinstance(v, int):
            return v
    return None


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Architecture facts of one model instance; see the module docstring."""

    model: nn.Module
    arch: str
    spec: ArchSpec
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_vocab: int

    def block(self, layer: int) -> str:
        """Path of block ``layer``."""
        return f"{self.spec.blocks}.{layer}"

    def path(self, layer: int, rel: str) -> str:
        """A block-relative spec (``"self_attn"``, ``"mlp.down_proj:in"``) made absolute."""
        return f"{self.block(layer)}.{rel}"

    @property
    def inner_path(self) -> str | None:
        """Path of the module that returns final-normed hidden states (``"model"``), when the
        unembedding is outside it; None otherwise (gpt_neox keeps it inside)."""
        inner = self.spec.blocks.rsplit(".", 1)[0] if "." in self.spec.blocks else None
        unembed = self.spec.unembed.split("|")[0]
        if inner is None or unembed.startswith(inner + "."):
            return None
        if self.spec.final_norm.rsplit(".", 1)[0] != inner:
            return None
        return inner

    def final_norm(self, h: mx.array) -> mx.array:
        """The model's final norm applied to residual-stream vectors."""
        return module_paths(self.model)[self.spec.final_norm](h)

    def unembed(self, h: mx.array, *, softcap: bool = True) -> mx.array:
        """Logits from final-normed vectors: ``lm_head``, tied ``as_linear`` (quantized too),
        and (unless ``softcap=False``) gemma2's final-logit soft-capping."""
        mods = module_paths(self.model)
        if self.spec.unembed == "tied" or (
            self.spec.unembed == "lm_head|tied" and self._tied(mods)
        ):
            logits = mods[self.spec.embed].as_linear(h)
        else:
            logits = mods[self.spec.unembed.split("|")[0]](h)
        cap = getattr(self.model, "final_logit_softcapping", None)
        if cap and softcap:
            logits = mx.tanh(logits / cap) * cap
        return logits

    def _tied(self, mods: dict) -> bool:
        if "lm_head" not in mods:
            return True
        args = getattr(self.model, "args", None)
        return bool(
            getattr(args, "tie_word_embeddings", getattr(self.model, "tie_word_embeddings", False))
        )

    def logits_from_resid(self, h: mx.array) -> mx.array:
        """``unembed(final_norm(h))``: the logit lens of a residual-stream vector."""
        return self.unembed(self.final_norm(h))


def anatomy(model: nn.Module) -> Anatomy:
    """Infer the `Anatomy` of an mlx-lm model (see the module docstring).

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> a = anatomy(tiny_model("gpt2"))
        >>> a.arch, a.n_layers, a.path(1, a.spec.o_proj), a.spec.resid_mid
        ('gpt2', 3, 'model.h.1.attn.c_proj', 'ln_2:in')
    """
    mods = module_paths(model)
    candidates = [p for p in ("model.layers.0", "model.h.0", "layers.0", "h.0") if p in mods]
    if not candidates:
        raise ArchitectureError(
            f"cannot find the transformer blocks of {type(model).__name__} (looked for "
            "model.layers.0, model.h.0): declare the architecture with "
            "mlxinterp.anatomy.register_architecture(MODEL_FILE, ArchSpec(...))"
        )
    block_cls = type(mods[candidates[0]])
    block_cls = block_cls.__dict__.get("__mlxinterp_original__", block_cls)
    arch = block_cls.__module__.rsplit(".", 1)[-1]
    spec = _SPECS.get(arch)
    if spec is None:
        raise ArchitectureError(
            f"unknown architecture {arch!r} (block class {block_cls.__module__}."
            f"{block_cls.__name__}); known: {', '.join(sorted(_SPECS))}. Declare it with "
            f"mlxinterp.anatomy.register_architecture({arch!r}, ArchSpec(blocks=..., embed=..., "
            "final_norm=..., unembed=..., attn=..., o_proj=..., mlp=..., attn_out=..., "
            "mlp_out=..., resid_mid=..., mlp_hidden=...))"
        )
    if arch == "gpt_neox" and not getattr(mods[candidates[0]], "use_parallel_residual", True):
        spec = replace(spec, parallel=False, resid_mid="post_attention_layernorm:in", note="")
    n_layers = len([p for p in mods if p.startswith(spec.blocks + ".") and p.count(".") == 2])
    missing = [
        rel
        for rel in (spec.embed, spec.final_norm)
        + tuple(f"{spec.blocks}.0.{r.split(':')[0]}" for r in (spec.attn, spec.o_proj, spec.mlp))
        if rel not in mods
    ]
    if missing:
        raise ArchitectureError(f"{arch}: the spec names modules that do not exist: {missing}")
    attn = mods[f"{spec.blocks}.0.{spec.attn}"]
    n_heads = _first_attr(attn, ("n_heads", "num_heads", "n_head", "num_attention_heads"))
    if n_heads is None:
        raise ArchitectureError(f"{arch}: cannot read the head count of {type(attn).__name__}")
    n_kv = _first_attr(attn, ("n_kv_heads", "num_key_value_heads", "num_kv_heads")) or n_heads
    d_model = mods[spec.final_norm]["weight"].shape[-1]
    o_proj = mods[f"{spec.blocks}.0.{spec.o_proj}"]
    in_dims = o_proj["weight"].shape[-1]
    if isinstance(o_proj, nn.QuantizedLinear):
        in_dims = in_dims * 32 // o_proj.bits
    head_dim = _first_attr(attn, ("head_dim",)) or in_dims // n_heads
    if head_dim * n_heads != in_dims:
        raise ArchitectureError(
            f"{arch}: {n_heads} heads x head_dim {head_dim} != o_proj input size {in_dims}"
        )
    embed = mods[spec.embed]
    d_vocab = embed["weight"].shape[0]
    if spec.unembed not in ("tied", "lm_head|tied") and spec.unembed in mods:
        d_vocab = mods[spec.unembed]["weight"].shape[0]
    return Anatomy(model, arch, spec, n_layers, d_model, n_heads, n_kv, head_dim, d_vocab)
