"""Shared fixtures: tiny models per architecture and an independent numpy reference tail."""

from __future__ import annotations

# isort: off
import mlxinterp  # noqa: F401  (must precede mlx.core: loads the fast BLAS)
# isort: on

import functools
import os

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxinterp.testing import FIXTURE_ARCHS, tiny_model

MOE_ARCHS = ("mixtral", "qwen2_moe")

# No model hub here (and none wanted in tests): make hub look-ups fail fast, never hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@functools.cache
def model_for(arch: str, dtype_name: str = "float32"):
    return tiny_model(arch, dtype=getattr(mx, dtype_name))


def grad_dtype(arch: str) -> str:
    """float64 for finite differences, except where MLX kernels only take float32 (MoE)."""
    return "float32" if arch in MOE_ARCHS else "float64"


def blocks_path(model) -> str:
    paths = {p for p, _ in model.named_modules()}
    return "model.h" if "model.h.0" in paths else "model.layers"


def n_blocks(model) -> int:
    prefix = blocks_path(model) + "."
    return len({p.split(".")[2] for p, _ in model.named_modules() if p.startswith(prefix)})


def reference_tail(model, h: mx.array) -> np.ndarray:
    """Logits from the last block's output, computed in numpy float64 from the raw weights.

    Independent of the library and of the model's own modules: final norm (RMSNorm, gemma's
    (1 + w) RMSNorm, or LayerNorm) by formula, then the unembedding matrix, then gemma2's
    final-logit softcap.
    """
    params = {k: np.array(v, dtype=np.float64) for k, v in tree_flatten(model.parameters())}
    mods = dict(model.named_modules())
    norm_path = next(p for p in ("model.norm", "model.ln_f", "model.final_layer_norm") if p in mods)
    norm = mods[norm_path]
    x = np.array(h, dtype=np.float64)
    w = params[norm_path + ".weight"]
    eps = norm.eps
    cls = type(norm).__name__
    if cls == "LayerNorm":
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + eps) * w + params.get(norm_path + ".bias", 0.0)
    else:
        y = x / np.sqrt((x**2).mean(-1, keepdims=True) + eps)
        y = y * (1.0 + w if "gemma" in type(norm).__module__ else w)
    args = getattr(model, "args", None)
    tied = getattr(args, "tie_word_embeddings", getattr(model, "tie_word_embeddings", True))
    if "model.embed_out" in mods:
        W = params["model.embed_out.weight"]
    elif "lm_head" in mods and not tied or "model.embed_tokens" not in mods and "lm_head" in mods:
        W = params["lm_head.weight"]
    elif "model.wte" in mods:
        W = params["model.wte.weight"]
    else:
        W = params["model.embed_tokens.weight"]
    logits = y @ W.T
    cap = getattr(model, "final_logit_softcapping", None)
    if cap:
        logits = np.tanh(logits / cap) * cap
    return logits


def tokens(batch: int = 2, length: int = 6, seed: int = 0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array(rng.integers(3, 60, size=(batch, length)))


def directional_fd(f, x: mx.array, direction: mx.array, eps: float) -> float:
    """Central finite difference of scalar f at x along direction."""
    return (float(f(x + eps * direction)) - float(f(x - eps * direction))) / (2 * eps)


@pytest.fixture(params=FIXTURE_ARCHS)
def arch(request):
    return request.param


def manual_forward(model, toks: mx.array, edits=None, stop_after: int | None = None) -> mx.array:
    """A hook-free forward of a llama-layout model (embed, blocks, norm, lm_head) calling the
    modules directly, with ``edits[i](h)`` applied to block i's output. Used as the gradient
    reference for mixture-of-experts models, where top-k routing makes finite differences
    jump."""
    edits = edits or {}
    inner = model.model
    h = inner.embed_tokens(toks)
    for i, layer in enumerate(inner.layers):
        h = layer(h, "causal", None)
        if i in edits:
            h = edits[i](h)
        if stop_after == i:
            return h
    return model.lm_head(inner.norm(h))
