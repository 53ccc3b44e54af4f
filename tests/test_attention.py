"""The explicit attention path against MLX's fused kernel for every mask kind, and
quantized models through the anatomy and the per-head result port."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import tokens

from mlxinterp import anatomy, capture
from mlxinterp.attention import explicit_attention
from mlxinterp.testing import tiny_model

KEY = mx.random.key(0)


def qkv(lq=5, lk=5, hq=4, hkv=2, d=8):
    k1, k2, k3 = mx.random.split(KEY, 3)
    return (
        mx.random.normal((2, hq, lq, d), key=k1),
        mx.random.normal((2, hkv, lk, d), key=k2),
        mx.random.normal((2, hkv, lk, d), key=k3),
    )


@pytest.mark.parametrize("lq,lk", [(5, 5), (2, 6)])
def test_explicit_attention_matches_the_fused_kernel_for_every_mask_kind(lq, lk):
    q, k, v = qkv(lq, lk)
    bool_mask = mx.random.bernoulli(0.7, (lq, lk), key=KEY) | mx.eye(lq, lk, k=lk - lq).astype(
        mx.bool_
    )
    additive = mx.random.normal((lq, lk), key=KEY)
    for mask in (None, "causal", bool_mask, additive):
        fused = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=mask)
        mine = explicit_attention(q, k, v, 0.3, mask)
        np.testing.assert_allclose(np.array(mine), np.array(fused), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_quantized_models_unembed_and_split_heads_exactly(arch):
    model = tiny_model(arch) if arch == "gpt2" else tiny_model(arch, intermediate_size=64)
    nn.quantize(model, group_size=32, bits=8)
    an = anatomy(model)
    assert (an.n_heads * an.head_dim, an.d_vocab) == (32, 64)
    toks = tokens()
    o_proj = an.path(0, an.spec.o_proj)
    out, acts = capture(model, ["resid_final", "result.0", o_proj])(toks)
    np.testing.assert_allclose(
        np.array(an.unembed(an.final_norm(acts["resid_final"]))),
        np.array(out),
        rtol=1e-5,
        atol=1e-5,
    )
    proj = dict(model.named_modules())[o_proj]
    b = proj["bias"] if "bias" in proj else 0.0
    np.testing.assert_allclose(
        np.array(acts["result.0"].sum(-2) + b), np.array(acts[o_proj]), rtol=1e-4, atol=1e-4
    )
