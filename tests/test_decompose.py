"""Decompositions add up to what the model computes, on every fixture architecture."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import tokens
from mlx.utils import tree_flatten

from mlxinterp import anatomy, capture
from mlxinterp.decompose import (
    accumulated_resid,
    decompose_resid,
    direct_logit_attribution,
    head_results,
)
from mlxinterp.sites import SiteError
from mlxinterp.testing import tiny_model


def close(a, b, tol=1e-4):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=tol, atol=tol)


def test_resid_decomposition_sums_to_resid_post(arch):
    model = tiny_model(arch)
    for layer in (0, -1):
        d = decompose_resid(model, tokens(), layer=layer)
        close(d.total(), d.target, 1e-5)
    assert d.labels[0] == "embed" and d.labels[-1] == "mlp_out.2"


def test_head_results_sum_to_the_projection_output(arch):
    model = tiny_model(arch)
    c = head_results(model, tokens(), 1)
    close(c.total(), c.target, 1e-5)
    assert c.labels[0] == "L1H0"


def test_accumulated_resid_is_the_final_normed_stream(arch):
    model = tiny_model(arch)
    an = anatomy(model)
    toks = tokens()
    acc = accumulated_resid(model, toks)
    _, acts = capture(model, ["resid_pre.1", "resid_final"])(toks)
    close(acc["resid_pre.1"], an.final_norm(acts["resid_pre.1"]), 1e-6)
    close(an.unembed(acc.values[-1]), model(toks), 1e-5)


def test_direct_logit_attribution_adds_up_to_the_logit(arch):
    model = tiny_model(arch)
    an = anatomy(model)
    toks = tokens()
    logits = an.unembed(
        an.final_norm(capture(model, "resid_final")(toks)[1]["resid_final"]), softcap=False
    )
    dla = direct_logit_attribution(model, toks, target=7)
    close(dla.total(), logits[:, -1, 7])
    diff = direct_logit_attribution(model, toks, target=(7, 9), position=2)
    close(diff.total(), logits[:, 2, 7] - logits[:, 2, 9])
    per_row = direct_logit_attribution(model, toks, target=mx.array([3, 4]))
    close(per_row.total(), mx.stack([logits[0, -1, 3], logits[1, -1, 4]]))
    if an.spec.attn_out == an.spec.attn:
        by_head = direct_logit_attribution(model, toks, target=7, heads=True)
        close(by_head.total(), dla.total())
        layer1 = [i for i, lab in enumerate(by_head.labels) if lab.startswith("L1")]
        close(by_head.values[mx.array(layer1)].sum(0), dla.values[dla.labels.index("attn_out.1")])
    else:
        with pytest.raises(SiteError, match="post-norm"):
            direct_logit_attribution(model, toks, target=7, heads=True)


def test_dla_of_each_component_matches_numpy_for_llama():
    model = tiny_model("llama")
    toks = tokens(1, 5)
    dla = direct_logit_attribution(model, toks, target=11)
    _, acts = capture(model, ["resid_pre.0", "attn_out.0", "mlp_out.2", "resid_final"])(toks)
    p = {k: np.array(v, dtype=np.float64) for k, v in tree_flatten(model.parameters())}
    x = np.array(acts["resid_final"], dtype=np.float64)[0, -1]
    rms = np.sqrt((x**2).mean() + 1e-5)
    w_u = p["lm_head.weight"][11]
    for site, label in (
        ("resid_pre.0", "embed"),
        ("attn_out.0", "attn_out.0"),
        ("mlp_out.2", "mlp_out.2"),
    ):
        c = np.array(acts[site], dtype=np.float64)[0, -1]
        want = (c / rms * p["model.norm.weight"]) @ w_u
        np.testing.assert_allclose(
            float(dla.values[dla.labels.index(label)][0]), want, rtol=1e-4, atol=1e-4
        )
    assert dla.top(3)[0][0] in dla.labels
