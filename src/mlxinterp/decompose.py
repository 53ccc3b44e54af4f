"""Decompositions of the residual stream, and direct logit attribution.

The residual stream is a sum: the embedding (everything before block 0, ``resid_pre.0``)
plus what each attention and MLP adds (``attn_out.L``, ``mlp_out.L``). Attention output is
itself a sum over heads (``result.L`` summed over heads, plus the projection bias). Through
the final norm — linear once its scale is frozen at the value it takes on the full residual,
the usual convention — each piece has a *direct* effect on the logits: direct logit
attribution (DLA). The pieces and the bias terms add up exactly to the (pre-soft-cap) logit.

Example:
    >>> import mlx.core as mx
    >>> from mlxinterp.testing import tiny_model
    >>> model = tiny_model("llama")
    >>> toks = mx.array([[3, 4, 5, 6]])
    >>> d = decompose_resid(model, toks)
    >>> d.labels[:3]
    ['embed', 'attn_out.0', 'mlp_out.0']
    >>> bool(mx.allclose(d.values.sum(0), d.target, atol=1e-5))
    True
    >>> dla = direct_logit_attribution(model, toks, target=7)
    >>> bool(abs(float(dla.total()[0]) - float(model(toks)[0, -1, 7])) < 1e-4)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .anatomy import Anatomy, anatomy
from .sites import SiteError, module_paths
from .transforms import capture

__all__ = [
    "Components",
    "Attribution",
    "accumulated_resid",
    "decompose_resid",
    "direct_logit_attribution",
    "head_results",
]


@dataclass(frozen=True)
class Components:
    """Named pieces of a vector quantity: ``values[i]`` is piece ``labels[i]``.

    ``values`` has axes ``(component, batch, pos, d_model)``; ``target`` is the captured
    quantity they sum to (``values.sum(0) == target`` up to float rounding).
    """

    labels: list[str]
    values: mx.array
    target: mx.array
    axes: tuple[str, ...] = ("component", "batch", "pos", "d_model")

    def total(self) -> mx.array:
        """Sum over components."""
        return self.values.sum(axis=0)

    def to_numpy(self) -> np.ndarray:
        return np.array(self.values)

    def __getitem__(self, label: str) -> mx.array:
        return self.values[self.labels.index(label)]


@dataclass(frozen=True)
class Attribution:
    """Scalar contributions per component: ``values`` ``(component, batch)``, plus ``bias``
    (the part no component owns: norm and unembedding biases) so that
    ``total() = values.sum(0) + bias`` is the attributed logit (difference)."""

    labels: list[str]
    values: mx.array
    bias: mx.array
    what: str

    def total(self) -> mx.array:
        return self.values.sum(axis=0) + self.bias

    def to_numpy(self) -> np.ndarray:
        return np.array(self.values)

    def top(self, k: int = 5, batch: int = 0) -> list[tuple[str, float]]:
        """The ``k`` components with the largest absolute contribution."""
        v = np.array(self.values[:, batch])
        order = np.argsort(-np.abs(v))[:k]
        return [(self.labels[i], float(v[i])) for i in order]

    def plot(self, batch: int = 0, ax: Any = None):
        """Bar chart of the contributions (needs matplotlib: ``pip install mlxinterp[plot]``)."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(max(4, 0.35 * len(self.labels)), 3))[1]
        v = np.array(self.values[:, batch])
        ax.bar(range(len(v)), v, color=["tab:red" if x < 0 else "tab:blue" for x in v])
        ax.set_xticks(range(len(v)), self.labels, rotation=90, fontsize=7)
        ax.set_ylabel(self.what)
        ax.axhline(0, color="black", lw=0.5)
        ax.figure.tight_layout()
        return ax


def _component_sites(an: Anatomy, upto: int) -> list[str]:
    sites = ["resid_pre.0"]
    for layer in range(upto + 1):
        sites += [f"attn_out.{layer}", f"mlp_out.{layer}"]
    return sites


def decompose_resid(model: nn.Module, tokens: mx.array, *, layer: int = -1) -> Components:
    """``resid_post.layer`` as embed + each ``attn_out`` + each ``mlp_out`` up to ``layer``.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> d = decompose_resid(tiny_model("gpt2"), mx.array([[1, 2, 3]]), layer=0)
        >>> d.labels, d.values.shape, bool(mx.allclose(d.total(), d.target, atol=1e-5))
        (['embed', 'attn_out.0', 'mlp_out.0'], (3, 1, 3, 32), True)
    """
    an = anatomy(model)
    layer = layer % an.n_layers
    sites = _component_sites(an, layer)
    _, acts = capture(model, sites + [f"resid_post.{layer}"])(tokens)
    labels = ["embed"] + sites[1:]
    values = mx.stack([acts[s] for s in sites])
    return Components(labels, values, acts[f"resid_post.{layer}"])


def head_results(model: nn.Module, tokens: mx.array, layer: int) -> Components:
    """The output projection of attention at ``layer`` as per-head results + bias.

    ``target`` is the projection's output (``attn_out`` on pre-norm architectures; on
    post-norm ones, the input of the post-attention norm).

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> h = head_results(tiny_model("gpt2"), mx.array([[1, 2, 3]]), layer=1)
        >>> h.labels, bool(mx.allclose(h.total(), h.target, atol=1e-5))
        (['L1H0', 'L1H1', 'L1H2', 'L1H3', 'L1 bias'], True)
    """
    an = anatomy(model)
    o_proj = an.path(layer, an.spec.o_proj)
    _, acts = capture(model, [f"result.{layer}", o_proj])(tokens)
    res = acts[f"result.{layer}"]  # batch, pos, head, d_model
    values = mx.moveaxis(res, -2, 0)
    labels = [f"L{layer}H{h}" for h in range(an.n_heads)]
    proj = module_paths(model)[o_proj]
    if "bias" in proj:
        values = mx.concatenate([values, mx.broadcast_to(proj["bias"], values.shape[1:])[None]])
        labels.append(f"L{layer} bias")
    return Components(labels, values, acts[o_proj])


def accumulated_resid(
    model: nn.Module, tokens: mx.array, *, apply_final_norm: bool = True
) -> Components:
    """The residual stream before each block and after the last: ``(n_layers + 1, ...)``.

    With ``apply_final_norm`` each entry goes through the final norm (the input of a logit
    lens). ``target`` is the final-normed ``resid_final``.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> acc = accumulated_resid(tiny_model("llama"), mx.array([[1, 2, 3]]))
        >>> acc.labels, acc.values.shape, bool(mx.allclose(acc.values[-1], acc.target))
        (['resid_pre.0', 'resid_pre.1', 'resid_pre.2', 'resid_final'], (4, 1, 3, 32), True)
    """
    an = anatomy(model)
    sites = [f"resid_pre.{i}" for i in range(an.n_layers)] + ["resid_final"]
    _, acts = capture(model, sites)(tokens)
    values = mx.stack([acts[s] for s in sites])
    if apply_final_norm:
        values = an.final_norm(values)
    return Components(sites, values, an.final_norm(acts["resid_final"]))


def _norm_linear(an: Anatomy, pieces: mx.array, total: mx.array) -> tuple[mx.array, mx.array]:
    """Final norm linearised at ``total``: (pieces mapped, bias term), exact in sum."""
    norm = module_paths(an.model)[an.spec.final_norm]
    eps = getattr(norm, "eps", 1e-5)
    if isinstance(norm, nn.LayerNorm):

        def scale(x):
            return mx.sqrt(x.var(axis=-1, keepdims=True) + eps)

        bias = norm["bias"] if "bias" in norm else mx.zeros((total.shape[-1],), total.dtype)
    else:  # RMS-type norms (any per-channel gain, e.g. gemma's 1 + w)

        def scale(x):
            return mx.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)

        bias = mx.zeros((total.shape[-1],), total.dtype)
    mapped = (norm(pieces) - bias) * scale(pieces) / scale(total)
    check = mapped.sum(axis=0) + bias
    if not mx.allclose(check, norm(total), rtol=1e-3, atol=1e-3).item():
        raise SiteError(
            f"cannot linearise the final norm ({type(norm).__name__}) of {an.arch}: it is "
            "neither an RMS- nor a LayerNorm-type normalisation"
        )
    return mapped, bias


def direct_logit_attribution(
    model: nn.Module,
    tokens: mx.array,
    target: int | tuple[int, int] | mx.array,
    *,
    position: int = -1,
    heads: bool = False,
) -> Attribution:
    """Direct effect of each component on a logit, or a logit difference, at ``position``.

    ``target`` is a token id (or one per batch row), or a pair ``(a, b)`` for the difference
    ``logit[a] - logit[b]``. ``heads=True`` splits each layer's attention into heads (plus the
    projection bias; pre-norm architectures only). The result's ``total()`` equals the model's
    pre-soft-cap logit (difference) at that position.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> model, toks = tiny_model("llama"), mx.array([[3, 4, 5, 6]])
        >>> dla = direct_logit_attribution(model, toks, target=(5, 7), heads=True)
        >>> len(dla.labels), dla.labels[:3]
        (16, ['embed', 'L0H0', 'L0H1'])
        >>> logits = model(toks)[0, -1]
        >>> bool(abs(dla.total()[0] - (logits[5] - logits[7])) < 1e-4)
        True
    """
    an = anatomy(model)
    if heads and an.spec.attn_out != an.spec.attn:
        raise SiteError(
            f"per-head DLA needs attention added to the residual directly; {an.arch} applies a "
            "norm after attention (post-norm), so heads do not add up to attn_out"
        )
    sites = _component_sites(an, an.n_layers - 1)
    extra = [f"result.{i}" for i in range(an.n_layers)] if heads else []
    _, acts = capture(model, sites + extra + ["resid_final"])(tokens)
    labels, pieces = ["embed"], [acts["resid_pre.0"]]
    mods = module_paths(model)
    for layer in range(an.n_layers):
        if heads:
            res = acts[f"result.{layer}"]
            for h in range(an.n_heads):
                labels.append(f"L{layer}H{h}")
                pieces.append(res[..., h, :])
            proj = mods[an.path(layer, an.spec.o_proj)]
            if "bias" in proj:
                labels.append(f"L{layer} attn bias")
                pieces.append(mx.broadcast_to(proj["bias"], res[..., 0, :].shape))
        else:
            labels.append(f"attn_out.{layer}")
            pieces.append(acts[f"attn_out.{layer}"])
        labels.append(f"mlp_out.{layer}")
        pieces.append(acts[f"mlp_out.{layer}"])
    total = acts["resid_final"][:, position]
    stacked = mx.stack([p[:, position] for p in pieces])  # component, batch, d_model
    mapped, norm_bias = _norm_linear(an, stacked, total)

    def unembed_linear(y):
        cap_free = an.unembed(softcap=False, h=y)
        return cap_free - an.unembed(softcap=False, h=mx.zeros_like(y))

    batch = total.shape[0]
    if isinstance(target, tuple):
        a, b = target
        direction_what = f"logit[{a}] - logit[{b}]"

        def pick(logits):
            return logits[..., a] - logits[..., b]
    else:
        ids = mx.array(target).reshape(-1)
        ids = mx.broadcast_to(ids, (batch,))
        direction_what = f"logit[{target}]"

        def pick(logits):
            return mx.take_along_axis(
                logits, mx.broadcast_to(ids[:, None], (*logits.shape[:-1], 1)), axis=-1
            ).squeeze(-1)

    values = pick(unembed_linear(mapped))
    bias = pick(an.unembed(softcap=False, h=mx.broadcast_to(norm_bias, total.shape)))
    return Attribution(labels, values, bias, direction_what)
