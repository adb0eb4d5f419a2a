"""A short-lived, in-process cache of verified API tokens.

Looking a token up costs a database round trip; under many clients that is
most of what a cheap read request does. A verified token is remembered for
``ttl_s`` seconds (by its SHA-256, never the token itself), so a revoked or
expired token stops working in every API process within ``ttl_s``. Unknown
tokens are never cached: a new token works at once, and guessing cannot fill
the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.bounded_map import BoundedMap
from storage.tokens import Principal, hash_token

# How long a verified token is trusted without asking the database again.
TOKEN_CACHE_TTL_S = 5.0
# A bound on memory: at this many entries the cache starts over.
MAX_CACHED_TOKENS = 10_000


class TokenCache:
    """Verified principals by token hash, each for at most ``ttl_s`` seconds."""

    def __init__(
        self,
        ttl_s: float = TOKEN_CACHE_TTL_S,
        max_entries: int = MAX_CACHED_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        # Principal and the time its verification expires, by token hash.
        self._entries: BoundedMap[str, tuple[Principal, float]] = BoundedMap(max_entries)

    def lookup(self, token: str, verify: Callable[[str], Principal | None]) -> Principal | None:
        """The principal of ``token``: cached while fresh, else ``verify(token)``.

        ``verify`` asks the database; only a principal it returns is cached.
        """
        digest = hash_token(token)
        now = self._clock()
        found = self._entries.get(digest)
        if found is not None and now < found[1]:
            return found[0]
        principal = verify(token)
        if principal is None or self.ttl_s <= 0:
            self._entries.discard(digest)
        else:
            self._entries.put(digest, (principal, now + self.ttl_s))
        return principal

    def clear(self) -> None:
        self._entries.clear()
