"""Logit lens and tuned lens: exactness, vectorisation, training, persistence, resume."""

import math

import matplotlib
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from conftest import tokens

from mlxinterp import anatomy, load, world
from mlxinterp.lens import TunedLens, compare_lenses, logit_lens, tuned_lens
from mlxinterp.testing import tiny_model

matplotlib.use("Agg")


def test_logit_lens_last_layer_is_the_models_log_probs(arch):
    model = tiny_model(arch)
    toks = tokens()
    lens = logit_lens(model, toks)
    want = nn.log_softmax(model(toks).astype(mx.float32), axis=-1)
    np.testing.assert_allclose(np.array(lens.final), np.array(want), rtol=1e-5, atol=1e-5)
    assert lens.logprobs.shape[0] == anatomy(model).n_layers + 1


def test_vectorised_lens_equals_a_per_layer_per_position_loop():
    from mlxinterp import capture

    model = tiny_model("gpt2")
    toks = tokens(1, 5)
    an = anatomy(model)
    lens = logit_lens(model, toks, layers=[0, 2, 3], positions=[1, 4])
    sites = ["resid_pre.0", "resid_post.1", "resid_post.2"]
    _, acts = capture(model, sites)(toks)
    for i, site in enumerate(sites):
        for j, pos in enumerate([1, 4]):
            v = acts[site][0, pos]
            want = nn.log_softmax(an.unembed(an.final_norm(v[None]))[0], axis=-1)
            np.testing.assert_allclose(
                np.array(lens.logprobs[i, 0, j]), np.array(want), rtol=1e-5, atol=1e-5
            )
    assert lens.layers == ["embed", "resid_post.1", "resid_post.2"]


@pytest.fixture(scope="module")
def tinyworld():
    return load("tinyworld")


def tinyworld_stream(tok, n=600, seed=5):
    text = " ".join(world.corpus(n, seed=seed))
    return mx.array(tok.encode(text))


def test_logit_lens_on_tinyworld_reads_paris_and_plots(tinyworld):
    model, tok = tinyworld
    lens = logit_lens(model, "The Eiffel Tower is located in the city of", tokenizer=tok)
    assert lens.top_tokens(1)[-1][-1] == ["Paris"]
    assert float(lens.prob_of("Paris")[-1, 0, -1]) > 0.5
    ax = lens.plot()
    assert "Paris" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="tokens"):
        lens.prob_of("Eiffel Tower")


def test_tuned_lens_beats_the_logit_lens_at_every_layer_but_the_last(tinyworld):
    model, tok = tinyworld
    data = tinyworld_stream(tok)
    lens = TunedLens.train(
        model,
        data,
        steps=150,
        batch_size=8,
        seq_len=32,
        optimizer=optim.Adam(learning_rate=3e-3),
        progress=False,
    )
    held = tinyworld_stream(tok, 80, seed=99)[None, :200]
    kl_logit = np.array(logit_lens(model, held).kl_to_final().mean(axis=(1, 2)))
    tuned = tuned_lens(model, lens, held)
    kl_tuned = np.array(tuned.kl_to_final().mean(axis=(1, 2)))
    assert (kl_tuned[:-1] < kl_logit[:-1]).all(), (kl_tuned, kl_logit)
    assert kl_tuned[-1] == pytest.approx(0.0, abs=1e-6)
    agree = np.array(tuned.top1_agreement())
    assert agree[-1] == 1.0
    ax = compare_lenses([logit_lens(model, held), tuned])
    assert len(ax.lines) == 2


def test_save_load_round_trip_is_exact_and_other_shapes_are_refused(tmp_path):
    model = tiny_model("llama")
    data = mx.random.randint(3, 60, (500,), key=mx.random.key(0))
    lens = TunedLens.train(model, data, steps=5, progress=False)
    lens.save(tmp_path / "lens", model)
    back = TunedLens.load(tmp_path / "lens", model)
    assert (back.weight == lens.weight).all().item() and (back.bias == lens.bias).all().item()
    with pytest.raises(ValueError, match="trained for llama with n_layers=3"):
        TunedLens.load(tmp_path / "lens", tiny_model("llama", num_hidden_layers=2))


def test_resume_from_a_checkpoint_continues_the_same_run(tmp_path):
    model = tiny_model("qwen2")
    data = mx.random.randint(3, 60, (500,), key=mx.random.key(1))
    straight = TunedLens.train(model, data, steps=12, progress=False)
    TunedLens.train(
        model, data, steps=6, progress=False, checkpoint_dir=tmp_path, checkpoint_every=6
    )
    resumed = TunedLens.train(
        model, data, steps=12, progress=False, checkpoint_dir=tmp_path, resume=True
    )
    assert (resumed.weight == straight.weight).all().item()
    with pytest.raises(FileNotFoundError):
        TunedLens.train(
            model, data, steps=2, progress=False, resume=True, checkpoint_dir=tmp_path / "nothing"
        )


def test_a_diverging_run_stops_with_an_error_and_keeps_finite_weights():
    model = tiny_model("llama")
    data = mx.random.randint(3, 60, (500,), key=mx.random.key(2))
    lens = TunedLens.for_model(model)
    lens.weight = lens.weight + mx.array(float("nan"))
    with pytest.raises(FloatingPointError, match="not applied"):
        TunedLens.train(model, data, steps=3, lens=lens, progress=False)
    assert math.isnan(float(lens.weight.sum()))  # the NaN start stays; nothing was applied
    assert float(lens.bias.sum()) == 0.0


def test_compiled_and_eager_training_steps_agree():
    model = tiny_model("gpt2")
    data = mx.random.randint(3, 60, (500,), key=mx.random.key(3))
    a = TunedLens.train(model, data, steps=4, progress=False, compile=True)
    b = TunedLens.train(model, data, steps=4, progress=False, compile=False)
    np.testing.assert_allclose(np.array(a.weight), np.array(b.weight), rtol=1e-4, atol=1e-6)
