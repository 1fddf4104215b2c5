"""End-to-end acknowledgement, the gateway's half: tell each device what is stored.

Rules (docs/architecture.md "End-to-end acknowledgement"):

* After an ingest batch has **committed**, every device that had an events message in
  it gets one signed ``stored`` command (``scales/v1/{market}/{device}/cmd/stored``)
  carrying its watermark: the seq up to which every event of the device is settled
  here. Coalesced: one command per device per batch at most, and the same watermark is
  not repeated within ``repeat_ms``. Idempotent: the edge deletes rows ≤ the mark.
* Settled means committed in this database in any form: stored (new or a duplicate),
  dead-lettered because the event itself is invalid (a poisonous event must not hold
  the device's outbox forever), or declared dropped by the agent (a fault event
  ``outbox-dropped`` with ``dropped_seqs``). An event whose **signature fails** is not
  settled: the edge keeps it and sends it again, so a key mismatch holds the device's
  events at the edge instead of losing them.
* The watermark lives in memory. Every events message carries the agent's
  ``floor_seq`` (its lowest unconfirmed seq): everything below is settled by
  definition, so a restarted gateway starts there without reading the database, and a
  device whose old events are gone for good cannot stall the mark.
* A gap (settled seqs above the mark, a hole below them) is asked for with a signed
  ``resend`` command, at most once per ``resend_interval_ms`` per device.
* Devices without a key get no command (a command cannot be authenticated without
  it): their agents free rows on the broker's PUBACK.
* Declared drops also mark the open ``sequence-gap`` findings they explain
  (``evidence.declared_dropped``; a gap fully filled or declared is dismissed), inside
  the batch's transaction: a declared drop is told apart from a loss.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import Connection, select

from gateway_server.ingest.pipeline import Incoming
from gateway_server.store.bulk import any_of
from gateway_server.store.tables import findings, scales
from weighing import wire
from weighing.errors import WireDecodeError
from weighing.signing import sign_command, verify_event

DROPPED_CODE = "outbox-dropped"  # edge_agent.outbox.DROPPED_CODE (the wire's word)
_MAX_ABOVE = 200_000  # settled seqs above the mark remembered per device


@dataclass
class _Device:
    market: str
    mark: int = 0  # every seq ≤ mark is settled
    above: set[int] = field(default_factory=set)
    sent_mark: int = -1
    sent_ms: int = 0
    asked: tuple[int, int] | None = None
    asked_ms: int = 0


@dataclass
class AckStats:
    stored_sent: int = 0
    resend_sent: int = 0
    unsigned_skipped: int = 0  # devices without a key: no command possible


def _key_cache_rows(conn: Connection, devices: set[str]) -> dict[str, bytes | None]:
    rows = conn.execute(select(scales.c.device, scales.c.key_hex)
                        .where(any_of(conn, scales.c.device, devices)))
    return {r.device: bytes.fromhex(r.key_hex) if r.key_hex else None for r in rows}


class AckTracker:
    """Per-device watermarks from committed batches; the commands that announce them."""

    def __init__(self, *, repeat_ms: int = 1000, resend_interval_ms: int = 5000,
                 key_ttl_ms: int = 30_000) -> None:
        self.repeat_ms = repeat_ms
        self.resend_interval_ms = resend_interval_ms
        self.key_ttl_ms = key_ttl_ms
        self.devices: dict[str, _Device] = {}
        self.stats = AckStats()
        self._keys: dict[str, tuple[bytes | None, int]] = {}

    # -- inside the batch's transaction ---------------------------------------------------

    def keys(self, conn: Connection, devices: set[str], now_ms: int) -> dict[str, bytes | None]:
        """The devices' HMAC keys (cached for ``key_ttl_ms``: a new key is seen soon)."""
        stale = {d for d in devices
                 if d not in self._keys or now_ms - self._keys[d][1] > self.key_ttl_ms}
        if stale:
            got = _key_cache_rows(conn, stale)
            for d in stale:
                self._keys[d] = (got.get(d), now_ms)
        return {d: self._keys[d][0] for d in devices}

    def mark_declared(self, conn: Connection, batch: list[Incoming]) -> int:
        """Record the batch's declared drops on the open sequence-gap findings they explain;
        the number of findings changed."""
        declared: dict[str, list[tuple[int, int]]] = {}
        for inc in batch:
            if isinstance(inc.msg, wire.EventBatch):
                for ev in inc.msg.events:
                    if isinstance(ev, wire.FaultEvent) and ev.code == DROPPED_CODE \
                            and ev.dropped_seqs:
                        declared.setdefault(inc.msg.device, []).extend(ev.dropped_seqs)
        changed = 0
        for device, ranges in declared.items():
            rows = conn.execute(select(findings.c.id, findings.c.evidence).where(
                findings.c.device == device, findings.c.kind == "sequence-gap",
                findings.c.status == "open")).fetchall()
            for r in rows:
                ev = json.loads(r.evidence)
                lo, hi = ev["first_missing"], ev["last_missing"]
                n = sum(max(0, min(hi, b) - max(lo, a) + 1) for a, b in ranges)
                if not n:
                    continue
                ev["declared_dropped"] = min(ev.get("declared_dropped", 0) + n, ev["missing"])
                values: dict[str, Any] = {"evidence": json.dumps(ev, sort_keys=True)}
                if ev["filled"] + ev["declared_dropped"] >= ev["missing"]:
                    values["status"] = "dismissed"
                conn.execute(findings.update().where(findings.c.id == r.id).values(**values))
                changed += 1
        return changed

    # -- after the commit -----------------------------------------------------------------

    def observe(self, batch: list[Incoming], keys: dict[str, bytes | None], *,
                checked: AbstractSet[int] = frozenset(),
                forged: AbstractSet[int] = frozenset()) -> set[str]:
        """Settle the events of a committed batch; the keyed devices it touched.

        ``checked`` / ``forged`` are the pipeline's verdicts (``BatchResult``): the ``id()``
        of messages whose events it verified with the device's key, and of events whose
        signature failed. A message it checked is settled on that verdict; any other is
        verified here (issue 17: the second HMAC check was ~10 % of the ingest)."""
        touched: set[str] = set()
        for inc in batch:
            parts = inc.parts
            if parts is None:
                parts = _events_topic(inc.topic)
                if parts is None:
                    continue
            elif parts.channel is not wire.Channel.EVENTS:
                continue
            key = keys.get(parts.device)
            if key is None:
                continue
            if isinstance(inc.msg, wire.EventBatch):
                floor, settled, declared = _settled(
                    inc.msg, parts.device, key,
                    forged if id(inc) in checked else None)
                # events invalid in themselves are dead-lettered alone: settled for good
                settled += [b.seq for b in getattr(inc, "bad_events", ()) if b.seq]
            else:
                floor, settled, declared = _settled_lenient(inc.payload, parts.device, key)
            st = self.devices.get(parts.device)
            if st is None:
                if floor is None:
                    continue  # an agent that does not take part (no floor_seq)
                st = self.devices[parts.device] = _Device(parts.market, mark=floor - 1)
            st.market = parts.market
            if floor is not None and floor - 1 > st.mark:
                st.mark = floor - 1
            for s in settled:
                if s > st.mark and len(st.above) < _MAX_ABOVE:
                    st.above.add(s)
            for a, b in declared:
                for s in range(max(a, st.mark + 1), b + 1):
                    if len(st.above) >= _MAX_ABOVE:
                        break
                    st.above.add(s)
            _advance(st)
            touched.add(parts.device)
        return touched

    def commands(self, devices: set[str], keys: dict[str, bytes | None],
                 now_ms: int) -> list[tuple[str, bytes]]:
        """``(topic, payload)`` of the signed ``stored`` / ``resend`` commands to publish."""
        out: list[tuple[str, bytes]] = []
        for device in sorted(devices):
            st, key = self.devices.get(device), keys.get(device)
            if st is None or key is None:
                continue
            if st.mark > 0 and (st.mark != st.sent_mark or now_ms - st.sent_ms >= self.repeat_ms):
                out.append(command(key, st.market, device, wire.CommandName.STORED, now_ms,
                                   stored_seq=st.mark))
                st.sent_mark, st.sent_ms = st.mark, now_ms
                self.stats.stored_sent += 1
            gap = self.gap(device)
            if gap is not None and (gap != st.asked
                                    or now_ms - st.asked_ms >= self.resend_interval_ms):
                out.append(command(key, st.market, device, wire.CommandName.RESEND, now_ms,
                                   from_seq=gap[0], to_seq=gap[1]))
                st.asked, st.asked_ms = gap, now_ms
                self.stats.resend_sent += 1
        return out

    def gap(self, device: str) -> tuple[int, int] | None:
        """The first missing range of ``device`` below what is settled, if any."""
        st = self.devices.get(device)
        if st is None or not st.above:
            return None
        return st.mark + 1, min(st.above) - 1

    def mark(self, device: str) -> int | None:
        st = self.devices.get(device)
        return None if st is None else st.mark


def command(key: bytes, market: str, device: str, name: wire.CommandName, now_ms: int,
            **fields: Any) -> tuple[str, bytes]:
    """A signed command's topic and payload (the API and CLI send theirs this way too)."""
    cmd = wire.Command(name=name, ts_ms=now_ms, nonce=secrets.token_hex(8), **fields)
    payload = wire.encode_command(sign_command(key, device, cmd))
    return wire.topic(market, device, wire.Channel.CMD, name.value), payload


def _advance(st: _Device) -> None:
    while st.mark + 1 in st.above:
        st.mark += 1
        st.above.discard(st.mark)
    if st.above and min(st.above) <= st.mark:
        st.above = {s for s in st.above if s > st.mark}


def _settled(msg: wire.EventBatch, device: str, key: bytes, forged: AbstractSet[int] | None
             ) -> tuple[int | None, list[int], list[tuple[int, int]]]:
    """``forged``: the pipeline's verdict on this message (``id()`` of the events whose
    signature failed); None: it did not check them, so each is verified here."""
    seqs: list[int] = []
    declared: list[tuple[int, int]] = []
    for ev in msg.events:
        authentic = id(ev) not in forged if forged is not None else verify_event(key, device, ev)
        if not authentic:
            continue  # not settled: the edge sends it again
        seqs.append(ev.seq)
        if isinstance(ev, wire.FaultEvent) and ev.code == DROPPED_CODE and ev.dropped_seqs:
            declared += ev.dropped_seqs
    return msg.floor_seq, seqs, declared


_EVENT = msgspec.json.Decoder(wire.Event)


def _settled_lenient(payload: bytes, device: str, key: bytes
                     ) -> tuple[int | None, list[int], list[tuple[int, int]]]:
    """Seqs of an events message the wire decoder refused as a whole (it is dead-lettered):
    an event that is itself invalid is settled (it can never be stored); one that decodes
    but whose signature fails is not."""
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        return None, [], []
    try:
        raw = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None, [], []
    if not isinstance(raw, dict) or not isinstance(raw.get("events"), list):
        return None, [], []
    floor = raw.get("floor_seq")
    seqs: list[int] = []
    for item in raw["events"]:
        if not isinstance(item, dict) or type(item.get("seq")) is not int or item["seq"] < 1:
            continue
        try:
            ev = _EVENT.decode(msgspec.json.encode(item))
        except msgspec.ValidationError:
            seqs.append(item["seq"])  # invalid in itself: dead-lettered for good
            continue
        if verify_event(key, device, ev):
            seqs.append(ev.seq)
    return (floor if type(floor) is int and floor > 0 else None), seqs, []


def _events_topic(topic: str) -> wire.TopicParts | None:
    try:
        parts = wire.parse_topic(topic)
    except WireDecodeError:
        return None
    return parts if parts.channel is wire.Channel.EVENTS else None


__all__ = ["AckStats", "AckTracker", "command"]
