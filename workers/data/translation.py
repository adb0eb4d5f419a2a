"""The builtin ``translation`` pairs: English clauses and a made-up target language.

A source is "[yesterday] the/a [adjective] noun[s] verb[s|ed] the/a [adjective]
noun[s] [place]". Its target follows other rules, so that copying the source
scores nothing and a model must learn both the words and the grammar:

* every word has its own target word (``dog`` -> ``wanu``), articles vanish;
* the order is subject-object-verb, an adjective follows its noun, the place
  phrase comes first;
* a plural noun takes the suffix ``ri``; a past verb takes ``ta``; the object
  is marked by the particle ``o``.

"the small dog chased two red balls" is therefore
"wanu miko balari seki o kusota"; "yesterday" only sets the tense.
Generation is deterministic for a seed; the training and validation streams
are separate, so changing ``n_train`` does not change the validation pairs.
"""

from __future__ import annotations

import random

GENERATOR_VERSION = 1

_NOUNS = {
    "dog": "wanu",
    "cat": "neko",
    "bird": "tori",
    "child": "kodo",
    "teacher": "sensa",
    "farmer": "noka",
    "ball": "bala",
    "book": "hon",
    "apple": "ringa",
    "river": "kawa",
    "house": "uchi",
    "car": "kuru",
    "friend": "tomo",
    "fish": "sakan",
    "tree": "kiba",
    "letter": "tega",
}
_ADJECTIVES = {
    "small": "miko",
    "big": "dai",
    "red": "seki",
    "blue": "ao",
    "old": "furu",
    "new": "shin",
    "happy": "ureshi",
    "quiet": "shizu",
    "green": "mido",
    "tired": "tsuka",
}
# (base, third person, past) -> target stem
_VERBS = {
    ("see", "sees", "saw"): "mir",
    ("chase", "chases", "chased"): "kuso",
    ("find", "finds", "found"): "mitsu",
    ("carry", "carries", "carried"): "hako",
    ("like", "likes", "liked"): "suki",
    ("follow", "follows", "followed"): "tsuzu",
    ("paint", "paints", "painted"): "egak",
    ("watch", "watches", "watched"): "nagam",
}
_PLACES = {
    "in the garden": "niwa de",
    "near the school": "gako de",
    "at the market": "ichi de",
    "by the lake": "mizu de",
}
_PLURAL = {"child": "children", "fish": "fish"}


def generate_pairs(n: int, *, seed: int, stream: str) -> tuple[list[str], list[str]]:
    """``n`` (source, target) pairs as two lists.

    ``stream`` ("train", "validation") separates independent sequences for
    the same ``seed``. Raises ``ValueError`` for a negative ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    # A string seed is hashed with SHA-512 by ``random``: stable across runs.
    rng = random.Random(f"translation-v{GENERATOR_VERSION}-{seed}-{stream}")
    sources: list[str] = []
    targets: list[str] = []
    for _ in range(n):
        source, target = _pair(rng)
        sources.append(source)
        targets.append(target)
    return sources, targets


def _pair(rng: random.Random) -> tuple[str, str]:
    past = rng.random() < 0.4
    subject, subject_target, plural = _noun_phrase(rng)
    obj, object_target, _ = _noun_phrase(rng)
    forms = rng.choice(sorted(_VERBS))
    verb = forms[2] if past else (forms[0] if plural else forms[1])
    verb_target = _VERBS[forms] + ("ta" if past else "")
    source = [subject, verb, obj]
    target = [subject_target, object_target, "o", verb_target]
    if rng.random() < 0.3:
        place = rng.choice(sorted(_PLACES))
        source.append(place)
        target.insert(0, _PLACES[place])
    if past and rng.random() < 0.5:
        source.insert(0, "yesterday")
    return " ".join(source), " ".join(target)


def _noun_phrase(rng: random.Random) -> tuple[str, str, bool]:
    noun = rng.choice(sorted(_NOUNS))
    plural = rng.random() < 0.3
    words = [rng.choice(("the", "a")) if not plural else rng.choice(("the", "two", "some"))]
    target = [_NOUNS[noun] + ("ri" if plural else "")]
    if rng.random() < 0.6:
        adjective = rng.choice(sorted(_ADJECTIVES))
        words.append(adjective)
        target.append(_ADJECTIVES[adjective])
    words.append(_PLURAL.get(noun, noun + "s") if plural else noun)
    return " ".join(words), " ".join(target), plural
