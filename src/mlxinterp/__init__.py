"""mlxinterp: functional mechanistic interpretability for MLX.

A few pure transforms turn a model call into new functions that compose with ``mx.compile``,
``mx.vmap`` and ``mx.grad``::

    out, acts = capture(model, ["model.layers.*.mlp"])(tokens)
    out       = intervene(model, {"model.layers.5.mlp": zero()})(tokens)
    out       = plant(model, sites, mode="set")(values, tokens)
    out, acts = harvest(model, plant_sites, capture_sites)(values, tokens)

Importing this package first loads a fast system BLAS for MLX's CPU build on Linux (see
`mlxinterp.blas`).
"""

from . import blas as _blas

_blas.setup()  # must precede the first `import mlx.core`

from . import attention as _attention  # noqa: F401  (registers the attention ports)
from .anatomy import Anatomy, anatomy
from .experts import vmappable_experts
from .interventions import add, clamp, compose, noise, only, replace, scale, zero
from .loading import load
from .sites import Site, SiteError, select
from .text import masked, tokenize
from .transforms import TransformError, capture, harvest, intervene, plant

__version__ = "0.1.0"

__all__ = [
    "Anatomy",
    "anatomy",
    "Site",
    "SiteError",
    "TransformError",
    "add",
    "capture",
    "clamp",
    "compose",
    "harvest",
    "intervene",
    "load",
    "masked",
    "noise",
    "only",
    "plant",
    "replace",
    "scale",
    "select",
    "tokenize",
    "vmappable_experts",
    "zero",
    "__version__",
]
