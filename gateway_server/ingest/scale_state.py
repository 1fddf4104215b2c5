"""What the pipeline keeps of each scale besides its events: steps 2, 5, 6 and 8 of
``ingest.pipeline`` and the window rules' clock.

Births and states (the scale's live fields), the merchant linked to each sale, sequence
gaps (and late arrivals that fill them), the sample-batch marks, per-minute rollups, and
which idle-scale windows closed in event time. Each function runs inside the batch's
transaction and issues a bounded number of statements per batch, not per device.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, select

from gateway_server.detect.orchestrator import (
    idle_scale_findings,
    latest_by_market,
)
from gateway_server.detect.rules.legal import LEGAL_TECHNICAL
from gateway_server.ingest.checks import (
    BatchResult,
    Incoming,
    add_finding,
)
from gateway_server.store.bulk import dialect_insert, pg_insert_unnest
from gateway_server.store.tables import (
    findings,
    rollups,
    scales,
)
from weighing import wire

IDLE_STEP_MS = 3_600_000
IDLE_GRACE_MS = 2 * 3_600_000


def closed_windows(conn: Connection, res: BatchResult, new_event_rows: list[dict[str, Any]],
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


def new_scale(conn: Connection, device: str, market: str, ts: int, accept: bool) -> dict[str, Any]:
    row = {"device": device, "market": market, "registered": False, "quarantined": not accept,
           "state": "unknown", "created_ms": ts, "last_seen_ms": ts}
    conn.execute(dialect_insert(conn, scales).values(**row).on_conflict_do_nothing(
        index_elements=["device"]))
    return {"device": device, "market": market, "registered": False, "key_hex": None,
            "last_seq": None, "max_mg": None, "e_mg": None}


def apply_birth(conn: Connection, res: BatchResult, known: dict[str, Any] | None, msg: wire.Birth,
           inc: Incoming, accept: bool, info: dict[str, dict[str, Any]]) -> None:
    device = msg.device
    live = {"birth_json": inc.payload.decode("utf-8", "replace"),
            "agent_version": msg.agent_version, "boot_id": msg.boot_id, "birth_ms": msg.ts_ms,
            "last_seen_ms": inc.received_ms}
    claimed = {"role": msg.role.value, "profile": msg.profile, "protocol": msg.protocol,
               "max_mg": msg.max_mg, "e_mg": msg.e_mg, "accuracy_class": msg.accuracy_class.value,
               "serial": msg.serial}
    if known is None:
        info[device] = new_scale(conn, device, msg.market, inc.received_ms, accept)
        known = info[device]
    if known["registered"]:
        conn.execute(scales.update().where(scales.c.device == device).values(
            protocol=msg.protocol, **live))
        diffs = {k: (known[k], claimed[k]) for k in ("max_mg", "e_mg")
                 if known.get(k) is not None and known[k] != claimed[k]}
        if diffs:
            add_finding(res, kind="identity-mismatch", severity="high", market=msg.market,
                     device=device, ts_ms=msg.ts_ms, created_ms=inc.received_ms,
                     title="设备参数与登记不符 Device differs from the register",
                     legal_basis=LEGAL_TECHNICAL,
                     evidence={k: {"registered": a, "reported": b} for k, (a, b) in diffs.items()},
                     dedup_key=f"identity-mismatch:{device}:{msg.boot_id}")
    else:
        conn.execute(scales.update().where(scales.c.device == device).values(**claimed, **live))
        known.update(max_mg=msg.max_mg, e_mg=msg.e_mg)


def apply_state(conn: Connection, known: dict[str, Any] | None, msg: wire.State, inc: Incoming,
           accept: bool, info: dict[str, dict[str, Any]]) -> None:
    assert inc.parts is not None
    if known is None:
        info[inc.parts.device] = new_scale(conn, inc.parts.device, inc.parts.market,
                                            inc.received_ms, accept)
    conn.execute(scales.update().where(scales.c.device == inc.parts.device).values(
        state=msg.state.value, state_ms=msg.ts_ms if msg.ts_ms is not None else inc.received_ms))


def record_gaps(conn: Connection, res: BatchResult, info: dict[str, dict[str, Any]],
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
                add_finding(res, kind="sequence-gap", severity="medium", market=market,
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


def mark_samples(info: dict[str, dict[str, Any]], marks: dict[str, dict[str, Any]]) -> None:
    """Add the sample-batch seq marks that changed in this batch to ``marks``."""
    for device, known in info.items():
        if known.get("_samples_dirty"):
            marks[device]["samples_seq"] = known["samples_seq"]
            marks[device]["samples_holes"] = (json.dumps(known["_holes"]) if known["_holes"]
                                              else None)


def fold_rollups(conn: Connection, res: BatchResult) -> None:
    """Fold samples into per-device, per-minute min / max / sum / count (additive upsert)."""
    markets = {device: market for market, device, _ in res.sample_batches}
    acc = _minute_folds(res.sample_batches)
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


#: flags values whose stable bit can be counted with ``list.count``: every combination of the
#: bits wire defines (STABLE 1, ZERO 2, NET 4); a batch with other bits takes the exact loop
_KNOWN_FLAGS = range(8)
_STABLE_VALUES = tuple(v for v in _KNOWN_FLAGS if v & wire.SampleFlag.STABLE)


def _minute_folds(batches: list[tuple[str, str, wire.SampleBatch]]
                  ) -> dict[tuple[str, int], list[int]]:
    """``(device, minute_ms)`` → ``[n, min, max, sum, stable_n]`` over every reading.

    A batch within one minute (an agent's 1 s batch almost always is) is folded with the
    builtins ``min`` / ``max`` / ``sum`` / ``list.count``, which run in C over the batch's
    lists (issue 17: the per-reading Python loop was two thirds of the samples path); a
    batch that straddles a minute, or has flag bits wire does not define, takes the exact
    per-reading loop. Python integers throughout: exact for any weight.
    """
    acc: dict[tuple[str, int], list[int]] = {}
    slow: list[tuple[str, str, wire.SampleBatch]] = []
    for item in batches:
        _, device, sb = item
        t = sb.t_ms
        if not t:
            continue
        first = min(t) // 60_000
        flags = sb.flags
        if max(t) // 60_000 != first or min(flags) < 0 or max(flags) >= len(_KNOWN_FLAGS):
            slow.append(item)
            continue
        w = sb.net_mg
        stable = sum(map(flags.count, _STABLE_VALUES))
        _merge(acc, (device, first * 60_000), [len(t), min(w), max(w), sum(w), stable])
    for k, v in _minute_folds_exact(slow).items():
        _merge(acc, k, v)
    return acc


def _merge(acc: dict[tuple[str, int], list[int]], key: tuple[str, int], v: list[int]) -> None:
    a = acc.get(key)
    if a is None:
        acc[key] = v
    else:
        a[0] += v[0]
        a[1] = min(a[1], v[1])
        a[2] = max(a[2], v[2])
        a[3] += v[3]
        a[4] += v[4]


def _minute_folds_exact(batches: list[tuple[str, str, wire.SampleBatch]]
                        ) -> dict[tuple[str, int], list[int]]:
    """:func:`_minute_folds` in Python integers, for readings numpy cannot sum exactly."""
    acc: dict[tuple[str, int], list[int]] = {}
    for _, device, sb in batches:
        for t, w, f in zip(sb.t_ms, sb.net_mg, sb.flags, strict=True):
            k = (device, t - t % 60_000)
            a = acc.get(k)
            stable = 1 if f & wire.SampleFlag.STABLE else 0
            if a is None:
                acc[k] = [1, w, w, w, stable]
            else:
                a[0] += 1
                a[1] = min(a[1], w)
                a[2] = max(a[2], w)
                a[3] += w
                a[4] += stable
    return acc


def _least(conn: Connection, a: Any, b: Any) -> Any:
    return func.least(a, b) if conn.dialect.name == "postgresql" else func.min(a, b)


def _greatest(conn: Connection, a: Any, b: Any) -> Any:
    return func.greatest(a, b) if conn.dialect.name == "postgresql" else func.max(a, b)
