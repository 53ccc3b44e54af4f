"""Sites: where in a model a value can be read or changed.

A *site* is a module call plus a *port* on it::

    "model.layers.3.mlp"                 # the module's output           (port "out")
    "model.layers.3.mlp:in"              # its first positional input    (port "in")
    "model.layers.3.self_attn:in.mask"   # a named argument              (port "in.mask")
    "model.layers.3.self_attn:out.1"     # element 1 of a tuple output   (port "out.1")
    "model.layers.3.self_attn:pattern"   # a virtual port (attention probabilities)

Paths are the keys of ``root.named_modules()`` — the same strings that prefix the parameter
names — never Python attribute chains (mlx-lm's ``Model.layers`` is a property that may
return a copy). ``""`` is the root itself.

Patterns match one dotted segment at a time:

- ``*`` is exactly one segment, ``**`` any number of segments (zero included);
- shell classes and wildcards work inside a segment (``layers.1?``, ``*_proj``);
- a segment ``[a-b]`` made of numbers is an inclusive integer range (``layers.[8-11]``),
  ``[1,3,5]`` a list.

Matches come back in natural order (``layers.2`` before ``layers.10``). A spec may also be an
accessor function ``lambda m: m.model.layers[3].mlp`` (returning one module or a list of
them), resolved by identity, or a `Site` whose ``expect`` checks the number of matches.
A spec that matches nothing raises `SiteError` listing the closest real paths.

Example:
    >>> from mlxinterp.testing import tiny_model
    >>> model = tiny_model("llama")
    >>> [str(s) for s in select(model, "model.layers.*.mlp")]
    ['model.layers.0.mlp', 'model.layers.1.mlp', 'model.layers.2.mlp']
    >>> [str(s) for s in select(model, lambda m: m.model.layers[1].mlp, port="in")]
    ['model.layers.1.mlp:in']
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.nn as nn

__all__ = ["Site", "SiteError", "SiteSpec", "select", "resolve", "natural_key", "module_paths"]


class SiteError(LookupError):
    """A site spec that does not name (the right number of) real sites."""


_PORT_RE = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_0-9]+)?$")


@dataclass(frozen=True)
class Site:
    """A module path (or pattern, or accessor function) and a port.

    ``str(site)`` is the canonical name used as the key of captured activations and planted
    values: ``"path"`` for the output port and ``"path:port"`` otherwise.

    Example:
        >>> Site.parse("model.layers.3.mlp:in")
        Site(path='model.layers.3.mlp', port='in')
        >>> str(Site("model.layers.3.mlp", "out"))
        'model.layers.3.mlp'
    """

    path: str | Callable[[Any], Any]
    port: str = "out"
    expect: int | None = field(default=None, compare=False, repr=False)
    alias: str | None = field(default=None, repr=False)
    view: Any = field(default=None, compare=False, repr=False)
    axes: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.port, str) or not _PORT_RE.match(self.port):
            raise SiteError(
                f"bad port {self.port!r}: use 'out', 'in', 'out.N', 'in.N', 'in.NAME' "
                "or a virtual port name such as 'pattern'"
            )

    @classmethod
    def parse(cls, spec: str, *, expect: int | None = None) -> Site:
        """Parse ``"path"`` or ``"path:port"``; ``layers[3]`` is accepted for ``layers.3``."""
        if not isinstance(spec, str):
            raise TypeError(f"a site spec string is needed, got {type(spec).__name__}")
        path, sep, port = spec.partition(":")
        path = re.sub(r"(?<=[A-Za-z_0-9])\[(\d+)\]", r".\1", path.strip())
        return cls(path, port.strip() if sep else "out", expect)

    @property
    def is_pattern(self) -> bool:
        """True when the path is a pattern or accessor rather than one concrete path."""
        return callable(self.path) or any(c in self.path for c in "*?[")

    def __str__(self) -> str:
        if self.alias is not None:
            return self.alias
        path = getattr(self.path, "__name__", "<accessor>") if callable(self.path) else self.path
        return path if self.port == "out" else f"{path}:{self.port}"


SiteSpec = str | Site | Callable[[Any], Any]
"""Anything that names sites: a string, a `Site`, or an accessor function."""


def natural_key(path: str) -> tuple:
    """Sort key putting ``layers.2`` before ``layers.10``.

    Example:
        >>> sorted(["layers.10", "layers.2", "layers.1"], key=natural_key)
        ['layers.1', 'layers.2', 'layers.10']
    """
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path))


def module_paths(root: nn.Module) -> dict[str, nn.Module]:
    """Every module under ``root`` by path, natural order; a shared module keeps its first path.

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> paths = module_paths(tiny_model("gpt2"))
        >>> list(paths)[:4], type(paths["model.h.0.attn.c_proj"]).__name__
        (['', 'model', 'model.h.0', 'model.h.0.attn'], 'Linear')
    """
    seen: set[int] = set()
    out: dict[str, nn.Module] = {}
    for path, mod in sorted(root.named_modules(), key=lambda kv: natural_key(kv[0])):
        if id(mod) not in seen:
            seen.add(id(mod))
            out[path] = mod
    return out


_RANGE_RE = re.compile(r"^\[(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)\]$")


def _segment_matches(pattern: str, segment: str) -> bool:
    m = _RANGE_RE.match(pattern)
    if m and segment.isdigit():
        n = int(segment)
        for part in m.group(1).split(","):
            lo, _, hi = part.partition("-")
            if int(lo) <= n <= int(hi or lo):
                return True
        return False
    return fnmatch.fnmatchcase(segment, pattern)


def _path_matches(pattern: Sequence[str], path: Sequence[str]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_path_matches(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and _segment_matches(head, path[0]) and _path_matches(rest, path[1:])


def _split(path: str) -> list[str]:
    return path.split(".") if path else []


def _closest(query: str, paths: Iterable[str], n: int = 5) -> list[str]:
    paths = [p for p in paths if p]
    close = difflib.get_close_matches(query, paths, n=n, cutoff=0.5)
    if close:
        return close
    # Fall back to paths sharing the longest prefix of segments with the query.
    q = _split(query)

    def shared(p: str) -> int:
        k = 0
        for a, b in zip(q, _split(p)):
            if a != b and not _segment_matches(a, b):
                break
            k += 1
        return k

    return sorted(paths, key=lambda p: (-shared(p), natural_key(p)))[:n]


def _no_match_error(root: nn.Module, site: Site, paths: dict[str, nn.Module]) -> SiteError:
    query = str(site.path)
    from mlx.utils import tree_flatten

    params = dict(tree_flatten(root.parameters()))
    if query in params:
        owner = query.rsplit(".", 1)[0]
        return SiteError(
            f"{query!r} is a parameter, not a module: sites are module calls. "
            f"Use {owner!r} (its output) or '{owner}:in' (its input)."
        )
    hint = ", ".join(repr(p) for p in _closest(query, paths))
    return SiteError(
        f"site {str(site)!r} matches no module of {type(root).__name__}. "
        f"Closest real paths: {hint}. "
        "List them all with mlxinterp.sites.module_paths(model)."
    )


def _check_port(site: Site, module: nn.Module) -> None:
    from .intercept import virtual_port

    base = site.port.split(".")[0]
    if base in ("in", "out"):
        return
    port = virtual_port(site.port)
    if port is None:
        from .intercept import virtual_port_names

        raise SiteError(
            f"unknown port {site.port!r} in site {str(site)!r}. Ports: 'out' (default), 'in', "
            f"'out.N', 'in.N', 'in.NAME'; virtual: {', '.join(virtual_port_names()) or 'none'}."
        )
    if not port.supports(module, site.port):
        raise SiteError(
            f"port {site.port!r} does not apply to {str(site)!r} "
            f"(a {type(module).__name__}): {port.doc}"
        )


def resolve(
    root: nn.Module, spec: SiteSpec, *, port: str | None = None, expect: int | None = None
) -> list[tuple[Site, nn.Module]]:
    """Resolve one spec to concrete ``(Site, module)`` pairs in natural order.

    ``port`` overrides the spec's port (used with accessor functions); ``expect`` checks the
    number of matches.

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> [str(s) for s, m in resolve(model, "model.layers.1.mlp.*_proj:in")]
        ['model.layers.1.mlp.down_proj:in', 'model.layers.1.mlp.gate_proj:in',
         'model.layers.1.mlp.up_proj:in']
        >>> [(str(s), type(m).__name__) for s, m in resolve(model, "attn_out.-1")]
        [('attn_out.-1', 'Attention')]
    """
    if isinstance(spec, str) and port is None:
        from .names import expand_standard

        standard = expand_standard(root, spec)
        if standard is not None:
            if expect is not None and len(standard) != expect:
                raise SiteError(f"site {spec!r} matched {len(standard)} sites, expected {expect}")
            return standard
    if isinstance(spec, Site):
        site = spec
    elif isinstance(spec, str):
        site = Site.parse(spec)
    elif callable(spec):
        site = Site(spec)
    else:
        raise TypeError(
            f"a site must be a string, a Site or an accessor function, got {type(spec).__name__}"
        )
    if port is not None:
        site = Site(site.path, port, site.expect)
    expect = site.expect if expect is None else expect
    paths = module_paths(root)
    if callable(site.path):
        found = site.path(root)
        items = list(found) if isinstance(found, (list, tuple)) else [found]
        by_id = {id(m): p for p, m in paths.items()}
        matches = []
        for item in items:
            if not isinstance(item, nn.Module):
                raise SiteError(
                    f"accessor {site} returned a {type(item).__name__}; it must return a "
                    "module (or a list of modules) under the root"
                )
            if id(item) not in by_id:
                raise SiteError(
                    f"accessor {site} returned a {type(item).__name__} that is not a module "
                    f"under the root {type(root).__name__}"
                )
            matches.append(by_id[id(item)])
    elif site.is_pattern:
        pattern = _split(site.path)
        matches = [p for p in paths if _path_matches(pattern, _split(p))]
    else:
        matches = [site.path] if site.path in paths else []
    if not matches:
        raise _no_match_error(root, site, paths)
    if expect is not None and len(matches) != expect:
        shown = ", ".join(matches[:8]) + (", ..." if len(matches) > 8 else "")
        raise SiteError(
            f"site {str(site)!r} matched {len(matches)} modules, expected {expect}: {shown}"
        )
    out = []
    for p in matches:
        concrete = Site(p, site.port)
        _check_port(concrete, paths[p])
        out.append((concrete, paths[p]))
    return out


def select(
    root: nn.Module,
    specs: SiteSpec | Sequence[SiteSpec],
    *,
    port: str | None = None,
    expect: int | None = None,
) -> list[Site]:
    """The concrete sites that ``specs`` name on ``root``, deduplicated, in order.

    Use it to see what a pattern selects before transforming with it.

    Example:
        >>> from mlxinterp.testing import tiny_model
        >>> [str(s) for s in select(tiny_model("gpt2"), "model.h.[1-2].attn", expect=2)]
        ['model.h.1.attn', 'model.h.2.attn']
    """
    return [s for s, _ in resolve_many(root, specs, port=port, expect=expect)]


def resolve_many(
    root: nn.Module,
    specs: SiteSpec | Sequence[SiteSpec],
    *,
    port: str | None = None,
    expect: int | None = None,
) -> list[tuple[Site, nn.Module]]:
    """`resolve` for one spec or a list of them; duplicates are dropped, first wins."""
    if isinstance(specs, (str, Site)) or callable(specs):
        specs = [specs]
    out: dict[Site, nn.Module] = {}
    for spec in specs:
        for site, mod in resolve(root, spec, port=port):
            out.setdefault(site, mod)
    if expect is not None and len(out) != expect:
        raise SiteError(f"sites matched {len(out)} modules, expected {expect}")
    return list(out.items())
