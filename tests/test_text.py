"""Tokenization, and ragged batches that equal single runs on every fixture architecture."""

import mlx.core as mx
import numpy as np
import pytest

from mlxinterp import capture
from mlxinterp.testing import tiny_model
from mlxinterp.text import Batch, as_batch, check_left_padded, masked

LENGTHS = (6, 3, 5)


def ragged(seed=0):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(3, 60, size=n).tolist() for n in LENGTHS]
    width = max(LENGTHS)
    tokens = mx.array([[0] * (width - len(r)) + r for r in rows])
    mask = mx.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return rows, Batch(tokens, mask, [])


def test_ragged_batch_equals_each_prompt_run_alone(arch):
    model = tiny_model(arch)
    rows, batch = ragged()
    sites = ["resid_post.*", "attn_out.1"]
    out, acts = capture(masked(model), sites)(batch.tokens, batch.mask)
    width = batch.tokens.shape[1]
    for i, r in enumerate(rows):
        solo_out, solo = capture(model, sites)(mx.array([r]))
        real = slice(width - len(r), width)
        np.testing.assert_allclose(
            np.array(out[i, real]), np.array(solo_out[0]), rtol=1e-4, atol=1e-4
        )
        for k in solo:
            np.testing.assert_allclose(
                np.array(acts[k][i, real]), np.array(solo[k][0]), rtol=1e-4, atol=1e-4, err_msg=k
            )
    assert np.isfinite(np.array(out)).all(), "padding produced NaN/inf"


def test_plain_model_call_ignores_padding_so_the_mask_matters():
    model = tiny_model("llama")
    rows, batch = ragged()
    plain = model(batch.tokens)[1, -1]
    solo = model(mx.array([rows[1]]))[0, -1]
    honoured = masked(model)(batch.tokens, batch.mask)[1, -1]
    assert not np.allclose(np.array(plain), np.array(solo), atol=1e-3)
    np.testing.assert_allclose(np.array(honoured), np.array(solo), rtol=1e-4, atol=1e-4)


def test_right_padding_and_shape_mismatch_are_rejected():
    model = tiny_model("llama")
    f = masked(model)
    with pytest.raises(ValueError, match="left"):
        check_left_padded(mx.array([[True, True, False]]))
    with pytest.raises(ValueError, match="mask shape"):
        f(mx.array([[1, 2, 3]]), mx.array([[True, True]]))


def test_as_batch_accepts_token_ids():
    b = as_batch(None, [3, 4, 5])
    assert b.tokens.shape == (1, 3) and b.mask.all().item()
    with pytest.raises(ValueError, match="needs a tokenizer"):
        as_batch(None, "some text")
