"""Activation / attribution / path patching against loops, identities and finite differences."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import MOE_ARCHS

from mlxinterp import capture, intervene, load, plant, vmappable_experts
from mlxinterp.interventions import replace
from mlxinterp.metrics import kl_to, logit_diff, logprob, normalized, prob
from mlxinterp.patching import (
    activation_patching,
    attribution_patching,
    path_patching,
    rank_correlation,
)
from mlxinterp.testing import tiny_model

CLEAN = mx.array([[5, 9, 12, 7, 30, 8], [6, 11, 13, 17, 31, 9]])
CORRUPT = mx.array([[5, 9, 40, 7, 30, 8], [6, 11, 41, 17, 31, 9]])
METRIC = logit_diff(3, 4)


def assert_matches_loop(got, want):
    """Within 1e-5 of the effects' scale: float32 rounding differs between a batched
    (vmapped) run and a single one, and normalisation divides by the clean-corrupted gap."""
    want = np.asarray(want)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.array(got), want, rtol=0, atol=1e-5 * scale)


def sweep(model, **kw):
    ctx = vmappable_experts(model) if kw.pop("moe", False) else None
    if ctx is None:
        return activation_patching(model, CLEAN, CORRUPT, metric=METRIC, progress=False, **kw)
    with ctx:
        return activation_patching(model, CLEAN, CORRUPT, metric=METRIC, progress=False, **kw)


def loop(model, component, heads=False):
    """The same sweep as a Python loop of single interventions."""
    n = len(model.model.layers if hasattr(model.model, "layers") else model.model.h)
    keys = [f"{component}.{i}" for i in range(n)]
    _, acts = capture(model, keys)(CLEAN)
    m_clean, m_corr = float(METRIC(model(CLEAN))), float(METRIC(model(CORRUPT)))
    out = np.zeros((n, 4 if heads else 1, 6))
    for i, k in enumerate(keys):
        for h in range(4 if heads else 1):
            for p in range(6):
                edit = replace(acts[k]).at(positions=[p], heads=[h] if heads else None)
                v = float(METRIC(intervene(model, {k: edit})(CORRUPT)))
                out[i, h, p] = (v - m_corr) / (m_clean - m_corr)
    return out if heads else out[:, 0]


def test_vmapped_sweep_equals_a_loop_of_single_interventions(arch):
    model = tiny_model(arch)
    got = sweep(model, moe=arch in MOE_ARCHS)
    assert_matches_loop(got.values, loop(model, "resid_pre"))
    assert got.axes == ("layer", "pos") and got.labels["layer"][0] == "resid_pre.0"


def test_head_by_position_sweep_equals_a_loop():
    model = tiny_model("qwen2")
    got = sweep(model, component="z", by="layer_head_pos")
    assert_matches_loop(got.values, loop(model, "z", heads=True))


def test_patching_the_whole_clean_resid_pre_recovers_exactly_one():
    model = tiny_model("llama")
    r = sweep(model, by="layer")
    np.testing.assert_allclose(np.array(r.values), 1.0, atol=1e-5)
    noised = sweep(model, by="layer", direction="noise")
    np.testing.assert_allclose(np.array(noised.values), 0.0, atol=1e-5)


def test_patching_the_corrupted_run_with_its_own_activations_changes_nothing():
    model = tiny_model("gpt2")
    r = activation_patching(model, CORRUPT, CORRUPT, metric=METRIC, normalize=False, progress=False)
    np.testing.assert_allclose(np.array(r.values), float(METRIC(model(CORRUPT))), atol=1e-5)


def test_patching_position_p_leaves_earlier_logits_bitwise_unchanged():
    model = tiny_model("llama")
    _, acts = capture(model, "resid_pre.1")(CLEAN)
    base = model(CORRUPT)
    for p in range(6):
        out = intervene(model, {"resid_pre.1": replace(acts["resid_pre.1"]).at(positions=[p])})(
            CORRUPT
        )
        assert (out[:, :p] == base[:, :p]).all().item()


def test_patching_all_heads_z_equals_patching_attn_out():
    model = tiny_model("llama")
    z = sweep(model, component="z", by="layer")
    attn = sweep(model, component="attn_out", by="layer")
    np.testing.assert_allclose(np.array(z.values), np.array(attn.values), atol=1e-5)


@pytest.mark.parametrize("method", [activation_patching, attribution_patching])
def test_an_unknown_direction_is_rejected_by_name(method):
    with pytest.raises(ValueError, match="'denoise' or 'noise', not 'denoising'"):
        method(tiny_model("llama"), CLEAN, CORRUPT, metric=METRIC, direction="denoising")


def test_attribution_gradient_matches_finite_differences():
    model = tiny_model("llama", dtype=mx.float64)
    keys = ["resid_pre.1", "z.2"]
    g = plant(model, keys, mode="add")
    _, acts = capture(model, keys)(CORRUPT)
    zeros = {k: mx.zeros_like(v) for k, v in acts.items()}
    grads = mx.grad(lambda z: METRIC(g(z, CORRUPT)))(zeros)
    direction = {
        k: mx.random.normal(v.shape, key=mx.random.key(i)).astype(mx.float64)
        for i, (k, v) in enumerate(acts.items())
    }
    eps = 1e-3
    f = [float(METRIC(g({k: s * eps * direction[k] for k in keys}, CORRUPT))) for s in (1, -1)]
    fd = (f[0] - f[1]) / (2 * eps)
    dot = sum(float((grads[k] * direction[k]).sum()) for k in keys)
    np.testing.assert_allclose(dot, fd, rtol=5e-3)
    est = attribution_patching(model, CLEAN, CORRUPT, metric=METRIC, normalize=False)
    _, clean = capture(model, "resid_pre.1")(CLEAN)
    want = ((clean["resid_pre.1"] - acts["resid_pre.1"]) * grads["resid_pre.1"]).sum(axis=(0, 2))
    np.testing.assert_allclose(np.array(est.values[1]), np.array(want), rtol=1e-6, atol=1e-9)


def test_clean_and_corrupted_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="equal token length"):
        activation_patching(tiny_model("llama"), CLEAN, CORRUPT[:, :5], metric=METRIC)


def test_metrics_against_numpy():
    logits = mx.random.normal((2, 3, 8), key=mx.random.key(0))
    x = np.array(logits, dtype=np.float64)
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    assert float(logprob(2)(logits)) == pytest.approx(lp[:, -1, 2].mean(), rel=1e-5)
    assert float(prob(2, position=1)(logits)) == pytest.approx(np.exp(lp[:, 1, 2]).mean(), rel=1e-5)
    assert float(kl_to(logits)(logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(normalized(logit_diff(1, 2), 3.0, 1.0)(logits)) == pytest.approx(
        ((x[:, -1, 1] - x[:, -1, 2]).mean() - 1.0) / 2.0, rel=1e-5
    )


def test_path_patching_of_all_senders_to_the_output_equals_their_direct_effect():
    model = tiny_model("llama")
    # no senders: pass 1 reproduces the corrupted run, so the normalised effect is 0
    assert path_patching(model, CLEAN, CORRUPT, {}, ["resid_final"], metric=METRIC) == (
        pytest.approx(0.0, abs=1e-5)
    )
    # a sender head's path to the logits through the residual stream only
    v = path_patching(model, CLEAN, CORRUPT, {"z.2": [1]}, ["resid_final"], metric=METRIC)
    _, a = capture(model, ["z.2", "resid_final"])(CLEAN)
    _, b = capture(model, ["z.2", "resid_final", "result.2"])(CORRUPT)
    _, ca = capture(model, "result.2")(CLEAN)
    direct = b["resid_final"] + ca["result.2"][..., 1, :] - b["result.2"][..., 1, :]
    out = plant(model, "resid_final")({"resid_final": direct}, CORRUPT)
    m_clean, m_corr = float(METRIC(model(CLEAN))), float(METRIC(model(CORRUPT)))
    assert v == pytest.approx((float(METRIC(out)) - m_corr) / (m_clean - m_corr), abs=1e-4)


def test_france_paris_on_tinyworld_gives_a_sensible_layer_map():
    model, tok = load("tinyworld")
    clean, corrupt = "The capital of France is", "The capital of Japan is"
    paris, tokyo = tok.encode("Paris Tokyo", add_special_tokens=False)
    metric = logit_diff(paris, tokyo)
    act = activation_patching(
        model, clean, corrupt, metric=metric, tokenizer=tok, component="resid_pre", progress=False
    )
    v = act.to_numpy()
    assert v[0, 4] > 0.95  # before any block, only the country token differs
    assert v[1:, -1].min() > 0.95  # after block 0 the answer is carried by the last position
    assert np.abs(v[:, :4]).max() < 1e-5  # identical tokens before the country: no effect
    late = activation_patching(
        model, clean, corrupt, metric=metric, tokenizer=tok, component="resid_post", progress=False
    ).to_numpy()
    assert late[-1, -1] > 0.95  # the last position's final residual recovers the answer
    # the linear estimate finds the same cells: those that carry the answer (effect > 0.5 when
    # patched) are exactly the ones attribution ranks highest ...
    attr = attribution_patching(
        model, clean, corrupt, metric=metric, tokenizer=tok, component="resid_pre"
    ).to_numpy()
    big = set(zip(*np.nonzero(v > 0.5)))
    top = np.argsort(-attr, axis=None)[: len(big)]
    assert set(zip(*np.unravel_index(top, attr.shape))) == big, (attr, v)
    # ... and over the finer layer × head map its ranking agrees with real patching
    heads = dict(metric=metric, tokenizer=tok, component="z", by="layer_head")
    act_h = activation_patching(model, clean, corrupt, progress=False, **heads).to_numpy()
    attr_h = attribution_patching(model, clean, corrupt, **heads).to_numpy()
    rho = rank_correlation(attr_h, act_h)
    assert rho >= 0.7, rho
    ax = act.plot()
    assert "4:France" in [t.get_text() for t in ax.get_xticklabels()]
