"""Retention: dead letters older than ``dead_letter_retention_days`` are purged.

A dead letter is evidence of bad input (a garbled frame, a forged signature, a clock in
2100) and is kept long enough to be looked at (``GET /api/v1/dead-letters``), not for ever:
a device that sends garbage every second would otherwise fill the database. ``serve`` and
``worker`` run a :class:`Purger` thread (every ``purge_interval_s``); ``gateway-server
purge-dead-letters`` does the same once, e.g. from cron.

The same thread keeps the big tables from drowning the database (issue 17,
``gateway_server/store/partitions.py``): it creates the PostgreSQL partitions of the coming
months, and retires every CST month of ``sales``, ``events`` and ``rollups`` past the
table's ``*_retention_months``: export to ``retention_export_dir``, verify, then drop (and
prunes the exactly-once keys of retired sales and events). A
period whose export fails or does not verify is not dropped (and is tried again next time);
without an export directory nothing is dropped at all.
"""

from __future__ import annotations

import logging
import threading
import time

from gateway_server.settings import Settings
from gateway_server.store.database import Store

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


def retire_once(store: Store, settings: Settings, *, now_ms: int | None = None) -> dict[str, int]:
    """Create the coming partitions, then export-and-drop every period past its retention;
    the rows dropped per table. A failure on one period is logged and leaves it in place."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if store.engine.dialect.name == "postgresql":  # several workers: one does it at a time
        with store.engine.connect() as lock:
            if not lock.exec_driver_sql("SELECT pg_try_advisory_lock(72430002)").scalar():
                return {}
            try:
                return _retire(store, settings, now)
            finally:
                lock.exec_driver_sql("SELECT pg_advisory_unlock(72430002)")
                lock.commit()
    return _retire(store, settings, now)


def _retire(store: Store, settings: Settings, now: int) -> dict[str, int]:
    from gateway_server.store.partitions import (
        KEYED,
        ExportMismatch,
        expired_months,
        manage_partitions,
        prune_keys,
        retention_start,
        retire_period,
    )

    manage_partitions(store.engine, months_ahead=settings.partition_months_ahead, now_ms=now)
    dropped: dict[str, int] = {}
    if not settings.retention_export_dir:
        return dropped
    for table, months in (("sales", settings.sales_retention_months),
                          ("events", settings.events_retention_months),
                          ("rollups", settings.rollups_retention_months)):
        for month in expired_months(store.engine, table, retention_months=months, now_ms=now):
            try:
                exp = retire_period(store.engine, table, month, settings.retention_export_dir)
            except (ExportMismatch, OSError) as err:  # nothing dropped: try again next time
                log.error("retention: %s %s kept: %s", table, month, err)
                continue
            dropped[table] = dropped.get(table, 0) + exp.rows
        if months > 0 and table in KEYED:
            # the exactly-once keys of retired rows go once the retention has passed them
            # and a redelivery of them would be dead-lettered anyway (event_max_age_s)
            _, before = retention_start(now, months)
            if settings.event_max_age_s:
                before = min(before, now - settings.event_max_age_s * 1000)
            prune_keys(store.engine, table, before_ms=before)
    return dropped


class Purger:
    """A daemon thread that applies the retention every ``purge_interval_s``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.purged = 0
        self.retired: dict[str, int] = {}  # rows exported and dropped, per table
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
            try:
                for table, n in retire_once(self.store, self.settings).items():
                    self.retired[table] = self.retired.get(table, 0) + n
            except Exception:
                log.exception("table retention / partition upkeep failed; retrying later")
            self._stop.wait(self.settings.purge_interval_s)
