"""Steering vectors: contrastive activation addition.

`steering_vector` is the mean difference of a site's activations between prompts that show a
property and prompts that do not (Rimsky et al. / Turner et al. style). Adding it, scaled, at
that site during a forward pass or generation steers the model; `scale_sweep` evaluates many
scales as one vmapped call.

Example:
    >>> from mlxinterp import load
    >>> model, tok = load("tinyworld")
    >>> v = steering_vector(model, ["The movie was wonderful", "The food was great"],
    ...                     ["The movie was terrible", "The food was awful"], "resid_post.1",
    ...                     tokenizer=tok)
    >>> v.shape
    (128,)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn

from .interventions import Intervention, add
from .text import as_batch, masked
from .transforms import capture, intervene

__all__ = ["steering_vector", "steer", "scale_sweep"]


def _site_acts(model, tokenizer, prompts, site) -> tuple[mx.array, mx.array]:
    batch = as_batch(tokenizer, prompts)
    if batch.mask.all().item():
        _, acts = capture(model, site)(batch.tokens)
    else:
        _, acts = capture(masked(model), site)(batch.tokens, batch.mask)
    return acts[site], batch.mask


def _reduce(acts: mx.array, mask: mx.array, positions) -> mx.array:
    if positions == "last":
        return acts[:, -1]
    if positions == "mean":
        w = mask.astype(acts.dtype)[..., None]
        return (acts * w).sum(axis=1) / w.sum(axis=1)
    if isinstance(positions, int):
        return acts[:, positions]
    raise ValueError(f"positions must be 'last', 'mean' or an int, not {positions!r}")


def steering_vector(
    model: nn.Module,
    positive: Sequence[str] | Any,
    negative: Sequence[str] | Any,
    site: str,
    *,
    tokenizer: Any = None,
    positions: Literal["last", "mean"] | int = "last",
) -> mx.array:
    """Mean over prompts of the activation at ``site`` on ``positive`` minus on ``negative``.

    ``positions``: the last token (default), the mean over each prompt's real tokens, or one
    position index. Prompts may be texts (with ``tokenizer``) or token arrays; ragged lists
    are left-padded and the padding is masked.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> pos, neg = mx.array([[1, 2, 3], [4, 5, 6]]), mx.array([[1, 2, 7]])
        >>> v = steering_vector(tiny_model("llama"), pos, neg, "resid_post.1", positions="mean")
        >>> v.shape
        (32,)
    """
    pa, pm = _site_acts(model, tokenizer, positive, site)
    na, nm = _site_acts(model, tokenizer, negative, site)
    if pa.ndim != 3:
        raise ValueError(f"{site} has shape {tuple(pa.shape)}; steer a [batch, pos, d] site")
    return _reduce(pa, pm, positions).mean(axis=0) - _reduce(na, nm, positions).mean(axis=0)


def steer(vector: mx.array, scale: float | mx.array = 1.0) -> Intervention:
    """``add(scale * vector)`` — restrict it with ``.at(positions=...)`` or
    `mlxinterp.generation.during`.

    Example:
        >>> import mlx.core as mx
        >>> steer(mx.ones(2), 4.0).at(positions=-1)(mx.zeros((1, 3, 2)))[0, :, 0].tolist()
        [0.0, 0.0, 4.0]
    """
    return add(vector * scale)


def scale_sweep(
    model: nn.Module,
    prompt: Any,
    site: str,
    vector: mx.array,
    scales: Sequence[float] | mx.array,
    *,
    tokenizer: Any = None,
    position: int = -1,
) -> mx.array:
    """Logits at ``position`` for every scale, ``[n_scales, batch, vocab]``, as one vmapped
    call of the steered model over the scales.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> model, toks = tiny_model("llama"), mx.array([[1, 2, 3]])
        >>> logits = scale_sweep(model, toks, "resid_post.0", mx.ones(32), [0.0, 1.0, 2.0])
        >>> logits.shape, bool(mx.allclose(logits[0], model(toks)[:, -1], atol=1e-5))
        ((3, 1, 64), True)
    """
    batch = as_batch(tokenizer, prompt)
    scales = mx.array(scales, dtype=mx.float32)
    fn = model if batch.mask.all().item() else masked(model)
    args = (batch.tokens,) if fn is model else (batch.tokens, batch.mask)

    def one(s):
        return intervene(fn, {site: add(vector * s)}, root=model)(*args)[:, position]

    return mx.vmap(one)(scales)
