"""Interventions: functions ``x -> x`` to apply at a site with `mlxinterp.intervene`.

Each builder returns an `Intervention`, a small pure callable; any plain ``f(x) -> x`` works
in its place. Parameters that are arrays stay arrays, so an intervention built inside a
function that is compiled, vmapped or differentiated is traced like any other computation:
``mx.grad`` of a loss with respect to the vector given to `add` is the activation gradient.

Selectors restrict an intervention to some positions, heads or batch rows::

    zero().at(positions=[3, 4])          # only tokens 3 and 4
    scale(0.0).at(heads=[1], axis_names=("batch", "pos", "head", "d_head"))
    add(direction * 4).at(positions=-1, rows=[0])

Positions, heads and rows may be ints (negative counts from the end), sequences of ints, a
slice, or an integer array — which may itself be traced by ``mx.vmap`` (one patching run per
position in a single call). Axes: positions are axis -2 and rows axis 0 unless the site
declares named axes (``("batch", "pos", "d")``); heads need a site that declares a
``"head"`` axis or an explicit ``axis_names``. Under ``mx.vmap`` the mapped axis is invisible
to the intervention: a row selector then indexes the next axis, so select rows outside vmap.

A shape mismatch (a `replace` value or `add` vector that does not broadcast to the site)
raises a `ValueError` naming the site and both shapes.

Example:
    >>> import mlx.core as mx
    >>> x = mx.ones((1, 4, 2))
    >>> zero().at(positions=[1, -1])(x)[0, :, 0].tolist()
    [1.0, 0.0, 1.0, 0.0]
    >>> compose(scale(2.0), add(mx.array([1.0, 0.0])))(x)[0, 0].tolist()
    [3.0, 2.0]
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from .intercept import HookContext

__all__ = [
    "Intervention",
    "add",
    "apply_edit",
    "clamp",
    "compose",
    "noise",
    "only",
    "replace",
    "scale",
    "set",
    "zero",
]

Index = int | Sequence[int] | slice | mx.array | None


def _where(ctx: HookContext | None) -> str:
    return f"at site {str(ctx.site)!r}" if ctx is not None else "(no site)"


class Intervention:
    """Base class: subclasses implement ``apply(x, ctx)``; instances are callables.

    ``ctx`` (a `HookContext`) is None when called directly on an array.
    """

    def apply(self, x: mx.array, ctx: HookContext | None) -> mx.array:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: mx.array, ctx: HookContext | None = None) -> mx.array:
        return self.apply(x, ctx)

    def at(
        self,
        *,
        positions: Index = None,
        heads: Index = None,
        rows: Index = None,
        axis_names: Sequence[str] | None = None,
    ) -> Intervention:
        """This intervention restricted to the given positions / heads / batch rows."""
        return only(self, positions=positions, heads=heads, rows=rows, axis_names=axis_names)

    def then(self, other: Callable) -> Intervention:
        """This intervention followed by ``other``."""
        return compose(self, other)


def apply_edit(f: Callable, x: mx.array, ctx: HookContext | None = None) -> mx.array:
    """Apply ``f`` (an `Intervention` or a plain callable) and check the result's shape.

    The result is cast back to ``x``'s dtype so an edit cannot silently promote a model's
    activations.

    Example:
        >>> import mlx.core as mx
        >>> x = mx.ones((2, 3), dtype=mx.float16)
        >>> apply_edit(lambda v: v * mx.array(2.0), x).dtype  # float32 product, cast back
        mlx.core.float16
        >>> apply_edit(lambda v: v.sum(-1), x)
        Traceback (most recent call last):
        ValueError: intervention ... changed the shape: activation (2, 3), result (2,); ...
    """
    y = f.apply(x, ctx) if isinstance(f, Intervention) else f(x)
    if not isinstance(y, mx.array):
        raise TypeError(
            f"intervention {f!r} {_where(ctx)} returned a {type(y).__name__}, not an array"
        )
    if y.shape != x.shape:
        raise ValueError(
            f"intervention {f!r} {_where(ctx)} changed the shape: activation {tuple(x.shape)}, "
            f"result {tuple(y.shape)}; an edit must return the activation's shape"
        )
    return y if y.dtype == x.dtype else y.astype(x.dtype)


def _broadcast(value: mx.array, x: mx.array, what: str, ctx: HookContext | None) -> mx.array:
    value = value if isinstance(value, mx.array) else mx.array(value)
    try:
        shape = mx.broadcast_shapes(value.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"{what} {_where(ctx)}: shape {tuple(value.shape)} does not broadcast to the "
            f"activation's shape {tuple(x.shape)}"
        )
    return value


@dataclass(frozen=True)
class _Zero(Intervention):
    def apply(self, x, ctx):
        return mx.zeros_like(x)

    def __repr__(self):
        return "zero()"


@dataclass(frozen=True)
class _Scale(Intervention):
    factor: Any

    def apply(self, x, ctx):
        return x * _broadcast(mx.array(self.factor), x, "scale factor", ctx)

    def __repr__(self):
        return f"scale({self.factor!r})"


@dataclass(frozen=True, eq=False)
class _Add(Intervention):
    vector: Any

    def apply(self, x, ctx):
        return x + _broadcast(self.vector, x, "add vector", ctx)

    def __repr__(self):
        return f"add(<{tuple(mx.array(self.vector).shape)}>)"


@dataclass(frozen=True, eq=False)
class _Replace(Intervention):
    value: Any

    def apply(self, x, ctx):
        return mx.broadcast_to(_broadcast(self.value, x, "replacement", ctx), x.shape)

    def __repr__(self):
        return f"replace(<{tuple(mx.array(self.value).shape)}>)"


@dataclass(frozen=True)
class _Clamp(Intervention):
    lo: Any
    hi: Any

    def apply(self, x, ctx):
        return mx.clip(x, self.lo, self.hi)

    def __repr__(self):
        return f"clamp({self.lo!r}, {self.hi!r})"


@dataclass(frozen=True, eq=False)
class _Noise(Intervention):
    std: Any
    key: mx.array

    def apply(self, x, ctx):
        return x + self.std * mx.random.normal(x.shape, dtype=x.dtype, key=self.key)

    def __repr__(self):
        return f"noise({self.std!r})"


@dataclass(frozen=True, eq=False)
class _Compose(Intervention):
    fs: tuple

    def apply(self, x, ctx):
        for f in self.fs:
            x = apply_edit(f, x, ctx)
        return x

    def __repr__(self):
        return "compose(" + ", ".join(map(repr, self.fs)) + ")"


def zero() -> Intervention:
    """Replace the activation by zeros (zero-ablation).

    Example:
        >>> import mlx.core as mx
        >>> zero()(mx.ones((1, 2, 3))).tolist()
        [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
    """
    return _Zero()


def scale(factor: float | mx.array) -> Intervention:
    """Multiply the activation by ``factor`` (a scalar or an array broadcasting to it).

    Example:
        >>> import mlx.core as mx
        >>> scale(0.5)(mx.full((1, 2), 4.0)).tolist()
        [[2.0, 2.0]]
        >>> scale(mx.array([1.0, 0.0]))(mx.full((1, 2), 4.0)).tolist()  # per-channel
        [[4.0, 0.0]]
    """
    return _Scale(factor)


def add(vector: mx.array | float) -> Intervention:
    """Add ``vector``, broadcast over the leading axes (e.g. a ``[d_model]`` steering vector).

    Example:
        >>> import mlx.core as mx
        >>> add(mx.array([1.0, 2.0]))(mx.zeros((2, 3, 2)))[1, 2].tolist()
        [1.0, 2.0]
    """
    return _Add(vector)


def replace(value: mx.array | float) -> Intervention:
    """Replace the activation by ``value`` (broadcast to its shape): patching, mean-ablation.

    Example:
        >>> import mlx.core as mx
        >>> replace(mx.array([1.0, 2.0]))(mx.zeros((1, 3, 2)))[0].tolist()
        [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]
        >>> set is replace
        True
    """
    return _Replace(value)


set = replace  # noqa: A001 - `interventions.set(v)` reads as the verb it is
"""Alias of `replace`."""


def clamp(min: float | None = None, max: float | None = None) -> Intervention:  # noqa: A002
    """Clip the activation to ``[min, max]`` (either may be None).

    Example:
        >>> import mlx.core as mx
        >>> clamp(max=1.0)(mx.array([[-2.0, 0.5, 3.0]])).tolist()
        [[-2.0, 0.5, 1.0]]
    """
    if min is None and max is None:
        raise ValueError("clamp needs min=, max= or both")
    return _Clamp(min, max)


def noise(std: float | mx.array, *, key: mx.array) -> Intervention:
    """Add Gaussian noise of standard deviation ``std`` drawn with the PRNG ``key``.

    The key is explicit so that runs are reproducible and compiled functions stay pure:
    ``noise(0.1, key=mx.random.key(0))``.

    Example:
        >>> import mlx.core as mx
        >>> f, x = noise(0.1, key=mx.random.key(0)), mx.zeros((1, 4, 8))
        >>> f(x).shape, bool(mx.array_equal(f(x), f(x)))  # same key, same noise
        ((1, 4, 8), True)
    """
    if not isinstance(key, mx.array):
        raise TypeError("noise needs an explicit PRNG key: noise(std, key=mx.random.key(0))")
    return _Noise(std, key)


def compose(*fs: Callable) -> Intervention:
    """Apply ``fs`` left to right.

    Example:
        >>> import mlx.core as mx
        >>> compose(add(1.0), scale(3.0))(mx.zeros((1, 2))).tolist()
        [[3.0, 3.0]]
    """
    if not fs:
        raise ValueError("compose needs at least one function")
    return _Compose(tuple(fs))


# ---------------------------------------------------------------------------------------
# Selectors


def _mask_1d(index: Index, n: int, what: str, ctx: HookContext | None, offset: int = 0):
    """A boolean mask of length ``n`` selecting ``index`` along one axis whose first entry is
    absolute index ``offset`` (negative indices count from the end, ``offset + n``)."""
    total = offset + n
    if isinstance(index, slice):
        chosen = builtins.set(range(total)[index])
        return mx.array([offset + i in chosen for i in range(n)])
    if isinstance(index, mx.array):
        if index.dtype == mx.bool_:
            if index.shape != (n,):
                raise ValueError(f"{what} mask {_where(ctx)} has shape {index.shape}, axis has {n}")
            return index
        idx = index.reshape(-1)
        idx = mx.where(idx < 0, idx + total, idx)
        return ((mx.arange(n) + offset)[:, None] == idx[None, :]).any(axis=1)
    items = [index] if isinstance(index, int) else list(index)
    open_ended = ctx is not None and ctx.open_ended and what == "pos"
    for i in items:
        if not isinstance(i, int) or not -total <= i < (10**12 if open_ended else total):
            raise IndexError(
                f"{what} {i!r} {_where(ctx)} is out of range for an axis of length {total}"
            )
    chosen = {i % total if i < 0 else i for i in items}
    return mx.array([offset + i in chosen for i in range(n)])


def _axis(name: str, default: int | None, x: mx.array, names, ctx) -> int:
    if names is not None:
        names = tuple(names)
        if name not in names:
            raise ValueError(f"selector {name!r} {_where(ctx)}: the site's axes are {names}")
        if len(names) == x.ndim:
            return names.index(name)
        if len(names) == x.ndim + 1:  # under vmap the leading (batch) axis is mapped away
            return names.index(name) - 1
        raise ValueError(
            f"{_where(ctx)}: axis names {names} do not fit an activation of shape {tuple(x.shape)}"
        )
    if default is None:
        raise ValueError(
            f"selecting {name}s {_where(ctx)} needs to know the {name} axis: use a per-head "
            "site or pass axis_names=(...)"
        )
    return default % x.ndim


@dataclass(frozen=True, eq=False)
class _Only(Intervention):
    f: Callable
    positions: Index
    heads: Index
    rows: Index
    axis_names: tuple[str, ...] | None

    def apply(self, x, ctx):
        y = apply_edit(self.f, x, ctx)
        names = self.axis_names or (ctx.axes if ctx is not None else None)
        mask = None
        for index, name, default in (
            (self.positions, "pos", -2),
            (self.heads, "head", None),
            (self.rows, "batch", 0),
        ):
            if index is None:
                continue
            ax = _axis(name, default, x, names, ctx)
            offset = ctx.offset if (ctx is not None and name == "pos") else 0
            m = _mask_1d(index, x.shape[ax], name, ctx, offset)
            shape = [1] * x.ndim
            shape[ax] = x.shape[ax]
            m = m.reshape(shape)
            mask = m if mask is None else mask & m
        return y if mask is None else mx.where(mask, y, x)

    def __repr__(self):
        sel = {
            k: v
            for k, v in (("positions", self.positions), ("heads", self.heads), ("rows", self.rows))
            if v is not None
        }
        return f"{self.f!r}.at({', '.join(f'{k}={v!r}' for k, v in sel.items())})"


def only(
    f: Callable,
    *,
    positions: Index = None,
    heads: Index = None,
    rows: Index = None,
    axis_names: Sequence[str] | None = None,
) -> Intervention:
    """Restrict any intervention or plain callable to positions / heads / batch rows.

    Elsewhere the activation passes through unchanged (``mx.where`` on a mask, so the result is
    differentiable and works with traced indices under ``mx.vmap``).

    Example:
        >>> import mlx.core as mx
        >>> only(lambda x: x + 1, rows=1)(mx.zeros((2, 1, 1))).reshape(-1).tolist()
        [0.0, 1.0]
    """
    if positions is None and heads is None and rows is None:
        raise ValueError("only() needs positions=, heads= or rows=")
    return _Only(f, positions, heads, rows, tuple(axis_names) if axis_names else None)
