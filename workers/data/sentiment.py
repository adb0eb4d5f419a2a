"""The builtin ``sentiment`` set: generated English reviews with a hidden scoring rule.

Each review is one or two clauses about an aspect of a product ("the battery
was not very reliable"). A clause scores ``polarity * strength * modifier``:

* adjectives and verdict verbs are positive or negative, some stronger (1.5)
  than others (1.0);
* intensifiers ("extremely") multiply by 1.5, diminishers ("slightly") by 0.5;
* negation ("not", "never", "wasn't") flips the sign *and* halves the score,
  so "not bad" is mildly positive and "not very good" mildly negative;
* in "A but B", "although A, B" and "B, even though A" the main clause B
  counts twice; in "A and B" both count once.

The label is 1 (positive) when the total is above zero. Negation is drawn
independently of the label, so a bag of words cannot read a clause's sign
from its adjective alone: a model has to bind "not" to what follows it, and
weigh clauses against each other. A share ``label_noise`` of the labels is
flipped (validation too: real annotations are noisy, and it caps accuracy
near ``1 - label_noise``).

Generation is deterministic for a given ``seed``; the training and the
validation set come from separate streams, so changing ``n_train`` does not
change the validation set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

GENERATOR_VERSION = 1
LABEL_NAMES = ("negative", "positive")

_DOMAINS: dict[str, tuple[str, ...]] = {
    "movie": ("plot", "acting", "soundtrack", "ending", "dialogue", "cast", "pacing"),
    "restaurant": ("food", "service", "pasta", "staff", "dessert", "wine list", "ambience"),
    "phone": ("battery", "screen", "camera", "speaker", "charger", "price", "software"),
    "hotel": ("room", "bed", "location", "breakfast", "pool", "reception", "view"),
    "book": ("story", "writing", "characters", "translation", "cover", "final chapter"),
    "laptop": ("keyboard", "trackpad", "display", "fan", "build quality", "hinge"),
}
# (word, strength); the long tails are rare so that capacity matters.
_POSITIVE = (
    ("good", 1.0),
    ("great", 1.5),
    ("nice", 1.0),
    ("excellent", 1.5),
    ("fine", 1.0),
    ("wonderful", 1.5),
    ("enjoyable", 1.0),
    ("solid", 1.0),
    ("charming", 1.0),
    ("impressive", 1.5),
    ("reliable", 1.0),
    ("pleasant", 1.0),
    ("superb", 1.5),
    ("delightful", 1.5),
    ("decent", 1.0),
    ("brilliant", 1.5),
    ("satisfying", 1.0),
    ("flawless", 1.5),
    ("elegant", 1.0),
    ("sturdy", 1.0),
)
_NEGATIVE = (
    ("bad", 1.0),
    ("awful", 1.5),
    ("poor", 1.0),
    ("terrible", 1.5),
    ("boring", 1.0),
    ("disappointing", 1.0),
    ("dull", 1.0),
    ("mediocre", 1.0),
    ("horrible", 1.5),
    ("clumsy", 1.0),
    ("frustrating", 1.0),
    ("weak", 1.0),
    ("dreadful", 1.5),
    ("flimsy", 1.0),
    ("sloppy", 1.0),
    ("atrocious", 1.5),
    ("bland", 1.0),
    ("unreliable", 1.0),
    ("tedious", 1.0),
    ("abysmal", 1.5),
)
_INTENSIFIERS = ("very", "really", "extremely", "incredibly", "truly", "remarkably")
_DIMINISHERS = ("slightly", "somewhat", "a bit", "fairly", "mildly", "a little")
# Copulas in their plain and negated forms.
_COPULAS = ("was", "is", "seemed", "felt", "looked")
_NEGATED_COPULAS = (
    "was not",
    "wasn't",
    "is not",
    "isn't",
    "was never",
    "never felt",
    "did not seem",
    "didn't look",
    "is hardly",
    "was hardly",
)
# Verdict verbs: the reviewer's own judgement of the whole thing.
# (past, present, strength)
_VERDICTS_POSITIVE = (("loved", "love", 1.5), ("enjoyed", "enjoy", 1.0), ("liked", "like", 1.0))
_VERDICTS_NEGATIVE = (
    ("hated", "hate", 1.5),
    ("regretted", "regret", 1.0),
    ("disliked", "dislike", 1.0),
)
_OPENERS = (
    "",
    "",
    "",
    "",
    "honestly, ",
    "overall, ",
    "to be fair, ",
    "i have to say ",
    "after a week, ",
    "in my opinion ",
)
_FILLERS = (
    "",
    "",
    "",
    " we went there on a friday.",
    " i bought it for my brother.",
    " it arrived on time.",
    " i read reviews first.",
    " my friends agreed.",
)
_MAIN_WEIGHT = 2.0


@dataclass(frozen=True)
class _Clause:
    text: str
    score: float


def generate_reviews(
    n: int, *, seed: int, stream: str, label_noise: float
) -> tuple[list[str], list[int]]:
    """``n`` reviews and their labels (0 negative, 1 positive).

    ``stream`` ("train", "validation") separates independent sequences for
    the same ``seed``. Raises ``ValueError`` for a negative ``n`` or a noise
    outside [0, 1].
    """
    if n < 0 or not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"bad sentiment parameters: n={n}, label_noise={label_noise}")
    # A string seed is hashed with SHA-512 by ``random``: stable across runs.
    rng = random.Random(f"sentiment-v{GENERATOR_VERSION}-{seed}-{stream}")
    texts: list[str] = []
    labels: list[int] = []
    while len(texts) < n:
        text, score = _review(rng)
        # Near-ties would make the rule ambiguous; draw again.
        if abs(score) < 0.2:
            continue
        label = int(score > 0)
        if rng.random() < label_noise:
            label = 1 - label
        texts.append(text)
        labels.append(label)
    return texts, labels


def generate_topic_reviews(
    n: int, *, seed: int, stream: str, kinds: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """``n`` reviews of the product ``kinds`` ("phone", "hotel"...), each labelled
    ``<kind>-positive`` or ``<kind>-negative``: a topic and a sentiment, so
    ``2 * len(kinds)`` classes of about equal size, without label noise.

    Separate from :func:`generate_reviews`: its output does not change.
    Raises ``ValueError`` for a negative ``n`` or an unknown kind.
    """
    unknown = sorted(set(kinds) - set(_DOMAINS))
    if n < 0 or unknown or not kinds:
        raise ValueError(f"bad topic parameters: n={n}, unknown kinds {unknown}")
    rng = random.Random(f"topics-v{GENERATOR_VERSION}-{seed}-{stream}")
    texts: list[str] = []
    labels: list[str] = []
    while len(texts) < n:
        kind = rng.choice(kinds)
        text, score = _review(rng, _DOMAINS[kind])
        if abs(score) < 0.2:
            continue
        texts.append(text)
        labels.append(f"{kind}-{LABEL_NAMES[int(score > 0)]}")
    return texts, labels


def generate_documents(
    n_sentences: int, *, seed: int, stream: str, per_document: tuple[int, int] = (2, 5)
) -> list[list[str]]:
    """Documents of a few reviews each, about one product kind (``phone``...).

    The sentences of a document talk about two aspects of one product kind
    (its battery and its screen...), as a real review keeps to its subject, so
    whether a sentence follows another one can be learned (BERT's
    next-sentence prediction); about ``n_sentences`` sentences in all.
    Separate from :func:`generate_reviews`: its output does not change.
    """
    if n_sentences < 0:
        raise ValueError(f"n_sentences must be >= 0, not {n_sentences}")
    rng = random.Random(f"documents-v{GENERATOR_VERSION}-{seed}-{stream}")
    documents: list[list[str]] = []
    total = 0
    while total < n_sentences:
        aspects = tuple(rng.sample(_DOMAINS[rng.choice(sorted(_DOMAINS))], 2))
        size = rng.randint(*per_document)
        documents.append([_review(rng, aspects)[0] for _ in range(size)])
        total += size
    return documents


def _review(rng: random.Random, aspects: tuple[str, ...] | None = None) -> tuple[str, float]:
    if aspects is None:
        aspects = _DOMAINS[rng.choice(sorted(_DOMAINS))]
    first = _clause(rng, aspects)
    kind = rng.choices(("single", "and", "but", "although", "even though"), (9, 3, 5, 2, 2))[0]
    if kind == "single":
        text, score = first.text, first.score
    else:
        second = _clause(rng, aspects)
        if kind == "and":
            text, score = f"{first.text} and {second.text}", first.score + second.score
        elif kind == "but":
            text = f"{first.text}, but {second.text}"
            score = first.score + _MAIN_WEIGHT * second.score
        elif kind == "although":
            text = f"although {first.text}, {second.text}"
            score = first.score + _MAIN_WEIGHT * second.score
        else:
            # The concession comes last here, the main clause first.
            text = f"{second.text}, even though {first.text}"
            score = first.score + _MAIN_WEIGHT * second.score
    return f"{rng.choice(_OPENERS)}{text}.{rng.choice(_FILLERS)}", score


def _clause(rng: random.Random, aspects: tuple[str, ...]) -> _Clause:
    if rng.random() < 0.2:
        return _verdict(rng)
    positive = rng.random() < 0.5
    word, strength = _zipf_choice(rng, _POSITIVE if positive else _NEGATIVE)
    score = strength if positive else -strength
    negated = rng.random() < 0.4
    copula = rng.choice(_NEGATED_COPULAS if negated else _COPULAS)
    modifier, factor = _modifier(rng, allow_diminisher=not negated)
    score *= factor * (-0.5 if negated else 1.0)
    subject = f"the {rng.choice(aspects)}"
    return _Clause(f"{subject} {copula} {modifier}{word}", score)


def _verdict(rng: random.Random) -> _Clause:
    positive = rng.random() < 0.5
    past, present, strength = rng.choice(_VERDICTS_POSITIVE if positive else _VERDICTS_NEGATIVE)
    score = strength if positive else -strength
    if rng.random() < 0.4:
        negation = rng.choice(("i did not", "i didn't", "i really did not"))
        return _Clause(f"{negation} {present} it", -0.5 * score)
    return _Clause(f"i {past} it", score)


def _modifier(rng: random.Random, *, allow_diminisher: bool) -> tuple[str, float]:
    draw = rng.random()
    if draw < 0.3:
        return f"{rng.choice(_INTENSIFIERS)} ", 1.5
    if allow_diminisher and draw < 0.55:
        return f"{rng.choice(_DIMINISHERS)} ", 0.5
    return "", 1.0


def _zipf_choice(rng: random.Random, words: tuple[tuple[str, float], ...]) -> tuple[str, float]:
    # Weight 1/rank: the first words are common, the last ones rare.
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return rng.choices(words, weights)[0]
