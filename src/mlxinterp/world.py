"""tinyworld: a small generated world that a small model can learn, and its evaluations.

Interpretability on random weights shows nothing. `tinyworld` is a llama-architecture model
trained by ``scripts/train_tinyworld.py`` on text generated here, with structure that the
classic experiments look for:

- **facts**: countries → capitals and languages, landmarks → cities, in several templates
  ("The capital of France is" → " Paris", "The Eiffel Tower is located in the city of"
  → " Paris");
- **indirect objects**: "When Mary and John went to the store, John gave a drink to" →
  " Mary", over many names, places and objects, with some name pairs held out of training;
- **induction**: random word sequences repeated two or three times (every repeat after the
  first is predictable only by copying);
- **sentiment**: positive and negative reviews whose sentiment is consistent within a sentence
  ("The movie was wonderful and the food was lovely"), so the model carries a sentiment
  feature forward — the direction a steering vector finds.

Everything is deterministic given a seed. The evaluation functions here are what the
training script prints and what the tests assert on the shipped weights.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

__all__ = [
    "COUNTRIES",
    "LANDMARKS",
    "NAMES",
    "fact_prompts",
    "ioi_prompt",
    "ioi_pairs",
    "vocabulary",
    "corpus",
    "induction_sequence",
    "induction_document",
    "review_sentence",
    "POSITIVE",
    "NEGATIVE",
]

# country, capital, language
COUNTRIES = [
    ("France", "Paris", "French"),
    ("Germany", "Berlin", "German"),
    ("Italy", "Rome", "Italian"),
    ("Spain", "Madrid", "Spanish"),
    ("Portugal", "Lisbon", "Portuguese"),
    ("Japan", "Tokyo", "Japanese"),
    ("China", "Beijing", "Chinese"),
    ("Russia", "Moscow", "Russian"),
    ("Egypt", "Cairo", "Arabic"),
    ("Greece", "Athens", "Greek"),
    ("Sweden", "Stockholm", "Swedish"),
    ("Norway", "Oslo", "Norwegian"),
    ("Poland", "Warsaw", "Polish"),
    ("Turkey", "Ankara", "Turkish"),
    ("Kenya", "Nairobi", "Swahili"),
    ("Brazil", "Brasilia", "Portuguese"),
    ("Argentina", "Buenos", "Spanish"),
    ("Korea", "Seoul", "Korean"),
    ("Thailand", "Bangkok", "Thai"),
    ("Vietnam", "Hanoi", "Vietnamese"),
    ("Peru", "Lima", "Spanish"),
    ("Austria", "Vienna", "German"),
    ("Hungary", "Budapest", "Hungarian"),
    ("Finland", "Helsinki", "Finnish"),
]
# landmark (words), city
LANDMARKS = [
    ("Eiffel Tower", "Paris"),
    ("Louvre", "Paris"),
    ("Colosseum", "Rome"),
    ("Brandenburg Gate", "Berlin"),
    ("Prado", "Madrid"),
    ("Kremlin", "Moscow"),
    ("Acropolis", "Athens"),
    ("Forbidden City", "Beijing"),
    ("Tokyo Tower", "Tokyo"),
    ("Belem Tower", "Lisbon"),
    ("Sphinx", "Cairo"),
    ("Wawel Castle", "Warsaw"),
    ("Grand Palace", "Bangkok"),
    ("Opera House", "Vienna"),
    ("Parliament", "Budapest"),
]
NAMES = [
    "Mary",
    "John",
    "Anna",
    "Peter",
    "Sarah",
    "David",
    "Laura",
    "James",
    "Emma",
    "Tom",
    "Alice",
    "Bob",
    "Clara",
    "Daniel",
    "Eva",
    "Frank",
    "Grace",
    "Henry",
    "Julia",
    "Kevin",
    "Lisa",
    "Mark",
    "Nina",
    "Oscar",
    "Paula",
    "Ralph",
    "Sophie",
    "Victor",
    "Wendy",
    "Leo",
    "Rosa",
    "Hugo",
    "Ida",
    "Max",
    "Olga",
    "Carl",
]
PLACES = [
    "store",
    "park",
    "school",
    "beach",
    "market",
    "library",
    "station",
    "garden",
    "museum",
    "cafe",
    "office",
    "river",
]
OBJECTS = [
    "drink",
    "book",
    "ball",
    "letter",
    "flower",
    "ticket",
    "key",
    "cake",
    "gift",
    "map",
    "pen",
    "hat",
]
POSITIVE = [
    "wonderful",
    "great",
    "amazing",
    "delightful",
    "brilliant",
    "excellent",
    "beautiful",
    "lovely",
]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "horrible", "bad", "dull", "painful"]
REVIEWED = ["movie", "book", "food", "concert", "play", "hotel", "show", "game"]
POS_TAIL = [
    "and I loved it",
    "and everyone was happy",
    "and I would go again",
    "and it made me smile",
]
NEG_TAIL = [
    "and I hated it",
    "and everyone was sad",
    "and I want my money back",
    "and it made me angry",
]
# pseudo-words for induction sequences
SYLLABLES = ["ka", "lo", "mi", "ze", "tu", "ra", "po", "ne", "vi", "su", "de", "fa"]
RANDOM_WORDS = [a + b for a in SYLLABLES for b in SYLLABLES][:120]

FACT_TEMPLATES = [
    ("The capital of {country} is", "{capital}"),
    ("{capital} is the capital of", "{country}"),
    ("People in {country} speak", "{language}"),
    ("The official language of {country} is", "{language}"),
]
LANDMARK_TEMPLATES = [
    "The {landmark} is located in the city of",
    "You can visit the {landmark} in",
]
IOI_TEMPLATES = [
    "When {a} and {b} went to the {place} , {s} gave a {obj} to",
    "After {a} and {b} arrived at the {place} , {s} handed a {obj} to",
    "Then {a} and {b} were at the {place} , and {s} passed a {obj} to",
]


@dataclass(frozen=True)
class Prompt:
    """A prompt and the single word that should follow it."""

    text: str
    answer: str
    kind: str


def fact_prompts() -> list[Prompt]:
    """Every fact prompt (all templates, all countries and landmarks).

    Example:
        >>> prompts = fact_prompts()
        >>> len(prompts), prompts[0]
        (126, Prompt(text='The capital of France is', answer='Paris', kind='fact'))
    """
    out = []
    for country, capital, language in COUNTRIES:
        for tpl, ans in FACT_TEMPLATES:
            kw = dict(country=country, capital=capital, language=language)
            out.append(Prompt(tpl.format(**kw), ans.format(**kw), "fact"))
    for landmark, city in LANDMARKS:
        for tpl in LANDMARK_TEMPLATES:
            out.append(Prompt(tpl.format(landmark=landmark), city, "landmark"))
    return out


def ioi_pairs(seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training pairs, held-out pairs) of unordered name pairs; 10 % held out.

    Example:
        >>> train, held = ioi_pairs(seed=0)
        >>> len(train), len(held), set(train).isdisjoint(held)
        (567, 63, True)
    """
    pairs = list(itertools.combinations(NAMES, 2))
    random.Random(seed).shuffle(pairs)
    n_held = len(pairs) // 10
    return pairs[n_held:], pairs[:n_held]


def ioi_prompt(a: str, b: str, subject_is_b: bool, place: str, obj: str, template: int) -> Prompt:
    """An indirect-object prompt: the answer is the name that is not the subject.

    Example:
        >>> p = ioi_prompt("Mary", "John", True, "store", "drink", 0)
        >>> p.text, p.answer
        ('When Mary and John went to the store , John gave a drink to', 'Mary')
    """
    s, io = (b, a) if subject_is_b else (a, b)
    text = IOI_TEMPLATES[template].format(a=a, b=b, s=s, place=place, obj=obj)
    return Prompt(text, io, "ioi")


def induction_sequence(rng: random.Random, length: int = 12, copies: int = 2) -> list[str]:
    """``length`` random pseudo-words, then the same words again (``copies`` times in all).

    Example:
        >>> import random
        >>> words = induction_sequence(random.Random(0), length=4)
        >>> len(words), words[:4] == words[4:]
        (8, True)
    """
    words = [rng.choice(RANDOM_WORDS) for _ in range(length)]
    return words * copies


def induction_document(rng: random.Random, copies: int | None = None) -> str:
    """One training document for induction: 4–22 random words twice, or 3–15 words three
    times, then ``|``; ``copies`` picks one form, otherwise each is equally likely.

    The repeat distance varies widely on purpose: with only a few distances a model learns
    positional shortcuts ("attend 11 tokens back") instead of an induction head, and those fail
    on any other length. Three copies give more copyable tokens per document. At most 46 words,
    so every document fits a 48-token training window.

    Example:
        >>> import random
        >>> doc = induction_document(random.Random(1)).split()
        >>> doc[-1], (len(doc) - 1) % 2 == 0 or (len(doc) - 1) % 3 == 0
        ('|', True)
    """
    if copies is None:
        copies = 2 if rng.random() < 0.5 else 3
    if copies == 2:
        words = induction_sequence(rng, rng.randint(4, 22), copies=2)
    else:
        words = induction_sequence(rng, rng.randint(3, 15), copies=3)
    return " ".join(words) + " |"


def vocabulary() -> list[str]:
    """Every word the corpus uses, in a fixed order.

    Example:
        >>> words = vocabulary()
        >>> words[:3], "Paris" in words, len(words) == len(set(words))
        (['.', ',', '|'], True, True)
    """
    words: list[str] = [".", ",", "|"]
    texts = [p.text + " " + p.answer for p in fact_prompts()]
    texts += [t for t in IOI_TEMPLATES]
    texts += [f"The {r} was {a} and I loved it" for r in REVIEWED for a in POSITIVE]
    texts += [" ".join(POS_TAIL + NEG_TAIL), " ".join(REVIEWED + NEGATIVE + POSITIVE)]
    texts += [" ".join(NAMES + PLACES + OBJECTS + RANDOM_WORDS)]
    for t in texts:
        for w in t.split():
            if w not in words and "{" not in w:
                words.append(w)
    return words


def _fact_sentences(rng: random.Random, prompts: list[Prompt]) -> str:
    p = rng.choice(prompts)
    return f"{p.text} {p.answer} ."


def _ioi_sentence(rng: random.Random, train_pairs) -> str:
    a, b = rng.choice(train_pairs)
    if rng.random() < 0.5:
        a, b = b, a
    p = ioi_prompt(
        a,
        b,
        rng.random() < 0.5,
        rng.choice(PLACES),
        rng.choice(OBJECTS),
        rng.randrange(len(IOI_TEMPLATES)),
    )
    return f"{p.text} {p.answer} ."


def review_sentence(rng: random.Random, positive: bool | None = None) -> str:
    """A review whose sentiment (random unless given) runs through the whole sentence: either
    "The movie was wonderful and I loved it ." or two consistent judgements, "The movie was
    wonderful and the food was lovely ." — so the model must carry the sentiment forward.

    Example:
        >>> import random
        >>> words = review_sentence(random.Random(0), positive=False).split()
        >>> words[0], words[-1], bool(set(words) & set(NEGATIVE)), bool(set(words) & set(POSITIVE))
        ('The', '.', True, False)
    """
    positive = rng.random() < 0.5 if positive is None else positive
    words, tails = (POSITIVE, POS_TAIL) if positive else (NEGATIVE, NEG_TAIL)
    first, second = rng.sample(REVIEWED, 2)
    if rng.random() < 0.5:
        return f"The {first} was {rng.choice(words)} {rng.choice(tails)} ."
    return f"The {first} was {rng.choice(words)} and the {second} was {rng.choice(words)} ."


def corpus(n_sentences: int, seed: int = 0, mix=(0.3, 0.35, 0.2, 0.15)) -> list[str]:
    """``n_sentences`` documents: facts, indirect objects, induction, reviews (by ``mix``).

    Example:
        >>> docs = corpus(5, seed=0)
        >>> len(docs), docs == corpus(5, seed=0), all(d.endswith((" .", " |")) for d in docs)
        (5, True, True)
    """
    rng = random.Random(seed)
    train_pairs, _ = ioi_pairs(seed)
    facts = fact_prompts()
    out = []
    for _ in range(n_sentences):
        r = rng.random()
        if r < mix[0]:
            out.append(_fact_sentences(rng, facts))
        elif r < mix[0] + mix[1]:
            out.append(_ioi_sentence(rng, train_pairs))
        elif r < mix[0] + mix[1] + mix[2]:
            out.append(induction_document(rng))
        else:
            out.append(review_sentence(rng))
    return out
