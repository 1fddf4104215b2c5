"""Quarantine release: the held messages of a device registered since, through the pipeline.

An unregistered device's messages are quarantined by the pipeline (``store_batch``); once
the device is in the register, an operator releases them (``POST
/api/v1/quarantine/{device}/release`` or ``gateway-server release-quarantine``): each
chunk is one transaction that stores it and deletes it from the quarantine.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from gateway_server.ingest.pipeline import BatchResult, Limits, decode_message, store_batch
from gateway_server.store.database import Store
from gateway_server.store.tables import quarantine, scales
from weighing.errors import GatewayError


class NotReleasableError(GatewayError):
    """Quarantined messages of a device that is not (yet) in the register."""


def release_quarantine(conn: Connection, device: str, *, now_ms: int,
                       limits: Limits | None = None, max_rows: int = 500,
                       ) -> tuple[int, BatchResult]:
    """Ingest up to ``max_rows`` quarantined messages of ``device``, oldest first, in the
    open transaction ``conn``, and delete them from the quarantine.

    The device must be registered by now (else :class:`NotReleasableError`): its messages
    then take the whole pipeline as if they arrived now — signatures against the
    registered key, the market of the register, deduplication, detectors — except that
    device times are judged against when each message was *received*. Returns how many
    messages were released (0: none left) and what storing them did.
    """
    row = conn.execute(select(scales.c.registered).where(scales.c.device == device)).first()
    if row is None or not row.registered:
        raise NotReleasableError(
            f"device {device} is not in the register: register it first (API or import), "
            "then release its quarantined messages")
    q = (select(quarantine).where(quarantine.c.device == device)
         .order_by(quarantine.c.id).limit(max_rows))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)  # two releases at once share the rows out
    held = conn.execute(q).all()
    if not held:
        return 0, BatchResult()
    batch = [decode_message(r.topic, bytes(r.payload), r.received_ms) for r in held]
    res = store_batch(conn, batch, now_ms=now_ms, limits=limits)
    conn.execute(quarantine.delete().where(quarantine.c.id.in_([r.id for r in held])))
    conn.execute(scales.update().where(scales.c.device == device).values(quarantined=False))
    return len(held), res


def release_device(store: Store, device: str, *, now_ms: int, limits: Any = None,
                   chunk: int = 500) -> dict[str, int]:
    """Ingest every quarantined message of the (now registered) ``device``, ``chunk``
    messages per transaction; raises :class:`NotReleasableError` when it is not in the
    register. Returns what was released and stored."""
    out = {"released": 0, "sales": 0, "events": 0, "duplicates": 0, "dead_letters": 0,
           "samples": 0, "bad_signatures": 0}
    while True:
        with store.engine.begin() as conn:
            n, res = release_quarantine(conn, device, now_ms=now_ms, limits=limits,
                                        max_rows=chunk)
        if not n:
            return out
        out["released"] += n
        out["sales"] += len(res.new_sales)
        out["events"] += res.new_events
        out["duplicates"] += res.duplicates
        out["dead_letters"] += len(res.dead)
        out["samples"] += res.samples
        out["bad_signatures"] += res.bad_signatures
