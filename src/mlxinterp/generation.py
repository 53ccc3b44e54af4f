"""Generation with interventions, real-time capture and reactive edits — no one-step lag.

`generate` (and its streaming form `stream`) run a small synchronous loop of our own over
mlx-lm's KV cache: one forward for the prompt (step 0), then one forward per generated
token. mlx-lm's ``generate_step`` computes step n + 1 before it yields token n, so a hook
that reacts to the yielded token acts one step late; here the token, that step's captured
activations and the next step's edits are all handled between two forwards:

    step 0: forward(prompt)      -> logits -> token 0, acts 0 -> on_step(0, ...) -> edits
    step 1: forward(token 0)     -> logits -> token 1, acts 1 -> on_step(1, ...) -> edits
    ...                             (edits returned at step n apply to step n + 1's forward)

Interventions apply to the prompt and every step. Each forward runs inside
`mlxinterp.intercept.position_offset`, so position selectors are *absolute* positions in the
(left-padded) sequence, and `during` gates any edit by step: prompt only, generated tokens
only, from step t. Ragged prompts are left-padded and the padding is honoured exactly, for
the prompt and for every cached step (`mlxinterp.text.left_padding`).

Captured activations come per step (``[batch, new positions, ...]``) and `Generation.stitched`
concatenates them along positions; that equals one forward capture over the final sequence.

Example:
    >>> from mlxinterp import load
    >>> model, tok = load("tinyworld")
    >>> g = generate(model, tok, "The capital of France is", max_tokens=2)
    >>> g.texts
    ['Paris.']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .intercept import HookContext, position_offset
from .interventions import Intervention, apply_edit
from .text import Batch, as_batch, left_padding, to_str_tokens
from .transforms import capture as capture_transform
from .transforms import intervene

__all__ = ["Generation", "Step", "during", "generate", "stream", "current_step"]

_step_var: ContextVar[int | None] = ContextVar("mlxinterp_generation_step", default=None)


def current_step() -> int | None:
    """The generation step being computed (0 = the prompt), or None outside `generate`.

    Example:
        >>> current_step() is None  # outside generation
        True
    """
    return _step_var.get()


@dataclass(frozen=True, eq=False)
class _During(Intervention):
    f: Callable
    prompt: bool
    generated: bool
    from_step: int
    until_step: int | None

    def apply(self, x: mx.array, ctx: HookContext | None) -> mx.array:
        step = current_step()
        active = True
        if step is not None:
            active = (self.prompt if step == 0 else self.generated) and step >= self.from_step
            if self.until_step is not None and step >= self.until_step:
                active = False
        return apply_edit(self.f, x, ctx) if active else x

    def __repr__(self):
        return (
            f"during({self.f!r}, prompt={self.prompt}, generated={self.generated}, "
            f"from_step={self.from_step})"
        )


def during(
    f: Callable,
    *,
    prompt: bool = True,
    generated: bool = True,
    from_step: int = 0,
    until_step: int | None = None,
) -> Intervention:
    """Apply ``f`` only on some generation steps (step 0 is the prompt's forward).

    ``during(add(v), prompt=False)`` steers generated tokens only; ``during(f, from_step=3)``
    changes the 4th generated token onwards. Outside generation ``f`` always applies.

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.interventions import zero
        >>> from mlxinterp.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> g = generate(model, None, mx.array([[5, 9, 12]]), max_tokens=3,
        ...              interventions={"mlp_out.0": during(zero(), prompt=False)})
        >>> g.tokens.shape
        (1, 3)
    """
    return _During(f, prompt, generated, from_step, until_step)


@dataclass(frozen=True)
class Step:
    """One generation step: ``tokens`` ``[batch]`` chosen, ``logits`` ``[batch, vocab]``, the
    activations captured in that forward, and ``texts`` (each token decoded)."""

    index: int
    tokens: mx.array
    logits: mx.array
    activations: dict[str, mx.array]
    texts: list[str]


@dataclass
class Generation:
    """The result of `generate`: prompt and generated tokens, texts, per-step captures."""

    prompt: Batch
    tokens: mx.array  # batch, generated
    texts: list[str]
    steps: list[Step] = field(repr=False)
    tokenizer: Any = field(default=None, repr=False)
    capture_axes: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def sequences(self) -> mx.array:
        """Prompt (left-padded) followed by the generated tokens: ``[batch, pos]``."""
        return mx.concatenate([self.prompt.tokens, self.tokens], axis=1)

    def stitched(self, site: str) -> mx.array:
        """A captured site over every position of `sequences` except the last token (which was
        produced but never fed back), concatenated along its position axis."""
        parts = [s.activations[site] for s in self.steps if site in s.activations]
        if not parts:
            captured = sorted(self.steps[0].activations)
            raise KeyError(f"{site!r} was not captured; captured: {captured}")
        return mx.concatenate(parts, axis=self.capture_axes.get(site, -2))

    def logits(self) -> mx.array:
        """Logits of every step: ``[batch, step, vocab]``."""
        return mx.stack([s.logits for s in self.steps], axis=1)


def _sample(logits: mx.array, temperature: float, key: mx.array | None) -> mx.array:
    if temperature == 0:
        return mx.argmax(logits, axis=-1)
    return mx.random.categorical(logits / temperature, key=key)


def _pos_axis(model: nn.Module, site: str) -> int:
    from .sites import resolve

    (s, _), *_ = resolve(model, site)
    axes = s.axes
    if axes and "key_pos" in axes:
        raise ValueError(
            f"{site}: attention patterns grow along keys each step and cannot be "
            "stitched; capture q/k/v or z instead"
        )
    return axes.index("pos") - len(axes) if axes and "pos" in axes else -2


def stream(
    model: nn.Module,
    tokenizer: Any,
    prompts: Any,
    *,
    max_tokens: int = 20,
    interventions: Mapping[str, Callable] | None = None,
    capture: Sequence[str] | None = None,
    on_step: Callable[[int, mx.array, dict[str, mx.array]], Mapping[str, Callable] | None]
    | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> Iterator[Step]:
    """Yield each generation `Step` as it is computed (see `generate` for the arguments).

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> steps = list(stream(tiny_model("gpt2"), None, mx.array([[5, 9, 12]]), max_tokens=2))
        >>> [s.index for s in steps], steps[0].tokens.shape
        ([0, 1], (1,))
    """
    from mlx_lm.models.cache import make_prompt_cache

    batch = as_batch(tokenizer, prompts)
    edits: dict[str, Callable] = dict(interventions or {})
    sites = list(capture or [])
    cache = make_prompt_cache(model) if use_cache else None
    key = mx.random.key(seed if seed is not None else 0)
    pads = (~batch.mask).sum(axis=1)
    padded = bool(pads.any().item())
    eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    done = mx.zeros((batch.tokens.shape[0],), dtype=mx.bool_)
    seq = batch.tokens
    t0 = batch.tokens.shape[1]
    for step in range(max_tokens):
        if use_cache:
            feed, offset = (seq, 0) if step == 0 else (seq[:, -1:], t0 + step - 1)
            kwargs = {"cache": cache}
        else:
            feed, offset, kwargs = seq, 0, {}
        fn = intervene(model, edits) if edits else model
        fn = capture_transform(fn, sites, root=model) if sites else fn
        token_step = _step_var.set(step)
        try:
            with position_offset(offset), left_padding(model, pads) if padded else nullcontext():
                result = fn(feed, **kwargs)
        finally:
            _step_var.reset(token_step)
        logits, acts = result if sites else (result, {})
        if not use_cache and sites:  # keep only the new positions, as with a cache
            keep = 1 if step else t0
            acts = {k: _last(v, keep, _pos_axis(model, k)) for k, v in acts.items()}
        last = logits[:, -1, :]
        if temperature:
            key, sub = mx.random.split(key)
        else:
            sub = None
        tokens = _sample(last, temperature, sub)
        if eos is not None and stop_at_eos:
            tokens = mx.where(done, eos, tokens)
            done = done | (tokens == eos)
        mx.eval(tokens, last, acts)
        texts = (
            to_str_tokens(tokenizer, tokens)
            if tokenizer is not None
            else [str(t) for t in tokens.tolist()]
        )
        seq = mx.concatenate([seq, tokens[:, None]], axis=1)
        yield Step(step, tokens, last, acts, texts)
        if on_step is not None:
            new = on_step(step, seq, acts)
            if new is not None:
                edits = dict(new)
        if eos is not None and stop_at_eos and done.all().item():
            break


def _last(x: mx.array, n: int, axis: int) -> mx.array:
    index = [slice(None)] * x.ndim
    index[axis] = slice(x.shape[axis] - n, None)
    return x[tuple(index)]


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Any,
    *,
    max_tokens: int = 20,
    interventions: Mapping[str, Callable] | None = None,
    capture: Sequence[str] | None = None,
    on_step: Callable[[int, mx.array, dict[str, mx.array]], Mapping[str, Callable] | None]
    | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> Generation:
    """Generate from one prompt or a ragged batch, with interventions and capture.

    ``interventions`` (``{site: f}``) apply to the prompt and every step (gate them with
    `during` or position selectors, which see absolute positions). ``capture`` lists sites
    recorded at every step (`Generation.stitched` joins them). ``on_step(step, tokens,
    acts)`` is called after each step with the tokens so far and that step's captured
    activations; returning a dict replaces the interventions from the next step on.
    ``temperature=0`` is greedy; otherwise sampling is seeded by ``seed``. With
    ``use_cache=False`` every step recomputes the whole sequence (a reference for tests).

    Example:
        >>> import mlx.core as mx
        >>> from mlxinterp.testing import tiny_model
        >>> g = generate(tiny_model("llama"), None, mx.array([[5, 9, 12]]), max_tokens=4,
        ...              capture=["resid_post.1"])
        >>> g.tokens.shape, g.stitched("resid_post.1").shape  # 3 prompt + 3 fed-back positions
        ((1, 4), (1, 6, 32))
    """
    steps = list(
        stream(
            model,
            tokenizer,
            prompts,
            max_tokens=max_tokens,
            interventions=interventions,
            capture=capture,
            on_step=on_step,
            temperature=temperature,
            seed=seed,
            stop_at_eos=stop_at_eos,
            use_cache=use_cache,
        )
    )
    batch = as_batch(tokenizer, prompts)
    tokens = mx.stack([s.tokens for s in steps], axis=1)
    eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    texts = []
    for row in tokens.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(tokenizer.decode(row) if tokenizer is not None else " ".join(map(str, row)))
    axes = {k: _pos_axis(model, k) for k in (capture or [])}
    return Generation(batch, tokens, texts, steps, tokenizer, axes)
