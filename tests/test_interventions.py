"""Each intervention and selector against numpy, and their error messages."""

import mlx.core as mx
import numpy as np
import pytest

from mlxinterp import intervene
from mlxinterp.intercept import HookContext
from mlxinterp.interventions import (
    add,
    clamp,
    compose,
    noise,
    only,
    replace,
    scale,
    zero,
)
from mlxinterp.interventions import set as set_
from mlxinterp.sites import Site
from mlxinterp.testing import tiny_model

X = mx.random.normal((2, 5, 4), key=mx.random.key(0))
XN = np.array(X)


def test_basic_interventions_match_numpy():
    v = mx.array([1.0, -2.0, 0.5, 3.0])
    np.testing.assert_array_equal(np.array(zero()(X)), np.zeros_like(XN))
    np.testing.assert_allclose(np.array(scale(3.0)(X)), XN * 3.0, rtol=1e-6)
    np.testing.assert_allclose(np.array(add(v)(X)), XN + np.array(v), rtol=1e-6)
    np.testing.assert_allclose(np.array(replace(v)(X)), np.broadcast_to(np.array(v), XN.shape))
    assert set_ is replace
    np.testing.assert_allclose(np.array(clamp(-0.5, 0.5)(X)), np.clip(XN, -0.5, 0.5))
    np.testing.assert_allclose(np.array(clamp(max=0.0)(X)), np.minimum(XN, 0.0))
    np.testing.assert_allclose(
        np.array(compose(scale(2.0), add(v), clamp(min=0.0))(X)),
        np.maximum(XN * 2 + np.array(v), 0.0),
        rtol=1e-6,
    )


def test_noise_is_reproducible_from_its_key_and_has_the_asked_scale():
    big = mx.zeros((200, 200))
    a = noise(0.5, key=mx.random.key(1))(big)
    b = noise(0.5, key=mx.random.key(1))(big)
    assert (a == b).all().item()
    assert abs(float(a.std()) - 0.5) < 0.01
    with pytest.raises(TypeError, match="explicit PRNG key"):
        noise(0.5, key=3)


def test_position_selector_edits_only_those_positions_including_negative_ones():
    got = np.array(zero().at(positions=[1, -1])(X))
    want = XN.copy()
    want[:, [1, 4], :] = 0
    np.testing.assert_array_equal(got, want)
    got = np.array(scale(2.0).at(positions=slice(0, 2))(X))
    want = XN.copy()
    want[:, :2] *= 2
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got = np.array(zero().at(positions=mx.array([0, -2]))(X))  # array indices (vmap-able)
    want = XN.copy()
    want[:, [0, 3]] = 0
    np.testing.assert_array_equal(got, want)


def test_row_and_head_selectors_with_named_axes():
    x = mx.random.normal((2, 3, 4, 5), key=mx.random.key(2))  # batch, pos, head, d_head
    xn = np.array(x)
    got = np.array(zero().at(heads=[2], rows=[1], axis_names=("batch", "pos", "head", "d_head"))(x))
    want = xn.copy()
    want[1, :, 2, :] = 0
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="needs to know the head axis"):
        zero().at(heads=[0])(x)


def test_selector_out_of_range_and_shape_mismatch_errors_name_the_site():
    ctx = HookContext(Site("model.layers.0"), None)
    with pytest.raises(IndexError, match="7.*model.layers.0.*length 5"):
        zero().at(positions=7)(X, ctx)
    with pytest.raises(ValueError, match=r"model.layers.0.*\(3,\).*\(2, 5, 4\)"):
        add(mx.ones((3,)))(X, ctx)
    with pytest.raises(ValueError, match=r"replacement.*\(7, 4\)"):
        replace(mx.ones((7, 4)))(X, ctx)


def test_plain_callables_work_and_wrong_shapes_are_rejected_at_the_site():
    model = tiny_model("llama")
    toks = mx.array([[1, 2, 3]])
    out = intervene(model, {"model.layers.0.mlp": lambda x: x * 0})(toks)
    ref = intervene(model, {"model.layers.0.mlp": zero()})(toks)
    assert (out == ref).all().item()
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.*\(1, 3, 32\).*\(1, 3\)"):
        intervene(model, {"model.layers.0.mlp": lambda x: x.sum(-1)})(toks)
    with pytest.raises(TypeError, match="must be callable"):
        intervene(model, {"model.layers.0.mlp": 3})
    restricted = only(lambda x: x * 0, positions=[0])
    out = intervene(model, {"model.layers.0.mlp": restricted})(toks)
    ref = intervene(model, {"model.layers.0.mlp": zero().at(positions=0)})(toks)
    assert (out == ref).all().item()


def test_edits_keep_the_activation_dtype():
    x = X.astype(mx.float16)
    assert add(mx.ones((4,), dtype=mx.float32))(x).dtype == mx.float32  # raw call: no cast
    model = tiny_model("llama", dtype=mx.float16)
    out = intervene(model, {"model.layers.0": add(mx.ones((32,), dtype=mx.float32))})(
        mx.array([[1, 2]])
    )
    assert out.dtype == mx.float16
