"""The ingest pipeline: one batch of decoded MQTT messages → one database transaction.

This module is the order of the steps (``store_batch``); the per-message checks and the
record of what is refused are ``ingest.checks``, the scales' bookkeeping (births, states,
gaps, sample marks, rollups, merchant linkage) ``ingest.scale_state``.

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
   counted duplicate; on PostgreSQL a batch's sales go in chunks of :data:`SALES_CHUNK`,
   each inserted by a helper thread while this one checks the next
   (``gateway_server.store.overlap``), all in the batch's transaction; new seqs beyond
   ``last_seq + 1`` raise a ``sequence-gap`` finding, a late arrival inside an open gap
   closes what it fills;
7. the stream detectors (``gateway_server.detect.orchestrator``) run on what was new, and
   fair-scale re-weighs are linked to their sales;
8. samples are folded into per-minute rollups exactly once: a batch with a ``seq`` is
   counted only if that seq is new for the device (``scales.samples_seq`` is the highest
   seen, ``samples_holes`` the missing ranges below it, at most ``SAMPLE_HOLES_KEPT``);
   a batch without one (old agent) is counted as it comes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.sql.elements import TextClause

from gateway_server.detect.orchestrator import detect, offline_findings
from gateway_server.ingest.checks import (
    BatchResult,
    Incoming,
    Limits,
    bad_signature,
    check_signed,
    dead_letter,
    decode_message,
    event_problem,
    nul_field,
    sample_seq_new,
    samples_problem,
)
from gateway_server.ingest.livefeed import mark_new
from gateway_server.ingest.scale_state import (
    apply_birth,
    apply_state,
    closed_windows,
    fold_rollups,
    mark_samples,
    new_scale,
    record_gaps,
)
from gateway_server.registry.binding import bindings_of, merchant_in
from gateway_server.store.bulk import (
    any_of,
    dialect_insert,
    insert_once,
    insert_once_statement,
    run_all,
    update_by_key,
)
from gateway_server.store.overlap import Overlap
from gateway_server.store.partitions import exactly_once_gate
from gateway_server.store.tables import (
    dead_letters,
    events,
    findings,
    quarantine,
    sales,
    scales,
)
from weighing import wire
from weighing.signing import check_event


def store_batch(
    conn: Connection, batch: list[Incoming], *, now_ms: int, unknown_devices: str = "quarantine",
    detect_findings: bool = True, windows: dict[str, int] | None = None,
    limits: Limits | None = None,
) -> BatchResult:
    """Store ``batch`` in the open transaction ``conn``; see the module docstring."""
    limits = limits or Limits()
    # PostgreSQL inserts the sales of a large batch in chunks while this thread checks the
    # rest (gateway_server.store.overlap); SQLite works in this thread: nothing to overlap
    overlap = Overlap() if conn.dialect.name == "postgresql" else None
    try:
        return _store(conn, batch, now_ms=now_ms, unknown_devices=unknown_devices,
                      detect_findings=detect_findings, windows=windows, limits=limits,
                      overlap=overlap)
    finally:
        if overlap is not None:
            overlap.close()


#: sales sent to the server at once while the batch's next ones are checked and built:
#: large enough that a statement's fixed cost (~1-2 ms) is small beside it
SALES_CHUNK = 2_500
SALE_RETURNING = ("device", "seq", "id")


def _new_sale_ids(got: list[Any]) -> dict[tuple[str, int], int]:
    """``(device, seq) → id`` of the sales an exactly-once insert returned (unpacked, not
    by attribute: a Row's attribute lookup was a tenth of the writer's busy time on a
    10,000-sale batch)."""
    return {(device, seq): id_ for device, seq, id_ in got}


def _insert_chunk(conn: Connection, stmt: TextClause,
                  params: dict[str, Any]) -> dict[tuple[str, int], int]:
    return _new_sale_ids(run_all(conn, stmt, params))


def _store(
    conn: Connection, batch: list[Incoming], *, now_ms: int, unknown_devices: str,
    detect_findings: bool, windows: dict[str, int] | None, limits: Limits,
    overlap: Overlap | None,
) -> BatchResult:
    res = BatchResult()
    # before this thread uses ``conn`` while a chunk of sales may be in flight
    settle = overlap.wait if overlap is not None else (lambda: None)
    devices = {i.parts.device for i in batch if i.parts is not None}
    info: dict[str, dict[str, Any]] = {}
    if devices:
        q = select(
            scales.c.device, scales.c.market, scales.c.registered, scales.c.key_hex,
            scales.c.last_seq, scales.c.max_mg, scales.c.e_mg, scales.c.last_ts_ms,
            scales.c.samples_seq, scales.c.samples_holes,
        ).where(any_of(conn, scales.c.device, devices)).order_by(scales.c.device)
        if conn.dialect.name == "postgresql":
            # the sequence marks are read, then written: a quarantine release of a device
            # and its ingest must not interleave (rows locked in device order: no deadlock)
            q = q.with_for_update()
        info = {r.device: dict(r._mapping) for r in conn.execute(q)}

    # the merchant of each sale is the one bound to its scale at its time (step 5): the
    # bindings of the batch's devices are read now, while the connection is free
    spans = bindings_of(conn, {i.parts.device for i in batch if i.parts is not None
                               and i.parts.channel is wire.Channel.EVENTS})
    # the sales' key table, looked up (once per engine) while the connection is free
    gate = exactly_once_gate(conn, sales.name) if overlap is not None else None
    accept_unknown = unknown_devices == "accept"
    sale_rows: list[dict[str, Any]] = []
    unsent = 0  # sale_rows[unsent:] are not in a chunk sent to the server yet
    event_rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    top_seq: dict[str, int | None] = {}  # highest seq per device, stored or taken here
    for inc in batch:
        if inc.error is not None or inc.parts is None or (
                inc.msg is None and not inc.bad_events):
            dead_letter(res, inc, inc.error or "undecodable")
            continue
        device, market, msg = inc.parts.device, inc.parts.market, inc.msg
        known = info.get(device)
        key_hex = known.get("key_hex") if known else None
        key = bytes.fromhex(key_hex) if key_hex else None
        if isinstance(msg, wire.Birth | wire.State):
            if not check_signed(res, inc, key, limits, market=market, device=device,
                                 now_ms=now_ms, msg=msg):
                continue
            nul = nul_field(msg)
            if nul is not None:
                dead_letter(res, inc, f"{inc.topic} $.{nul}: NUL character (not storable text)",
                      device)
                continue
            settle()
            if isinstance(msg, wire.Birth):
                apply_birth(conn, res, known, msg, inc, accept_unknown, info)
            else:
                apply_state(conn, known, msg, inc, accept_unknown, info)
            continue
        if known is None:
            settle()
            known = new_scale(conn, device, market, inc.received_ms, accept_unknown)
            info[device] = known
        if known["market"] != market:
            dead_letter(res, inc, f"device {device} is registered in market {known['market']}, "
                             f"not {market}", device)
            continue
        if not known["registered"] and not accept_unknown:
            settle()
            conn.execute(quarantine.insert().values(
                received_ms=inc.received_ms, topic=inc.topic[:512], market=market,
                device=device, payload=inc.payload))
            res.quarantined += 1
            continue
        seen[device] = inc.received_ms
        for bad in inc.bad_events:
            where = f"seq={bad.seq}" if bad.seq is not None else f"#{bad.index}"
            dead_letter(res, inc, f"{bad.reason} (event {where} alone; the rest of the message "
                            "is stored)", device, payload=bad.raw)
        if msg is None:
            continue
        if isinstance(msg, wire.SampleBatch):
            if not check_signed(res, inc, key, limits, market=market, device=device,
                                 now_ms=now_ms, msg=msg):
                continue
            why = samples_problem(msg, limits, inc.received_ms)
            if why is None and msg.seq is not None:
                hi = known.get("samples_seq")
                if limits.seq_jump is not None and hi is not None and (
                        msg.seq > hi + limits.seq_jump):
                    why = (f"sample batch seq {msg.seq} jumps more than {limits.seq_jump} "
                           f"beyond {hi} (seq_jump_max)")
                elif not sample_seq_new(known, msg.seq):
                    res.sample_duplicates += 1
                    res.duplicates += 1
                    continue
            if why is not None:
                dead_letter(res, inc, f"{inc.topic}: {why}", device)
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
        verdicts = None
        if key is not None:
            res.checked_messages.add(id(inc))
            res.keys[device] = key
            pre = inc.prechecked
            if pre is not None and pre[0] == key:  # checked with this very key already
                verdicts = pre[1]
        for i, ev in enumerate(msg.events):
            if key is not None:
                why = verdicts[i] if verdicts is not None else check_event(key, device, ev)
                if why is not None:
                    res.forged_events.add(id(ev))
                    bad_signature(res, inc, market=market, device=device, ts_ms=ev.ts_ms,
                                   now_ms=now_ms, what=f"$.events[seq={ev.seq}]", why=why,
                                   dedup=str(ev.seq), payload=wire.encode_event(ev),
                                   seq=ev.seq)
                    continue
            why = event_problem(ev, known, limits, inc.received_ms, top_seq[device],
                                 nul_possible=nul_possible)
            if why is not None:
                dead_letter(res, inc, f"{inc.topic} $.events[seq={ev.seq}]: {why}", device,
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
                    "signed": key is not None,
                    "merchant_id": merchant_in(spans, device, ev.ts_ms), "raw_ad": ev.raw_ad,
                })
                if overlap is not None and len(sale_rows) - unsent >= SALES_CHUNK:
                    # built here, run by the helper while this thread goes on
                    chunk = insert_once_statement(sales, sale_rows[unsent:],
                                                  returning=SALE_RETURNING, gate=gate)
                    overlap.submit(_insert_chunk, conn, *chunk)
                    unsent = len(sale_rows)
            else:
                event_rows.append(base | {
                    "kind": type(ev).__struct_config__.tag,
                    "payload": wire.encode_event(ev).decode(),
                })

    new_seqs: dict[str, list[int]] = defaultdict(list)
    settle()
    if sale_rows:  # one prepared statement whatever the batch size (gateway_server.store.bulk)
        got: dict[tuple[str, int], int] = {}
        for chunk in overlap.results if overlap is not None else ():
            got.update(chunk)
        if unsent < len(sale_rows):
            got.update(_new_sale_ids(insert_once(conn, sales, sale_rows[unsent:],
                                                 returning=SALE_RETURNING)))
        for r in sale_rows:
            # pop: a seq twice in one batch (a redelivery) is one new sale, not two
            new_id = got.pop((r["device"], r["seq"]), None)
            if new_id is not None:
                r["id"] = new_id
                res.new_sales.append(r)
                new_seqs[r["device"]].append(r["seq"])
        res.duplicates += len(sale_rows) - len(res.new_sales)
    if event_rows:
        ev_rows = insert_once(conn, events, event_rows, returning=("device", "seq"))
        got_ev = {(device, seq) for device, seq in ev_rows}
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
        res.new_findings += closed_windows(conn, res, new_event_rows, windows)
    new_ts: dict[str, list[int]] = defaultdict(list)
    for r in [*res.new_sales, *new_event_rows]:
        new_ts[r["device"]].append(int(r["ts_ms"]))
    last_ts = {d: info[d].get("last_ts_ms") for d in new_ts}
    if detect_findings and new_ts:
        res.new_findings += offline_findings(conn, new_ts, last_ts, new_event_rows)
    # the scales' marks of the whole batch: one statement per set of changed columns
    # (gateway_server.store.bulk), not one UPDATE per device
    marks: dict[str, dict[str, Any]] = defaultdict(dict)
    record_gaps(conn, res, info, new_seqs, now_ms, marks)
    for device, ts in seen.items():
        marks[device]["last_seen_ms"] = ts
        if new_ts.get(device):
            marks[device]["last_ts_ms"] = max(last_ts.get(device) or 0, *new_ts[device])
    mark_samples(info, marks)
    update_by_key(conn, scales, "device", marks)
    fold_rollups(conn, res)
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


# what the ingest loop, the quarantine release and the tests use (defined in ingest.checks)
__all__ = ["BatchResult", "Incoming", "Limits", "decode_message", "store_batch"]
