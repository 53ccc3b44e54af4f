"""An independent reference: hand-written numpy forwards of a gpt2-style and a llama-style
model (RoPE, GQA, SwiGLU, RMSNorm) from the raw weights, compared with the logits and every
standard site that mlxinterp captures from the mlx-lm model (float64 numpy vs float32 MLX)."""

import mlx.core as mx
import numpy as np
from conftest import tokens
from mlx.utils import tree_flatten

from mlxinterp import capture
from mlxinterp.testing import tiny_model

SITES_PER_LAYER = [
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "mlp_hidden",
    "q",
    "k",
    "v",
    "z",
    "result",
    "scores",
    "pattern",
]


def weights(model):
    return {k: np.array(v, dtype=np.float64) for k, v in tree_flatten(model.parameters())}


def linear(p, name, x):
    y = x @ p[name + ".weight"].T
    return y + p[name + ".bias"] if name + ".bias" in p else y


def layer_norm(p, name, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p[name + ".weight"] + p[name + ".bias"]


def rms_norm(p, name, x, eps=1e-5):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p[name + ".weight"]


def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(q, k, v, scale):
    """q [B,T,H,D], k/v [B,T,Hkv,D] -> scores, pattern [B,H,T,T], z [B,T,H,D]."""
    rep = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    t = q.shape[1]
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    pattern = softmax(scores)
    return scores, pattern, np.einsum("bhqk,bkhd->bqhd", pattern, v)


def per_head_result(z, w_o):
    h, d = z.shape[2], z.shape[3]
    return np.stack([z[:, :, i] @ w_o[:, i * d : (i + 1) * d].T for i in range(h)], axis=2)


def gpt2_reference(model, toks):
    p = weights(model)
    n_layers, n_heads = len(model.model.h), model.model.h[0].attn.n_head
    t = toks.shape[1]
    out = {"embed": p["model.wte.weight"][toks]}
    h = out["embed"] + p["model.wpe.weight"][np.arange(t)]
    for i in range(n_layers):
        b = f"model.h.{i}"
        out[f"resid_pre.{i}"] = h
        qkv = linear(p, b + ".attn.c_attn", layer_norm(p, b + ".ln_1", h))
        q, k, v = (a.reshape(*a.shape[:2], n_heads, -1) for a in np.split(qkv, 3, axis=-1))
        scores, pattern, z = attention(q, k, v, q.shape[-1] ** -0.5)
        w_o = p[b + ".attn.c_proj.weight"]
        attn = z.reshape(*z.shape[:2], -1) @ w_o.T + p[b + ".attn.c_proj.bias"]
        mid = h + attn
        a = linear(p, b + ".mlp.c_fc", layer_norm(p, b + ".ln_2", mid))
        hidden = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
        mlp = linear(p, b + ".mlp.c_proj", hidden)
        h = mid + mlp
        out.update(
            {
                f"q.{i}": q,
                f"k.{i}": k,
                f"v.{i}": v,
                f"z.{i}": z,
                f"result.{i}": per_head_result(z, w_o),
                f"scores.{i}": scores,
                f"pattern.{i}": pattern,
                f"attn_out.{i}": attn,
                f"resid_mid.{i}": mid,
                f"mlp_hidden.{i}": hidden,
                f"mlp_out.{i}": mlp,
                f"resid_post.{i}": h,
            }
        )
    out["resid_final"] = h
    out["logits"] = layer_norm(p, "model.ln_f", h) @ p["model.wte.weight"].T
    return out


def rope(x, base=10000.0):
    """Non-traditional RoPE on [B, T, H, D]: rotate (x_i, x_{i+D/2}) by pos * base^(-2i/D)."""
    t, d = x.shape[1], x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[None, :, None, :], np.sin(ang)[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def llama_reference(model, toks):
    p = weights(model)
    attn0 = model.model.layers[0].self_attn
    n_heads, n_kv = attn0.n_heads, attn0.n_kv_heads
    out = {"embed": p["model.embed_tokens.weight"][toks]}
    h = out["embed"]
    for i in range(len(model.model.layers)):
        b = f"model.layers.{i}"
        out[f"resid_pre.{i}"] = h
        x = rms_norm(p, b + ".input_layernorm", h)
        q = linear(p, b + ".self_attn.q_proj", x).reshape(*x.shape[:2], n_heads, -1)
        k = linear(p, b + ".self_attn.k_proj", x).reshape(*x.shape[:2], n_kv, -1)
        v = linear(p, b + ".self_attn.v_proj", x).reshape(*x.shape[:2], n_kv, -1)
        q, k = rope(q), rope(k)
        scores, pattern, z = attention(q, k, v, q.shape[-1] ** -0.5)
        w_o = p[b + ".self_attn.o_proj.weight"]
        attn = z.reshape(*z.shape[:2], -1) @ w_o.T
        mid = h + attn
        y = rms_norm(p, b + ".post_attention_layernorm", mid)
        gate = linear(p, b + ".mlp.gate_proj", y)
        hidden = gate / (1 + np.exp(-gate)) * linear(p, b + ".mlp.up_proj", y)
        mlp = linear(p, b + ".mlp.down_proj", hidden)
        h = mid + mlp
        out.update(
            {
                f"q.{i}": q,
                f"k.{i}": k,
                f"v.{i}": v,
                f"z.{i}": z,
                f"result.{i}": per_head_result(z, w_o),
                f"scores.{i}": scores,
                f"pattern.{i}": pattern,
                f"attn_out.{i}": attn,
                f"resid_mid.{i}": mid,
                f"mlp_hidden.{i}": hidden,
                f"mlp_out.{i}": mlp,
                f"resid_post.{i}": h,
            }
        )
    out["resid_final"] = h
    out["logits"] = rms_norm(p, "model.norm", h) @ p["lm_head.weight"].T
    return out


def compare(model, reference):
    toks = tokens(2, 7)
    ref = reference(model, np.array(toks))
    names = ["embed", "resid_final", "logits"] + [f"{s}.*" for s in SITES_PER_LAYER]
    out, acts = capture(model, names)(toks)
    np.testing.assert_allclose(np.array(out), ref["logits"], rtol=1e-4, atol=1e-4)
    assert set(acts) == set(ref), set(acts) ^ set(ref)
    tril = np.tril(np.ones((7, 7), bool))
    for name, want in ref.items():
        got = np.array(acts[name], dtype=np.float64)
        if name.startswith("scores."):  # masked entries: -inf here, dtype min in MLX
            got, want = got[..., tril], want[..., tril]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_numpy_gpt2_forward_reproduces_logits_and_every_standard_site():
    compare(tiny_model("gpt2"), gpt2_reference)


def test_numpy_llama_forward_with_rope_gqa_swiglu_reproduces_every_standard_site():
    model = tiny_model("llama")
    assert model.model.layers[0].self_attn.n_kv_heads < model.model.layers[0].self_attn.n_heads
    compare(model, llama_reference)


def test_pattern_sites_work_under_compile_vmap_and_grad():
    model = tiny_model("llama")
    toks = tokens(3, 5)
    g = capture(model, "pattern.1")
    _, eager = g(toks)
    _, comp = mx.compile(g)(toks)
    np.testing.assert_allclose(np.array(comp["pattern.1"]), np.array(eager["pattern.1"]), atol=1e-6)
    _, mapped = mx.vmap(g)(toks[:, None])
    np.testing.assert_allclose(
        np.array(mapped["pattern.1"][:, 0]), np.array(eager["pattern.1"]), atol=1e-6
    )
    from mlxinterp import intervene
    from mlxinterp.interventions import scale

    def loss(s):
        return intervene(model, {"pattern.1": scale(s)})(toks)[..., 5].sum()

    s0 = mx.ones((1, 4, 1, 1))
    grad = mx.grad(loss)(s0)
    d = mx.random.normal(s0.shape, key=mx.random.key(0))
    eps = 1e-2
    fd = (float(loss(s0 + eps * d)) - float(loss(s0 - eps * d))) / (2 * eps)
    np.testing.assert_allclose(float((grad * d).sum()), fd, rtol=1e-2, atol=1e-3)
