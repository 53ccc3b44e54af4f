"""Virtual ports inside attention: ``q``, ``k``, ``v``, ``scores``, ``pattern``, ``result.H``.

mlx-lm never materialises attention probabilities: model files call
``scaled_dot_product_attention`` (imported by name from ``mlx_lm.models.base``), which runs
the fused kernel. While an attention module with a hooked attention port runs, the name is
rebound *in that model file's module* to a dispatcher. The dispatcher looks at a
`ContextVar` set only around the hooked call, so every other attention call — other layers,
other threads — goes straight to the original function and keeps the fused kernel. The
rebinding is reference-counted and undone when the last hooked call returns.

- ``q``, ``k``, ``v``: queries (after rotary embedding), keys and values as the kernel sees
  them, ``[batch, head, pos, d_head]`` (keys/values with the *kv* head count under GQA).
  Hooking only these keeps the fused kernel.
- ``scores``: ``q kᵀ · scale`` with the mask applied (masked entries hold the dtype's most
  negative finite value), ``[batch, head, query, key]``.
- ``pattern``: ``softmax(scores)``, computed in float32; masked entries are exactly 0.
  These two compute attention explicitly (O(L²) memory) for the hooked layers only. The
  explicit path matches the fused kernel to ~1e-6 and works under compile, vmap and grad;
  when the hooks only *read* (capture returns the very array it was given) the layer still
  returns the fused kernel's output, so capturing a pattern leaves the forward bit-exact.
  Masks: ``None``, ``"causal"`` (bottom-right aligned when keys are longer than queries, as
  with a KV cache), boolean and additive arrays (sliding windows arrive as arrays).
  Quantized KV caches and attention sinks raise a clear error.
- ``result.H`` on an output projection (``o_proj``, ``c_proj``, ``dense``): the per-head
  contributions ``z_h W_Oᴴ`` ``[batch, pos, head, d_out]`` whose sum plus the bias is the
  projection's output; edits to it change the output accordingly. Works with quantized
  weights.

Architectures that compute softmax inline (gemma2, with attention-logit soft-capping) do not
offer q/k/v/scores/pattern; asking for them raises a `SiteError` naming the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .intercept import original_class, rebound_global, register_virtual_port
from .sites import SiteError

__all__ = ["AttentionPorts", "ResultPort", "explicit_attention"]

SDPA_NAME = "scaled_dot_product_attention"
_FLOWS: ContextVar[dict | None] = ContextVar("mlxinterp_attention_flows", default=None)


def _mask_scores(scores: mx.array, mask: Any) -> mx.array:
    if mask is None:
        return scores
    neg = mx.finfo(scores.dtype).min
    if isinstance(mask, str):
        if mask != "causal":
            raise SiteError(f"attention mask {mask!r} is not supported by the pattern port")
        lq, lk = scores.shape[-2], scores.shape[-1]
        keep = (mx.arange(lq)[:, None] + (lk - lq)) >= mx.arange(lk)[None, :]
        return mx.where(keep, scores, neg)
    if mask.dtype == mx.bool_:
        return mx.where(mask, scores, neg)
    return scores + mask.astype(scores.dtype)


def explicit_attention(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    scale: float,
    mask: Any,
    flows: dict[str, Callable[[Any], Any]] | None = None,
    report_edit: bool = False,
) -> Any:
    """Attention computed step by step, routing scores and pattern through ``flows``.

    Equivalent to ``mx.fast.scaled_dot_product_attention`` (grouped-query heads repeated).
    With ``report_edit`` returns ``(out, edited)``, ``edited`` telling whether a flow
    returned a different array than it was given.

    Example:
        >>> import mlx.core as mx
        >>> q = mx.random.normal((1, 4, 3, 8), key=mx.random.key(0))  # [batch, head, pos, d]
        >>> kv = mx.random.normal((1, 2, 3, 8), key=mx.random.key(1))  # 2 kv heads (GQA)
        >>> out = explicit_attention(q, kv, kv, 8**-0.5, "causal")
        >>> fused = mx.fast.scaled_dot_product_attention(q, kv, kv, scale=8**-0.5, mask="causal")
        >>> out.shape, bool(mx.allclose(out, fused, atol=1e-5))
        ((1, 4, 3, 8), True)
    """
    flows = flows or {}
    n_rep = queries.shape[-3] // keys.shape[-3]
    if n_rep > 1:
        keys = mx.repeat(keys, n_rep, axis=-3)
        values = mx.repeat(values, n_rep, axis=-3)
    scores = (queries * scale) @ keys.swapaxes(-1, -2)
    scores = _mask_scores(scores.astype(mx.float32), mask)
    edited = False
    if "scores" in flows:
        new = flows["scores"](scores)
        edited, scores = new is not scores, new
    pattern = mx.softmax(scores, axis=-1, precise=True).astype(values.dtype)
    if "pattern" in flows:
        new = flows["pattern"](pattern)
        edited, pattern = edited or new is not pattern, new
    out = pattern @ values
    return (out, edited) if report_edit else out


def _dispatcher(original: Callable) -> Callable:
    def scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks=None):
        flows = _FLOWS.get()
        if not flows:
            return original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
        _FLOWS.set(None)  # one attention call per hooked module call
        if "q" in flows:
            queries = flows["q"](queries)
        if "k" in flows:
            keys = flows["k"](keys)
        if "v" in flows:
            values = flows["v"](values)
        if "scores" not in flows and "pattern" not in flows:
            return original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
        if hasattr(cache, "bits"):
            raise SiteError("attention scores/pattern with a quantized KV cache are not supported")
        if sinks is not None:
            raise SiteError("attention scores/pattern with attention sinks are not supported")
        out, edited = explicit_attention(queries, keys, values, scale, mask, flows, True)
        if edited:
            return out
        # scores/pattern only read (capture): keep the fused kernel's output bit for bit
        return original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)

    scaled_dot_product_attention.__wrapped__ = original  # type: ignore[attr-defined]
    return scaled_dot_product_attention


def attention_ports_unsupported_reason(module: nn.Module) -> str | None:
    """Why q/k/v/scores/pattern are unavailable on ``module`` (None when they are available)."""
    cls = original_class(module)
    mod = sys.modules.get(cls.__module__)
    call = getattr(cls.__call__, "__code__", None)
    if mod is None or call is None or SDPA_NAME not in call.co_names or not hasattr(mod, SDPA_NAME):
        return (
            f"{cls.__module__}.{cls.__name__} computes attention inline (gemma2: softmax with "
            "attention-logit soft-capping), not through mlx-lm's scaled_dot_product_attention; "
            "use z/result (the o_proj input/output per head) instead"
        )
    return None


class AttentionPorts:
    """The ``q``/``k``/``v``/``scores``/``pattern`` ports of an attention module."""

    name = "attention"
    doc = "needs an attention module that calls mlx-lm's scaled_dot_product_attention"
    ports = ("q", "k", "v", "scores", "pattern")

    def supports(self, module: nn.Module, port: str) -> bool:
        reason = attention_ports_unsupported_reason(module)
        if reason is not None:
            raise SiteError(f"port {port!r} is not available: {reason}")
        return True

    def wrap(self, module, call, flows):
        module_name = original_class(module).__module__

        def wrapped(*args, **kwargs):
            token = _FLOWS.set(dict(flows))
            try:
                with rebound_global(module_name, SDPA_NAME, _dispatcher):
                    return call(*args, **kwargs)
            finally:
                _FLOWS.reset(token)

        return wrapped


def _dense_weight(module: nn.Module) -> mx.array:
    if isinstance(module, nn.QuantizedLinear):
        return mx.dequantize(
            module["weight"],
            module["scales"],
            module.get("biases"),
            group_size=module.group_size,
            bits=module.bits,
            mode=getattr(module, "mode", "affine"),
        )
    return module["weight"]


class ResultPort:
    """``result.H``: per-head contributions of a linear output projection over H heads."""

    name = "result"
    doc = "needs a Linear (or QuantizedLinear) output projection; write 'result.N_HEADS'"

    def supports(self, module: nn.Module, port: str) -> bool:
        parts = port.split(".")
        return (
            isinstance(module, (nn.Linear, nn.QuantizedLinear))
            and len(parts) == 2
            and parts[1].isdigit()
        )

    def wrap(self, module, call, flows):
        (port, flow), *rest = flows.items()
        if rest:
            raise SiteError(f"two head counts hooked on one projection: {list(flows)}")
        n_heads = int(port.split(".")[1])

        def wrapped(x, *args, **kwargs):
            w = _dense_weight(module)  # [d_out, n_heads * d_head]
            d_out = w.shape[0]
            z = x.reshape(*x.shape[:-1], n_heads, -1)
            w_heads = w.reshape(d_out, n_heads, -1).astype(x.dtype)
            result = (z[..., :, None, :] @ w_heads.transpose(1, 2, 0)[..., :, :]).squeeze(-2)
            edited = flow(result)
            if edited is result:  # only read (capture): keep the layer's own output exactly
                return call(x, *args, **kwargs)
            out = edited.sum(axis=-2)
            if "bias" in module:
                out = out + module["bias"]
            return out

        return wrapped


register_virtual_port(AttentionPorts(), *AttentionPorts.ports)
register_virtual_port(ResultPort())
