"""Stall-named re-weighs in the store: record, match against the merchant's sales, judge.

The rule itself is pure (:mod:`gateway_server.detect.rules.untraced`); this module runs it
inside the ingest transaction (called by :func:`gateway_server.detect.orchestrator.detect`).

Life of a re-weigh named by ``merchant_token`` or ``stall_no`` (a row of ``reweighs`` with no
trace code):

* ``unknown-merchant`` — no merchant has that trust code or stall number (kept, never
  judged);
* ``pending`` — stored; matched at once if a recorded sale of the merchant explains it;
* ``matched`` — a sale (or a basket of two) of the merchant within the time window and the
  weight tolerance: the consumer had lost the receipt. ``sale_id`` / ``sold_mg`` name it;
  such a link is by weight, not by code, so it never feeds the residual detector;
* ``untracked`` — judged once every scale of the merchant has reported past the window
  (a scale's events arrive in order, so its sales of the window are in), or when the
  market's event time is ``max_wait_ms`` past the re-weigh: no recorded sale explains the
  goods. Each new ``untracked`` verdict runs the merchant rule, which may raise an
  ``untracked-sales`` finding.

A sale that arrives while a re-weigh is still pending is tried against it at once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, func, or_, select

from gateway_server.detect.queries import scale_contexts
from gateway_server.detect.rules.stream import Finding, ScaleCtx
from gateway_server.detect.rules.untraced import (
    DEFAULT_PARAMS,
    Candidate,
    StallReweigh,
    UntracedParams,
    best_match,
    check_untracked,
    tolerance_mg,
)
from gateway_server.registry.binding import devices_at
from gateway_server.store.bulk import any_of
from gateway_server.store.tables import events, merchants, sales
from gateway_server.store.tables_workflow import reweighs

PENDING, MATCHED, UNTRACKED, UNKNOWN = "pending", "matched", "untracked", "unknown-merchant"


class StallBook:
    """The sales that a set of stall-named re-weighs may be matched with, read once for all
    of them (:meth:`load`), and which of those sales a re-weigh names already: kept up to
    date as re-weighs are matched here or linked by trace code (:meth:`note`), so judging
    them one after another gives what querying before each would."""

    def __init__(self, conn: Connection, params: UntracedParams) -> None:
        self.conn, self.params = conn, params
        self._sales: dict[int, list[Candidate]] = defaultdict(list)  # by merchant
        self._named: dict[int, set[int | None]] = defaultdict(set)  # sale → re-weigh ids
        self._ctx: dict[str, ScaleCtx] = {}
        self.merchants: dict[tuple[str, Any, Any], int] = {}  # see stall_reweighs

    @classmethod
    def load(cls, conn: Connection, rws: Iterable[dict[str, Any]],
             params: UntracedParams = DEFAULT_PARAMS) -> StallBook:
        book = cls(conn, params)
        rws = [rw for rw in rws if rw.get("merchant_id") is not None]
        windows: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for rw in rws:
            ts = int(rw["ts_ms"])
            windows[int(rw["merchant_id"])].append((ts - params.before_ms, ts + params.after_ms))
        spans = [(m, lo, hi) for m, ws in sorted(windows.items()) for lo, hi in _merged(ws)]
        for i in range(0, len(spans), 200):  # OR-depth well below SQLite's 1000
            q = select(sales.c.id, sales.c.device, sales.c.ts_ms, sales.c.settled_mg,
                       sales.c.merchant_id).where(or_(*(
                           and_(sales.c.merchant_id == m, sales.c.ts_ms >= lo,
                                sales.c.ts_ms <= hi) for m, lo, hi in spans[i:i + 200])))
            for s in conn.execute(q):
                book._sales[int(s.merchant_id)].append(
                    Candidate(int(s.id), s.device, int(s.ts_ms), int(s.settled_mg)))
        ids = sorted({c.sale_id for cs in book._sales.values() for c in cs})
        for i in range(0, len(ids), 500):
            for r in conn.execute(select(reweighs.c.sale_id, reweighs.c.id).where(
                    any_of(conn, reweighs.c.sale_id, ids[i:i + 500]))):
                book._named[int(r.sale_id)].add(int(r.id))
        book._ctx = scale_contexts(conn, {c.device for cs in book._sales.values() for c in cs}
                                   | {str(rw["device"]) for rw in rws})
        return book

    def note(self, sale_id: int, reweigh_id: int | None = None) -> None:
        """A re-weigh (``None``: one whose id is not known here) now names ``sale_id``."""
        self._named[int(sale_id)].add(reweigh_id)

    def judge(self, rw: dict[str, Any], *, final: bool) -> str:
        """Match ``rw`` against the merchant's sales; store ``matched`` (or, when ``final``,
        ``untracked``). Returns the verdict now stored."""
        params = self.params
        ts, reference = int(rw["ts_ms"]), int(rw["reference_mg"])
        # a sale explains one re-weigh at most (by code or by weight)
        cands = [c for c in self._sales.get(int(rw["merchant_id"]), [])
                 if ts - params.before_ms <= c.ts_ms <= ts + params.after_ms
                 and not self._named.get(c.sale_id, set()) - {rw["id"]}]
        ctx = {d: sc for d, sc in self._ctx.items()
               if d == rw["device"] or any(c.device == d for c in cands)}
        fair = ctx.get(rw["device"])
        tol = {d: tolerance_mg(reference, selling=sc, fair=fair, params=params)
               for d, sc in ctx.items()}
        cands = [c for c in cands if c.device in tol]  # a scale without e / Max: cannot judge
        m = best_match(reference, cands, tol, params=params)
        if m is not None:
            sale_device = next(c.device for c in cands if c.sale_id == m.sale_ids[0])
            self.conn.execute(reweighs.update().where(reweighs.c.id == rw["id"]).values(
                verdict=MATCHED, sale_id=m.sale_ids[0], sale_device=sale_device,
                sold_mg=m.sold_mg, shortfall_mg=m.difference_mg, limit_mg=m.tolerance_mg,
                method="stall-match"))
            self.note(m.sale_ids[0], int(rw["id"]))
            return MATCHED
        if not final:
            return PENDING
        self.conn.execute(reweighs.update().where(reweighs.c.id == rw["id"]).values(
            verdict=UNTRACKED, method="stall-match"))
        return UNTRACKED


def _merged(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping closed intervals joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(windows):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def stall_reweighs(conn: Connection, new_events: list[dict[str, Any]],
                   params: UntracedParams = DEFAULT_PARAMS) -> StallBook:
    """The batch's re-weighs named by the stall, their merchants resolved (trust code, else
    stall number in the fair scale's market) in one statement each, and a
    :class:`StallBook` for them; :func:`store_stall_reweigh` then stores each in turn."""
    named = [(e, json.loads(e["payload"])) for e in new_events if e["kind"] == "reweigh"]
    named = [(e, b) for e, b in named if b.get("trace_code") is None]
    merchants_ = _merchants_of(conn, named)
    book = StallBook.load(conn, [{"merchant_id": merchants_.get(_merchant_key(e, b)),
                                  "ts_ms": e["ts_ms"], "device": e["device"]}
                                 for e, b in named], params)
    book.merchants = merchants_
    return book


def _merchant_key(e: dict[str, Any], body: dict[str, Any]) -> tuple[str, Any, Any]:
    token = body.get("merchant_token")
    if token is not None:
        return ("token", token, None)
    return ("stall", e["market"], body.get("stall_no"))


def _merchants_of(conn: Connection, named: list[tuple[dict[str, Any], dict[str, Any]]]
                  ) -> dict[tuple[str, Any, Any], int]:
    """The merchant (lowest id) each re-weigh names, by trust code or stall number."""
    keys = {_merchant_key(e, b) for e, b in named}
    tokens = sorted({k[1] for k in keys if k[0] == "token"})
    stalls = {(k[1], k[2]) for k in keys if k[0] == "stall"}
    out: dict[tuple[str, Any, Any], int] = {}
    for i in range(0, len(tokens), 500):
        for m in conn.execute(select(merchants.c.id, merchants.c.trust_token).where(
                merchants.c.trust_token.in_(tokens[i:i + 500])).order_by(merchants.c.id)):
            out.setdefault(("token", m.trust_token, None), int(m.id))
    if stalls:
        numbers = sorted({n for _, n in stalls if n is not None})
        by_number: ColumnElement[bool] = merchants.c.stall_no.in_(numbers)
        if any(n is None for _, n in stalls):
            by_number = or_(by_number, merchants.c.stall_no.is_(None))
        for st in conn.execute(select(merchants.c.id, merchants.c.market_id,
                                      merchants.c.stall_no)
                               .where(merchants.c.market_id.in_({mk for mk, _ in stalls}),
                                      by_number).order_by(merchants.c.id)):
            if (st.market_id, st.stall_no) in stalls:
                out.setdefault(("stall", st.market_id, st.stall_no), int(st.id))
    return out


def store_stall_reweigh(conn: Connection, e: dict[str, Any], body: dict[str, Any],
                        book: StallBook) -> None:
    """Store a re-weigh named by the stall (its merchant resolved by
    :func:`stall_reweighs`) and match it at once if a recorded sale explains it."""
    token, stall = body.get("merchant_token"), body.get("stall_no")
    mid = book.merchants.get(_merchant_key(e, body))
    row = {"device": e["device"], "market": e["market"], "seq": e["seq"], "ts_ms": e["ts_ms"],
           "trace_code": None, "merchant_token": token, "stall_no": stall,
           "reference_mg": int(body["reference_mg"]), "merchant_id": mid,
           "method": "", "verdict": UNKNOWN if mid is None else PENDING}
    rid = conn.execute(reweighs.insert().values(**row).returning(reweighs.c.id)).scalar_one()
    if mid is not None:
        book.judge(dict(row, id=rid), final=False)


def settle(conn: Connection, *, new_sales: list[dict[str, Any]], latest_ms: dict[str, int],
           params: UntracedParams = DEFAULT_PARAMS) -> list[Finding]:
    """Try new sales against pending re-weighs of their merchants, and judge the pending
    re-weighs of the markets in ``latest_ms`` (market → newest event time of the batch)
    whose window has closed. The sales all of them may match are read once
    (:class:`StallBook`)."""
    merchants_ = sorted({int(s["merchant_id"]) for s in new_sales
                         if s.get("merchant_id") is not None})
    tried: list[dict[str, Any]] = []
    for i in range(0, len(merchants_), 500):
        chunk = merchants_[i:i + 500]
        tried += [dict(r._mapping) for r in conn.execute(select(reweighs).where(
            reweighs.c.verdict == PENDING, any_of(conn, reweighs.c.merchant_id, chunk)))]
    # one query for every market of the batch (a worker's batch mixes dozens of them)
    due: dict[str, list[dict[str, Any]]] = {market: [] for market in latest_ms}
    if latest_ms:
        for r in conn.execute(select(reweighs).where(
                any_of(conn, reweighs.c.market, sorted(latest_ms)), reweighs.c.verdict == PENDING,
                reweighs.c.ts_ms <= max(latest_ms.values()) - params.after_ms)
                .order_by(reweighs.c.ts_ms, reweighs.c.id)):
            if r.ts_ms <= latest_ms[r.market] - params.after_ms:
                due[r.market].append(dict(r._mapping))
    book = StallBook.load(conn, [*tried, *(rw for rws in due.values() for rw in rws)], params)
    matched: set[int] = set()
    for rw in tried:
        if book.judge(rw, final=False) == MATCHED:
            matched.add(int(rw["id"]))
    found: list[Finding] = []
    for market, latest in sorted(latest_ms.items()):
        for rw in due[market]:
            if int(rw["id"]) in matched:
                continue  # matched above: no longer pending
            devices = devices_at(conn, int(rw["merchant_id"]), int(rw["ts_ms"]))
            caught_up = all(_reported_since(conn, d, int(rw["ts_ms"]) + params.after_ms)
                            for d in devices)
            if not caught_up and latest < int(rw["ts_ms"]) + params.max_wait_ms:
                continue
            if book.judge(rw, final=True) == UNTRACKED:
                f = _merchant_rule(conn, int(rw["merchant_id"]), int(rw["ts_ms"]), params)
                if f is not None:
                    found.append(f)
    return found


def _reported_since(conn: Connection, device: str, ts_ms: int) -> bool:
    """Has the device sent anything stamped at or after ``ts_ms``?"""
    return bool(conn.execute(select(
        exists().where(sales.c.device == device, sales.c.ts_ms >= ts_ms)
        | exists().where(events.c.device == device, events.c.ts_ms >= ts_ms))).scalar())


def _merchant_rule(conn: Connection, merchant_id: int, ts_ms: int,
                   params: UntracedParams) -> Finding | None:
    rows = list(conn.execute(select(reweighs.c.id, reweighs.c.ts_ms, reweighs.c.device,
                                    reweighs.c.reference_mg, reweighs.c.verdict).where(
        reweighs.c.merchant_id == merchant_id, reweighs.c.trace_code.is_(None),
        reweighs.c.verdict.in_((MATCHED, UNTRACKED)),
        reweighs.c.ts_ms > ts_ms - params.window_ms, reweighs.c.ts_ms <= ts_ms)))
    judged = [StallReweigh(int(r.id), int(r.ts_ms), r.device, int(r.reference_mg),
                           r.verdict == UNTRACKED) for r in rows]
    span = [r.ts_ms for r in judged if r.untracked]
    lo, hi = min(span) - params.before_ms, max(span) + params.after_ms
    devices = devices_at(conn, merchant_id, ts_ms)
    if not devices:
        return None  # no scale to put it on; the verdicts stay on the re-weighs
    counts = _sales_per_device(conn, devices, lo, hi)
    idle = min(devices, key=lambda d: (counts.get(d, 0), d))
    ctx = scale_contexts(conn, [idle]).get(idle)
    market = ctx.market if ctx else conn.execute(
        select(merchants.c.market_id).where(merchants.c.id == merchant_id)).scalar_one()
    scale = ctx or ScaleCtx(idle, market, 1, 1)
    return check_untracked(judged, merchant_id=merchant_id, scale=scale,
                           recorded_sales={d: counts.get(d, 0) for d in devices}, params=params)


def _sales_per_device(conn: Connection, devices: Iterable[str], lo: int, hi: int) -> dict[str, int]:
    return {d: int(n) for d, n in conn.execute(
        select(sales.c.device, func.count()).where(
            and_(sales.c.device.in_(list(devices)), sales.c.ts_ms >= lo, sales.c.ts_ms <= hi))
        .group_by(sales.c.device))}
