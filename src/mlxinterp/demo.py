"""The main job: the three seed workflows on one model, as an HTML report and a summary.

1. **Lenses** on "The Eiffel Tower is located in the city of": the logit lens, a tuned lens
   trained for a short budget, and their per-layer KL to the final distribution.
2. **Patching** "The capital of France is" vs "The capital of Japan is": activation patching
   of the residual stream by layer × position, and its attribution-patching estimate.
3. **Steering** "The movie was" with a sentiment vector from contrasting reviews.

Run ``mlxinterp demo`` (``make demo``) — tinyworld by default, ``--model`` for any mlx-lm model
name or folder. Writes one self-contained HTML file (figures embedded) and returns a short
terminal summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .generation import during, generate
from .lens import TunedLens, compare_lenses, logit_lens, tuned_lens
from .loading import load
from .metrics import logit_diff
from .patching import activation_patching, attribution_patching, rank_correlation
from .report import Report
from .steering import scale_sweep, steer, steering_vector

__all__ = ["run", "first_token"]

LENS_PROMPT = "The Eiffel Tower is located in the city of"
CLEAN, CORRUPT = "The capital of France is", "The capital of Japan is"
ANSWERS = ("Paris", "Tokyo")
STEER_PROMPT = "The movie was"
POSITIVE = [
    "The movie was wonderful and the food was",
    "The book was great and the show was",
    "The play was amazing and the hotel was",
    "The game was lovely and the movie was",
    "The concert was brilliant and the book was",
    "The food was excellent and the play was",
]
NEGATIVE = [
    "The movie was terrible and the food was",
    "The book was awful and the show was",
    "The play was boring and the hotel was",
    "The game was bad and the movie was",
    "The concert was dreadful and the book was",
    "The food was horrible and the play was",
]
POS_WORDS = ["wonderful", "great", "amazing", "delightful", "brilliant", "excellent"]
NEG_WORDS = ["terrible", "awful", "boring", "dreadful", "horrible", "bad"]


def first_token(tokenizer: Any, word: str) -> int:
    """The id of the first token of ``word`` as it appears after a space.

    Example:
        >>> from mlxinterp import load
        >>> _, tok = load("tinyworld")
        >>> tok.decode([first_token(tok, "Paris")])
        'Paris'
    """
    for text in (" " + word, word):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids:
            return ids[0]
    raise ValueError(f"{word!r} encodes to no token")


def _lens_stream(tokenizer: Any, model_name: str) -> mx.array:
    if model_name == "tinyworld":
        from . import world

        text = " ".join(world.corpus(1500, seed=7))
    else:
        text = " ".join(POSITIVE + NEGATIVE + [LENS_PROMPT, CLEAN, CORRUPT] * 4)
    return mx.array(tokenizer.encode(text))


def run(
    model: str = "tinyworld",
    out: str | Path = "mlxinterp-report.html",
    tuned_steps: int = 200,
    progress: bool = False,
) -> tuple[str, Path]:
    """Run the demo; returns (terminal summary, report path).

    Example:
        >>> text, path = run(out="/tmp/mlxinterp-report.html")  # doctest: +SKIP
        >>> print(text)  # doctest: +SKIP
        mlxinterp demo on tinyworld ...
    """
    import matplotlib

    matplotlib.use("Agg")
    t_start = time.time()
    net, tok = load(model)
    report = Report(f"mlxinterp demo — {model}")
    summary = [f"mlxinterp demo on {model}"]

    # 1. lenses
    ll = logit_lens(net, LENS_PROMPT, tokenizer=tok)
    stream = _lens_stream(tok, model)
    lens = TunedLens.train(
        net,
        stream,
        steps=tuned_steps,
        batch_size=8,
        seq_len=min(32, stream.size // 4),
        progress=progress,
    )
    tl = tuned_lens(net, lens, LENS_PROMPT, tokenizer=tok)
    tops = ll.top_tokens(1)
    first = next(
        (ll.layers[i] for i, layer in enumerate(tops) if layer[-1][0] == ANSWERS[0]), "never"
    )
    kl_l = np.array(ll.kl_to_final().mean(axis=(1, 2)))
    kl_t = np.array(tl.kl_to_final().mean(axis=(1, 2)))
    report.section(
        "1. What each layer believes: logit lens and tuned lens",
        report.text(
            f"Prompt: “{LENS_PROMPT}”. The model's answer: “{tops[-1][-1][0]}”; the "
            f"logit lens first ranks “{ANSWERS[0]}” top at {first}."
        )
        + report.figure(ll.plot().figure, "Logit lens: top-1 token and its probability")
        + report.figure(tl.plot().figure, f"Tuned lens ({tuned_steps} training steps)")
        + report.figure(compare_lenses([ll, tl]).figure, "KL(final ‖ lens) per layer")
        + report.table(
            ["layer", "logit lens KL", "tuned lens KL"],
            [[n, f"{a:.3f}", f"{b:.3f}"] for n, a, b in zip(ll.layers, kl_l, kl_t)],
        ),
    )
    summary.append(
        f"  lens: answer '{tops[-1][-1][0]}'; '{ANSWERS[0]}' top-1 from {first}; "
        f"mean KL logit {kl_l[:-1].mean():.3f} vs tuned {kl_t[:-1].mean():.3f}"
    )

    # 2. patching
    metric = logit_diff(first_token(tok, ANSWERS[0]), first_token(tok, ANSWERS[1]))
    try:
        act = activation_patching(
            net,
            CLEAN,
            CORRUPT,
            metric=metric,
            tokenizer=tok,
            component="resid_pre",
            progress=progress,
        )
        att = attribution_patching(
            net, CLEAN, CORRUPT, metric=metric, tokenizer=tok, component="resid_pre"
        )
        rho = rank_correlation(act.to_numpy(), att.to_numpy())
        top = act.top(3)
        report.section(
            "2. Where is the fact? Activation and attribution patching",
            report.text(
                f"Clean “{CLEAN}” vs corrupted “{CORRUPT}”, metric "
                f"{act.metric} (0 = corrupted run, 1 = clean run). Spearman "
                f"correlation of the gradient estimate with real patching: {rho:.2f}."
            )
            + report.figure(act.plot().figure, "Activation patching, resid_pre (layer × pos)")
            + report.figure(att.plot().figure, "Attribution patching estimate")
            + report.table(["cell", "effect"], [[str(c), f"{v:.3f}"] for c, v in top]),
        )
        summary.append(
            f"  patching: top cells {[(c['layer'], c['pos']) for c, _ in top]}; "
            f"attribution vs patching Spearman {rho:.2f}"
        )
    except ValueError as e:  # e.g. prompts of different token lengths on a hub model
        report.section("2. Patching", report.text(f"skipped: {e}"))
        summary.append(f"  patching: skipped ({e})")

    # 3. steering
    site = f"resid_post.{(len(ll.layers) - 1) // 2}"  # the middle of the stack
    vec = steering_vector(net, POSITIVE, NEGATIVE, site, tokenizer=tok)
    scales = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    logits = scale_sweep(net, STEER_PROMPT, site, vec, scales, tokenizer=tok)
    probs = mx.softmax(logits[:, 0].astype(mx.float32), axis=-1)
    pos_ids = mx.array([first_token(tok, w) for w in POS_WORDS])
    neg_ids = mx.array([first_token(tok, w) for w in NEG_WORDS])
    pos_mass = probs[:, pos_ids].sum(-1).tolist()
    neg_mass = probs[:, neg_ids].sum(-1).tolist()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.plot(scales, pos_mass, "o-", label="positive words")
    ax.plot(scales, neg_mass, "o-", label="negative words")
    ax.set_xlabel(f"steering scale at {site}")
    ax.set_ylabel("next-token probability mass")
    ax.legend()
    fig.tight_layout()
    rows = []
    for s in (-1.0, 0.0, 1.0):
        g = generate(
            net, tok, STEER_PROMPT, max_tokens=6, interventions={site: during(steer(vec, s))}
        )
        rows.append([f"{s:+.1f}", STEER_PROMPT + " " + g.texts[0]])
    report.section(
        "3. Steering “The movie was”",
        report.text(
            f"Sentiment vector: mean difference at {site} of the last token (“was”) "
            f"between {len(POSITIVE)} positive and {len(NEGATIVE)} negative review "
            "openings such as “The movie was wonderful and the food was”; the scale "
            "sweep is one vmapped call."
        )
        + report.figure(fig, "Probability of positive / negative next words vs scale")
        + report.table(["scale", "greedy continuation"], rows),
    )
    summary.append("  steering: " + " | ".join(f"{r[0]}: {r[1]}" for r in rows))
    elapsed = time.time() - t_start
    report.section("About", report.text(f"Generated by mlxinterp in {elapsed:.0f} s."))
    path = report.save(out)
    summary.append(f"  report: {path} ({elapsed:.0f} s)")
    return "\n".join(summary), path
