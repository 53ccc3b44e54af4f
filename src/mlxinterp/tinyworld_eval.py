"""The figures tinyworld is trained to and tested on (see `mlxinterp.world`).

- ``facts``: top-1 accuracy over every fact prompt (each must be right: target ≥ 95 %);
- ``ioi_heldout``: top-1 accuracy on indirect-object prompts over name pairs never seen
  together in training (target ≥ 90 %);
- ``induction_ratio``: mean loss on the second repeat of a random sequence divided by the
  mean loss on the first repeat, over sequences of 6 to 20 words (target < 0.2).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import world

__all__ = ["evaluate", "top1", "induction_losses"]


def top1(model: nn.Module, tokenizer: Any, prompts: list[world.Prompt]) -> list[bool]:
    """Whether the model's greedy next word is the prompt's answer, per prompt.

    Example:
        >>> from mlxinterp.loading import load
        >>> model, tok = load("tinyworld")  # doctest: +SKIP
        >>> top1(model, tok, world.fact_prompts()[:4])  # doctest: +SKIP
        [True, True, True, True]
    """
    out = []
    for p in prompts:
        ids = tokenizer.encode(p.text)
        answer = tokenizer.encode(p.answer, add_special_tokens=False)
        logits = model(mx.array([ids]))[0, -1]
        out.append(int(mx.argmax(logits).item()) == answer[0])
    return out


def heldout_ioi_prompts(seed: int = 0) -> list[world.Prompt]:
    """Four prompts per held-out name pair: both name orders and both subjects."""
    _, held = world.ioi_pairs(seed)
    rng = random.Random(seed + 1)
    prompts = []
    for a, b in held:
        for (x, y), subj in itertools.product(((a, b), (b, a)), (False, True)):
            prompts.append(
                world.ioi_prompt(
                    x,
                    y,
                    subj,
                    rng.choice(world.PLACES),
                    rng.choice(world.OBJECTS),
                    rng.randrange(len(world.IOI_TEMPLATES)),
                )
            )
    return prompts


def induction_losses(
    model, tokenizer, n: int = 45, lengths: Sequence[int] = tuple(range(6, 21)), seed: int = 0
):
    """(mean loss on the first repeat, mean loss on the second repeat) over ``n`` random
    sequences whose lengths cycle through ``lengths``.

    Several lengths, so that only a real induction head scores well: a head that attends a
    fixed number of tokens back fits one length and fails the others. The first word of each
    repeat is left out (nothing predicts it).

    Example:
        >>> from mlxinterp.loading import load
        >>> model, tok = load("tinyworld")  # doctest: +SKIP
        >>> first, second = induction_losses(model, tok, n=15)  # doctest: +SKIP
        >>> second / first < 0.2  # doctest: +SKIP
        True
    """
    rng = random.Random(seed + 2)
    first, second = [], []
    for i in range(n):
        length = lengths[i % len(lengths)]
        words = world.induction_sequence(rng, length)
        ids = tokenizer.encode(" ".join(words))
        x = mx.array([ids])
        logp = nn.log_softmax(model(x)[0, :-1], axis=-1)
        nll = -mx.take_along_axis(logp, x[0, 1:, None], axis=-1)[:, 0]
        # ids[0] is BOS; ids[1 + i] is word i. Predicting word i uses logits at position i.
        first.append(nll[1:length].mean().item())  # words 1..length-1 of the first copy
        second.append(nll[length + 1 : 2 * length].mean().item())  # copy 2, minus its start
    return sum(first) / n, sum(second) / n


def evaluate(path_or_name: str = "tinyworld") -> dict[str, float]:
    """All tinyworld figures for a model folder (or ``"tinyworld"``).

    Example:
        >>> figures = evaluate("tinyworld")  # doctest: +SKIP
        >>> figures["facts"] >= 0.95, figures["induction_ratio"] < 0.2  # doctest: +SKIP
        (True, True)
    """
    from .loading import load

    model, tokenizer = load(path_or_name)
    facts = top1(model, tokenizer, world.fact_prompts())
    ioi = top1(model, tokenizer, heldout_ioi_prompts())
    f, s = induction_losses(model, tokenizer)
    return {
        "facts": sum(facts) / len(facts),
        "ioi_heldout": sum(ioi) / len(ioi),
        "induction_first_loss": f,
        "induction_second_loss": s,
        "induction_ratio": s / f,
    }
