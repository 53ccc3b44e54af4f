"""Mixture-of-experts layers under ``mx.vmap``.

mlx-lm's expert layers (``SwitchLinear``, used by mixtral, qwen2_moe and other MoE models)
multiply with ``mx.gather_mm``, which has no vmap rule in MLX 0.32::

    ValueError: [Primitive::vmap] Not implemented for GatherMM.

`vmappable_experts` computes the same product as "gather the chosen experts' weights, then
matmul" while the block runs, in the current context only (other threads, and code outside
the block, keep the fused kernel). Results equal the fused kernel to float rounding; memory
grows with tokens × experts-per-token × the expert weight size, which is fine for analysis
batches, not for serving.

Example:
    >>> import mlx.core as mx
    >>> from mlxinterp import capture
    >>> from mlxinterp.testing import tiny_model
    >>> model = tiny_model("mixtral")
    >>> toks = mx.array([[[1, 2, 3]], [[4, 5, 6]]])
    >>> with vmappable_experts(model):
    ...     out, acts = mx.vmap(capture(model, "model.layers.0"))(toks)
    >>> out.shape
    (2, 1, 3, 64)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import mlx.core as mx
import mlx.nn as nn

__all__ = ["vmappable_experts"]

_ACTIVE: ContextVar[frozenset] = ContextVar("mlxinterp_vmappable_experts", default=frozenset())
_LOCK = threading.Lock()
_COUNTS: dict[int, int] = {}


def _expert_classes() -> tuple[type, ...]:
    from mlx_lm.models.switch_layers import SwitchLinear

    return (SwitchLinear,)


def _gathered_call(self, x, indices, sorted_indices=False):
    if id(self) not in _ACTIVE.get():
        return type(self).__mro__[1].__call__(self, x, indices, sorted_indices)
    w = self["weight"][indices]  # [..., k, out, in]: the chosen experts' weights
    y = x @ w.swapaxes(-1, -2)
    if "bias" in self:
        y = y + mx.expand_dims(self["bias"][indices], -2)
    return y


_SUBCLASSES: dict[type, type] = {}


def _subclass(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(
            cls.__name__,
            (cls,),
            {
                "__call__": _gathered_call,
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__mlxinterp_experts__": cls,
            },
        )
    return _SUBCLASSES[cls]


@contextmanager
def vmappable_experts(model: nn.Module) -> Iterator[list[str]]:
    """Make ``model``'s expert layers vmap-able inside the block; yields their paths.

    A model without expert layers passes through unchanged (the list is empty). Compose it
    like any context: trace (``mx.compile``) inside it, and the compiled function keeps the
    gathered form after the block ends.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("mixtral")
        >>> with vmappable_experts(model) as paths:
        ...     out = mx.vmap(model)(mx.array([[[1, 2]], [[3, 4]]]))
        >>> out.shape, len(paths), sorted(paths)[0]
        ((2, 1, 2, 64), 9, 'model.layers.0.block_sparse_moe.switch_mlp.down_proj')
    """
    classes = _expert_classes()
    found = [(p, m) for p, m in model.named_modules() if isinstance(m, classes)]
    token = _ACTIVE.set(_ACTIVE.get() | {id(m) for _, m in found})
    swapped = []
    try:
        with _LOCK:
            for _, m in found:
                if _COUNTS.get(id(m), 0) == 0:
                    base = type(m).__dict__.get("__mlxinterp_experts__", type(m))
                    m.__class__ = _subclass(base)
                _COUNTS[id(m)] = _COUNTS.get(id(m), 0) + 1
                swapped.append(m)
        yield [p for p, _ in found]
    finally:
        _ACTIVE.reset(token)
        with _LOCK:
            for m in swapped:
                _COUNTS[id(m)] -= 1
                if _COUNTS[id(m)] == 0:
                    del _COUNTS[id(m)]
                    m.__class__ = type(m).__dict__["__mlxinterp_experts__"]
