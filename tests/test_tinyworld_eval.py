"""The tinyworld evaluation itself, checked on hand-written "models" whose answers are known."""

import random

import mlx.core as mx
import numpy as np

from mlxinterp import world
from mlxinterp.tinyworld_eval import induction_losses

WORDS = ["<unk>", "<s>", "</s>"] + world.vocabulary()
IDS = {w: i for i, w in enumerate(WORDS)}
RANDOM_IDS = [IDS[w] for w in world.RANDOM_WORDS]


class WordTokenizer:
    def encode(self, text):
        return [1] + [IDS[w] for w in text.split()]


def _predictor(pick):
    """A model that puts 99 % on the tokens ``pick(ids, p)`` chooses (shared equally; uniform
    over the random words when there are none), as log-probabilities of shape [1, T, vocab]."""

    def model(x):
        ids = np.array(x)[0].tolist()
        out = np.full((1, len(ids), len(WORDS)), -1e9, dtype=np.float32)
        for p in range(len(ids)):
            out[0, p, RANDOM_IDS] = np.log(1 / len(RANDOM_IDS))
            guesses = pick(ids, p)
            if guesses:
                out[0, p, RANDOM_IDS] = np.log(0.01 / len(RANDOM_IDS))
                for g in set(guesses):
                    out[0, p, g] = np.log(0.99 * guesses.count(g) / len(guesses))
        return mx.array(out)

    return model


def _induction(ids, p):  # whatever followed each earlier occurrence of the current token
    return [ids[s + 1] for s in range(p) if ids[s] == ids[p]]


def _eleven_back(ids, p):  # a positional shortcut: the token 11 places back
    return [ids[p - 11]] if p >= 12 else []


def test_a_perfect_induction_head_scores_near_zero_at_every_length():
    first, second = induction_losses(_predictor(_induction), WordTokenizer())
    assert abs(first - np.log(len(RANDOM_IDS))) < 0.3  # no help in the first copy
    assert second / first < 0.05


def test_a_fixed_offset_shortcut_passes_one_length_but_fails_the_evaluation():
    shortcut = _predictor(_eleven_back)
    first12, second12 = induction_losses(shortcut, WordTokenizer(), n=10, lengths=[12])
    assert second12 / first12 < 0.01  # "attend 11 back" is exact for 12-word sequences ...
    first, second = induction_losses(shortcut, WordTokenizer())
    assert second / first > 0.8  # ... and useless for the other 14 lengths


def test_induction_documents_vary_the_repeat_distance_and_fit_a_window():
    rng = random.Random(0)
    periods, longest = set(), 0
    for _ in range(2000):
        words = world.induction_document(rng).split()
        assert words[-1] == "|"
        body = words[:-1]
        period = next(k for k in range(1, len(body) + 1) if body == body[:k] * (len(body) // k))
        periods.add(period)
        longest = max(longest, len(words))
    assert periods >= set(range(4, 23))  # every distance from 4 to 22 words occurs
    assert longest + 1 <= 48  # with BOS, one document fits a 48-token training window
