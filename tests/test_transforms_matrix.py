"""capture / intervene / plant x {eager, compile, vmap, grad, compile∘vmap, compile∘grad} on
every fixture architecture, each checked against an independent computation: a numpy forward
of the model's tail from raw weights, a Python loop of single calls, or finite differences."""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import (
    MOE_ARCHS,
    blocks_path,
    directional_fd,
    grad_dtype,
    manual_forward,
    model_for,
    n_blocks,
    reference_tail,
    tokens,
)
from mlx.utils import tree_flatten, tree_map

from mlxinterp import capture, intervene, plant
from mlxinterp.experts import vmappable_experts
from mlxinterp.interventions import add, zero
from mlxinterp.testing import tiny_model

TOL = dict(rtol=1e-4, atol=1e-4)


def vmap_ctx(arch, model):
    """MoE layers need `vmappable_experts` under vmap (MLX's GatherMM has no vmap rule)."""
    return vmappable_experts(model) if arch in MOE_ARCHS else contextlib.nullcontext()


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_plain_vmap_over_experts_fails_in_mlx_and_vmappable_experts_fixes_it(arch):
    model = model_for(arch)
    toks = tokens(2, 5)[:, None, :]
    with pytest.raises(ValueError, match="GatherMM"):
        mx.eval(mx.vmap(model)(toks))
    with vmappable_experts(model) as paths:
        assert len(paths) == 3 * n_blocks(model)
        mapped = mx.vmap(model)(toks)
    for i in range(2):
        np.testing.assert_allclose(
            np.array(mapped[i]), np.array(model(toks[i])), rtol=1e-5, atol=1e-5
        )
    # restored after the block: no expert layer keeps the gathered implementation
    assert not any("__mlxinterp_experts__" in type(m).__dict__ for _, m in model.named_modules())


def setup(arch, dtype="float32"):
    model = model_for(arch, dtype)
    b = blocks_path(model)
    n = n_blocks(model)
    return model, b, n, f"{b}.{n - 1}"


def d_model(model, b):
    _, acts = capture(model, f"{b}.0")(tokens(1, 2))
    return acts[f"{b}.0"].shape[-1]


# ------------------------------------------------------------------------- capture


def check_capture(model, b, n, out, acts, toks):
    assert (out == model(toks)).all().item(), "capture changed the output"
    for i in range(1, n):
        assert (acts[f"{b}.{i}:in"] == acts[f"{b}.{i - 1}"]).all().item()
    np.testing.assert_allclose(np.array(out), reference_tail(model, acts[f"{b}.{n - 1}"]), **TOL)


def test_capture_eager_matches_plain_output_and_numpy_tail(arch):
    model, b, n, _ = setup(arch)
    toks = tokens()
    out, acts = capture(model, [f"{b}.*", f"{b}.*:in"])(toks)
    assert sorted(acts) == sorted(
        [f"{b}.{i}" for i in range(n)] + [f"{b}.{i}:in" for i in range(n)]
    )
    check_capture(model, b, n, out, acts, toks)


def test_capture_compiled_matches_eager(arch):
    model, b, n, last = setup(arch)
    toks = tokens()
    g = capture(model, [f"{b}.*", f"{b}.*:in"])
    out, acts = g(toks)
    cout, cacts = mx.compile(g)(toks)
    np.testing.assert_allclose(np.array(cout), np.array(out), rtol=1e-5, atol=1e-5)
    assert cacts.keys() == acts.keys()
    for k in acts:
        np.testing.assert_allclose(np.array(cacts[k]), np.array(acts[k]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(cout), reference_tail(model, cacts[last]), **TOL)


def _capture_loop(model, sites, toks):
    outs, accs = [], []
    for i in range(toks.shape[0]):
        o, a = capture(model, sites)(toks[i : i + 1])
        assert (o == model(toks[i : i + 1])).all().item()
        outs.append(o)
        accs.append(a)
    return outs, accs


def _assert_mapped_equals_loop(vout, vacts, outs, accs):
    for i, (o, a) in enumerate(zip(outs, accs)):
        np.testing.assert_allclose(np.array(vout[i]), np.array(o), rtol=1e-5, atol=1e-5)
        for k in a:
            np.testing.assert_allclose(np.array(vacts[k][i]), np.array(a[k]), rtol=1e-5, atol=1e-5)


def test_capture_under_vmap_matches_loop(arch):
    model, b, n, _ = setup(arch)
    toks = tokens(3, 5)
    sites = [f"{b}.*", f"{b}.0:in"]
    with vmap_ctx(arch, model):
        vout, vacts = mx.vmap(capture(model, sites))(toks[:, None, :])
    _assert_mapped_equals_loop(vout, vacts, *_capture_loop(model, sites, toks))


def test_capture_under_compiled_vmap_matches_loop(arch):
    model, b, n, _ = setup(arch)
    toks = tokens(3, 5)
    sites = [f"{b}.*", f"{b}.0:in"]
    with vmap_ctx(arch, model):
        vout, vacts = mx.compile(mx.vmap(capture(model, sites)))(toks[:, None, :])
    _assert_mapped_equals_loop(vout, vacts, *_capture_loop(model, sites, toks))


def _capture_loss(site, w):
    def loss(model, toks):
        _, acts = capture(model, site)(toks)
        return (acts[site] * w.astype(acts[site].dtype)).sum()

    return loss


def _fd_on_params(model, loss_of_model, direction, eps):
    base = model.trainable_parameters()

    def at(s):
        model.update(
            tree_map(lambda p, d: p + s * d if isinstance(p, mx.array) else p, base, direction)
        )
        v = float(loss_of_model())
        return v

    try:
        return (at(eps) - at(-eps)) / (2 * eps)
    finally:
        model.update(base)


def _arrays(tree):
    return [v for _, v in tree_flatten(tree) if isinstance(v, mx.array)]


def _dot(tree_a, tree_b):
    return sum(float((a * b).sum()) for a, b in zip(_arrays(tree_a), _arrays(tree_b)))


def _random_like(tree, seed):
    state = {"key": mx.random.key(seed)}

    def draw(p):
        if not isinstance(p, mx.array):
            return p
        state["key"], k = mx.random.split(state["key"])
        return mx.random.normal(p.shape, key=k).astype(p.dtype)

    return tree_map(draw, tree)


def _fd_tol(arch):
    """(eps, rtol, atol). mlx's fused kernels (rms_norm, rope, attention) accumulate in float32
    even on float64 inputs, so central differences are good to ~1e-3 relative at best."""
    # MoE: float32 only, and a small step so that top-k routing does not switch experts.
    return (1e-3, 5e-3, 1e-3) if grad_dtype(arch) == "float64" else (1e-4, 2e-2, 1e-2)


def _check_capture_grad(arch, compiled):
    model = tiny_model(arch, dtype=getattr(mx, grad_dtype(arch)))
    b = blocks_path(model)
    toks = tokens()
    site = f"{b}.1"
    w = mx.random.normal((2, 6, d_model(model, b)), key=mx.random.key(1))
    loss = _capture_loss(site, w)
    vg = nn.value_and_grad(model, lambda t: loss(model, t))
    if compiled:
        # value_and_grad writes traced parameters into the model: they must be outputs too
        vg = mx.compile(vg, inputs=model.state, outputs=model.state)
    _, grads = vg(toks)
    detached = nn.value_and_grad(
        model, lambda t: capture(model, site, detach=True)(t)[1][site].sum()
    )(toks)[1]
    assert all(float(mx.abs(g).max()) == 0.0 for g in _arrays(detached))
    if arch in MOE_ARCHS:
        ref = nn.value_and_grad(
            model, lambda t: (manual_forward(model, t, stop_after=1) * w).sum()
        )(toks)[1]
        for a, r in zip(_arrays(grads), _arrays(ref)):
            np.testing.assert_allclose(np.array(a), np.array(r), rtol=1e-4, atol=1e-5)
        return
    direction = _random_like(model.trainable_parameters(), 7)
    eps, rtol, atol = _fd_tol(arch)
    fd = _fd_on_params(model, lambda: loss(model, toks), direction, eps)
    np.testing.assert_allclose(_dot(grads, direction), fd, rtol=rtol, atol=atol)
    # detach=True cuts the gradient through the captured copy


def test_capture_gradient_through_captured_values_matches_finite_differences(arch):
    _check_capture_grad(arch, compiled=False)


def test_capture_compiled_gradient_matches_finite_differences(arch):
    _check_capture_grad(arch, compiled=True)


# ------------------------------------------------------------------------- intervene


def test_intervene_eager_matches_numpy_tail_and_identity_is_bitwise(arch):
    model, b, n, last = setup(arch)
    toks = tokens()
    same = intervene(model, {"**": lambda x: x})(toks)
    assert (same == model(toks)).all().item()
    v = mx.random.normal((d_model(model, b),), key=mx.random.key(3))
    out = intervene(model, {last: add(v)})(toks)
    _, acts = capture(model, last)(toks)
    np.testing.assert_allclose(np.array(out), reference_tail(model, acts[last] + v), **TOL)


def test_intervene_compiled_with_vector_argument_matches_eager(arch):
    model, b, n, last = setup(arch)
    toks = tokens()
    traces = []

    def steered(v, t):
        traces.append(1)
        return intervene(model, {last: add(v)})(t)

    cf = mx.compile(steered)
    for seed in (3, 4):
        v = mx.random.normal((d_model(model, b),), key=mx.random.key(seed))
        np.testing.assert_allclose(
            np.array(cf(v, toks)), np.array(steered(v, toks)), rtol=1e-5, atol=1e-5
        )
    assert len(traces) == 3, "changing the vector retraced the compiled function"


def _steer_loop(model, site, vs, toks):
    return [intervene(model, {site: add(v)})(toks) for v in vs]


def test_intervene_under_vmap_over_vectors_matches_loop(arch):
    model, b, n, last = setup(arch)
    toks = tokens()
    vs = mx.random.normal((4, d_model(model, b)), key=mx.random.key(5))
    site = f"{b}.1"
    with vmap_ctx(arch, model):
        got = mx.vmap(lambda v: intervene(model, {site: add(v)})(toks))(vs)
    for i, ref in enumerate(_steer_loop(model, site, vs, toks)):
        np.testing.assert_allclose(np.array(got[i]), np.array(ref), rtol=1e-5, atol=1e-5)


def test_intervene_under_compiled_vmap_over_positions_matches_loop(arch):
    model, b, n, last = setup(arch)
    toks = tokens(1, 6)
    site = f"{b}.0"
    sweep = mx.compile(mx.vmap(lambda p: intervene(model, {site: zero().at(positions=p)})(toks)))
    with vmap_ctx(arch, model):
        got = sweep(mx.arange(6))
    for p in range(6):
        ref = intervene(model, {site: zero().at(positions=[p])})(toks)
        np.testing.assert_allclose(np.array(got[p]), np.array(ref), rtol=1e-5, atol=1e-5)


def _intervene_grad_check(arch, compiled):
    model = model_for(arch, grad_dtype(arch))
    b = blocks_path(model)
    toks = tokens()
    site = f"{b}.1"
    d = d_model(model, b)
    w = mx.random.normal((2, 6, 64), key=mx.random.key(2)).astype(getattr(mx, grad_dtype(arch)))

    def loss(v):
        return (intervene(model, {site: add(v)})(toks) * w).sum()

    v0 = mx.random.normal((d,), key=mx.random.key(4)).astype(w.dtype)
    direction = mx.random.normal((d,), key=mx.random.key(6)).astype(w.dtype)
    gf = mx.compile(mx.grad(loss)) if compiled else mx.grad(loss)
    g = gf(v0)
    if arch in MOE_ARCHS:
        ref = mx.grad(lambda v: (manual_forward(model, toks, {1: lambda h: h + v}) * w).sum())(v0)
        np.testing.assert_allclose(np.array(g), np.array(ref), rtol=1e-4, atol=1e-4)
        return
    eps, rtol, atol = _fd_tol(arch)
    fd = directional_fd(loss, v0, direction, eps)
    np.testing.assert_allclose(float((g * direction).sum()), fd, rtol=rtol, atol=atol)


def test_intervene_gradient_wrt_added_vector_matches_finite_differences(arch):
    _intervene_grad_check(arch, compiled=False)


def test_intervene_compiled_gradient_matches_finite_differences(arch):
    _intervene_grad_check(arch, compiled=True)


# ------------------------------------------------------------------------- plant


def test_plant_eager_set_matches_numpy_tail_and_zero_add_is_bitwise(arch):
    model, b, n, last = setup(arch)
    toks = tokens()
    d = d_model(model, b)
    value = mx.random.normal((2, 6, d), key=mx.random.key(8))
    out = plant(model, last)({last: value}, toks)
    np.testing.assert_allclose(np.array(out), reference_tail(model, value), **TOL)
    same = plant(model, f"{b}.*", mode="add")({f"{b}.{i}": mx.zeros((d,)) for i in range(n)}, toks)
    assert (same == model(toks)).all().item()


def test_plant_compiled_does_not_recompile_when_values_change(arch):
    model, b, n, last = setup(arch)
    toks = tokens()
    g = plant(model, last)
    traces = []

    def f(values, t):
        traces.append(1)
        return g(values, t)

    cf = mx.compile(f)
    for seed in (8, 9):
        value = mx.random.normal((2, 6, d_model(model, b)), key=mx.random.key(seed))
        np.testing.assert_allclose(
            np.array(cf({last: value}, toks)), reference_tail(model, value), **TOL
        )
    assert len(traces) == 1, "changing a planted value retraced the compiled function"


def _plant_loop_check(arch, compiled):
    model, b, n, last = setup(arch)
    toks = tokens(1, 5)
    site = f"{b}.1"
    g = plant(model, site)
    values = mx.random.normal((3, 1, 5, d_model(model, b)), key=mx.random.key(10))
    mapped = mx.vmap(g, in_axes=({site: 0}, None))
    if compiled:
        mapped = mx.compile(mapped)
    with vmap_ctx(arch, model):
        got = mapped({site: values}, toks)
    for i in range(3):
        ref = g({site: values[i]}, toks)
        np.testing.assert_allclose(np.array(got[i]), np.array(ref), rtol=1e-5, atol=1e-5)


def test_plant_under_vmap_over_values_matches_loop(arch):
    _plant_loop_check(arch, compiled=False)


def test_plant_under_compiled_vmap_matches_loop(arch):
    _plant_loop_check(arch, compiled=True)


def _plant_grad_check(arch, compiled):
    model = model_for(arch, grad_dtype(arch))
    b = blocks_path(model)
    toks = tokens()
    d = d_model(model, b)
    dt = getattr(mx, grad_dtype(arch))
    sites = [f"{b}.0", f"{b}.1:in"]
    g = plant(model, sites, mode="add")
    w = mx.random.normal((2, 6, 64), key=mx.random.key(2)).astype(dt)

    def loss(values):
        return (g(values, toks) * w).sum()

    zeros = {s: mx.zeros((2, 6, d), dtype=dt) for s in g.sites}
    direction = {
        s: mx.random.normal((2, 6, d), key=mx.random.key(i)).astype(dt)
        for i, s in enumerate(g.sites)
    }
    gf = mx.compile(mx.grad(loss)) if compiled else mx.grad(loss)
    grads = gf(zeros)
    if arch in MOE_ARCHS:  # routing makes FD jump: compare with a hook-free forward's grad
        s0, s1 = sites

        def ref_loss(v):
            return (manual_forward(model, toks, {0: lambda h: h + v[s0] + v[s1]}) * w).sum()

        ref = mx.grad(ref_loss)(zeros)
        for k in sites:
            np.testing.assert_allclose(np.array(grads[k]), np.array(ref[k]), rtol=1e-4, atol=1e-5)
        return

    def along(s):
        return loss({k: zeros[k] + s * direction[k] for k in zeros})

    eps, rtol, atol = _fd_tol(arch)
    fd = (float(along(eps)) - float(along(-eps))) / (2 * eps)
    np.testing.assert_allclose(_dot(grads, direction), fd, rtol=rtol, atol=atol)


def test_plant_gradient_wrt_values_matches_finite_differences(arch):
    _plant_grad_check(arch, compiled=False)


def test_plant_compiled_gradient_matches_finite_differences(arch):
    _plant_grad_check(arch, compiled=True)
