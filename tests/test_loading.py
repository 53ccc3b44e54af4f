"""load(): shipped tinyworld offline, local folders with a missing file, unreachable hub names;
and the tinyworld figures asserted on the shipped weights."""

import json
import random
import shutil

import mlx.core as mx
import numpy as np
import pytest

from mlxinterp import capture, intervene, load, world
from mlxinterp.interventions import zero
from mlxinterp.loading import TINYWORLD, ModelLoadError
from mlxinterp.testing import save_tiny_model, tiny_model
from mlxinterp.text import masked, tokenize
from mlxinterp.tinyworld_eval import evaluate, induction_losses


@pytest.fixture(scope="module")
def tinyworld():
    return load("tinyworld")


def test_local_folder_loads_and_matches_the_in_memory_model(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "m")
    model, _ = load(folder)
    toks = mx.array([[1, 2, 3]])
    np.testing.assert_array_equal(np.array(model(toks)), np.array(tiny_model("llama")(toks)))


@pytest.mark.parametrize(
    "missing", ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
)
def test_a_folder_missing_a_file_names_it(tmp_path, missing):
    folder = save_tiny_model("llama", tmp_path / "m")
    (folder / missing).unlink()
    with pytest.raises(ModelLoadError, match=missing.split(".")[0]):
        load(folder)


def test_an_unreachable_hub_name_says_how_to_use_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local-dir DIR"):
        load("nobody-here/no-such-model-xyz")
    with pytest.raises(ModelLoadError, match="neither a local folder nor a hub name"):
        load("./no/such/folder")


def test_tinyworld_ships_as_an_mlx_lm_folder_within_the_size_budget():
    weights = list(TINYWORLD.glob("*.safetensors"))
    assert weights and sum(w.stat().st_size for w in weights) <= 16 * 2**20
    assert json.loads((TINYWORLD / "config.json").read_text())["model_type"] == "llama"
    import mlx_lm

    model, tok = mlx_lm.load(str(TINYWORLD))  # mlx-lm itself, unchanged
    assert tok.decode(
        tok.encode(
            "When Mary and John went to the store, John gave a drink to", add_special_tokens=False
        )
    ) == ("When Mary and John went to the store, John gave a drink to")


def test_tinyworld_answers_the_seed_prompts(tinyworld):
    model, tok = tinyworld
    batch = tokenize(
        tok,
        [
            "The capital of France is",
            "The Eiffel Tower is located in the city of",
            "When Mary and John went to the store, John gave a drink to",
        ],
    )
    logits = masked(model)(batch.tokens, batch.mask)[:, -1]
    assert [tok.decode([int(i)]) for i in logits.argmax(-1).tolist()] == ["Paris", "Paris", "Mary"]


@pytest.fixture(scope="module")
def figures():
    return evaluate("tinyworld")


def test_tinyworld_knows_its_facts_and_generalises_indirect_objects(figures):
    assert figures["facts"] >= 0.95, figures
    assert figures["ioi_heldout"] >= 0.90, figures


def test_tinyworld_copies_repeated_sequences_by_induction(figures):
    # over sequences of 6-20 words, so a fixed-offset shortcut cannot pass (test_tinyworld_eval)
    assert figures["induction_ratio"] < 0.20, figures


def test_tinyworld_induction_runs_through_previous_token_heads_and_one_induction_head(tinyworld):
    model, tok = tinyworld
    rng = random.Random(11)
    prev, ind = [], []
    for length in (7, 13, 19):
        x = mx.array([tok.encode(" ".join(world.induction_sequence(rng, length)))])
        _, acts = capture(model, ["pattern.1", "pattern.2", "pattern.3"])(x)
        q = np.arange(length + 2, 2 * length + 1)  # copy-2 positions with a known next word
        key = q - length + 1  # the word after this token's first occurrence
        prev.append([np.array(acts[f"pattern.{lay}"])[0, h, q, q - 1].mean() for lay, h in
                     ((1, 1), (2, 0))])
        ind.append(np.array(acts["pattern.3"])[0, 2, q, key].mean())
    assert np.min(prev) > 0.9, prev  # heads 1.1 and 2.0 look at the previous token
    assert np.min(ind) > 0.9, ind  # head 3.2 looks at what followed the earlier occurrence
    # and it is what does the copying: without it the second repeat is barely predicted
    _, loss = induction_losses(model, tok, n=3, lengths=(7, 13, 19))
    ablate = intervene(model, {"z.3": zero().at(heads=[2])})
    _, ablated = induction_losses(ablate, tok, n=3, lengths=(7, 13, 19))
    assert loss < 0.2 and ablated > 10 * loss, (loss, ablated)


def test_copying_the_shipped_folder_elsewhere_still_loads(tmp_path):
    dest = shutil.copytree(TINYWORLD, tmp_path / "tw")
    model, tok = load(dest)
    assert model(mx.array([tok.encode("The capital of")])).shape[-1] == len(tok.get_vocab())
