"""Quarantine release (API and CLI) and dead-letter retention, on SQLite and PostgreSQL.

A device not in the register has its messages quarantined; once it is registered, the
release runs them through the whole pipeline with the registered key (forged ones become
bad-signature dead letters), and a second release finds nothing. Dead letters older than
``dead_letter_retention_days`` are purged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from conftest import login
from gateway_server.api import auth
from gateway_server.cli import main as gateway_cli
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.registry import register as reg
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.retention import DAY_MS, purge_once
from gateway_server.store.tables import dead_letters, quarantine, rollups, sales, scales
from weighing import wire
from weighing.signing import sign_event, sign_message

KEY = bytes.fromhex("8899aabbccddeeff0011223344556677")
NOW = time.time_ns() // 1_000_000


def sale(seq: int, key: bytes = KEY) -> wire.SaleEvent:
    ev = wire.SaleEvent(seq=seq, ts_ms=NOW - 3_600_000 + seq, net_mg=1_000_000,
                        settled_mg=1_000_000, peak_mg=1_000_000, stable_device=True,
                        stable_software=True)
    return sign_event(key, "s-new", ev)  # type: ignore[return-value]


def hold(store: Store) -> None:
    """What the ingest does with the messages of the unregistered device s-new."""
    sb = sign_message(KEY, "s-new", wire.SampleBatch(
        device="s-new", t_ms=[NOW - 120_000, NOW - 119_000], net_mg=[0, 5_000], flags=[1, 1],
        seq=1))
    batch = [
        decode_message("scales/v1/m1/s-new/events", wire.encode(wire.EventBatch(
            device="s-new", events=[sale(1), sale(2)])), NOW - 60_000),
        decode_message("scales/v1/m1/s-new/events", wire.encode(wire.EventBatch(
            device="s-new", events=[sale(3, key=b"forged-key-forged-key")])), NOW - 50_000),
        decode_message("scales/v1/m1/s-new/samples", wire.encode(sb), NOW - 40_000),
        decode_message("scales/v1/m1/s-new/events", wire.encode(wire.EventBatch(
            device="s-new", events=[sale(2), sale(4)])), NOW - 30_000),  # a redelivery
    ]
    with store.engine.begin() as c:
        c.execute(insert(reg.markets).values(id="m1", name="一号市场", created_ms=NOW))
        res = store_batch(c, batch, now_ms=NOW)
    assert res.quarantined == 4 and not res.new_sales


def register(store: Store) -> None:
    with store.engine.begin() as c:
        reg.register_scale(c, "s-new", market_id="m1", now_ms=NOW, key_hex=KEY.hex(),
                           max_mg=15_000_000, e_mg=5_000)


def count(store: Store, table: Any) -> int:
    return store.count(table)


def test_release_from_the_api_ingests_the_held_messages_once(client: TestClient,
                                                             store: Store) -> None:
    auth.ensure_user(store, "admin1", "correct-horse-battery", "admin")
    auth.ensure_user(store, "insp1", "correct-horse-battery", "inspector")
    admin, insp = login(client, "admin1"), login(client, "insp1")
    hold(store)
    r = client.post("/api/v1/quarantine/s-new/release", headers=admin)
    assert r.status_code == 409 and "register" in r.json()["detail"]
    register(store)
    assert client.post("/api/v1/quarantine/s-new/release", headers=insp).status_code == 403
    r = client.post("/api/v1/quarantine/s-new/release", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"device": "s-new", "released": 4, "sales": 3, "events": 0,
                        "duplicates": 1, "dead_letters": 1, "samples": 2, "bad_signatures": 1}
    with store.engine.connect() as c:
        assert sorted(r.seq for r in c.execute(select(sales.c.seq))) == [1, 2, 4]
        (dead,) = c.execute(select(dead_letters)).all()
        assert "seq=3" in dead.reason and "invalid signature" in dead.reason
        assert sum(r.n for r in c.execute(select(rollups.c.n))) == 2
        row = c.execute(select(scales).where(scales.c.device == "s-new")).one()
        assert not row.quarantined and row.samples_seq == 1 and row.last_seq == 4
    assert count(store, quarantine) == 0
    (listed,) = client.get("/api/v1/dead-letters", headers=insp).json()
    assert listed["label"] == "签名无效或缺失 Signature invalid or missing"
    again = client.post("/api/v1/quarantine/s-new/release", headers=admin).json()
    assert again["released"] == 0 and count(store, sales) == 3


def test_release_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/gw.db"
    store = Store.from_url(url)
    store.migrate()
    hold(store)
    assert gateway_cli(["release-quarantine", "--device", "s-new", "--database-url", url]) == 2
    assert "not in the register" in capsys.readouterr().err
    register(store)
    assert gateway_cli(["release-quarantine", "--device", "s-new", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "released 4 message(s) of s-new: 3 new sale(s)" in out
    assert count(store, quarantine) == 0 and count(store, sales) == 3
    store.engine.dispose()


def _dead(store: Store, *ages_days: float) -> None:
    with store.engine.begin() as c:
        for age in ages_days:
            c.execute(insert(dead_letters).values(
                received_ms=NOW - int(age * DAY_MS), topic="scales/v1/m1/x/events",
                reason="malformed JSON", payload=b"{", size=1))


def test_dead_letters_older_than_the_retention_are_purged(store: Store) -> None:
    _dead(store, 0, 10, 89.9, 90.1, 400)
    settings = Settings(database_url="sqlite://", dead_letter_retention_days=90)
    assert purge_once(store, settings, now_ms=NOW) == 2
    assert count(store, dead_letters) == 3
    off = Settings(database_url="sqlite://", dead_letter_retention_days=0)
    assert purge_once(store, off, now_ms=NOW + 1000 * DAY_MS) == 0
    assert count(store, dead_letters) == 3


def test_purge_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/gw.db"
    store = Store.from_url(url)
    store.migrate()
    _dead(store, 1, 40)
    assert gateway_cli(["purge-dead-letters", "--retention-days", "30",
                        "--database-url", url]) == 0
    assert "purged 1 dead letter(s) older than 30 days" in capsys.readouterr().out
    assert count(store, dead_letters) == 1
    store.engine.dispose()
