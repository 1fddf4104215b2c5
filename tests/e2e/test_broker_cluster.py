"""Scale-out on a clustered broker (issue 17): a two-node RabbitMQ cluster (Debian's
rabbitmq-server 3.10 with its MQTT plugin) on loopback instead of one Mosquitto.

* The end-to-end acknowledgement across nodes: agents publish on node A, the gateway's
  ingest reaches the cluster through a load balancer (:class:`FailoverProxy`) that
  prefers node B; node B is SIGKILLed mid-stream. Two sessions show the two cases of
  RabbitMQ 3.10: a gateway session whose queue lives on A fails over to A and finishes
  while B is down; one whose queue lives on B (the node that died) cannot consume until
  B is back (the plugin's durable queues are classic queues, on one node), and the
  messages routed to it meanwhile are dropped by the broker — the agents' end-to-end
  acknowledgement sends them again. Every sale is stored exactly once in both cases.
* Market leases: two ``gateway-server worker`` processes on PostgreSQL, one connected to
  each node, share the markets; one is SIGKILLed and the other takes its markets over
  (their sessions may live on either node) and stores the rest, exactly once.

What the cluster does not do (measured here) is in docs/operations.md, "Clustered broker".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ack_helpers import key_hex, register, sale_counts, sqlite_url
from rabbitmq_cluster import FailoverProxy, RabbitCluster, rabbit_cluster
from sqlalchemy import func, select
from support import BIN, open_session, publish_qos1, register_keyed_markets, wait_until

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from gateway_server.ingest.ingestor import Ingestor
from gateway_server.ingest.sharding import client_id_for
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import sales
from gateway_server.store.tables_workflow import market_leases
from weighing import wire
from weighing.signing import sign_event

sys.path.append(str(Path(__file__).resolve().parents[1] / "gateway_server"))
from pgutil import fresh_pg_database

pytestmark = [pytest.mark.slow]

DEADLINE_S = 180  # per condition: generous, it costs nothing when met early
N_SALES = 200  # per device in the acknowledgement part


def test_clustered_broker_acknowledgement_and_leases(tmp_path: Path) -> None:
    """One test on one cluster: its start is most of the cost, and two tests sharing a
    module-scoped cluster would not stay on one pytest-xdist worker here (``xdist_group``
    does not group with pytest 9.2 and pytest-xdist 3.8, pytest-dev/pytest-xdist#1386):
    each worker would start a cluster of its own."""
    t0 = time.monotonic()
    with rabbit_cluster(tmp_path) as cluster:
        up = time.monotonic() - t0
        print(f"two-node cluster up in {up:.1f} s")
        (tmp_path / "ack").mkdir()
        (tmp_path / "leases").mkdir()
        acknowledgement_across_a_node_kill(cluster, tmp_path / "ack")
        t1 = time.monotonic()
        leases_across_nodes(cluster, tmp_path / "leases")
        t2 = time.monotonic()
    print(f"cluster start {up:.1f} s, acknowledgement part {t1 - t0 - up:.1f} s, "
          f"leases part {t2 - t1:.1f} s, stop {time.monotonic() - t2:.1f} s")


def queue_homes(cluster: RabbitCluster) -> dict[str, str]:
    """Client id → the node that holds its session queue (``mqtt-subscription-{id}qos1``)."""
    out = cluster["a"].rabbitmqctl("list_queues", "name", "pid", "--no-table-headers",
                                   "--quiet").stdout
    homes = {}
    for line in out.split("\n"):
        name, _, pid = line.strip().partition("\t")
        if name.startswith("mqtt-subscription-") and name.endswith("qos1"):
            homes[name[len("mqtt-subscription-"):-len("qos1")]] = pid.strip("<>").split(".")[0]
    return homes


def agent_for(tmp: Path, market: str, device: str, url: str) -> Agent:
    """An agent whose one scale never sells by itself (``loop://``): the test writes the
    sales into its outbox, as its scale worker would, while it runs."""
    cfg = AgentConfig.model_validate({
        "agent": {"market": market, "outbox": str(tmp / f"{device}-outbox.db"),
                  "heartbeat_s": 3600, "ack_timeout_s": 2},
        "mqtt": {"url": url, "max_delay_ms": 20, "batch_size": 5, "reconnect_max_s": 1},
        "scale": [{"device": device, "profile": "toledo-15kg-5g", "port": "loop://",
                   "key": key_hex(device), "samples": False}],
    })
    return Agent(cfg)


def sell(agent: Agent, device: str, n: int, every_s: float) -> threading.Thread:
    """Sales into the agent's outbox at a pace, each one woken to its publisher."""
    key = bytes.fromhex(key_hex(device))
    pub = agent.workers[0].publisher

    def run() -> None:
        t0 = time.time_ns() // 1_000_000
        for i in range(n):
            agent.outbox.put_event(device, wire.SaleEvent(
                seq=0, ts_ms=t0 + i, net_mg=1_000 + i, settled_mg=1_000 + i,
                peak_mg=1_000 + i, stable_device=True, stable_software=True), key=key)
            pub.notify()
            time.sleep(every_s)

    t = threading.Thread(target=run, name=f"sell-{device}", daemon=True)
    t.start()
    return t


def acknowledgement_across_a_node_kill(cluster: RabbitCluster, tmp_path: Path) -> None:
    a, b = cluster["a"], cluster["b"]
    # the load balancer in front of the cluster: the gateway lands on B while B is up
    lb = FailoverProxy([b.mqtt_port, a.mqtt_port])
    # market X: the gateway's session queue on A (survives); Y: on B (dies with B)
    plan = {"m-x": ("s-x-01", "gw-x", a), "m-y": ("s-y-01", "gw-y", b)}
    stores, agents, ingests, sellers = {}, {}, {}, []
    try:
        for m, (dev, cid, home) in plan.items():
            stores[m] = register(sqlite_url(tmp_path, f"{m}.db"), m, [dev])
            open_session(home.mqtt_port, cid, wire.subscription(m))
            ingests[m] = Ingestor(Settings(database_url=sqlite_url(tmp_path, f"{m}.db"),
                                           mqtt_url=lb.url, markets=m, ingest_max_delay_ms=20),
                                  stores[m], client_id=cid)
            ingests[m].start()
            agents[m] = agent_for(tmp_path, m, dev, a.url)  # the agents publish on A
            agents[m].start()
        homes = queue_homes(cluster)
        assert {cid: homes.get(cid) for _, cid, _ in plan.values()} == {
            cid: home.node for _, cid, home in plan.values()}, homes
        wait_until(lambda: all(i.stats.connected for i in ingests.values())
                   and all(ag.workers[0].publisher.stats.connected for ag in agents.values()),
                   DEADLINE_S, what="gateway (via B) and agents (on A) connected")
        assert lb.connections[b.mqtt_port] >= 2 and lb.connections[a.mqtt_port] == 0

        def stored(m: str) -> int:
            return len(sale_counts(stores[m])[0])

        t0 = time.monotonic()
        sellers = [sell(agents[m], dev, N_SALES, 0.02) for m, (dev, _, _) in plan.items()]
        wait_until(lambda: all(stored(m) >= N_SALES // 4 for m in plan), DEADLINE_S, 0.05,
                   what="a quarter of the sales stored through B")
        before = {m: stored(m) for m in plan}
        b.kill()  # SIGKILL mid-stream: the node the gateway is connected to
        t_kill = time.monotonic()

        # X: the gateway reconnects through the balancer to A and finishes with B down
        wait_until(lambda: stored("m-x") == N_SALES
                   and agents["m-x"].outbox.depth("s-x-01", "events") == 0,
                   DEADLINE_S, 0.1, what="market X complete while B is down")
        x_done = time.monotonic() - t_kill
        # Y: the broker (A) acknowledges every sale, and routes those for Y's session to a
        # queue on a dead node, i.e. nowhere; the rows stay at the edge, unconfirmed
        for t in sellers:
            t.join(60)
        pub_y = agents["m-y"].workers[0].publisher
        wait_until(lambda: pub_y.stats.acked_rows >= N_SALES and not pub_y.stats.inflight,
                   DEADLINE_S, 0.1, what="every sale of Y PUBACKed by node A")
        assert not b.alive
        y_while_down = stored("m-y")
        y_depth = agents["m-y"].outbox.depth("s-y-01", "events")
        assert y_while_down < N_SALES and y_depth >= N_SALES - y_while_down
        assert lb.connections[a.mqtt_port] >= 1

        b.start()  # B back on its data: its queues (Y's session) come back with it
        t_back = time.monotonic()
        wait_until(lambda: stored("m-y") == N_SALES
                   and agents["m-y"].outbox.depth("s-y-01", "events") == 0,
                   DEADLINE_S, 0.1, what="market Y complete once B is back")
        y_done = time.monotonic() - t_back
        status = {m: agents[m].status()["scales"][plan[m][0]]["publisher"] for m in plan}
        print(f"stored before the kill {before}; X complete {x_done:.1f} s after it; "
              f"Y stalled at {y_while_down} with {y_depth} rows at the edge while B was down, "
              f"complete {y_done:.1f} s after B's restart; total {time.monotonic() - t0:.1f} s; "
              f"balancer connections {lb.connections}; publishers {status}")
        for m, (dev, _, _) in plan.items():
            counts, nets = sale_counts(stores[m])
            assert set(counts.values()) == {1}  # none twice
            assert sorted(nets[dev]) == [1_000 + i for i in range(N_SALES)]  # none lost
            assert ingests[m].acks.stats.stored_sent >= 1
    finally:
        for ag in agents.values():
            ag.stop()
        for i in ingests.values():
            i.stop()
        lb.close()
        if not b.alive:
            b.start()
        for s in stores.values():
            s.engine.dispose()


# -- market leases across the cluster -------------------------------------------------------

MARKETS = [f"mc{i}" for i in range(4)]
DEVICES = {m: [f"{m}-s{j}" for j in range(2)] for m in MARKETS}
KEY = bytes.fromhex("42" * 16)
T0 = 1_790_000_000_000


def register_markets(url: str) -> Store:
    return register_keyed_markets(url, DEVICES, KEY, T0)


def round_messages(round_: int, ms: list[str]) -> list[tuple[str, bytes]]:
    """One message per device of ``ms``: two signed sales."""
    out = []
    for m in ms:
        for d in DEVICES[m]:
            evs = [sign_event(KEY, d, wire.SaleEvent(
                seq=round_ * 2 + k + 1, ts_ms=T0 + (round_ * 2 + k) * 1000, net_mg=155_000,
                settled_mg=155_000, peak_mg=155_000, stable_device=True,
                stable_software=True)) for k in range(2)]
            out.append((wire.topic(m, d, wire.Channel.EVENTS),
                        wire.encode(wire.EventBatch(device=d, events=evs))))
    return out


def leases(store: Store) -> dict[str, str]:
    now = time.time_ns() // 1_000_000
    with store.engine.connect() as c:
        return {r.market: r.worker_id for r in c.execute(
            select(market_leases).where(market_leases.c.expires_ms > now))}


def stored_sales(store: Store) -> tuple[int, int]:
    """(rows, distinct (device, seq)) in ``sales``."""
    with store.engine.connect() as c:
        rows = int(c.execute(select(func.count()).select_from(sales)).scalar_one())
        keys = len(c.execute(select(sales.c.device, sales.c.seq).distinct()).fetchall())
    return rows, keys


def leases_across_nodes(cluster: RabbitCluster, tmp_path: Path) -> None:
    a, b = cluster["a"], cluster["b"]
    rounds = 6
    expected = len(MARKETS) * 2 * 2 * rounds
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with fresh_pg_database() as url:
            store = register_markets(url)
            # sessions spread over both nodes, as they are once markets have moved around
            for i, m in enumerate(MARKETS):
                open_session((a, b)[i % 2].mqtt_port, client_id_for(m), wire.subscription(m))
            for wid, node in (("w1", a), ("w2", b)):
                env = dict(os.environ, DATABASE_URL=url, MQTT_URL=node.url,
                           GATEWAY_WORKER_METRICS_LISTEN="")
                with (tmp_path / f"{wid}.log").open("ab") as out:
                    procs.append(subprocess.Popen(
                        [str(BIN / "gateway-server"), "worker", "--worker-id", wid,
                         "--lease-s", "3"], env=env, stdout=out, stderr=subprocess.STDOUT))
            w1 = procs[0]
            owners = wait_until(lambda: (lambda ls: ls if len(ls) == len(MARKETS) and
                                         set(ls.values()) == {"w1", "w2"} else None)(
                leases(store)), DEADLINE_S, 0.2, what="markets shared by w1 (A) and w2 (B)")
            t0 = time.monotonic()
            # every market's sales through both nodes: half the markets each way
            for r in range(rounds // 2):
                publish_qos1(a.mqtt_port, round_messages(r, MARKETS[:2]))
                publish_qos1(b.mqtt_port, round_messages(r, MARKETS[2:]))
            wait_until(lambda: stored_sales(store)[1] >= expected // 2, DEADLINE_S, 0.1,
                       what="first half stored by both workers")
            w1.send_signal(signal.SIGKILL)  # w1 and its sessions on A's listener go away
            w1.wait(60)
            t_kill = time.monotonic()
            for r in range(rounds // 2, rounds):
                publish_qos1(b.mqtt_port, round_messages(r, MARKETS[:2]))
                publish_qos1(a.mqtt_port, round_messages(r, MARKETS[2:]))
            wait_until(lambda: stored_sales(store)[1] >= expected, DEADLINE_S, 0.1,
                       what="everything stored after w2 took w1's markets")
            took = time.monotonic() - t_kill
            after = wait_until(lambda: (lambda ls: ls if len(ls) == len(MARKETS) and
                                        set(ls.values()) == {"w2"} else None)(leases(store)),
                               DEADLINE_S, 0.2, what="every lease held by w2")
            rows, keys = stored_sales(store)
            print(f"leases before {owners}, after {after}; rest stored {took:.1f} s after "
                  f"w1's SIGKILL; total {time.monotonic() - t0:.1f} s; {rows} rows")
            assert {m for m, w in owners.items() if w == "w1"}  # w1 had markets to lose
            assert rows == keys == expected  # every sale, once
            store.engine.dispose()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
