"""The ingest pipeline: one batch of decoded MQTT messages → one database transaction.

Steps, in order, inside one transaction (``store_batch``):

1. look up every device of the batch in the register (one query): registered or not,
   its HMAC key, the highest seq stored so far;
2. births and states update the scale's live fields (a registered scale's register
   data is never overwritten by what the device claims; a mismatch is a finding);
3. events and samples of devices not in the register are **quarantined** (kept whole,
   listed in the API, released by ``ingest.quarantine.release_device`` once the device is
   registered) unless ``unknown_devices = "accept"``;
4. every event of a keyed device must carry a valid HMAC-SHA256 (``weighing.signing``):
   a forged or missing signature rejects that event alone — it goes to the dead letters
   with its reason and raises a ``bad-signature`` finding — and the rest of the batch
   is stored. Births, states and sample batches are verified the same way; one without
   a signature (an agent older than issue 15) is accepted and counted (``unsigned``)
   while ``Limits.unsigned`` is ``"accept"`` (the migration setting), else dead-lettered.
   Verification never raises, whatever the device sent;
4a. every event is checked on its own (issue 15), and a bad one is dead-lettered alone
   with its reason while the rest of its message is stored: an event that fails the wire
   contract by itself (``wire.decode_partial``), a NUL character in a text field
   (PostgreSQL cannot store it), a device time outside ``Limits.ts_past_ms`` /
   ``ts_future_ms`` around receipt, a seq more than ``Limits.seq_jump`` beyond the
   device's highest, a negative sale weight, a weight above the scale's Max + 9 e
   (``weighing.metrology.indication_limit_mg``);
5. sales are linked to the merchant bound to the scale at the sale's time;
6. inserts are ``ON CONFLICT (device, seq) DO NOTHING RETURNING``: a redelivery is a
   counted duplicate; new seqs beyond ``last_seq + 1`` raise a ``sequence-gap``
   finding, a late arrival inside an open gap closes what it fills;
7. the stream detectors (``gateway_server.detect.orchestrator``) run on what was new, and
   fair-scale re-weighs are linked to their sales;
8. samples are folded into per-minute rollups exactly once: a batch with a ``seq`` is
   counted only if that seq is new for the device (``scales.samples_seq`` is the highest
   seen, ``samples_holes`` the missing ranges below it, at most ``SAMPLE_HOLES_KEPT``);
   a batch without one (old agent) is counted as it comes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from gateway_server.detect.orchestrator import (
    detect,
    idle_scale_findings,
    latest_by_market,
    offline_findings,
)
from gateway_server.detect.rules.legal import LEGAL_TECHNICAL
from gateway_server.ingest.livefeed import mark_new
from gateway_server.registry.binding import merchants_at_times
from gateway_server.store.bulk import dialect_insert, pg_insert_unnest, update_by_key
from gateway_server.store.tables import (
    dead_letters,
    events,
    findings,
    quarantine,
    rollups,
    sales,
    scales,
)
from weighing import wire
from weighing.metrology import indication_limit_mg
from weighing.signing import check_event, check_message

if TYPE_CHECKING:
    from gateway_server.settings import Settings

DEAD_LETTER_KEEP_BYTES = 64 * 1024  # an oversized payload is kept truncated, its size recorded
#: missing ranges of sample-batch seqs remembered per device: a batch that arrives later
#: than this many newer gaps is taken for a duplicate (and not counted twice)
SAMPLE_HOLES_KEPT = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Plausibility limits of the ingest (issue 15); ``None`` switches a check off.

    ``store_batch`` called directly (tests, tools) checks only what needs no setting (NUL,
    sale weights); the ingest passes :meth:`from_settings`.
    """

    ts_past_ms: int | None = None  # a device time older than receipt by more is refused
    ts_future_ms: int | None = None  # ... or ahead of receipt by more
    seq_jump: int | None = None  # a seq beyond the device's highest + this is refused
    unsigned: str = "accept"  # births / states / samples without a signature: accept | reject

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(ts_past_ms=s.event_max_age_s * 1000 or None,
                   ts_future_ms=s.event_max_ahead_s * 1000 or None,
                   seq_jump=s.seq_jump_max or None, unsigned=s.unsigned_messages)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One MQTT message, decoded (``msg``) or not (``error``)."""

    topic: str
    payload: bytes
    received_ms: int
    parts: wire.TopicParts | None = None
    msg: wire.Payload | None = None
    error: str | None = None
    #: events of the message that fail the contract alone (the others are in ``msg``)
    bad_events: tuple[wire.BadEvent, ...] = ()


def decode_message(topic: str, payload: bytes, received_ms: int) -> Incoming:
    try:
        parts, msg, bad = wire.decode_partial(topic, payload)
    except wire.WireDecodeError as err:
        return Incoming(topic, payload, received_ms, error=str(err))
    return Incoming(topic, payload, received_ms, parts, msg, bad_events=tuple(bad))


@dataclass
class BatchResult:
    new_sales: list[dict[str, Any]] = field(default_factory=list)
    new_events: int = 0
    duplicates: int = 0
    dead: list[dict[str, Any]] = field(default_factory=list)
    quarantined: int = 0
    bad_signatures: int = 0
    gaps: int = 0
    samples: int = 0
    new_findings: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    sample_batches: list[tuple[str, str, wire.SampleBatch]] = field(default_factory=list)
    unsigned: int = 0  # births / states / samples of keyed devices accepted without a signature
    sample_duplicates: int = 0  # redelivered sample batches, not counted again


def _text(value: str) -> str:
    """Text a database stores (PostgreSQL refuses NUL in text)."""
    return value.replace("\x00", "\ufffd")


def _dead(res: BatchResult, inc: Incoming, reason: str, device: str | None = None, *,
          payload: bytes | None = None) -> None:
    """A dead letter: the message (or, with ``payload``, the one event) and why."""
    body = inc.payload if payload is None else payload
    res.dead.append({
        "received_ms": inc.received_ms, "topic": _text(inc.topic[:512]), "device": device,
        "reason": _text(reason[:2000]), "payload": body[:DEAD_LETTER_KEEP_BYTES],
        "size": len(body),
    })


def _nul_field(obj: Any) -> str | None:
    """The name of a text field of a wire struct holding a NUL character, if any."""
    for name in obj.__struct_fields__:
        name = str(name)
        v = getattr(obj, name)
        if isinstance(v, str) and "\x00" in v:
            return name
        if isinstance(v, list) and any(isinstance(x, str) and "\x00" in x for x in v):
            return name
    return None


def _bad_signature(res: BatchResult, inc: Incoming, *, market: str, device: str, ts_ms: int,
                   now_ms: int, what: str, why: str, dedup: str,
                   payload: bytes | None = None, seq: int | None = None) -> None:
    res.bad_signatures += 1
    _dead(res, inc, f"{inc.topic} {what}: {why}", device, payload=payload)
    _finding(res, kind="bad-signature", severity="high", market=market,
             device=device, ts_ms=ts_ms, created_ms=now_ms,
             title="数据签名无效 Event signature invalid",
             legal_basis=LEGAL_TECHNICAL,
             evidence={"what": what, "reason": why,
                       **({"seq": seq} if seq is not None else {})},
             dedup_key=f"bad-signature:{device}:{dedup}"[:256])


def _check_signed(res: BatchResult, inc: Incoming, key: bytes | None, limits: Limits, *,
                  market: str, device: str, now_ms: int,
                  msg: wire.Birth | wire.State | wire.SampleBatch) -> bool:
    """A birth / state / sample batch of a keyed device: True when it may be used."""
    if key is None:
        return True
    why = check_message(key, device, msg)
    if why is None:
        return True
    channel = inc.parts.channel.value if inc.parts else "?"
    if why == "missing signature" and limits.unsigned == "accept":
        res.unsigned += 1  # an agent older than issue 15 (migration setting)
        return True
    if why == "missing signature":
        _dead(res, inc, f"{inc.topic}: missing signature (unsigned {channel} refused: "
                        "unsigned_messages = reject)", device)
        return False
    ts = getattr(msg, "ts_ms", None) or inc.received_ms
    _bad_signature(res, inc, market=market, device=device, ts_ms=ts, now_ms=now_ms,
                   what=f"$ ({channel})", why=why,
                   dedup=f"{channel}:{inc.received_ms}:{hash(inc.payload) & 0xFFFFFFFF:x}")
    return False


def _event_problem(ev: wire.Event, known: dict[str, Any], limits: Limits, received_ms: int,
                   top_seq: int | None, *, nul_possible: bool = True) -> str | None:
    """Why an authentic event is still not stored (issue 15), or None.

    ``nul_possible``: False when the message's JSON holds no ``\u0000`` escape, the only
    way a JSON text carries a NUL (a raw control character is malformed JSON), so the
    per-field search (12 µs an event, issue 17's profile) is skipped.
    """
    nul = _nul_field(ev) if nul_possible else None
    if nul is not None:
        return f"NUL character in {nul} (not storable text)"
    if limits.ts_past_ms is not None and ev.ts_ms < received_ms - limits.ts_past_ms:
        return (f"device time {ev.ts_ms} is more than {limits.ts_past_ms // 1000} s before "
                f"receipt at {received_ms} (event_max_age_s)")
    if limits.ts_future_ms is not None and ev.ts_ms > received_ms + limits.ts_future_ms:
        return (f"device time {ev.ts_ms} is more than {limits.ts_future_ms // 1000} s after "
                f"receipt at {received_ms} (event_max_ahead_s)")
    if limits.seq_jump is not None and top_seq is not None and ev.seq > top_seq + limits.seq_jump:
        return (f"seq {ev.seq} jumps more than {limits.seq_jump} beyond the highest "
                f"seq {top_seq} of the device (seq_jump_max)")
    if isinstance(ev, wire.SaleEvent):
        if ev.net_mg < 0 or ev.settled_mg < 0:
            return f"negative sale weight (net {ev.net_mg} mg, settled {ev.settled_mg} mg)"
        if known.get("max_mg") and known.get("e_mg"):
            limit = indication_limit_mg(known["max_mg"], known["e_mg"])
            top = max(ev.net_mg, ev.settled_mg, ev.peak_mg)
            if top > limit:
                return (f"weight {top} mg above Max + 9 e = {limit} mg of the scale "
                        "(OIML R76-1 4.2.3: no indication there)")
    return None


def _samples_problem(sb: wire.SampleBatch, limits: Limits, received_ms: int) -> str | None:
    if not sb.t_ms:
        return None
    lo, hi = min(sb.t_ms), max(sb.t_ms)
    if limits.ts_past_ms is not None and lo < received_ms - limits.ts_past_ms:
        return f"sample time {lo} is more than {limits.ts_past_ms // 1000} s before receipt"
    if limits.ts_future_ms is not None and hi > received_ms + limits.ts_future_ms:
        return f"sample time {hi} is more than {limits.ts_future_ms // 1000} s after receipt"
    return None


def _sample_seq_new(known: dict[str, Any], seq: int) -> bool:
    """Is sample batch ``seq`` new for the device? Updates the high mark and the holes."""
    hi = known.get("samples_seq")
    holes: list[list[int]] = known.setdefault(
        "_holes", json.loads(known.get("samples_holes") or "[]"))
    if hi is None or seq > hi:
        if hi is not None and seq > hi + 1:
            holes.append([hi + 1, seq - 1])
            del holes[:-SAMPLE_HOLES_KEPT]
        known["samples_seq"] = seq
        known["_samples_dirty"] = True
        return True
    for i, (a, b) in enumerate(holes):
        if a <= seq <= b:
            holes[i:i + 1] = [h for h in ([a, seq - 1], [seq + 1, b]) if h[0] <= h[1]]
            known["_samples_dirty"] = True
            return True
    return False


def _finding(res: BatchResult, **f: Any) -> None:
    f.setdefault("status", "open")
    f.setdefault("legal_basis", "")
    f["evidence"] = json.dumps(f.get("evidence", {}), ensure_ascii=False, sort_keys=True)
    res.new_findings.append(f)


def store_batch(
    conn: Connection, batch: list[Incoming], *, now_ms: int, unknown_devices: str = "quarantine",
    detect_findings: bool = True, windows: dict[str, int] | None = None,
    limits: Limits | None = None,
) -> BatchResult:
    """Store ``batch`` in the open transaction ``conn``; see the module docstring."""
    limits = limits or Limits()
    res = BatchResult()
    devices = {i.parts.device for i in batch if i.parts is not None}
    info: dict[str, dict[str, Any]] = {}
    if devices:
        q = select(
            scales.c.device, scales.c.market, scales.c.registered, scales.c.key_hex,
            scales.c.last_seq, scales.c.max_mg, scales.c.e_mg, scales.c.last_ts_ms,
            scales.c.samples_seq, scales.c.samples_holes,
        ).where(scales.c.device.in_(devices)).order_by(scales.c.device)
        if conn.dialect.name == "postgresql":
            # the sequence marks are read, then written: a quarantine release of a device
            # and its ingest must not interleave (rows locked in device order: no deadlock)
            q = q.with_for_update()
        info = {r.device: dict(r._mapping) for r in conn.execute(q)}

    accept_unknown = unknown_devices == "accept"
    sale_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    top_seq: dict[str, int | None] = {}  # highest seq per device, stored or taken here
    for inc in batch:
        if inc.error is not None or inc.parts is None or (
                inc.msg is None and not inc.bad_events):
            _dead(res, inc, inc.error or "undecodable")
            continue
        device, market, msg = inc.parts.device, inc.parts.market, inc.msg
        known = info.get(device)
        key_hex = known.get("key_hex") if known else None
        key = bytes.fromhex(key_hex) if key_hex else None
        if isinstance(msg, wire.Birth | wire.State):
            if not _check_signed(res, inc, key, limits, market=market, device=device,
                                 now_ms=now_ms, msg=msg):
                continue
            nul = _nul_field(msg)
            if nul is not None:
                _dead(res, inc, f"{inc.topic} $.{nul}: NUL character (not storable text)",
                      device)
                continue
            if isinstance(msg, wire.Birth):
                _birth(conn, res, known, msg, inc, accept_unknown, info)
            else:
                _state(conn, known, msg, inc, accept_unknown, info)
            continue
        if known is None:
            known = _new_scale(conn, device, market, inc.received_ms, accept_unknown)
            info[device] = known
        if known["market"] != market:
            _dead(res, inc, f"device {device} is registered in market {known['market']}, "
                             f"not {market}", device)
            continue
        if not known["registered"] and not accept_unknown:
            conn.execute(quarantine.insert().values(
                received_ms=inc.received_ms, topic=inc.topic[:512], market=market,
                device=device, payload=inc.payload))
            res.quarantined += 1
            continue
        seen[device] = inc.received_ms
        for bad in inc.bad_events:
            where = f"seq={bad.seq}" if bad.seq is not None else f"#{bad.index}"
            _dead(res, inc, f"{bad.reason} (event {where} alone; the rest of the message "
                            "is stored)", device, payload=bad.raw)
        if msg is None:
            continue
        if isinstance(msg, wire.SampleBatch):
            if not _check_signed(res, inc, key, limits, market=market, device=device,
                                 now_ms=now_ms, msg=msg):
                continue
            why = _samples_problem(msg, limits, inc.received_ms)
            if why is None and msg.seq is not None:
                hi = known.get("samples_seq")
                if limits.seq_jump is not None and hi is not None and (
                        msg.seq > hi + limits.seq_jump):
                    why = (f"sample batch seq {msg.seq} jumps more than {limits.seq_jump} "
                           f"beyond {hi} (seq_jump_max)")
                elif not _sample_seq_new(known, msg.seq):
                    res.sample_duplicates += 1
                    res.duplicates += 1
                    continue
            if why is not None:
                _dead(res, inc, f"{inc.topic}: {why}", device)
                continue
            res.samples += len(msg.t_ms)
            res.sample_batches.append((market, device, msg))
            if msg.t_ms:
                res.latest[device] = (msg.t_ms[-1], msg.net_mg[-1], msg.flags[-1])
            continue
        assert isinstance(msg, wire.EventBatch)
        if device not in top_seq:
            top_seq[device] = known.get("last_seq")
        nul_possible = b"\\u0000" in inc.payload
        for ev in msg.events:
            if key is not None:
                why = check_event(key, device, ev)
                if why is not None:
                    _bad_signature(res, inc, market=market, device=device, ts_ms=ev.ts_ms,
                                   now_ms=now_ms, what=f"$.events[seq={ev.seq}]", why=why,
                                   dedup=str(ev.seq), payload=wire.encode_event(ev),
                                   seq=ev.seq)
                    continue
            why = _event_problem(ev, known, limits, inc.received_ms, top_seq[device],
                                 nul_possible=nul_possible)
            if why is not None:
                _dead(res, inc, f"{inc.topic} $.events[seq={ev.seq}]: {why}", device,
                      payload=wire.encode_event(ev))
                continue
            top = top_seq[device]
            top_seq[device] = ev.seq if top is None else max(top, ev.seq)
            base = {"device": device, "market": market, "seq": ev.seq, "ts_ms": ev.ts_ms,
                    "received_ms": inc.received_ms}
            if isinstance(ev, wire.SaleEvent):
                sale_rows.append(base | {
                    "net_mg": ev.net_mg, "settled_mg": ev.settled_mg, "peak_mg": ev.peak_mg,
                    "tare_mg": ev.tare_mg, "stable_device": ev.stable_device,
                    "stable_software": ev.stable_software,
                    "unsettled_commit": ev.unsettled_commit, "duration_ms": ev.duration_ms,
                    "unit_price_fen_per_kg": ev.unit_price_fen_per_kg,
                    "amount_fen": ev.amount_fen, "plu": ev.plu, "trace_code": ev.trace_code,
                    "signed": key is not None, "merchant_id": None, "raw_ad": ev.raw_ad,
                })
            else:
                event_rows.append(base | {
                    "kind": type(ev).__struct_config__.tag,
                    "payload": wire.encode_event(ev).decode(),
                })

    _link_merchants(conn, sale_rows)
    new_seqs: dict[str, list[int]] = defaultdict(list)
    pg = conn.dialect.name == "postgresql"
    if sale_rows:
        if pg:  # one prepared statement whatever the batch size (gateway_server.store.bulk)
            got_rows = pg_insert_unnest(conn, sales, sale_rows, conflict=("device", "seq"),
                                        returning=("device", "seq", "id"))
        else:
            stmt = (dialect_insert(conn, sales)
                    .on_conflict_do_nothing(index_elements=["device", "seq"])
                    .returning(sales.c.device, sales.c.seq, sales.c.id))
            got_rows = list(conn.execute(stmt, sale_rows))
        got = {(r.device, r.seq): r.id for r in got_rows}
        for r in sale_rows:
            # pop: a seq twice in one batch (a redelivery) is one new sale, not two
            new_id = got.pop((r["device"], r["seq"]), None)
            if new_id is not None:
                r["id"] = new_id
                res.new_sales.append(r)
                new_seqs[r["device"]].append(r["seq"])
        res.duplicates += len(sale_rows) - len(res.new_sales)
    if event_rows:
        if pg:
            ev_rows = pg_insert_unnest(conn, events, event_rows, conflict=("device", "seq"),
                                       returning=("device", "seq"))
        else:
            stmt = (dialect_insert(conn, events)
                    .on_conflict_do_nothing(index_elements=["device", "seq"])
                    .returning(events.c.device, events.c.seq))
            ev_rows = list(conn.execute(stmt, event_rows))
        got_ev = {(r.device, r.seq) for r in ev_rows}
        res.new_events = len(got_ev)
        res.duplicates += len(event_rows) - len(got_ev)
        for d, s in got_ev:
            new_seqs[d].append(s)
        new_event_rows = []
        for r in event_rows:  # a seq twice in one batch is one new event
            if (r["device"], r["seq"]) in got_ev:
                got_ev.discard((r["device"], r["seq"]))
                new_event_rows.append(r)
    else:
        new_event_rows = []
    if detect_findings and (res.new_sales or new_event_rows):
        res.new_findings += detect(conn, new_sales=res.new_sales, new_events=new_event_rows,
                                   now_ms=now_ms)
    if detect_findings and windows is not None:
        res.new_findings += _closed_windows(conn, res, new_event_rows, windows)
    new_ts: dict[str, list[int]] = defaultdict(list)
    for r in [*res.new_sales, *new_event_rows]:
        new_ts[r["device"]].append(int(r["ts_ms"]))
    last_ts = {d: info[d].get("last_ts_ms") for d in new_ts}
    if detect_findings and new_ts:
        res.new_findings += offline_findings(conn, new_ts, last_ts, new_event_rows)
    # the scales' marks of the whole batch: one statement per set of changed columns
    # (gateway_server.store.bulk), not one UPDATE per device
    marks: dict[str, dict[str, Any]] = defaultdict(dict)
    _gaps(conn, res, info, new_seqs, now_ms, marks)
    for device, ts in seen.items():
        marks[device]["last_seen_ms"] = ts
        if new_ts.get(device):
            marks[device]["last_ts_ms"] = max(last_ts.get(device) or 0, *new_ts[device])
    _sample_marks(info, marks)
    update_by_key(conn, scales, "device", marks)
    _rollups(conn, res)
    if res.dead:
        conn.execute(dead_letters.insert(), res.dead)
    if res.new_findings:
        # every row with every column: executemany needs one shape
        cols = [c.name for c in findings.columns if c.name != "id"]
        res.new_findings = [{k: f.get(k) for k in cols} for f in res.new_findings]
        stmt = dialect_insert(conn, findings).on_conflict_do_nothing(index_elements=["dedup_key"])
        conn.execute(stmt, res.new_findings)
    if res.new_sales or res.new_findings:
        mark_new(conn)  # the SSE streams are woken on commit (gateway_server.ingest.livefeed)
    return res


IDLE_STEP_MS = 3_600_000
IDLE_GRACE_MS = 2 * 3_600_000


def _closed_windows(conn: Connection, res: BatchResult, new_event_rows: list[dict[str, Any]],
                    windows: dict[str, int]) -> list[dict[str, Any]]:
    """Window rules (idle scale among busy peers) for windows that closed in event time.

    ``windows`` (owned by the caller, per worker) remembers the last window evaluated per
    market. A window is evaluated one full window after it ended, so data delayed by up to
    a window is in; the finding's dedup key makes a re-evaluation harmless.
    """
    out: list[dict[str, Any]] = []
    for market, ts in latest_by_market([*res.new_sales, *new_event_rows]).items():
        # windows slide by an hour and are judged two hours after they end, so data
        # delayed by an outage of up to two hours is in
        end = (ts - IDLE_GRACE_MS) // IDLE_STEP_MS * IDLE_STEP_MS
        if end <= windows.get(market, 0):
            continue
        windows[market] = end
        out += idle_scale_findings(conn, market, window_end_ms=end)
    return out


def _new_scale(conn: Connection, device: str, market: str, ts: int, accept: bool) -> dict[str, Any]:
    row = {"device": device, "market": market, "registered": False, "quarantined": not accept,
           "state": "unknown", "created_ms": ts, "last_seen_ms": ts}
    conn.execute(dialect_insert(conn, scales).values(**row).on_conflict_do_nothing(
        index_elements=["device"]))
    return {"device": device, "market": market, "registered": False, "key_hex": None,
            "last_seq": None, "max_mg": None, "e_mg": None}


def _birth(conn: Connection, res: BatchResult, known: dict[str, Any] | None, msg: wire.Birth,
           inc: Incoming, accept: bool, info: dict[str, dict[str, Any]]) -> None:
    device = msg.device
    live = {"birth_json": inc.payload.decode("utf-8", "replace"),
            "agent_version": msg.agent_version, "boot_id": msg.boot_id, "birth_ms": msg.ts_ms,
            "last_seen_ms": inc.received_ms}
    claimed = {"role": msg.role.value, "profile": msg.profile, "protocol": msg.protocol,
               "max_mg": msg.max_mg, "e_mg": msg.e_mg, "accuracy_class": msg.accuracy_class.value,
               "serial": msg.serial}
    if known is None:
        info[device] = _new_scale(conn, device, msg.market, inc.received_ms, accept)
        known = info[device]
    if known["registered"]:
        conn.execute(scales.update().where(scales.c.device == device).values(
            protocol=msg.protocol, **live))
        diffs = {k: (known[k], claimed[k]) for k in ("max_mg", "e_mg")
                 if known.get(k) is not None and known[k] != claimed[k]}
        if diffs:
            _finding(res, kind="identity-mismatch", severity="high", market=msg.market,
                     device=device, ts_ms=msg.ts_ms, created_ms=inc.received_ms,
                     title="设备参数与登记不符 Device differs from the register",
                     legal_basis=LEGAL_TECHNICAL,
                     evidence={k: {"registered": a, "reported": b} for k, (a, b) in diffs.items()},
                     dedup_key=f"identity-mismatch:{device}:{msg.boot_id}")
    else:
        conn.execute(scales.update().where(scales.c.device == device).values(**claimed, **live))
        known.update(max_mg=msg.max_mg, e_mg=msg.e_mg)


def _state(conn: Connection, known: dict[str, Any] | None, msg: wire.State, inc: Incoming,
           accept: bool, info: dict[str, dict[str, Any]]) -> None:
    assert inc.parts is not None
    if known is None:
        info[inc.parts.device] = _new_scale(conn, inc.parts.device, inc.parts.market,
                                            inc.received_ms, accept)
    conn.execute(scales.update().where(scales.c.device == inc.parts.device).values(
        state=msg.state.value, state_ms=msg.ts_ms if msg.ts_ms is not None else inc.received_ms))


def _link_merchants(conn: Connection, sale_rows: list[dict[str, Any]]) -> None:
    """Set ``merchant_id`` of each sale from the binding valid at its ``ts_ms``."""
    if not sale_rows:
        return
    bound = merchants_at_times(conn, {(r["device"], r["ts_ms"]) for r in sale_rows})
    for r in sale_rows:
        merchant = bound.get((r["device"], r["ts_ms"]))
        if merchant is not None:
            r["merchant_id"] = merchant


def _gaps(conn: Connection, res: BatchResult, info: dict[str, dict[str, Any]],
          new_seqs: dict[str, list[int]], now_ms: int,
          marks: dict[str, dict[str, Any]]) -> None:
    for device, seqs in new_seqs.items():
        seqs.sort()
        known = info[device]
        last = known.get("last_seq") or 0
        market = known["market"]
        expected = last + 1
        for s in seqs:
            if s > expected and last:
                res.gaps += 1
                _finding(res, kind="sequence-gap", severity="medium", market=market,
                         device=device, ts_ms=now_ms, created_ms=now_ms,
                         title="事件序号缺失 Events missing (sequence gap)",
                         legal_basis=LEGAL_TECHNICAL,
                         evidence={"first_missing": expected, "last_missing": s - 1,
                                   "missing": s - expected, "filled": 0},
                         dedup_key=f"sequence-gap:{device}:{expected}")
            elif s < expected:
                _fill_gap(conn, device, s)
            expected = max(expected, s + 1)
        top = max(last, seqs[-1])
        if top != last:
            marks[device]["last_seq"] = top
            known["last_seq"] = top


def _fill_gap(conn: Connection, device: str, seq: int) -> None:
    """A late event arrived inside an open gap: count it; a fully filled gap is dismissed."""
    rows = conn.execute(select(findings.c.id, findings.c.evidence).where(
        findings.c.device == device, findings.c.kind == "sequence-gap",
        findings.c.status == "open"))
    for r in rows:
        ev = json.loads(r.evidence)
        if ev["first_missing"] <= seq <= ev["last_missing"]:
            ev["filled"] += 1
            values: dict[str, Any] = {"evidence": json.dumps(ev, sort_keys=True)}
            if ev["filled"] >= ev["missing"]:
                values["status"] = "dismissed"
            conn.execute(findings.update().where(findings.c.id == r.id).values(**values))
            return


def _sample_marks(info: dict[str, dict[str, Any]], marks: dict[str, dict[str, Any]]) -> None:
    """Add the sample-batch seq marks that changed in this batch to ``marks``."""
    for device, known in info.items():
        if known.get("_samples_dirty"):
            marks[device]["samples_seq"] = known["samples_seq"]
            marks[device]["samples_holes"] = (json.dumps(known["_holes"]) if known["_holes"]
                                              else None)


def _rollups(conn: Connection, res: BatchResult) -> None:
    """Fold samples into per-device, per-minute min / max / sum / count (additive upsert)."""
    acc: dict[tuple[str, int], list[int]] = {}
    markets: dict[str, str] = {}
    for market, device, sb in res.sample_batches:
        markets[device] = market
        for t, w, f in zip(sb.t_ms, sb.net_mg, sb.flags, strict=True):
            k = (device, t - t % 60_000)
            a = acc.get(k)
            stable = f & wire.SampleFlag.STABLE
            if a is None:
                acc[k] = [1, w, w, w, 1 if stable else 0]
            else:
                a[0] += 1
                a[1] = min(a[1], w)
                a[2] = max(a[2], w)
                a[3] += w
                a[4] += 1 if stable else 0
    if not acc:
        return
    rows = [{"device": d, "minute_ms": m, "market": markets[d], "n": a[0], "min_mg": a[1],
             "max_mg": a[2], "sum_mg": a[3], "stable_n": a[4]} for (d, m), a in acc.items()]
    if conn.dialect.name == "postgresql":
        pg_insert_unnest(conn, rollups, rows, conflict=("device", "minute_ms"), set_sql=(
            "n = rollups.n + excluded.n, sum_mg = rollups.sum_mg + excluded.sum_mg, "
            "stable_n = rollups.stable_n + excluded.stable_n, "
            "min_mg = LEAST(rollups.min_mg, excluded.min_mg), "
            "max_mg = GREATEST(rollups.max_mg, excluded.max_mg)"))
        return
    ins = dialect_insert(conn, rollups)
    stmt = ins.on_conflict_do_update(
        index_elements=["device", "minute_ms"],
        set_={
            "n": rollups.c.n + ins.excluded.n,
            "sum_mg": rollups.c.sum_mg + ins.excluded.sum_mg,
            "stable_n": rollups.c.stable_n + ins.excluded.stable_n,
            "min_mg": _least(conn, rollups.c.min_mg, ins.excluded.min_mg),
            "max_mg": _greatest(conn, rollups.c.max_mg, ins.excluded.max_mg),
        },
    )
    conn.execute(stmt, rows)


def _least(conn: Connection, a: Any, b: Any) -> Any:
    return func.least(a, b) if conn.dialect.name == "postgresql" else func.min(a, b)


def _greatest(conn: Connection, a: Any, b: Any) -> Any:
    return func.greatest(a, b) if conn.dialect.name == "postgresql" else func.max(a, b)


__all__ = ["BatchResult", "Incoming", "Limits", "decode_message", "store_batch"]
