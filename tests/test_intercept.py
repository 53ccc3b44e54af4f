"""The interception mechanism: parameter trees, exceptions, nesting, threads, tuples, kwargs."""

import threading

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxinterp import TransformError, capture, harvest, intervene, plant
from mlxinterp.intercept import is_hooked
from mlxinterp.interventions import add, scale
from mlxinterp.sites import SiteError
from mlxinterp.testing import tiny_model

TOKS = mx.array([[5, 9, 3, 17, 4]])


@pytest.fixture()
def model():
    return tiny_model("llama")


def snapshot(m):
    return [(k, id(v), np.array(v)) for k, v in tree_flatten(m.parameters())]


def same_tree(a, b):
    return [k for k, i, _ in a] == [k for k, i, _ in b] and all(
        i == j and np.array_equal(x, y) for (_, i, x), (_, j, y) in zip(a, b)
    )


def test_parameter_tree_is_identical_before_during_and_after(model):
    before = snapshot(model)
    during = []

    def peek(x):
        during.append(snapshot(model))
        assert is_hooked(model.model.layers[1].mlp)
        assert isinstance(model.model.layers[1].mlp, type(model.model.layers[0].mlp).__mro__[0])
        return x

    intervene(model, {"model.layers.1.mlp": peek})(TOKS)
    assert same_tree(before, during[0])
    assert same_tree(before, snapshot(model))
    assert not is_hooked(model.model.layers[1].mlp)
    assert type(model.model.layers[1].mlp).__name__ == "MLP"


def test_exception_inside_the_model_restores_classes_and_hooks(model):
    before = snapshot(model)
    classes = {p: type(m) for p, m in model.named_modules()}

    def boom(x):
        raise ZeroDivisionError("inside the forward")

    with pytest.raises(ZeroDivisionError):
        capture(intervene(model, {"model.layers.2.mlp": boom}), "model.layers.*")(TOKS)
    assert {p: type(m) for p, m in model.named_modules()} == classes
    assert same_tree(before, snapshot(model))
    assert not any(is_hooked(m) for _, m in model.named_modules())
    # no hook leaked into the context: a plain call equals a fresh model's call
    assert (model(TOKS) == tiny_model("llama")(TOKS)).all().item()


def test_capture_outside_sees_the_edit_of_an_intervention_inside(model):
    site = "model.layers.1.mlp"
    _, plain = capture(model, site)(TOKS)
    v = mx.ones((32,))
    _, outer = capture(intervene(model, {site: add(v)}), site)(TOKS)
    np.testing.assert_array_equal(np.array(outer[site]), np.array(plain[site] + v))
    # the other way round: the capture is inside, the edit outside -> raw value
    inner = {}

    def run(t):
        out, acts = capture(model, site)(t)
        inner.update(acts)
        return out

    intervene(run, {site: add(v)}, root=model)(TOKS)
    np.testing.assert_array_equal(np.array(inner[site]), np.array(plain[site]))


def test_nested_edits_on_one_site_apply_inner_first(model):
    site = "model.layers.1.mlp"
    _, plain = capture(model, site)(TOKS)
    nested = intervene(intervene(model, {site: add(1.0)}), {site: scale(2.0)})(TOKS)
    expected = plant(model, site)({site: (plain[site] + 1.0) * 2.0}, TOKS)
    np.testing.assert_array_equal(np.array(nested), np.array(expected))


def test_swap_is_reference_counted_across_nesting(model):
    mlp = model.model.layers[0].mlp
    states = []

    def inner_probe(x):
        states.append(is_hooked(mlp))
        return x

    def run(t):
        out = intervene(model, {"model.layers.0.mlp": inner_probe})(t)
        states.append(is_hooked(mlp))  # inner transform done, outer still active
        return out

    capture(run, "model.layers.0.mlp", root=model)(TOKS)
    assert states == [True, True]
    assert not is_hooked(mlp)


def test_another_thread_running_the_same_model_meanwhile_sees_no_hooks(model):
    plain = model(TOKS)
    seen = {}

    def other_thread():  # MLX arrays belong to their thread's stream: convert here
        seen["out"] = np.array(model(TOKS))
        _, acts = capture(model, "model.layers.0.mlp")(TOKS)  # its own transform works too
        seen["acts"] = {k: np.array(v) for k, v in acts.items()}

    def zero_and_run_other(x):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        return mx.zeros_like(x)

    edited = intervene(model, {"model.layers.0.mlp": zero_and_run_other})(TOKS)
    assert not (edited == plain).all().item()
    np.testing.assert_array_equal(seen["out"], np.array(plain))
    assert "model.layers.0.mlp" in seen["acts"]
    assert not is_hooked(model.model.layers[0].mlp)


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def __call__(self, x, *, shift=0.0):
        y = self.lin(x) + shift
        return y, 2 * y


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = Pair()

    def __call__(self, x, shift):
        a, b = self.pair(x, shift=shift)
        return a + b


def test_tuple_outputs_and_keyword_inputs_are_sites():
    m = Outer()
    x = mx.ones((2, 3))
    shift = mx.array(0.5)
    out, acts = capture(m, ["pair:out.0", "pair:out.1", "pair:in", "pair:in.shift"])(x, shift)
    y = m.pair.lin(x) + 0.5
    np.testing.assert_allclose(np.array(acts["pair:out.1"]), np.array(2 * y), rtol=1e-6)
    np.testing.assert_allclose(np.array(acts["pair:out.0"]), np.array(y), rtol=1e-6)
    assert acts["pair:in.shift"].item() == 0.5
    # plain "out" on a tuple output is its first element
    _, acts2 = capture(m, "pair")(x, shift)
    np.testing.assert_array_equal(np.array(acts2["pair"]), np.array(acts["pair:out.0"]))
    # editing a keyword input and one tuple element
    out2 = intervene(m, {"pair:in.shift": lambda s: s * 0, "pair:out.1": lambda b: b * 0})(x, shift)
    np.testing.assert_allclose(np.array(out2), np.array(m.pair.lin(x)), rtol=1e-6)


def test_a_site_on_a_non_array_value_says_how_to_pick_an_element():
    class Weird(nn.Module):
        def __call__(self, x):
            return {"a": x}

    class Top(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = Weird()

        def __call__(self, x):
            return self.w(x)["a"]

    with pytest.raises(SiteError, match="carries a dict"):
        capture(Top(), "w")(mx.ones((2,)))


def test_strict_policy_rejects_a_module_called_twice_and_append_stacks(model):
    with pytest.raises(TransformError, match="more than once.*policy='append'"):
        capture(model, "model.layers.0.self_attn.rope")(TOKS)
    _, acts = capture(model, "model.layers.0.self_attn.rope", policy="each")(TOKS)
    assert acts["model.layers.0.self_attn.rope#0"].shape == (1, 4, 5, 8)  # queries
    assert acts["model.layers.0.self_attn.rope#1"].shape == (1, 2, 5, 8)  # keys (GQA)
    g = tiny_model("phi3")  # MHA: both calls have one shape -> append stacks them
    _, acts = capture(g, "model.layers.0.self_attn.rope", policy="append")(TOKS)
    _, each = capture(g, "model.layers.0.self_attn.rope", policy="each")(TOKS)
    _, last = capture(g, "model.layers.0.self_attn.rope", policy="last")(TOKS)
    stacked = acts["model.layers.0.self_attn.rope"]
    assert stacked.shape[0] == 2
    assert (stacked[1] == each["model.layers.0.self_attn.rope#1"]).all().item()
    assert (last["model.layers.0.self_attn.rope"] == stacked[1]).all().item()


def test_an_explicit_site_never_called_is_an_error_but_a_pattern_skips_it():
    class Top(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.unused = nn.Linear(2, 2)

        def __call__(self, x):
            return self.used(x)

    with pytest.raises(TransformError, match="never called"):
        capture(Top(), ["used", "unused"])(mx.ones((2,)))
    _, acts = capture(Top(), "*")(mx.ones((2,)))
    assert list(acts) == ["used"]


def test_functions_need_a_root_and_bound_methods_find_theirs(model):
    with pytest.raises(TypeError, match="give root=model"):
        capture(lambda t: model(t), "model.layers.0")
    out, acts = capture(model.model, "layers.0")(TOKS)  # a submodule as root
    assert "layers.0" in acts
    out, acts = capture(model.__call__, "model.layers.0")(TOKS)
    assert (out == model(TOKS)).all().item()


def test_planted_values_are_validated_by_key_and_shape(model):
    g = plant(model, "model.layers.0")
    with pytest.raises(TransformError, match="not one of this plant's sites"):
        g({"model.layers.9": mx.zeros((32,))}, TOKS)
    with pytest.raises(ValueError, match=r"model.layers.0.*\(7,\).*\(1, 5, 32\)"):
        g({"model.layers.0": mx.zeros((7,))}, TOKS)
    out = g({"model.layers.0:out": mx.zeros((32,))}, TOKS)  # ':out' spelled out is the same key
    assert out.shape == (1, 5, 64)


def test_harvest_captures_the_planted_value(model):
    site = "model.layers.1"
    v = mx.random.normal((1, 5, 32), key=mx.random.key(0))
    out, acts = harvest(model, site, [site, "model.layers.2:in"])({site: v}, TOKS)
    assert (acts[site] == v).all().item()
    assert (acts["model.layers.2:in"] == v).all().item()
    assert (out == plant(model, site)({site: v}, TOKS)).all().item()


def test_captured_values_survive_in_place_updates_by_the_model():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def __call__(self, x):
            h = self.lin(x)
            h += 100.0  # gpt2 does `hidden_states += self.wpe(...)` after the embedding
            return h

    m = InPlace()
    x = mx.ones((1, 2))
    out, acts = capture(m, "lin")(x)
    np.testing.assert_allclose(np.array(acts["lin"]), np.array(m.lin(x)), rtol=1e-6)
    np.testing.assert_allclose(np.array(out), np.array(m.lin(x)) + 100.0, rtol=1e-6)
