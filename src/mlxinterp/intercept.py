"""Interception: run functions on the values flowing through a module call.

How a module is intercepted without losing its parameters
----------------------------------------------------------
An MLX ``nn.Module`` is a dict of its children and arrays. Replacing a child with a wrapper
drops its parameters from ``parameters()``; patching the class's ``__call__`` is process-wide.
Instead, each intercepted *instance* gets its class swapped for a subclass whose ``__call__``
consults the active hooks::

    module.__class__ = Hooked[type(module)]     # parameter keys and arrays untouched

The subclass is made once per class and keeps ``isinstance``, ``__module__`` and the name.
The swap is reference-counted per instance (nested transforms stack; the last one out puts
the original class back), and undone in ``finally`` so an exception inside the model leaves
it exactly as it was.

Which hooks are active lives in a `contextvars.ContextVar`, not on the module: another
thread (a new context) calling the same model while a transform runs sees no hooks and goes
straight to the original ``__call__``; so does any call outside the transform. A hooked
module with no hooks in the current context costs one dictionary lookup.

Value flow
----------
A hook is a function ``f(value, ctx) -> value`` on one *port* of a module call: an input
(``in``, ``in.N``, ``in.NAME``), the output (``out``, ``out.N`` for tuple outputs) or a
*virtual* port that a `VirtualPort` exposes from inside the call (attention probabilities).
Hooks on one site run in flow order: the innermost transform first, then the ones around it
(so ``capture(intervene(model, ...))`` records the edited values); within one installation
in the order given.

Example:
    >>> import mlx.core as mx
    >>> from mlxinterp.testing import tiny_model
    >>> from mlxinterp.sites import resolve
    >>> model = tiny_model("llama")
    >>> [(site, mod)] = resolve(model, "model.layers.0.mlp")
    >>> with hooks_installed([Hook(mod, site, lambda x, ctx: 0 * x)]):
    ...     edited = model(mx.array([[1, 2, 3]]))
    >>> type(mod).__name__, bool((edited == model(mx.array([[1, 2, 3]]))).all())
    ('MLP', False)
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn

from .sites import Site, SiteError

__all__ = [
    "Hook",
    "HookContext",
    "VirtualPort",
    "hooks_installed",
    "is_hooked",
    "position_offset",
    "rebound_global",
    "register_virtual_port",
    "virtual_port",
    "virtual_port_names",
]


@dataclass(frozen=True)
class HookContext:
    """What a hook function is told besides the value.

    ``site`` is the concrete site, ``module`` the module being called, ``call_index`` how many
    times this hook ran before in the current transformed call (repeated modules),
    ``axes`` the names of the value's axes when they are known (``("batch", "pos", "d")``),
    ``offset`` the absolute position of the value's first position (non-zero while
    generating with a KV cache: see `position_offset`), and ``open_ended`` whether later
    positions may still come (generation), so selecting them now is not an error.
    """

    site: Site
    module: nn.Module
    call_index: int = 0
    axes: tuple[str, ...] | None = None
    offset: int = 0
    open_ended: bool = False


HookFn = Callable[[mx.array, HookContext], mx.array]


@dataclass(eq=False)
class Hook:
    """A function on one port of one module instance."""

    module: nn.Module
    site: Site
    fn: HookFn
    axes: tuple[str, ...] | None = None
    calls: int = field(default=0, repr=False)

    def __call__(self, value: Any) -> Any:
        offset = _OFFSET.get()
        ctx = HookContext(
            self.site,
            self.module,
            self.calls,
            self.axes or self.site.axes,
            offset or 0,
            offset is not None,
        )
        self.calls += 1
        view = self.site.view
        if view is None:
            return self.fn(value, ctx)
        return view.back(self.fn(view.fwd(value), ctx), value)


class VirtualPort(Protocol):
    """A family of ports that exist inside a module's computation (attention probabilities).

    A port is written ``name`` or ``name.ARG`` (``result.12``). ``wrap(module, call, flows)``
    returns a replacement for ``call`` that routes each inner value through
    ``flows[port](value) -> value`` while the module runs; ``flows`` holds the ports of this
    family that are hooked in this call.
    """

    name: str
    doc: str

    def supports(self, module: nn.Module, port: str) -> bool: ...

    def wrap(
        self,
        module: nn.Module,
        call: Callable[..., Any],
        flows: dict[str, Callable[[Any], Any]],
    ) -> Callable[..., Any]: ...


_VIRTUAL_PORTS: dict[str, VirtualPort] = {}


def register_virtual_port(port: VirtualPort, *names: str) -> VirtualPort:
    """Make ``port`` usable as ``"path:<name>"`` for each name (default: ``port.name``).

    Example:
        >>> from mlxinterp.attention import ResultPort
        >>> port = register_virtual_port(ResultPort())  # what attention.py does at import
        >>> virtual_port("result.4") is port
        True
    """
    for name in names or (port.name,):
        _VIRTUAL_PORTS[name] = port
    return port


def virtual_port(name: str) -> VirtualPort | None:
    """The virtual port family serving port ``name`` (``"pattern"``, ``"result.4"``), or None.

    Example:
        >>> type(virtual_port("pattern")).__name__, virtual_port("out")
        ('AttentionPorts', None)
    """
    return _VIRTUAL_PORTS.get(name.split(".")[0])


def virtual_port_names() -> list[str]:
    """Names of the registered virtual ports.

    Example:
        >>> {"q", "k", "v", "scores", "pattern", "result"} <= set(virtual_port_names())
        True
    """
    return sorted(_VIRTUAL_PORTS)


# ---------------------------------------------------------------------------------------
# Active hooks (per context) and the class swap (per instance, reference counted)

_OFFSET: ContextVar[int | None] = ContextVar("mlxinterp_position_offset", default=None)


@contextmanager
def position_offset(offset: int) -> Iterator[None]:
    """Within the block, position 0 of every activation is absolute position ``offset``.

    Generation with a KV cache feeds one new position per call; this keeps position
    selectors (``zero().at(positions=[12])``) in absolute positions, and lets them name
    positions that are not generated yet.

    Example:
        >>> import mlx.core as mx, mlx.nn as nn
        >>> from mlxinterp.interventions import zero
        >>> hook = Hook(nn.Identity(), Site(""), zero().at(positions=[11]))
        >>> with position_offset(10):  # the value's first position is absolute position 10
        ...     print(hook(mx.ones((1, 2, 1)))[0, :, 0].tolist())
        [1.0, 0.0]
    """
    token = _OFFSET.set(int(offset))
    try:
        yield
    finally:
        _OFFSET.reset(token)


_GLOBALS: dict[tuple[str, str], tuple[Any, int]] = {}  # (module, name) -> (original, count)


@contextmanager
def rebound_global(module_name: str, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, ``module.name`` is ``make(original)``; reference-counted across
    nested and concurrent blocks, restored when the last one exits (exceptions included).

    How mlxinterp reaches functions that model files import by name (mlx-lm's
    ``scaled_dot_product_attention``, ``create_attention_mask``). The replacement must pass
    straight through to the original unless its own `ContextVar` says otherwise, because
    other threads see it too.

    Example:
        >>> import math
        >>> with rebound_global("math", "sqrt", lambda original: lambda x: -original(x)):
        ...     inside = math.sqrt(4.0)
        >>> inside, math.sqrt(4.0)
        (-2.0, 2.0)
    """
    mod = sys.modules[module_name]
    key = (module_name, name)
    with _LOCK:
        entry = _GLOBALS.get(key)
        if entry is None:
            original = getattr(mod, name)
            setattr(mod, name, make(original))
            _GLOBALS[key] = (original, 1)
        else:
            _GLOBALS[key] = (entry[0], entry[1] + 1)
    try:
        yield
    finally:
        with _LOCK:
            original, count = _GLOBALS[key]
            if count == 1:
                del _GLOBALS[key]
                setattr(mod, name, original)
            else:
                _GLOBALS[key] = (original, count - 1)


_EMPTY: MappingProxyType = MappingProxyType({})
_ACTIVE: ContextVar[MappingProxyType] = ContextVar("mlxinterp_active_hooks", default=_EMPTY)

_LOCK = threading.RLock()
_HOOKED_CLASSES: dict[type, type] = {}  # memo: original class -> hooked subclass
_SWAPS: dict[int, tuple[nn.Module, type, int]] = {}  # id -> (module, original class, count)


def _hooked_class(cls: type) -> type:
    hooked = _HOOKED_CLASSES.get(cls)
    if hooked is not None:
        return hooked
    base_call = cls.__call__

    def __call__(self, *args, **kwargs):
        hooks = _ACTIVE.get().get(id(self))
        if not hooks:
            return base_call(self, *args, **kwargs)
        return _dispatch(self, base_call, hooks, args, kwargs)

    __call__.__wrapped__ = base_call  # type: ignore[attr-defined]
    hooked = type(
        cls.__name__,
        (cls,),
        {
            "__call__": __call__,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__mlxinterp_original__": cls,
        },
    )
    _HOOKED_CLASSES[cls] = hooked
    return hooked


def original_class(module: nn.Module) -> type:
    """The module's class as it was before any interception."""
    return type(module).__dict__.get("__mlxinterp_original__", type(module))


def is_hooked(module: nn.Module) -> bool:
    """True while some transform has ``module``'s class swapped.

    Example:
        >>> from mlxinterp.sites import resolve
        >>> from mlxinterp.testing import tiny_model
        >>> [(site, mod)] = resolve(tiny_model("gpt2"), "model.h.0.mlp")
        >>> with hooks_installed([Hook(mod, site, lambda x, ctx: x)]):
        ...     print(is_hooked(mod))
        True
        >>> is_hooked(mod)
        False
    """
    return "__mlxinterp_original__" in type(module).__dict__


def _swap_in(module: nn.Module) -> None:
    with _LOCK:
        entry = _SWAPS.get(id(module))
        if entry is None:
            cls = type(module)
            module.__class__ = _hooked_class(cls)
            _SWAPS[id(module)] = (module, cls, 1)
        else:
            _SWAPS[id(module)] = (entry[0], entry[1], entry[2] + 1)


def _swap_out(module: nn.Module) -> None:
    with _LOCK:
        mod, cls, count = _SWAPS[id(module)]
        if count == 1:
            del _SWAPS[id(module)]
            mod.__class__ = cls
        else:
            _SWAPS[id(module)] = (mod, cls, count - 1)


@contextmanager
def hooks_installed(hooks: Sequence[Hook]) -> Iterator[None]:
    """Activate ``hooks`` in the current context for the duration of the block.

    Hooks installed by an inner block run before those of outer blocks on the same module.
    Everything is undone on exit, exceptions included.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.sites import resolve
        >>> from mlxinterp.testing import tiny_model
        >>> model, seen = tiny_model("gpt2"), []
        >>> [(site, mod)] = resolve(model, "model.h.0.mlp")
        >>> with hooks_installed([Hook(mod, site, lambda x, ctx: seen.append(x.shape) or x)]):
        ...     _ = model(mx.array([[1, 2, 3]]))
        >>> seen
        [(1, 3, 32)]
    """
    current = _ACTIVE.get()
    added: dict[int, tuple[Hook, ...]] = {}
    modules: dict[int, nn.Module] = {}
    for h in hooks:
        added[id(h.module)] = added.get(id(h.module), ()) + (h,)
        modules[id(h.module)] = h.module
    merged = dict(current)
    for key, new in added.items():
        merged[key] = new + current.get(key, ())
    swapped: list[nn.Module] = []
    try:
        for mod in modules.values():
            _swap_in(mod)
            swapped.append(mod)
        token = _ACTIVE.set(MappingProxyType(merged))
        try:
            yield
        finally:
            _ACTIVE.reset(token)
    finally:
        for mod in reversed(swapped):
            _swap_out(mod)


# ---------------------------------------------------------------------------------------
# Dispatch of one hooked call


_SIGNATURES: dict[type, list[str]] = {}


def _param_names(cls: type) -> list[str]:
    names = _SIGNATURES.get(cls)
    if names is None:
        try:
            sig = inspect.signature(cls.__call__)
            names = [
                p.name
                for p in sig.parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ][1:]
        except (TypeError, ValueError):
            names = []
        _SIGNATURES[cls] = names
    return names


def _locate_input(module: nn.Module, port: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    """Where the value of input port ``port`` is: ``("args", index)`` or ``("kwargs", name)``."""
    spec = port[3:] if port.startswith("in.") else "0"
    names = _param_names(original_class(module))
    if spec.isdigit():
        index = int(spec)
        if index < len(args):
            return "args", index
        if index < len(names) and names[index] in kwargs:
            return "kwargs", names[index]
    else:
        if spec in kwargs:
            return "kwargs", spec
        if spec in names and names.index(spec) < len(args):
            return "args", names.index(spec)
    raise SiteError(
        f"site '{port}' of {type(module).__name__}: that argument was not passed in this call "
        f"({len(args)} positional, keywords {sorted(kwargs)}; parameters {names})"
    )


def _as_array(site: Site, value: Any) -> mx.array:
    if not isinstance(value, mx.array):
        raise SiteError(
            f"site {str(site)!r} carries a {type(value).__name__}, not an array; "
            "for a tuple output pick an element with ':out.N'"
        )
    return value


def _flow(hooks: Sequence[Hook], value: Any) -> Any:
    for h in hooks:
        value = h(_as_array(h.site, value))
    return value


def _dispatch(module, base_call, hooks: tuple[Hook, ...], args: tuple, kwargs: dict):
    by_port: dict[str, list[Hook]] = {}
    for h in hooks:
        by_port.setdefault(h.site.port, []).append(h)

    # Inputs
    for port, hs in by_port.items():
        if port == "in" or port.startswith("in."):
            where, key = _locate_input(module, port, args, kwargs)
            if where == "args":
                args = args[:key] + (_flow(hs, args[key]),) + args[key + 1 :]
            else:
                kwargs = {**kwargs, key: _flow(hs, kwargs[key])}

    # Virtual ports wrap the call itself
    def call(*a, **kw):
        return base_call(module, *a, **kw)

    families: dict[int, tuple[VirtualPort, dict[str, Callable[[Any], Any]]]] = {}
    for port, hs in by_port.items():
        if port.split(".")[0] not in ("in", "out"):
            vp = virtual_port(port)
            entry = families.setdefault(id(vp), (vp, {}))
            entry[1][port] = lambda v, hs=hs: _flow(hs, v)
    for vp, flows in families.values():
        call = vp.wrap(module, call, flows)

    out = call(*args, **kwargs)

    # Outputs
    for port, hs in by_port.items():
        if port == "out" or port.startswith("out."):
            index = int(port[4:]) if port.startswith("out.") else None
            if isinstance(out, (tuple, list)):
                i = 0 if index is None else index
                if i >= len(out):
                    raise SiteError(f"site {str(hs[0].site)!r}: the output has {len(out)} elements")
                items = [*out[:i], _flow(hs, out[i]), *out[i + 1 :]]
                out = type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
            elif index not in (None, 0):
                raise SiteError(
                    f"site {str(hs[0].site)!r}: the output is a single "
                    f"{type(out).__name__}, not a tuple; use the plain output port"
                )
            else:
                out = _flow(hs, out)
    return out
