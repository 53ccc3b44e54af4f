"""Text in, tokens out — and ragged batches whose padding the model really honours.

mlx-lm models take no attention-mask argument: each model file builds its causal mask with
``create_attention_mask``, imported by name from ``mlx_lm.models.base``. `masked` runs the
model with that name rebound (in the model file's module, only while the call runs, only in
the current context) to a mask that is causal *and* hides each row's left padding; padding
queries attend to themselves so no row is empty. Rotary position encodings are relative, so
left padding leaves real positions exact; models with absolute position embeddings (gpt2)
get their position ids shifted per row. The result: each prompt's logits and activations at
real positions equal those of the prompt run alone (to float rounding).

Example:
    >>> from mlxinterp.loading import load
    >>> model, tok = load("tinyworld")
    >>> batch = tokenize(tok, ["The capital of France is", "People in Japan speak"])
    >>> batch.tokens.shape, batch.mask.sum(axis=1).tolist()
    ((2, 6), [6, 5])
    >>> logits = masked(model)(batch.tokens, batch.mask)
    >>> [tok.decode([int(i)]) for i in logits[:, -1].argmax(-1).tolist()]
    ['Paris', 'Japanese']
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .intercept import Hook, hooks_installed, original_class, rebound_global
from .sites import Site, module_paths

__all__ = ["Batch", "tokenize", "to_str_tokens", "masked", "as_batch"]

MASK_NAME = "create_attention_mask"
_PADS: ContextVar[mx.array | None] = ContextVar("mlxinterp_left_padding", default=None)


@dataclass(frozen=True)
class Batch:
    """Left-padded token ids ``[batch, pos]`` and ``mask`` (True at real tokens)."""

    tokens: mx.array
    mask: mx.array
    str_tokens: list[list[str]]

    @property
    def lengths(self) -> list[int]:
        return self.mask.sum(axis=1).tolist()

    @property
    def padding(self) -> mx.array:
        """Number of padding tokens at the start of each row."""
        return (~self.mask).sum(axis=1)


def _ids(tokenizer: Any, text: str, prepend_bos: bool | None) -> list[int]:
    ids = list(tokenizer.encode(text))
    bos = getattr(tokenizer, "bos_token_id", None)
    if prepend_bos is True and bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    elif prepend_bos is False and bos is not None and ids and ids[0] == bos:
        ids = ids[1:]
    return ids


def to_str_tokens(tokenizer: Any, ids: Sequence[int] | mx.array) -> list[str]:
    """Each id decoded on its own, for labels (``'<s>'``, ``'The'``, ``'capital'``, ...).

    Example:
        >>> import tempfile
        >>> from mlxinterp.loading import load
        >>> from mlxinterp.testing import save_tiny_model
        >>> _, tok = load(save_tiny_model("llama", tempfile.mkdtemp()))  # words w0, w1, ...
        >>> to_str_tokens(tok, [1, 4, 5])
        ['<s>', 'w1', 'w2']
    """
    ids = ids.tolist() if isinstance(ids, mx.array) else list(ids)
    return [tokenizer.decode([int(i)]) or tokenizer.convert_ids_to_tokens(int(i)) for i in ids]


def tokenize(
    tokenizer: Any, text: str | Sequence[str], *, prepend_bos: bool | None = None
) -> Batch:
    """Encode one string or several into a left-padded `Batch`.

    ``prepend_bos=None`` keeps the tokenizer's own choice; True/False force it.

    Example:
        >>> import tempfile
        >>> from mlxinterp.loading import load
        >>> from mlxinterp.testing import save_tiny_model
        >>> _, tok = load(save_tiny_model("llama", tempfile.mkdtemp()))  # words w0, w1, ...
        >>> batch = tokenize(tok, ["w1 w2 w3", "w4 w5"])
        >>> batch.tokens.shape, batch.lengths, batch.str_tokens[1]
        ((2, 3), [3, 2], ['<pad>', 'w4', 'w5'])
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise ValueError("tokenize needs at least one string")
    rows = [_ids(tokenizer, t, prepend_bos) for t in texts]
    width = max(len(r) for r in rows)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else (getattr(tokenizer, "eos_token_id", None) or 0)
    tokens = mx.array([[pad] * (width - len(r)) + r for r in rows])
    mask = mx.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    strs = [["<pad>"] * (width - len(r)) + to_str_tokens(tokenizer, r) for r in rows]
    return Batch(tokens, mask, strs)


def as_batch(tokenizer: Any, text_or_tokens: Any) -> Batch:
    """A `Batch` from text, a list of texts, a `Batch`, or token ids (``[pos]``/``[b, pos]``).

    Example:
        >>> batch = as_batch(None, [5, 6, 7])  # token ids need no tokenizer
        >>> batch.tokens.shape, batch.lengths, batch.str_tokens
        ((1, 3), [3], [['5', '6', '7']])
        >>> as_batch(None, batch) is batch
        True
    """
    if isinstance(text_or_tokens, Batch):
        return text_or_tokens
    if isinstance(text_or_tokens, str) or (
        isinstance(text_or_tokens, (list, tuple))
        and text_or_tokens
        and isinstance(text_or_tokens[0], str)
    ):
        if tokenizer is None:
            raise ValueError("text needs a tokenizer: pass tokenizer=... or token ids")
        return tokenize(tokenizer, text_or_tokens)
    tokens = mx.array(text_or_tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    strs = [
        to_str_tokens(tokenizer, r) if tokenizer else [str(i) for i in r.tolist()] for r in tokens
    ]
    return Batch(tokens, mx.ones(tokens.shape, dtype=mx.bool_), strs)


def _padded_mask(original: Callable) -> Callable:
    from mlx_lm.models.base import create_causal_mask

    def create_attention_mask(h, cache=None, window_size=None, return_array=False):
        pads = _PADS.get()
        if pads is None:
            return original(h, cache, window_size=window_size, return_array=return_array)
        n = h.shape[1]
        offset = int(getattr(cache, "offset", 0) or 0) if cache is not None else 0
        size = getattr(cache, "max_size", None)
        if size is not None and offset + n > size:
            raise ValueError(
                f"a padded batch with a sliding-window KV cache longer than its window ({size})"
                " is not supported: generate these prompts one at a time"
            )
        mask = create_causal_mask(n, offset, window_size=window_size, left_padding=pads)
        q = mx.arange(offset, offset + n)[:, None]
        mask = mask | (q == mx.arange(offset + n)[None])  # padding attends to itself
        # return_array callers apply the mask themselves; gemma2 (the only one) groups query
        # heads as [batch, kv_heads, repeats, q, k], so give the batch mask a fifth axis
        return mask[:, None] if return_array else mask

    create_attention_mask.__wrapped__ = original  # type: ignore[attr-defined]
    return create_attention_mask


def _mask_module(model: nn.Module) -> str:
    for _, m in model.named_modules():
        cls = original_class(m)
        mod = sys.modules.get(cls.__module__)
        call = getattr(cls.__call__, "__code__", None)
        if mod is not None and hasattr(mod, MASK_NAME) and call and MASK_NAME in call.co_names:
            return cls.__module__
    raise ValueError(
        f"{type(model).__name__} does not build its mask with mlx-lm's {MASK_NAME}; "
        "padded batches are not supported for it — run prompts one at a time"
    )


@contextmanager
def left_padding(model: nn.Module, pads: mx.array):
    """Within the block, ``model`` honours ``pads[b]`` left-padding tokens in row ``b``.

    The causal mask hides them (also for later calls with a KV cache: generation), and
    models with absolute position embeddings count positions from each row's first real
    token. Only the current context is affected.
    """
    module_name = _mask_module(model)
    from .anatomy import anatomy

    try:
        pos_embed = anatomy(model).spec.pos_embed
    except LookupError:
        pos_embed = None
    hooks = []
    if pos_embed is not None:  # absolute positions restart at each row's first real token
        hooks.append(
            Hook(
                module_paths(model)[pos_embed],
                Site(pos_embed, "in"),
                lambda p, ctx: mx.maximum(p[None, :] - pads[:, None], 0),
            )
        )
    token = _PADS.set(pads)
    try:
        with rebound_global(module_name, MASK_NAME, _padded_mask), hooks_installed(hooks):
            yield
    finally:
        _PADS.reset(token)


def check_left_padded(mask: mx.array) -> None:
    """Raise ``ValueError`` unless every row of ``mask`` ends with a real token."""
    if not mask[:, -1].all().item():
        raise ValueError("padding must be on the left (each row's last token must be real)")


def masked(model: nn.Module) -> Callable[..., mx.array]:
    """``f(tokens, mask, *args, **kw)``: ``model(tokens, ...)`` honouring ``mask``.

    ``mask`` is ``[batch, pos]`` boolean, True at real tokens, padding on the left (what
    `tokenize` makes; see `check_left_padded`). ``f`` is a plain function of arrays:
    transform it like the model (``capture(masked(model), sites)``), compile, vmap or
    differentiate it.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> tokens, mask = mx.array([[0, 5, 6], [4, 5, 6]]), mx.array([[0, 1, 1], [1, 1, 1]]) > 0
        >>> logits = masked(model)(tokens, mask)  # row 0 is [5, 6] after one padding token
        >>> bool(mx.allclose(logits[0, 1:], model(mx.array([[5, 6]]))[0], atol=1e-5))
        True
    """
    _mask_module(model)  # fail early for models that build no mask

    def f(tokens: mx.array, mask: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        if mask.shape != tokens.shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != tokens shape {tuple(tokens.shape)}"
            )
        with left_padding(model, (~mask).sum(axis=1)):
            return model(tokens, *args, **kwargs)

    f.__mlxinterp_root__ = model  # type: ignore[attr-defined]
    f.__name__ = f"masked({type(model).__name__})"
    return f
