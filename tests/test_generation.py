"""Generation with a KV cache, interventions, stitched capture, reactive edits, steering."""

import mlx.core as mx
import numpy as np
import pytest

from mlxinterp import capture, load, world
from mlxinterp.generation import during, generate, stream
from mlxinterp.interventions import add
from mlxinterp.steering import scale_sweep, steer, steering_vector
from mlxinterp.testing import tiny_model

PROMPT = mx.array([[5, 9, 12, 7, 30]])
ARCHS = ["llama", "gpt2", "qwen2", "gemma2", "gemma3_text", "mixtral", "gpt_neox"]


def force(token, vocab=64):
    """An edit on the logits that makes ``token`` the greedy choice."""
    return add(mx.zeros((vocab,)).at[token].add(1e4))


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_with_cache_equals_recomputing_the_whole_sequence(arch):
    model = tiny_model(arch)
    a = generate(model, None, PROMPT, max_tokens=6)
    b = generate(model, None, PROMPT, max_tokens=6, use_cache=False)
    assert a.tokens.tolist() == b.tokens.tolist()
    np.testing.assert_allclose(np.array(a.logits()), np.array(b.logits()), atol=1e-4)
    # and against a plain forward over the final sequence
    full = model(a.sequences[:, :-1])[:, PROMPT.shape[1] - 1 :]
    np.testing.assert_allclose(np.array(a.logits()), np.array(full), atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_interventions_on_every_step_agree_with_and_without_cache(arch):
    model = tiny_model(arch)
    v = mx.random.normal((32,), key=mx.random.key(0)) * 3
    edits = {"resid_post.1": add(v), "z.0": lambda z: z * 0.5}
    a = generate(model, None, PROMPT, max_tokens=6, interventions=edits)
    b = generate(model, None, PROMPT, max_tokens=6, interventions=edits, use_cache=False)
    plain = generate(model, None, PROMPT, max_tokens=6)
    assert a.tokens.tolist() == b.tokens.tolist()
    np.testing.assert_allclose(np.array(a.logits()), np.array(b.logits()), atol=1e-4)
    assert not np.allclose(np.array(a.logits()), np.array(plain.logits()), atol=1e-3)


def test_absolute_position_selectors_agree_with_and_without_cache():
    model = tiny_model("llama")
    v = mx.random.normal((32,), key=mx.random.key(1)) * 5
    edits = {"resid_pre.1": add(v).at(positions=[6, 8])}  # two generated positions
    a = generate(model, None, PROMPT, max_tokens=6, interventions=edits)
    b = generate(model, None, PROMPT, max_tokens=6, interventions=edits, use_cache=False)
    np.testing.assert_allclose(np.array(a.logits()), np.array(b.logits()), atol=1e-4)
    plain = generate(model, None, PROMPT, max_tokens=6)
    np.testing.assert_allclose(
        np.array(a.logits()[:, :2]), np.array(plain.logits()[:, :2]), atol=1e-6
    )  # steps 0, 1 see positions < 6 only


def test_an_intervention_from_step_t_changes_tokens_only_from_t_on():
    model = tiny_model("llama")
    plain = generate(model, None, PROMPT, max_tokens=6).tokens.tolist()[0]
    target = next(t for t in range(3, 64) if t not in plain)
    steered = generate(
        model,
        None,
        PROMPT,
        max_tokens=6,
        interventions={"logits": during(force(target), from_step=3)},
    )
    got = steered.tokens.tolist()[0]
    assert got[:3] == plain[:3] and got[3:] == [target] * 3


def test_reactive_edits_apply_to_the_very_next_step_without_lag():
    model = tiny_model("llama")
    plain = generate(model, None, PROMPT, max_tokens=5).tokens.tolist()[0]
    target = next(t for t in range(3, 64) if t not in plain)
    seen = []

    def on_step(step, tokens, acts):
        seen.append((step, tokens.shape[1], acts["resid_post.2"].shape[1]))
        return {"logits": force(target)} if step == 1 else {}

    got = generate(
        model, None, PROMPT, max_tokens=5, capture=["resid_post.2"], on_step=on_step
    ).tokens.tolist()[0]
    assert got[:2] == plain[:2] and got[2] == target  # decided at step 1, effective at step 2
    assert (
        got[3:]
        == generate(
            model, None, mx.array([PROMPT.tolist()[0] + got[:3]]), max_tokens=2
        ).tokens.tolist()[0]
    )
    assert seen[0] == (0, 6, 5) and seen[1] == (1, 7, 1)  # step 0: prompt; then one position


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "gemma2", "mixtral"])
def test_ragged_batch_generation_equals_per_prompt_generation(arch):
    model = tiny_model(arch)
    rows = [[5, 9, 12, 7, 30], [8, 3], [14, 15, 16]]
    width = 5
    tokens = mx.array([[0] * (width - len(r)) + r for r in rows])
    mask = mx.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    from mlxinterp.text import Batch

    batch = generate(model, None, Batch(tokens, mask, []), max_tokens=4, capture=["resid_post.1"])
    for i, r in enumerate(rows):
        solo = generate(model, None, mx.array([r]), max_tokens=4, capture=["resid_post.1"])
        assert batch.tokens[i].tolist() == solo.tokens[0].tolist()
        np.testing.assert_allclose(
            np.array(batch.logits()[i]), np.array(solo.logits()[0]), atol=1e-4
        )
        stitched = batch.stitched("resid_post.1")[i, width - len(r) :]
        np.testing.assert_allclose(
            np.array(stitched), np.array(solo.stitched("resid_post.1")[0]), atol=1e-4
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_stitched_capture_equals_one_forward_over_the_final_sequence(arch):
    model = tiny_model(arch)
    g = generate(model, None, PROMPT, max_tokens=5, capture=["resid_post.1", "z.0"])
    _, full = capture(model, ["resid_post.1", "z.0"])(g.sequences[:, :-1])
    for k in full:
        np.testing.assert_allclose(np.array(g.stitched(k)), np.array(full[k]), atol=1e-4)


def test_stream_yields_steps_as_they_are_computed_and_sampling_is_seeded():
    model = tiny_model("llama")
    steps = list(stream(model, None, PROMPT, max_tokens=3))
    assert [s.index for s in steps] == [0, 1, 2]
    a = generate(model, None, PROMPT, max_tokens=8, temperature=1.0, seed=3).tokens.tolist()
    b = generate(model, None, PROMPT, max_tokens=8, temperature=1.0, seed=3).tokens.tolist()
    c = generate(model, None, PROMPT, max_tokens=8, temperature=1.0, seed=4).tokens.tolist()
    assert a == b and a != c


def test_patterns_cannot_be_stitched_and_say_why():
    with pytest.raises(ValueError, match="cannot be stitched"):
        generate(tiny_model("llama"), None, PROMPT, max_tokens=2, capture=["pattern.0"])


def test_sentiment_vector_steers_the_movie_review_on_tinyworld():
    model, tok = load("tinyworld")

    def openings(words):  # the sentiment is carried to the last token, "was", in both sets
        return [
            f"The {a} was {w} and the {b} was"
            for a, b in zip(world.REVIEWED, world.REVIEWED[1:])
            for w in words
        ]

    site = "resid_post.2"
    v = steering_vector(
        model, openings(world.POSITIVE), openings(world.NEGATIVE), site, tokenizer=tok
    )
    ids = lambda words: mx.array([tok.encode(w, add_special_tokens=False)[0] for w in words])  # noqa: E731
    pos_ids, neg_ids = ids(world.POSITIVE), ids(world.NEGATIVE)
    logits = scale_sweep(model, "The movie was", site, v, [-1.0, 0.0, 1.0], tokenizer=tok)
    p = mx.softmax(logits[:, 0], axis=-1)
    pos_mass, neg_mass = p[:, pos_ids].sum(-1).tolist(), p[:, neg_ids].sum(-1).tolist()
    # threshold: the steered side gains at least 0.2 of probability mass over the unsteered run
    assert pos_mass[2] > pos_mass[1] + 0.2, (pos_mass, neg_mass)
    assert neg_mass[0] > neg_mass[1] + 0.2, (pos_mass, neg_mass)
    for scale, words in ((1.0, world.POSITIVE), (-1.0, world.NEGATIVE)):
        g = generate(
            model, tok, "The movie was", max_tokens=2, interventions={site: during(steer(v, scale))}
        )
        assert g.texts[0].split()[0] in words, (scale, g.texts)
