"""Wake-ups of idle slots: the supervisor's one LISTEN relayed through pipes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from storage.events import NOTIFY_CHANNEL
from storage.settings import Settings
from tests.conftest import make_settings
from workers.wakeup import Wakeup, WakeupRelay, listens


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe: the Wakeup under test owns (and closes) the read end, this fixture the write end."""
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(write_fd)


def timed_wait(wakeup: Wakeup, timeout: float) -> tuple[bool, float]:
    started = time.monotonic()
    woken = wakeup.wait(timeout)
    return woken, time.monotonic() - started


def test_a_byte_in_the_relay_pipe_wakes_the_slot_once(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    wakeup = Wakeup(None, relay_fd=read_fd)
    os.write(write_fd, b"x" * 5000)  # several notifications while a trial ran
    woken, elapsed = timed_wait(wakeup, 5.0)
    assert woken and elapsed < 1.0
    # All of them were one wake-up: the next wait times out.
    woken, elapsed = timed_wait(wakeup, 0.2)
    assert not woken and elapsed >= 0.15
    wakeup.close()


def test_interrupt_ends_a_relay_wait_at_once(pipe: tuple[int, int]) -> None:
    wakeup = Wakeup(None, relay_fd=pipe[0])
    threading.Timer(0.1, wakeup.interrupt).start()
    woken, elapsed = timed_wait(wakeup, 10.0)
    assert not woken and elapsed < 2.0
    wakeup.close()


def test_a_closed_relay_falls_back_to_polling() -> None:
    read_fd, write_fd = os.pipe()
    wakeup = Wakeup(None, relay_fd=read_fd)
    os.close(write_fd)  # the supervisor is gone
    assert wakeup.wait(1.0) is False
    # Polling now: each wait lasts its timeout instead of spinning on end-of-file.
    woken, elapsed = timed_wait(wakeup, 0.3)
    assert not woken and elapsed >= 0.25
    wakeup.close()


def test_settings_choose_where_slots_listen(tmp_path: Path) -> None:
    direct = "postgresql://hpo@db:5432/hpo"
    pooled = make_settings(tmp_path, ("postgresql://hpo@bouncer:6432/hpo", "sqlite:///o.db"))
    assert pooled.listen_database_url == "postgresql+psycopg2://hpo@bouncer:6432/hpo"
    split = Settings(database_url="postgresql://hpo@bouncer:6432/hpo", listen_database_url=direct)
    assert split.listen_database_url == "postgresql+psycopg2://hpo@db:5432/hpo"
    assert listens(split)
    assert not listens(split.model_copy(update={"listen_enabled": False}))
    sqlite = Settings(data_dir=tmp_path)
    assert not listens(sqlite) and WakeupRelay.for_settings(sqlite) is None
    polling = Wakeup.for_slot(split.model_copy(update={"listen_enabled": False}), None)
    woken, elapsed = timed_wait(polling, 0.2)
    assert not woken and elapsed >= 0.15
    polling.close()


def notify(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_notify(:c, '')"), {"c": NOTIFY_CHANNEL})
    engine.dispose()


def wait_until_woken(wakeup: Wakeup, url: str, timeout: float = 10.0) -> bool:
    """Notify until the slot wakes: the relay may still be (re)connecting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notify(url)
        if wakeup.wait(0.5):
            return True
    return False


@pytest.mark.postgres
def test_one_listen_connection_wakes_every_slot_and_survives_a_restart(
    pg_urls: tuple[str, str],
) -> None:
    url = pg_urls[0]
    relay = WakeupRelay(url, retry_s=0.2)
    slots = [Wakeup(None, relay_fd=relay.add_slot()) for _ in range(3)]
    relay.start()
    try:
        assert all(wait_until_woken(slot, url) for slot in slots)
        engine = create_engine(url)
        with engine.begin() as conn:
            listeners = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'hpo-listen'"
                )
            ).scalars()
            pids = list(listeners)
            assert len(pids) == 1  # one for all three slots
            # Postgres restarted under it: the relay connects again.
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]})
        engine.dispose()
        for slot in slots:
            while slot.wait(0.3):  # drain wake-ups sent before the restart
                pass
        assert all(wait_until_woken(slot, url) for slot in slots)
    finally:
        relay.close()
        for slot in slots:
            slot.close()
