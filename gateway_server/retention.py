"""Retention: dead letters older than ``dead_letter_retention_days`` are purged.

A dead letter is evidence of bad input (a garbled frame, a forged signature, a clock in
2100) and is kept long enough to be looked at (``GET /api/v1/dead-letters``), not for ever:
a device that sends garbage every second would otherwise fill the database. ``serve`` and
``worker`` run a :class:`Purger` thread (every ``purge_interval_s``); ``gateway-server
purge-dead-letters`` does the same once, e.g. from cron.
"""

from __future__ import annotations

import logging
import threading
import time

from gateway_server.settings import Settings
from gateway_server.store import Store

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


def purge_once(store: Store, settings: Settings, *, now_ms: int | None = None) -> int:
    """Apply the retention now; the number of dead letters deleted (0 when it is off)."""
    days = settings.dead_letter_retention_days
    if not days:
        return 0
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    n = store.purge_dead_letters(older_than_ms=now - days * DAY_MS)
    if n:
        log.info("purged %d dead letter(s) older than %d days", n, days)
    return n


class Purger:
    """A daemon thread that applies the retention every ``purge_interval_s``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.purged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> Purger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.purged += purge_once(self.store, self.settings)
            except Exception:  # the database may be away: try again next time
                log.exception("dead-letter retention failed; retrying later")
            self._stop.wait(self.settings.purge_interval_s)
