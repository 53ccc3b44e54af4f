"""The four transforms: capture, intervene, plant, harvest.

Each turns a model call into a new *pure* function of arrays::

    g = capture(model, ["model.layers.*.mlp"])        # g(*args) -> (out, acts)
    g = intervene(model, {"model.layers.1.mlp": zero()})  # g(*args) -> out
    g = plant(model, ["model.layers.1.mlp"], mode="add")  # g(values, *args) -> out
    g = harvest(model, plant_sites, capture_sites)    # g(values, *args) -> (out, acts)

Hooks are installed when ``g`` runs and removed when it returns, so ``g`` can be handed to
``mx.compile``, ``mx.vmap``, ``mx.grad`` and each other: transform first, then compile —
hooks around an already-compiled function never fire. Captured values are *returned*
(``acts`` is a flat ``dict[str, mx.array]``), never stored as a side effect, which is what
makes them survive compile and vmap. Planted values are the first positional argument, so
vmap can map over them and grad can differentiate with respect to them; changing them does
not retrace a compiled ``g``.

``fn`` is a module, a bound method of one (``model.some_method``), a function returned by
another transform, or any function together with ``root=`` — the module whose paths the
sites name.

Example:
    >>> import mlx.core as mx
    >>> from mlxinterp.testing import tiny_model
    >>> from mlxinterp.interventions import zero
    >>> model = tiny_model("llama")
    >>> tokens = mx.array([[1, 2, 3, 4]])
    >>> out, acts = capture(model, "model.layers.*.mlp")(tokens)
    >>> sorted(acts)
    ['model.layers.0.mlp', 'model.layers.1.mlp', 'model.layers.2.mlp']
    >>> ablated = intervene(model, {"model.layers.2.mlp": zero()})(tokens)
    >>> planted = plant(model, "model.layers.2.mlp")(
    ...     {"model.layers.2.mlp": mx.zeros_like(acts["model.layers.2.mlp"])}, tokens)
    >>> bool(mx.allclose(ablated, planted))
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn

from .intercept import Hook, HookContext, hooks_installed
from .interventions import _broadcast, apply_edit
from .sites import Site, SiteSpec, resolve, resolve_many

__all__ = ["capture", "intervene", "plant", "harvest", "TransformError"]

Policy = Literal["strict", "append", "each", "last"]
Mode = Literal["set", "add"]


class TransformError(RuntimeError):
    """A transform was misused at call time (repeated site, missing planted value, ...)."""


def _target(fn: Any, root: nn.Module | None) -> tuple[nn.Module, Callable]:
    if root is not None:
        if not isinstance(root, nn.Module):
            raise TypeError(f"root= must be an mlx.nn.Module, got {type(root).__name__}")
        return root, fn
    if isinstance(fn, nn.Module):
        return fn, fn
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner, fn
    inner_root = getattr(fn, "__mlxinterp_root__", None)
    if inner_root is not None:
        return inner_root, fn
    raise TypeError(
        f"cannot tell which model {getattr(fn, '__name__', fn)!r} runs: pass a module, a bound "
        "method of one, or give root=model"
    )


def _finish(g: Callable, root: nn.Module, fn: Callable, doc: str, sites: list[Site]) -> Callable:
    functools.update_wrapper(g, fn, assigned=("__module__", "__name__", "__qualname__"), updated=())
    g.__doc__ = doc
    g.__mlxinterp_root__ = root  # type: ignore[attr-defined]
    g.sites = [str(s) for s in sites]  # type: ignore[attr-defined]
    return g


def _capture_hooks(
    pairs: Sequence[tuple[Site, nn.Module]], explicit: set[Site], policy: Policy, detach: bool
) -> tuple[list[Hook], Callable[[], dict[str, mx.array]]]:
    if policy not in ("strict", "append", "each", "last"):
        raise ValueError(f"policy must be 'strict', 'append', 'each' or 'last', got {policy!r}")
    store: dict[str, list[mx.array]] = {}

    def record(x: mx.array, ctx: HookContext) -> mx.array:
        key = str(ctx.site)
        seen = store.setdefault(key, [])
        if seen and policy == "strict":
            raise TransformError(
                f"site {key!r} was called more than once in one forward pass (call "
                f"{ctx.call_index + 1}); choose policy='append' (stack all calls), 'each' "
                "(one key per call) or 'last' (keep the last)"
            )
        # A fresh handle on the same graph node: models that update in place
        # (gpt2: `h = wte(x); h += wpe(p)`) must not rewrite what was captured.
        seen.append(mx.stop_gradient(x) if detach else mx.array(x))
        return x

    hooks = [Hook(mod, site, record) for site, mod in pairs]

    def collect() -> dict[str, mx.array]:
        missing = [str(s) for s, _ in pairs if s in explicit and str(s) not in store]
        if missing:
            raise TransformError(
                f"site(s) {missing} were never called during this forward pass, so there is "
                "nothing to capture; check the path (e.g. an unused module) or drop it"
            )
        acts: dict[str, mx.array] = {}
        for site, _ in pairs:
            values = store.get(str(site))
            if not values:
                continue
            if policy == "append":
                shapes = {tuple(v.shape) for v in values}
                if len(shapes) > 1:
                    raise TransformError(
                        f"policy='append' stacks the calls of {str(site)!r}, but their shapes "
                        f"differ: {[tuple(v.shape) for v in values]}; use policy='each'"
                    )
                acts[str(site)] = mx.stack(values)
            elif policy == "each":
                acts.update({f"{site}#{i}": v for i, v in enumerate(values)})
            else:
                acts[str(site)] = values[-1]
        return acts

    return hooks, collect


def _explicit(specs: Any, pairs: Sequence[tuple[Site, nn.Module]]) -> set[Site]:
    """Sites named without a pattern: these must be reached by the forward pass."""
    if isinstance(specs, (str, Site)) or callable(specs):
        specs = [specs]
    named = set()
    for spec in specs:
        site = Site.parse(spec) if isinstance(spec, str) else spec
        if isinstance(site, Site) and not site.is_pattern:
            named.add(str(site))
    return {s for s, _ in pairs if str(s) in named}


def capture(
    fn: Any,
    sites: SiteSpec | Sequence[SiteSpec],
    *,
    root: nn.Module | None = None,
    policy: Policy = "strict",
    detach: bool = False,
) -> Callable[..., tuple[Any, dict[str, mx.array]]]:
    """``g(*args, **kw) -> (out, acts)``: ``fn``'s output and the values at ``sites``.

    ``acts`` maps each concrete site name (``"model.layers.0.mlp"``, ``"...:in"``) to an
    array. A module called more than once per forward is an error under ``policy="strict"``;
    ``"append"`` stacks the calls on a new leading axis, ``"each"`` keys them ``"site#0"``,
    ``"site#1"``, ... (calls of different shapes, like rotary embeddings of queries then keys
    under grouped-query attention), ``"last"`` keeps the last.
    ``detach=True`` stops gradients through the captured copies (the forward is unchanged).
    Sites named explicitly must be reached; sites matched by a pattern that the forward pass
    never calls are simply absent.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("gpt2")
        >>> out, acts = capture(model, ["model.h.0", "model.h.1:in"])(mx.array([[5, 6, 7]]))
        >>> bool((acts["model.h.0"] == acts["model.h.1:in"]).all())
        True
    """
    root, call = _target(fn, root)
    pairs = resolve_many(root, sites)
    explicit = _explicit(sites, pairs)

    def g(*args, **kwargs):
        hooks, collect = _capture_hooks(pairs, explicit, policy, detach)
        with hooks_installed(hooks):
            out = call(*args, **kwargs)
        return out, collect()

    doc = f"{getattr(fn, '__name__', 'fn')} capturing {len(pairs)} site(s); returns (out, acts)."
    return _finish(g, root, call, doc, [s for s, _ in pairs])


def _edit_hook(f: Callable) -> Callable[[mx.array, HookContext], mx.array]:
    return lambda x, ctx: apply_edit(f, x, ctx)


def intervene(
    fn: Any,
    edits: Mapping[SiteSpec, Callable] | Sequence[tuple[SiteSpec, Callable]],
    *,
    root: nn.Module | None = None,
) -> Callable[..., Any]:
    """``g(*args, **kw) -> out`` with each edit ``f(x) -> x`` applied at its site(s).

    ``edits`` maps site specs (patterns apply the edit to every match) to interventions from
    `mlxinterp.interventions` or any callable returning an array of the same shape. A module
    called several times gets the edit on every call.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> from mlxinterp.interventions import scale
        >>> model = tiny_model("llama")
        >>> same = intervene(model, {"model.layers.*.mlp": scale(1.0)})(mx.array([[1, 2]]))
        >>> bool((same == model(mx.array([[1, 2]]))).all())
        True
    """
    root, call = _target(fn, root)
    items = list(edits.items()) if isinstance(edits, Mapping) else list(edits)
    resolved: list[tuple[Site, nn.Module, Callable]] = []
    for spec, f in items:
        if not callable(f):
            raise TypeError(f"the edit for {spec!r} must be callable, got {type(f).__name__}")
        for site, mod in resolve(root, spec):
            resolved.append((site, mod, f))

    def g(*args, **kwargs):
        hooks = [Hook(mod, site, _edit_hook(f)) for site, mod, f in resolved]
        with hooks_installed(hooks):
            return call(*args, **kwargs)

    doc = f"{getattr(fn, '__name__', 'fn')} with {len(resolved)} edited site(s)."
    return _finish(g, root, call, doc, [s for s, _, _ in resolved])


def _plant_hooks(
    pairs: Sequence[tuple[Site, nn.Module]], values: Mapping[str, mx.array], mode: Mode
) -> list[Hook]:
    if not isinstance(values, Mapping):
        raise TypeError(
            f"planted values must be a dict keyed by site name, got {type(values).__name__}"
        )
    known = {str(s) for s, _ in pairs}
    normalized: dict[str, mx.array] = {}
    for key, value in values.items():
        name = str(Site.parse(key)) if isinstance(key, str) else str(key)
        if name not in known:
            raise TransformError(
                f"planted value for {key!r}, which is not one of this plant's sites: "
                f"{sorted(known)}"
            )
        normalized[name] = value if isinstance(value, mx.array) else mx.array(value)

    def make(value: mx.array) -> Callable[[mx.array, HookContext], mx.array]:
        def fn(x: mx.array, ctx: HookContext) -> mx.array:
            v = _broadcast(value, x, f"planted value ({mode})", ctx)
            y = x + v if mode == "add" else mx.broadcast_to(v, x.shape)
            return y if y.dtype == x.dtype else y.astype(x.dtype)

        return fn

    return [
        Hook(mod, site, make(normalized[str(site)]))
        for site, mod in pairs
        if str(site) in normalized
    ]


def plant(
    fn: Any,
    sites: SiteSpec | Sequence[SiteSpec],
    *,
    mode: Mode = "set",
    root: nn.Module | None = None,
) -> Callable[..., Any]:
    """``g(values, *args, **kw) -> out`` with ``values[site]`` planted at each site.

    ``mode="set"`` replaces the activation, ``"add"`` adds to it; values broadcast to the
    activation's shape. ``values`` is a dict keyed by concrete site names (``g.sites`` lists
    them); sites without a value are left alone. Because values are an argument, ``g`` can be
    vmapped over them, differentiated with respect to them (``mode="add"`` with zeros gives
    the activation gradient) and compiled once for all values.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> g = plant(model, "model.layers.1.mlp", mode="add")
        >>> g.sites
        ['model.layers.1.mlp']
        >>> out = g({"model.layers.1.mlp": mx.zeros((32,))}, mx.array([[1, 2]]))
        >>> bool((out == model(mx.array([[1, 2]]))).all())
        True
    """
    if mode not in ("set", "add"):
        raise ValueError(f"mode must be 'set' or 'add', got {mode!r}")
    root, call = _target(fn, root)
    pairs = resolve_many(root, sites)

    def g(values, *args, **kwargs):
        with hooks_installed(_plant_hooks(pairs, values, mode)):
            return call(*args, **kwargs)

    doc = f"{getattr(fn, '__name__', 'fn')} planting ({mode}) at {len(pairs)} site(s)."
    return _finish(g, root, call, doc, [s for s, _ in pairs])


def harvest(
    fn: Any,
    plant_sites: SiteSpec | Sequence[SiteSpec],
    capture_sites: SiteSpec | Sequence[SiteSpec],
    *,
    mode: Mode = "set",
    policy: Policy = "strict",
    detach: bool = False,
    root: nn.Module | None = None,
) -> Callable[..., tuple[Any, dict[str, mx.array]]]:
    """``g(values, *args, **kw) -> (out, acts)``: `plant` and `capture` in one call.

    A site both planted and captured is captured *after* planting.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> g = harvest(model, "model.layers.0.mlp", "model.layers.0.mlp")
        >>> _, acts = g({"model.layers.0.mlp": mx.ones((1, 2, 32))}, mx.array([[1, 2]]))
        >>> float(acts["model.layers.0.mlp"].sum())
        64.0
    """
    if mode not in ("set", "add"):
        raise ValueError(f"mode must be 'set' or 'add', got {mode!r}")
    root, call = _target(fn, root)
    plant_pairs = resolve_many(root, plant_sites)
    cap_pairs = resolve_many(root, capture_sites)
    explicit = _explicit(capture_sites, cap_pairs)

    def g(values, *args, **kwargs):
        cap_hooks, collect = _capture_hooks(cap_pairs, explicit, policy, detach)
        with hooks_installed(_plant_hooks(plant_pairs, values, mode) + cap_hooks):
            out = call(*args, **kwargs)
        return out, collect()

    doc = (
        f"{getattr(fn, '__name__', 'fn')} planting at {len(plant_pairs)} and capturing "
        f"{len(cap_pairs)} site(s); returns (out, acts)."
    )
    g = _finish(g, root, call, doc, [s for s, _ in plant_pairs])
    g.capture_sites = [str(s) for s, _ in cap_pairs]  # type: ignore[attr-defined]
    return g
