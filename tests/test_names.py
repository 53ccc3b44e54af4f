"""Standard site names on every fixture architecture: residual identities, per-head sums,
exact attention patterns, unembedding, TransformerLens aliases, and edits at per-head sites."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import tokens

from mlxinterp import anatomy, capture, intervene, plant
from mlxinterp.anatomy import ArchitectureError, ArchSpec, register_architecture
from mlxinterp.interventions import replace, zero
from mlxinterp.sites import SiteError, module_paths
from mlxinterp.testing import tiny_model

ALL = [
    "embed",
    "resid_pre.*",
    "resid_post.*",
    "attn_out.*",
    "mlp_out.*",
    "z.*",
    "result.*",
    "resid_final",
    "logits",
]
ATTN_INLINE = {"gemma2"}  # softmax computed inline: no q/k/v/scores/pattern
NO_RESID_MID = {"gpt_neox"}  # parallel attention + MLP
NO_MLP_HIDDEN = {"mixtral", "qwen2_moe"}  # mixture of experts


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=tol, atol=tol)


@pytest.fixture()
def model(arch):
    return tiny_model(arch)


def test_anatomy_reads_sizes_that_match_the_captured_shapes(arch, model):
    an = anatomy(model)
    toks = tokens(2, 5)
    _, acts = capture(model, ["resid_pre.0", "z.0", "logits"])(toks)
    assert acts["resid_pre.0"].shape == (2, 5, an.d_model)
    assert acts["z.0"].shape == (2, 5, an.n_heads, an.head_dim)
    assert acts["logits"].shape == (2, 5, an.d_vocab)
    assert an.n_layers == 3 and an.n_kv_heads <= an.n_heads


def test_residual_stream_identities_hold(arch, model):
    an = anatomy(model)
    toks = tokens()
    names = ALL + ([] if arch in NO_RESID_MID else ["resid_mid.*"])
    out, acts = capture(model, names)(toks)
    assert (out == model(toks)).all().item(), "capturing standard sites changed the output"
    for i in range(an.n_layers):
        pre, post = acts[f"resid_pre.{i}"], acts[f"resid_post.{i}"]
        attn, mlp = acts[f"attn_out.{i}"], acts[f"mlp_out.{i}"]
        if arch in NO_RESID_MID:
            close(pre + attn + mlp, post)
        else:
            close(pre + attn, acts[f"resid_mid.{i}"])
            close(acts[f"resid_mid.{i}"] + mlp, post)
        if i + 1 < an.n_layers:
            assert (acts[f"resid_pre.{i + 1}"] == post).all().item()
    assert (acts["resid_final"] == acts[f"resid_post.{an.n_layers - 1}"]).all().item()
    close(an.unembed(an.final_norm(acts["resid_final"])), acts["logits"])
    assert (acts["logits"] == out).all().item()


def test_missing_names_raise_the_documented_error(arch, model):
    if arch in NO_RESID_MID:
        with pytest.raises(SiteError, match="parallel"):
            capture(model, "resid_mid.0")
    if arch in NO_MLP_HIDDEN:
        with pytest.raises(SiteError, match="mixture of experts"):
            capture(model, "mlp_hidden.0")
    else:
        _, acts = capture(model, "mlp_hidden.1")(tokens())
        assert acts["mlp_hidden.1"].ndim == 3
    if arch in ATTN_INLINE:
        with pytest.raises(SiteError, match="inline.*soft-capping"):
            capture(model, "pattern.0")


def test_heads_results_sum_to_the_output_projection(arch, model):
    an = anatomy(model)
    toks = tokens()
    o_proj = an.path(1, an.spec.o_proj)
    _, acts = capture(model, ["result.1", o_proj, "z.1", "attn_out.1"])(toks)
    proj = module_paths(model)[o_proj]
    bias = proj["bias"] if "bias" in proj else 0.0
    close(acts["result.1"].sum(axis=-2) + bias, acts[o_proj])
    if an.spec.attn_out == an.spec.attn:  # pre-norm: attention output is the projection
        close(acts["result.1"].sum(axis=-2) + bias, acts["attn_out.1"])
    # each head's result is z_h @ W_O[:, head h] (numpy, from the raw weight)
    w = np.array(proj["weight"])
    z = np.array(acts["z.1"])
    d = an.head_dim
    for h in range(an.n_heads):
        close(acts["result.1"][..., h, :], z[..., h, :] @ w[:, h * d : (h + 1) * d].T, 1e-4)


def test_attention_pattern_is_exact_and_reproduces_the_fused_forward(arch, model):
    if arch in ATTN_INLINE:
        pytest.skip("gemma2 computes softmax inline (see test_missing_names...)")
    an = anatomy(model)
    toks = tokens(2, 7)
    out, acts = capture(model, ["pattern.*", "scores.1", "q.1", "k.1"])(toks)
    close(out, model(toks))  # the explicit path for every layer vs the fused kernel
    for i in range(an.n_layers):
        p = np.array(acts[f"pattern.{i}"])
        assert p.shape == (2, an.n_heads, 7, 7)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        upper = np.triu(np.ones((7, 7), bool), 1)
        window = getattr(module_paths(model)[an.path(i, an.spec.attn)], "is_sliding", False)
        assert (p[..., upper] == 0).all(), "attention above the diagonal"
        if window:  # gemma3_text local layers (window 4): keys older than the window get 0
            assert (p[..., np.tril(np.ones((7, 7), bool), -4)] == 0).all()
    # scores = q k^T * scale on the causal triangle (numpy from the captured q and k)
    q, k = np.array(acts["q.1"]), np.array(acts["k.1"])  # batch, pos, head, d_head
    k = np.repeat(k, an.n_heads // an.n_kv_heads, axis=2)
    scale = module_paths(model)[an.path(1, an.spec.attn)].scale
    ref = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    tril = np.tril(np.ones((7, 7), bool))
    s = np.array(acts["scores.1"])
    np.testing.assert_allclose(s[..., tril], ref[..., tril], rtol=1e-4, atol=1e-4)


def test_editing_the_pattern_changes_z_accordingly(arch, model):
    if arch in ATTN_INLINE:
        pytest.skip("no pattern port on gemma2")
    an = anatomy(model)
    toks = tokens(1, 6)
    eye = mx.broadcast_to(mx.eye(6), (1, an.n_heads, 6, 6))  # each position attends to itself
    g = capture(intervene(model, {"pattern.1": replace(eye)}), ["z.1", "v.1"])
    _, acts = g(toks)
    v = np.repeat(np.array(acts["v.1"]), an.n_heads // an.n_kv_heads, axis=2)
    close(acts["z.1"], v)


def test_zeroing_a_head_via_z_or_via_result_gives_the_same_logits(arch, model):
    toks = tokens()
    sel = ("batch", "pos", "head", "d_head")
    a = intervene(model, {"z.1": zero().at(heads=[2], axis_names=sel)})(toks)
    b = intervene(model, {"result.1": zero().at(heads=[2])})(toks)  # site declares its axes
    close(a, b, 1e-4)
    assert not np.allclose(np.array(a), np.array(model(toks)), atol=1e-4)


def test_transformerlens_aliases_equal_standard_names(arch, model):
    toks = tokens()
    pairs = {
        "blocks.1.hook_resid_pre": "resid_pre.1",
        "blocks.0.hook_mlp_out": "mlp_out.0",
        "blocks.2.attn.hook_z": "z.2",
        "hook_embed": "embed",
    }
    if arch not in ATTN_INLINE:
        pairs["blocks.0.attn.hook_pattern"] = "pattern.0"
    _, acts = capture(model, list(pairs) + list(pairs.values()))(toks)
    for tl, std in pairs.items():
        assert (acts[tl] == acts[std]).all().item(), tl


def test_planting_a_standard_site_is_keyed_by_its_name(arch, model):
    an = anatomy(model)
    toks = tokens()
    _, acts = capture(model, "resid_post.1")(toks)
    out = plant(model, "resid_pre.2")({"resid_pre.2": acts["resid_post.1"]}, toks)
    assert (out == model(toks)).all().item()
    assert an.n_layers == 3


def test_layer_patterns_and_out_of_range_layers():
    model = tiny_model("llama")
    _, acts = capture(model, ["resid_post.[0-1]", "resid_pre.-1"])(tokens())
    assert sorted(acts) == ["resid_post.0", "resid_post.1", "resid_pre.-1"]
    _, tl = capture(model, "blocks.*.hook_resid_post")(tokens())
    assert sorted(tl) == [f"blocks.{i}.hook_resid_post" for i in range(3)]
    with pytest.raises(SiteError, match="out of range: the model has 3 layers"):
        capture(model, "resid_post.3")


def test_an_unknown_architecture_says_how_to_declare_it():
    import mlx.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(4, 4)

        def __call__(self, x):
            return x + self.attn(x)

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Block()]

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()

    with pytest.raises(ArchitectureError, match="register_architecture"):
        anatomy(Toy())
    with pytest.raises(ArchitectureError, match="register_architecture"):
        capture(Toy(), "resid_pre.0")
    assert isinstance(ArchSpec, type) and callable(register_architecture)
