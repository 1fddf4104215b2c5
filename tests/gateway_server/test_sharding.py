"""Workers sharded by market on PostgreSQL with a real Mosquitto: each market is ingested by
exactly one worker, nothing is lost or duplicated — also when a worker is killed — and the
findings equal those of a single-process run on the same input."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pgutil import fresh_pg_database
from sqlalchemy import func, select
from support import (
    BIN,
    free_port,
    open_session,
    publish_qos1,
    register_keyed_markets,
    start_mosquitto,
    wait_port,
    wait_until,
)

from gateway_server.ingest.sharding import client_id_for, rendezvous_owner, take_many
from gateway_server.store.database import Store
from gateway_server.store.tables import findings, sales
from gateway_server.store.tables_workflow import market_leases
from weighing import wire
from weighing.signing import sign_event

MARKETS = [f"mk{i}" for i in range(6)]
DEVICES = {m: [f"{m}-s{j}" for j in range(2)] for m in MARKETS}
KEY = bytes.fromhex("42" * 16)
T0 = 1_790_000_000_000


def register(url: str) -> Store:
    return register_keyed_markets(url, DEVICES, KEY, T0)


def batches(round_: int) -> list[tuple[str, bytes]]:
    """One message per device per round: two sales, every third one an impact cheat."""
    out = []
    for m in MARKETS:
        for d in DEVICES[m]:
            evs = []
            for k in range(2):
                seq = round_ * 2 + k + 1
                cheat = seq % 3 == 0
                ev = wire.SaleEvent(seq=seq, ts_ms=T0 + seq * 1000,
                                    net_mg=198_000 if cheat else 155_000, settled_mg=155_000,
                                    peak_mg=198_000, stable_device=not cheat,
                                    stable_software=not cheat, unsettled_commit=cheat)
                evs.append(sign_event(KEY, d, ev))
            out.append((f"scales/v1/{m}/{d}/events",
                        wire.encode(wire.EventBatch(device=d, events=evs))))
    return out


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(BIN / "gateway-server"), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def leases(store: Store) -> dict[str, str]:
    now = time.time_ns() // 1_000_000
    with store.engine.connect() as c:
        return {r.market: r.worker_id for r in c.execute(
            select(market_leases).where(market_leases.c.expires_ms > now))}


def stored(store: Store) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(sales)).scalar_one())


def finding_keys(store: Store) -> set[tuple[str, str, str]]:
    with store.engine.connect() as c:
        return {(r.kind, r.device, r.dedup_key) for r in c.execute(select(findings))}


def test_rendezvous_spreads_and_moves_little() -> None:
    ws = ["a", "b", "c"]
    owners = {m: rendezvous_owner(m, ws) for m in (f"m{i}" for i in range(300))}
    counts = [list(owners.values()).count(w) for w in ws]
    assert min(counts) > 60  # roughly even
    moved = sum(1 for m, o in owners.items() if o != "c" and rendezvous_owner(m, ["a", "b"]) != o)
    assert moved == 0  # removing c moves only c's markets


@pytest.mark.slow
def test_leases_are_taken_when_free_expired_or_own_and_never_from_a_live_holder(
        store: Store) -> None:
    """``take_many``: one statement set for all of a worker's markets, the rule of a lease
    unchanged (on SQLite and PostgreSQL)."""
    with store.engine.begin() as c:
        assert take_many(c, ["m1", "m2"], "w-a", now=1000, lease_ms=100) == {"m1", "m2"}
    with store.engine.begin() as c:  # m1, m2 live with w-a; m3 free
        assert take_many(c, ["m1", "m2", "m3"], "w-b", now=1050, lease_ms=100) == {"m3"}
    with store.engine.begin() as c:  # w-a renews its own, not w-b's live m3
        assert take_many(c, ["m1", "m3"], "w-a", now=1060, lease_ms=100) == {"m1"}
    with store.engine.begin() as c:  # m2 expired at 1100: anyone may take it; m1 is live
        assert take_many(c, ["m1", "m2"], "w-b", now=1101, lease_ms=100) == {"m2"}
        assert take_many(c, [], "w-b", now=1101, lease_ms=100) == set()
    with store.engine.connect() as c:
        rows = {r.market: (r.worker_id, r.expires_ms) for r in c.execute(select(market_leases))}
    assert rows == {"m1": ("w-a", 1160), "m2": ("w-b", 1201), "m3": ("w-b", 1150)}


def test_two_workers_one_api_kill_one_worker(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    rounds = 8
    expected = len(MARKETS) * 2 * 2 * rounds
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with fresh_pg_database() as url, fresh_pg_database() as single_url:
            store = register(url)
            for m in MARKETS:
                open_session(broker.port, client_id_for(m), wire.subscription(m))
            env = dict(os.environ, DATABASE_URL=url, MQTT_URL=broker.url)
            w1 = spawn(["worker", "--worker-id", "w1", "--lease-s", "3"], env,
                       tmp_path / "w1.log")
            w2 = spawn(["worker", "--worker-id", "w2", "--lease-s", "3"], env,
                       tmp_path / "w2.log")
            api_port = free_port()
            api = spawn(["api", "--port", str(api_port)], env, tmp_path / "api.log")
            procs += [w1, w2, api]
            wait_port(api_port, 60)
            # every market owned, by both workers between them
            owners = wait_until(lambda: (lambda ls: ls if len(ls) == len(MARKETS) and
                                         set(ls.values()) == {"w1", "w2"} else None)(
                leases(store)), 120, what="markets shared by w1 and w2")
            for r in range(rounds // 2):
                publish_qos1(broker.port, batches(r))
            wait_until(lambda: stored(store) >= expected // 2, 120, what="first half stored")
            # kill w1 without a goodbye while its markets keep trading
            w1.send_signal(signal.SIGKILL)
            w1.wait(60)
            for r in range(rounds // 2, rounds):
                publish_qos1(broker.port, batches(r))
            wait_until(lambda: stored(store) >= expected, 300, what="all stored after takeover")
            time.sleep(1.0)
            assert stored(store) == expected  # nothing lost, nothing twice
            after = leases(store)
            assert set(after) == set(MARKETS) and set(after.values()) == {"w2"}
            assert {m for m, w in owners.items() if w == "w1"}  # w1 had markets to lose
            # the stateless API serves any market
            import httpx

            assert httpx.get(f"http://127.0.0.1:{api_port}/healthz").json()["db"] is True
            sharded = finding_keys(store)
            assert len(sharded) == len(MARKETS) * 2 * (rounds * 2 // 3)

            # the same input through one single-process gateway
            register(single_url).engine.dispose()
            open_session(broker.port, "single", wire.subscription("+"))
            genv = dict(env, DATABASE_URL=single_url, GATEWAY_MQTT_CLIENT_ID="single",
                        GATEWAY_HTTP_PORT=str(free_port()))
            single = spawn(["serve"], genv, tmp_path / "single.log")
            procs.append(single)
            wait_port(int(genv["GATEWAY_HTTP_PORT"]), 60)
            for r in range(rounds):
                publish_qos1(broker.port, batches(r))
            sstore = Store.from_url(single_url)
            wait_until(lambda: stored(sstore) >= expected, 300, what="single run stored")
            assert finding_keys(sstore) == sharded
            for s in (store, sstore):
                s.engine.dispose()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        broker.stop()
