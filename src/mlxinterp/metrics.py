"""Metrics: scalar functions of a model's logits, for patching and attribution.

A metric is any callable ``m(logits) -> scalar array`` (``logits``: ``[batch, pos, vocab]``).
The builders here return a `Metric`: it reads one *position* (``m.position``) and applies
``m.fn`` to the logits there (``[batch, vocab]``), averaging over the batch. Knowing the
position lets the patching engine unembed only that position.

Example:
    >>> import mlx.core as mx
    >>> logits = mx.array([[[0.0, 1.0, 3.0]]])
    >>> float(logit_diff(2, 1)(logits))
    2.0
    >>> round(float(prob(2)(logits)), 4)
    0.8438
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

__all__ = ["Metric", "logit_diff", "prob", "logprob", "kl_to", "normalized"]


@dataclass(frozen=True)
class Metric:
    """``fn`` applied to the logits at ``position`` (``[batch, vocab]`` → scalar)."""

    fn: Callable[[mx.array], mx.array]
    name: str
    position: int = -1

    def __call__(self, logits: mx.array) -> mx.array:
        return self.fn(logits[..., self.position, :])


def _per_row(token, x: mx.array) -> mx.array:
    """``x[row, token[row]]`` for ``x`` ``[batch, vocab]`` (or ``[vocab]`` under vmap)."""
    t = mx.array(token).reshape(-1)
    if x.ndim == 1:
        return x[t[0]]
    return x[mx.arange(x.shape[0]), mx.broadcast_to(t, (x.shape[0],))]


def logit_diff(a: int, b: int, *, position: int = -1) -> Metric:
    """``logit[a] - logit[b]`` at ``position``, mean over the batch; ``a``/``b`` may be one id
    or one per batch row.

    Example:
        >>> import mlx.core as mx
        >>> logits = mx.array([[[5.0, 0.0, 0.0], [0.0, 1.0, 3.0]]])  # [batch, pos, vocab]
        >>> float(logit_diff(2, 0)(logits)), float(logit_diff(2, 0, position=0)(logits))
        (3.0, -5.0)
    """
    return Metric(
        lambda x: (_per_row(a, x) - _per_row(b, x)).mean(), f"logit[{a}] - logit[{b}]", position
    )


def _logp(x: mx.array) -> mx.array:
    return nn.log_softmax(x.astype(mx.float32), axis=-1)


def logprob(token: int, *, position: int = -1) -> Metric:
    """Log-probability of ``token`` at ``position`` (mean over the batch).

    Example:
        >>> import mlx.core as mx
        >>> m = logprob(0)
        >>> m.name, round(float(m(mx.zeros((1, 1, 2)))), 4)  # log(1/2)
        ('log p(0)', -0.6931)
    """
    return Metric(lambda x: _per_row(token, _logp(x)).mean(), f"log p({token})", position)


def prob(token: int, *, position: int = -1) -> Metric:
    """Probability of ``token`` at ``position`` (mean over the batch).

    Example:
        >>> import mlx.core as mx
        >>> float(prob(1)(mx.zeros((2, 3, 4))))  # uniform over 4 tokens
        0.25
    """
    return Metric(lambda x: mx.exp(_per_row(token, _logp(x))).mean(), f"p({token})", position)


def kl_to(reference_logits: mx.array, *, position: int = -1) -> Metric:
    """``KL(reference ‖ logits)`` at ``position``, mean over the batch (0 = same as the
    reference, typically the clean run).

    Example:
        >>> import mlx.core as mx
        >>> clean = mx.array([[[1.0, 2.0, 3.0]]])
        >>> m = kl_to(clean)
        >>> float(m(clean)), float(m(mx.zeros((1, 1, 3)))) > 0
        (0.0, True)
    """
    ref = _logp(reference_logits[..., position, :])

    def fn(x):
        return (mx.exp(ref) * (ref - _logp(x))).sum(axis=-1).mean()

    return Metric(fn, "KL(clean || patched)", position)


def normalized(metric: Callable, clean_value: float, corrupted_value: float) -> Callable:
    """``(m - corrupted) / (clean - corrupted)``: 0 = the corrupted run, 1 = the clean run.

    Example:
        >>> import mlx.core as mx
        >>> m = normalized(logit_diff(0, 1), clean_value=4.0, corrupted_value=0.0)
        >>> m.name, float(m(mx.array([[[3.0, 1.0]]])))
        ('normalised logit[0] - logit[1]', 0.5)
    """
    span = clean_value - corrupted_value
    if span == 0:
        raise ValueError("the metric is equal on the clean and corrupted runs: cannot normalise")
    name = f"normalised {getattr(metric, 'name', getattr(metric, '__name__', 'metric'))}"
    if isinstance(metric, Metric):
        return Metric(lambda x: (metric.fn(x) - corrupted_value) / span, name, metric.position)

    def fn(logits):
        return (metric(logits) - corrupted_value) / span

    fn.name = name  # type: ignore[attr-defined]
    return fn
