"""Values quoted in messages: whole when short, a prefix and the length when long."""

from __future__ import annotations

from storage.errors import QUOTE_LIMIT, quote, shorten


def test_short_values_are_quoted_whole() -> None:
    assert quote("adam") == "'adam'"
    assert quote("é" * QUOTE_LIMIT) == repr("é" * QUOTE_LIMIT)
    assert quote(3.5) == "3.5" and quote([1, "a"]) == "[1, 'a']"
    assert shorten("learning_rate") == "learning_rate"


def test_long_values_are_quoted_by_a_prefix_and_their_length() -> None:
    assert quote("x" * 900_000) == f"'{'x' * QUOTE_LIMIT}'… (900000 characters)"
    listed = quote(list(range(100_000)))
    assert listed.startswith("[0, 1, 2, ") and listed.endswith(" characters)")
    assert len(listed) < 2 * QUOTE_LIMIT
    assert shorten("k" * 1000, 10) == "kkkkkkkkkk… (1000 characters)"
