"""The trust programme's clock (issue 19): one daemon thread in ``serve`` that, every
``settings.trust_clock_interval_s``, marks overdue complaints, ends expired list entries,
imports the status-feed folder (``settings.status_feed_dir``), enqueues new high-risk
findings for the webhooks and sends the deliveries that are due.

Each step runs in its own transaction; a failing step is logged and retried next time
(the database may be away). The reads of the API run the complaint and list steps too, so
a page is right even between two ticks.

It sits with casework, above the trust package: the deadlines it keeps are complaints'
(``casework.complaints``), and it drives the trust programme's lists, status feed and
webhooks below it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection

from gateway_server.casework import complaints as complaint_cases
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.trust import lists as trust_lists, statusfeed, webhooks

log = logging.getLogger(__name__)


def tick(store: Store, settings: Settings, *, now_ms: int | None = None) -> dict[str, int]:
    """One pass of every step; what each did."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    done: dict[str, int] = {}
    steps: dict[str, Callable[[Connection], int]] = {
        "overdue": lambda c: len(complaint_cases.tick(
            c, now_ms=now, answer_s=settings.complaint_answer_hours * 3600)),
        "expired": lambda c: trust_lists.expire(c, now_ms=now),
        "findings": lambda c: webhooks.scan_findings(c, now_ms=now),
    }
    for name, step in steps.items():
        try:
            with store.engine.begin() as conn:
                done[name] = step(conn)
        except Exception:
            log.exception("trust clock: %s failed; retrying next time", name)
    if settings.status_feed_dir:
        try:
            done["feed_files"] = len(statusfeed.watch_once(
                store.engine, settings.status_feed_dir, now_ms=now))
        except Exception:
            log.exception("trust clock: status feed folder failed; retrying next time")
    try:
        done["deliveries"] = webhooks.deliver_due(store.engine, now_ms=now)
    except Exception:
        log.exception("trust clock: webhook delivery failed; retrying next time")
    return done


class TrustClock:
    """A daemon thread running :func:`tick` every ``trust_clock_interval_s``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trust-clock", daemon=True)

    def start(self) -> TrustClock:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            tick(self.store, self.settings)
            self._stop.wait(self.settings.trust_clock_interval_s)
