"""A small thread-safe map for the API's in-process caches, bounded in memory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """Entries by key; at ``max_entries`` the map starts over.

    Starting over (rather than evicting the oldest) keeps every operation
    O(1) and lock holds short; a cache that is full that often is thrashing
    anyway, and each entry is cheap to compute again.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._make_room()
            self._entries[key] = value

    def get_or_add(self, key: K, make: Callable[[], V]) -> V:
        """The entry for ``key``, added from ``make()`` (under the lock) when missing."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self._make_room()
                found = self._entries[key] = make()
            return found

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _make_room(self) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
