"""Standard site names: one vocabulary for every architecture.

Usable anywhere a site is accepted (``capture(model, ["resid_post.*", "pattern.3"])``).
Each name resolves through the model's `mlxinterp.anatomy.Anatomy` to a real site, plus a
*view* for per-head values; captured values are keyed by the name as written.

==================  ===============================  ================================
name                value                            axes
==================  ===============================  ================================
``embed``           token embedding output           batch, pos, d_model
``resid_pre.L``     input of block L                 batch, pos, d_model
``resid_mid.L``     after attention, before the MLP  batch, pos, d_model
``resid_post.L``    output of block L                batch, pos, d_model
``attn_out.L``      what attention adds              batch, pos, d_model
``mlp_out.L``       what the MLP adds                batch, pos, d_model
``mlp_hidden.L``    MLP activations (post-act)       batch, pos, d_mlp
``q.L k.L v.L``     per head, after rotary           batch, pos, head, d_head
``z.L``             o_proj input split into heads    batch, pos, head, d_head
``result.L``        per-head output of o_proj        batch, pos, head, d_model
``scores.L``        pre-softmax, masked              batch, head, pos, key_pos
``pattern.L``       attention probabilities          batch, head, pos, key_pos
``resid_final``     input of the final norm          batch, pos, d_model
``logits``          the model's output               batch, pos, d_vocab
==================  ===============================  ================================

``L`` may be a number (negative counts from the end), ``*``, or a class ``[0-3]`` /
``[1,5]``. A single site is keyed as written (``"resid_pre.-1"``); a pattern's matches are
keyed per layer in the vocabulary used (``"resid_post.0"``, ``"blocks.0.hook_resid_post"``).
TransformerLens names work too: ``blocks.L.hook_resid_pre``, ``blocks.L.hook_resid_mid``,
``blocks.L.hook_resid_post``, ``blocks.L.hook_attn_out``, ``blocks.L.hook_mlp_out``,
``blocks.L.mlp.hook_post``,
``blocks.L.attn.hook_{q,k,v,z,result,attn_scores,pattern}``, ``hook_embed``.

Example:
    >>> import mlx.core as mx
    >>> from mlxinterp import capture
    >>> from mlxinterp.testing import tiny_model
    >>> model = tiny_model("llama")
    >>> _, acts = capture(model, ["resid_post.*", "pattern.0", "z.1"])(mx.array([[1, 2, 3]]))
    >>> {k: v.shape for k, v in acts.items()}["pattern.0"], acts["z.1"].shape
    ((1, 4, 3, 3), (1, 3, 4, 8))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .sites import Site, SiteError, _segment_matches, module_paths

__all__ = ["STANDARD_NAMES", "expand_standard", "is_standard_name"]

LAYERED = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "mlp_hidden",
    "q",
    "k",
    "v",
    "z",
    "result",
    "scores",
    "pattern",
)
GLOBAL = ("embed", "resid_final", "logits")
STANDARD_NAMES = LAYERED + GLOBAL

_TL = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "mlp.hook_post": "mlp_hidden",
    "attn.hook_q": "q",
    "attn.hook_k": "k",
    "attn.hook_v": "v",
    "attn.hook_z": "z",
    "attn.hook_result": "result",
    "attn.hook_attn_scores": "scores",
    "attn.hook_pattern": "pattern",
}
_TL_RE = re.compile(r"^blocks\.([^.]+)\.(" + "|".join(re.escape(k) for k in _TL) + r")$")
_STD_RE = re.compile(r"^(" + "|".join(LAYERED) + r")\.([^.:]+)$")

RESID = ("batch", "pos", "d_model")
HEADS = ("batch", "pos", "head", "d_head")
ATTN = ("batch", "head", "pos", "key_pos")


@dataclass(frozen=True)
class SplitHeads:
    """View ``[..., pos, heads * d]`` as ``[..., pos, heads, d]``."""

    n_heads: int

    def fwd(self, x: mx.array) -> mx.array:
        return x.reshape(*x.shape[:-1], self.n_heads, -1)

    def back(self, y: mx.array, x: mx.array) -> mx.array:
        return y.reshape(x.shape)


@dataclass(frozen=True)
class HeadsFirstToPosFirst:
    """View ``[..., head, pos, d]`` (the attention kernel's layout) as ``[..., pos, head, d]``."""

    def fwd(self, x: mx.array) -> mx.array:
        return x.swapaxes(-3, -2)

    def back(self, y: mx.array, x: mx.array) -> mx.array:
        return y.swapaxes(-3, -2)


def is_standard_name(spec: str) -> bool:
    """True when ``spec`` is a standard or TransformerLens name (or a pattern of one).

    Example:
        >>> is_standard_name("resid_post.*"), is_standard_name("blocks.0.attn.hook_pattern")
        (True, True)
        >>> is_standard_name("model.layers.0.mlp")
        False
    """
    return spec in GLOBAL or spec == "hook_embed" or bool(_STD_RE.match(spec) or _TL_RE.match(spec))


def _layer_matches(layer_spec: str, n_layers: int) -> list[int]:
    if layer_spec.lstrip("-").isdigit():
        i = int(layer_spec)
        if not -n_layers <= i < n_layers:
            raise SiteError(f"layer {i} out of range: the model has {n_layers} layers")
        return [i % n_layers]
    found = [i for i in range(n_layers) if _segment_matches(layer_spec, str(i))]
    if not found:
        raise SiteError(f"layer spec {layer_spec!r} matches none of layers 0..{n_layers - 1}")
    return found


def _real(an, name: str, layer: int | None) -> tuple[str, str, object, tuple]:
    """(path, port, view, axes) of standard ``name`` at ``layer`` on anatomy ``an``."""
    s = an.spec
    if name == "embed":
        return s.embed, "out", None, RESID
    if name == "resid_final":
        return s.final_norm, "in", None, RESID
    if name == "logits":
        return "", "out", None, ("batch", "pos", "d_vocab")
    block = an.block(layer)

    def rel(r: str, what: str) -> tuple[str, str]:
        if r is None:
            raise SiteError(f"{name} is not defined for {an.arch}: {s.note or what}")
        path, _, port = r.partition(":")
        return f"{block}.{path}", port or "out"

    if name == "resid_pre":
        return block, "in", None, RESID
    if name == "resid_post":
        return block, "out", None, RESID
    if name == "resid_mid":
        return (*rel(s.resid_mid, "no resid_mid"), None, RESID)
    if name == "attn_out":
        return (*rel(s.attn_out, ""), None, RESID)
    if name == "mlp_out":
        return (*rel(s.mlp_out, ""), None, RESID)
    if name == "mlp_hidden":
        return (*rel(s.mlp_hidden, "no single MLP hidden layer"), None, ("batch", "pos", "d_mlp"))
    if name == "z":
        return f"{block}.{s.o_proj}", "in", SplitHeads(an.n_heads), HEADS
    if name == "result":
        return (
            f"{block}.{s.o_proj}",
            f"result.{an.n_heads}",
            None,
            ("batch", "pos", "head", "d_model"),
        )
    if name in ("q", "k", "v"):
        return f"{block}.{s.attn}", name, HeadsFirstToPosFirst(), HEADS
    if name in ("scores", "pattern"):
        return f"{block}.{s.attn}", name, None, ATTN
    raise SiteError(f"unknown standard name {name!r}")  # pragma: no cover


def expand_standard(root: nn.Module, spec: str) -> list[tuple[Site, nn.Module]] | None:
    """Resolve a standard / TransformerLens name on ``root``; None if ``spec`` is not one.

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("gpt2")
        >>> [(str(s), s.path, s.port) for s, _ in expand_standard(model, "resid_mid.[0-1]")]
        [('resid_mid.0', 'model.h.0.ln_2', 'in'), ('resid_mid.1', 'model.h.1.ln_2', 'in')]
        >>> expand_standard(model, "model.h.0") is None
        True
    """
    written = spec
    if spec == "hook_embed":
        spec = "embed"
    tl = _TL_RE.match(spec)
    if tl:
        spec = f"{_TL[tl.group(2)]}.{tl.group(1)}"
    if spec in GLOBAL:
        name, layers = spec, [None]
    else:
        m = _STD_RE.match(spec)
        if not m:
            return None
        name = m.group(1)
        layers = None
    from .anatomy import anatomy

    an = anatomy(root)
    if layers is None:
        layers = _layer_matches(spec.split(".", 1)[1], an.n_layers)
    mods = module_paths(root)
    out = []
    for layer in layers:
        path, port, view, axes = _real(an, name, layer)
        if layer is None or len(layers) == 1 and spec.split(".", 1)[1].lstrip("-").isdigit():
            alias = written  # one site, named as the user wrote it
        elif tl:
            alias = f"blocks.{layer}.{tl.group(2)}"
        else:
            alias = f"{name}.{layer}"
        if path not in mods:
            raise SiteError(f"{alias} resolves to {path!r}, which {an.arch} does not have")
        site = Site(path, port, alias=alias, view=view, axes=axes)
        from .sites import _check_port

        _check_port(site, mods[path])
        out.append((site, mods[path]))
    return out
