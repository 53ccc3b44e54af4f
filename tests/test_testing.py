"""Fixtures: deterministic tiny models and local folders that mlx_lm.load reads."""

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest

from mlxinterp.testing import FIXTURE_ARCHS, fixture_config, save_tiny_model, tiny_model


def test_tiny_models_are_deterministic_per_seed():
    a, b, c = tiny_model("qwen2"), tiny_model("qwen2"), tiny_model("qwen2", seed=1)
    toks = mx.array([[1, 2, 3]])
    assert (a(toks) == b(toks)).all().item()
    assert not (a(toks) == c(toks)).all().item()


def test_every_required_architecture_is_a_fixture():
    required = {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "gpt2",
        "gpt_neox",
        "olmo2",
        "starcoder2",
    }
    assert required <= set(FIXTURE_ARCHS)
    assert {"mixtral", "qwen2_moe"} & set(FIXTURE_ARCHS)


def test_unknown_fixture_names_the_known_ones():
    with pytest.raises(ValueError, match="known: llama"):
        fixture_config("nope")


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "gemma2", "mixtral"])
def test_saved_folder_loads_with_mlx_lm_and_gives_the_same_logits(arch, tmp_path):
    folder = save_tiny_model(arch, tmp_path / arch)
    loaded, tokenizer = mlx_lm.load(str(folder))
    toks = mx.array([[4, 5, 6, 7]])
    np.testing.assert_array_equal(np.array(loaded(toks)), np.array(tiny_model(arch)(toks)))
    if arch == "qwen2":
        return  # transformers 5 forces Qwen2Tokenizer (byte-level BPE) on qwen2 folders
    text = "w1 w2 w10"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
