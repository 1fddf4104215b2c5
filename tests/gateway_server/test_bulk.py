"""gateway_server.store.bulk on SQLite and PostgreSQL: the batch writes of the pipeline (issue 17)."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from gateway_server.store.bulk import any_of, insert_once, newest_in_ranges, update_by_key
from gateway_server.store.database import Store
from gateway_server.store.tables import events, markets, scales


def _scales(store: Store, n: int) -> None:
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="m", created_ms=1))
        c.execute(insert(scales), [{"device": f"d{i}", "market": "m1", "registered": True,
                                    "role": "trade", "state": "unknown", "last_seq": 7,
                                    "samples_holes": "[[1, 2]]"} for i in range(n)])


def test_update_by_key_sets_only_the_columns_given_per_row(store: Store) -> None:
    _scales(store, 4)
    with store.engine.begin() as c:
        update_by_key(c, scales, "device", {
            "d0": {"last_seen_ms": 10, "last_seq": 9},
            "d1": {"last_seen_ms": 11},
            "d2": {"samples_seq": 3, "samples_holes": None},  # NULL is a value, not "unchanged"
            "d3": {},
        })
    with store.engine.connect() as c:
        got = {r.device: (r.last_seen_ms, r.last_seq, r.samples_seq, r.samples_holes)
               for r in c.execute(select(scales))}
    assert got == {"d0": (10, 9, None, "[[1, 2]]"), "d1": (11, 7, None, "[[1, 2]]"),
                   "d2": (None, 7, 3, None), "d3": (None, 7, None, "[[1, 2]]")}


def test_insert_once_returns_only_new_rows(store: Store) -> None:
    """Exactly once per (device, seq): by the key table beside the partitioned ``events`` on
    PostgreSQL (migration 0007), by the table's unique key on SQLite; a redelivery at
    another time is still the same event."""
    _scales(store, 1)
    row = {"device": "d0", "market": "m1", "seq": 1, "kind": "zero", "ts_ms": 5,
           "received_ms": 6, "payload": "{\"a\": \"\u00e9\"}"}
    with store.engine.begin() as c:
        first = insert_once(c, events, [row, row | {"seq": 2}], returning=("device", "seq"))
        again = insert_once(c, events, [row | {"ts_ms": 10**12}, row | {"seq": 3},
                                        row | {"seq": 3}], returning=("seq",))
    assert sorted(r.seq for r in first) == [1, 2]
    assert [r.seq for r in again] == [3]  # a seq twice in one call is one row
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(events)).scalar_one() == 3


def test_unnest_insert_keeps_every_text_and_null_exactly(store: Store) -> None:
    """The columns travel as array literals written by bulk.py: quotes, backslashes, commas,
    braces, blanks, the word NULL, an empty string and None must come back as they went."""
    _scales(store, 1)
    texts = ['{"a": "\\u00e9"}', 'back\\slash "quoted" {braced}, comma', "  spaced  ", "NULL",
             "", "中文 ✓", "\\", '"', "{}", "a,b"]
    rows = [{"device": "d0", "market": "m1", "seq": i + 1, "kind": "zero",
             "ts_ms": -5 if i == 0 else 2**62 + i, "received_ms": 6,
             "payload": t} for i, t in enumerate(texts)]
    with store.engine.begin() as c:
        insert_once(c, events, rows, returning=("seq",))
    with store.engine.connect() as c:
        got = {r.seq: (r.payload, r.ts_ms) for r in c.execute(select(events))}
    assert got == {r["seq"]: (r["payload"], r["ts_ms"]) for r in rows}


def test_any_of_matches_exactly_the_values_given(store: Store) -> None:
    """``any_of`` is ``IN``: odd texts (quotes, backslashes, commas, braces, the word NULL,
    an empty string) match themselves only, integers likewise, nothing matches nothing; on
    PostgreSQL the statement text is the same whatever the count (so it is prepared once)."""
    odd = ['q"uote', "back\\slash", "a,b", "{}", "NULL", "", "中文 ✓", "  spaced  "]
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="m", created_ms=1))
        c.execute(insert(scales), [{"device": d, "market": "m1", "registered": True,
                                    "role": "trade", "state": "unknown", "last_seq": i}
                                   for i, d in enumerate([*odd, "other", "NUL"])])
    with store.engine.connect() as c:
        def devices(values: list[str]) -> set[str]:
            return set(c.execute(select(scales.c.device)
                                 .where(any_of(c, scales.c.device, values))).scalars())

        def seqs(values: list[int]) -> set[int]:
            return set(c.execute(select(scales.c.last_seq)
                                 .where(any_of(c, scales.c.last_seq, values))).scalars())

        assert devices(odd) == set(odd)
        assert devices(["a", "b", "NUL"]) == {"NUL"}
        assert devices([]) == set()
        assert seqs([0, 3, 99]) == {0, 3}
        assert seqs([]) == set()
        texts = {str(select(scales.c.device).where(any_of(c, scales.c.device, v))
                     .compile(c)) for v in (["x"], ["x", "y", "z"])}
    if store.engine.dialect.name == "postgresql":
        assert len(texts) == 1 and "ANY" in texts.pop()


def test_newest_in_ranges_gives_each_key_its_newest_rows_oldest_first(store: Store) -> None:
    """Per (device, lo, hi, limit): the newest ``limit`` rows in [lo, hi], ties broken by
    seq, returned oldest first; a device with nothing in range gets an empty list."""
    _scales(store, 3)
    rows = [{"device": "d0", "market": "m1", "seq": s, "kind": "zero", "ts_ms": ts,
             "received_ms": 1, "payload": "{}"}
            for s, ts in [(1, 100), (2, 200), (3, 200), (4, 300), (5, 400)]]
    rows += [{"device": "d1", "market": "m1", "seq": 1, "kind": "zero", "ts_ms": 250,
              "received_ms": 1, "payload": "{}"}]
    with store.engine.begin() as c:
        c.execute(insert(events), rows)
    with store.engine.connect() as c:
        got = newest_in_ranges(c, events, ("seq", "ts_ms"), key="device", ts="ts_ms", tie="seq",
                               wants=[("d0", 150, 350, 2), ("d1", 0, 200, 5), ("d2", 0, 999, 3),
                                      ("d0x", 0, 999, 1)])
    assert {k: [(r.seq, r.ts_ms) for r in v] for k, v in got.items()} == {
        "d0": [(3, 200), (4, 300)], "d1": [], "d2": [], "d0x": []}
