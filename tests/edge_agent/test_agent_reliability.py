"""The edge agent never loses a sale: broker outages, SIGKILL, a full outbox.

Real parts only: Mosquitto on a free loopback port, scales emulated on ptys, the agent
in-process or as an ``edge-agent run`` subprocess. The subscriber keeps a persistent
session (QoS 1), so what it records is what a server would receive; deduplication on
(device, seq) is the server's job and is done here the same way.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import msgspec
import pytest
from edge_helpers import (
    KEY_HEX,
    Collector,
    GatedScale,
    outbox_rows,
    outbox_state,
    write_config,
)
from support import BIN, Mosquitto, start_mosquitto, wait_until

from device_profiles.codecs import make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from simulators.script import Load, random_script
from weighing import wire

PROFILE = "toledo-15kg-5g"
DEV = "s-0001"


def start_broker(tmp: Path) -> Mosquitto:
    """Mosquitto with persistence, so the subscriber's session survives a restart."""
    return start_mosquitto(tmp, persistence=True)


def make_agent(tmp: Path, url: str, port: str, **agent_kw: object) -> Agent:
    cfg = AgentConfig.model_validate({
        # no gateway here: rows leave on the broker's PUBACK, as before end-to-end
        # acknowledgement (tests/e2e/test_end_to_end_ack.py, test_chaos.py cover that)
        "agent": {"market": "m-test", "outbox": str(tmp / "outbox.db"), "heartbeat_s": 60,
                  "confirm": "broker", **agent_kw},
        "mqtt": {"url": url, "max_delay_ms": 50, "reconnect_max_s": 1},
        "scale": [{"device": DEV, "profile": PROFILE, "port": port, "key": KEY_HEX}],
    })
    return Agent(cfg)


def record_seqs(agent: Agent) -> list[tuple[str, int, wire.Event]]:
    """Instrument the outbox: every (kind, seq, event) the agent assigns."""
    assigned: list[tuple[str, int, wire.Event]] = []
    put = agent.outbox.put_event

    def spy(device, event, **kw):  # type: ignore[no-untyped-def]
        seq = put(device, event, **kw)
        if seq > 0:
            assigned.append((str(type(event).__struct_config__.tag), seq, event))
        return seq

    agent.outbox.put_event = spy  # type: ignore[method-assign]
    return assigned


def gated_scale(loads: list[Load]) -> GatedScale:
    profile = load_profile(PROFILE)
    return GatedScale(make_codec(profile.protocol, profile.codec), loads,
                      e_mg=profile.metrology.e_mg, rate_hz=profile.link.output_rate_hz)


def test_broker_outage_while_selling_loses_and_reorders_nothing(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    loads = random_script(load_profile(PROFILE), 6, seed=21, fast=True)
    scale = gated_scale(loads)
    col = Collector(broker.port)
    try:
        agent = make_agent(tmp_path, broker.url, scale.path)
        assigned = record_seqs(agent)
        agent.start()
        try:
            # the scale talks once the agent has opened (and flushed) its port
            wait_until(lambda: agent.workers[0].stats.state == "running", 60, what="port open")
            scale.start(gate=scale.at(1, "idle", 100))  # the first load, sold and delivered
            wait_until(lambda: col.sales(DEV), 60, what="the first sale")
            broker.stop()
            # the scale sells every other load while the broker is down
            scale.wait_at(len(scale.frames))
            wait_until(lambda: sum(k == "sale" for k, _, _ in assigned) == len(loads), 60,
                       what="the other sales committed during the outage")
            assert not agent.workers[0].publisher.stats.connected
            assert agent.outbox.depth() >= len(loads) - 1
            broker.start()
            wait_until(lambda: len(col.sales(DEV)) >= len(loads), 120, what="every sale")
            wait_until(lambda: agent.outbox.depth() == 0, 60, what="outbox drained")
            status = agent.status()
        finally:
            agent.stop()
    finally:
        col.close()
        broker.stop()
        scale.close()
    sale_seqs = {seq for kind, seq, _ in assigned if kind == "sale"}
    received = col.by_seq(DEV)
    # every seq the agent assigned (sales and all else) arrived, at least once
    assert {seq for _, seq, _ in assigned} <= set(received)
    assert sale_seqs <= set(received)
    # after dedup on seq: each load exactly once, with its weight, in order
    assert [s.net_mg for s in col.sales(DEV)] == [ld.mass_mg for ld in loads]
    # first arrivals are in seq order (per device)
    firsts = col.first_arrival_seqs(DEV)
    assert firsts == sorted(firsts)
    pub = status["scales"][DEV]["publisher"]  # type: ignore[index]
    assert pub["reconnects"] >= 1 and pub["connected"]


def _loads_for_kill() -> list[Load]:
    return [Load(mass_mg=m, idle_ms=1200, settle_ms=400, hold_ms=2500, remove_ms=300)
            for m in (1_250_000, 2_400_000, 3_115_000, 640_000)]


def _spawn_agent(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(BIN / "edge-agent"), "run", "--config", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)


@pytest.mark.slow
def test_sigkill_mid_stream_loses_and_duplicates_no_sale(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    loads = _loads_for_kill()
    col = Collector(broker.port)
    log = tmp_path / "agent.log"
    outbox = tmp_path / "outbox.db"
    procs: list[subprocess.Popen[bytes]] = []
    # the scale (and so the pty) lives in this process: killing the agent leaves the
    # scale talking, as a real scale would. Each step waits for what the agent has done
    # (read from its outbox file), never for a time.
    scale = gated_scale(loads)
    cfg = write_config(
        tmp_path / "agent.toml",
        agent={"market": "m-test", "outbox": str(outbox), "heartbeat_s": 60},
        mqtt_={"url": broker.url, "max_delay_ms": 50, "reconnect_max_s": 1},
        scales=[{"device": DEV, "profile": PROFILE, "port": scale.path, "key": KEY_HEX}],
    )

    def last_frame() -> bytes | None:
        return outbox_state(outbox, DEV, "last_frame_ms")

    def spawn_reading() -> None:
        """Start an agent; return once it reads the scale (it stores the frame time)."""
        before = last_frame()
        procs.append(_spawn_agent(cfg, log))
        wait_until(lambda: (t := last_frame()) is not None and t != before, 120,
                   what="the agent reading the scale")

    def queued_sales() -> list[int]:
        return [e.net_mg for e in outbox_rows(outbox, DEV) if isinstance(e, wire.SaleEvent)]

    def checkpoint_settled_mg() -> int | None:
        cp = outbox_state(outbox, DEV, "sm.load")
        return None if cp is None else msgspec.json.decode(cp)["load"]["settled_mg"]

    try:
        scale.start()
        spawn_reading()
        scale.open_to(scale.at(1, "idle", 300))
        wait_until(lambda: col.sales(DEV), 120, what="the first sale")
        # kill 1: broker down, load 2's sale committed to the outbox but never acknowledged
        broker.stop()
        scale.wait_at(scale.at(2, "idle", 300))
        wait_until(lambda: loads[1].mass_mg in queued_sales(), 120, what="load 2 committed")
        _kill(procs[-1])
        broker.start()
        boots = col.boot_ids(DEV)  # the first agent's (its birth came before its sale)
        spawn_reading()
        # kill 2: load 3 settled on the pan and checkpointed, then the agent dies; the
        # goods are lifted before the next agent reads, so it never sees the pan settle:
        # only the persisted checkpoint of the settled load can give the sale
        scale.wait_at(scale.at(2, "removal", -300))
        wait_until(lambda: checkpoint_settled_mg() == loads[2].mass_mg, 120,
                   what="load 3 settled and checkpointed")
        wait_until(lambda: col.boot_ids(DEV) - boots, 120, what="the second agent connected")
        _kill(procs[-1])
        scale.wait_at(scale.at(3, "idle", 300))
        scale.drain()  # what the scale said while no agent listened is gone
        spawn_reading()
        scale.open_to(len(scale.frames))
        wait_until(lambda: len(col.sales(DEV)) >= len(loads), 120, what="every sale")
    except AssertionError:
        print(log.read_text()[-4000:])
        print(sorted(col.by_seq(DEV).items()))
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(60)
        scale.close()
        col.close()
        broker.stop()
    sales = col.sales(DEV)
    assert [s.net_mg for s in sales] == [ld.mass_mg for ld in loads], log.read_text()[-3000:]
    seqs = [s.seq for s in sales]
    assert len(set(seqs)) == len(seqs) == len(loads)
    firsts = col.first_arrival_seqs(DEV)
    assert firsts == sorted(firsts)
    # the third agent took up load 3 from the checkpoint its killed predecessor stored
    assert "resuming an unfinished load" in log.read_text()
    # the broker published the last will on the SIGKILL of a connected agent
    assert ("s-0001", "offline") in col.states


def test_full_outbox_follows_the_policy_and_says_so(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    broker.stop()  # the broker is away from the start: everything piles up
    loads = [Load(mass_mg=(20 + 7 * i) * 5_000 * 10, idle_ms=250, settle_ms=150, hold_ms=900,
                  remove_ms=100) for i in range(12)]
    col: Collector | None = None
    scale = gated_scale(loads)
    agent = make_agent(tmp_path, broker.url, scale.path, outbox_max_rows=10,
                       samples_interval_s=0.2, heartbeat_s=1)
    assigned = record_seqs(agent)
    agent.start()
    try:
        wait_until(lambda: agent.workers[0].stats.state == "running", 60, what="port open")
        scale.start(gate=len(scale.frames))
        wait_until(lambda: agent.outbox.alarm, 120, what="the outbox alarm")
        c = agent.outbox.counters()
        assert c["dropped_samples"] > 0  # samples went first
        assert c["queued"] >= agent.outbox.max_rows  # full of never-dropped events
        assert not agent.outbox.put_samples(DEV, wire.SampleBatch(
            device=DEV, t_ms=[1], net_mg=[0], flags=[0]))  # samples refused
        wait_until(lambda: sum(k == "sale" for k, _, _ in assigned) == len(loads), 120,
                   what="every sale committed")
        # a heartbeat queued while full shows the backlog and the drops
        wait_until(lambda: [h for h in outbox_rows(tmp_path / "outbox.db", DEV)
                            if isinstance(h, wire.HeartbeatEvent) and h.queued > 10
                            and h.dropped > 0], 60, what="a heartbeat of the full outbox")
        broker.start()
        col = Collector(broker.port)  # retained nothing: only the drained outbox
        wait_until(lambda: len(col.sales(DEV)) >= len(loads), 120, what="every sale")
        wait_until(lambda: not agent.outbox.alarm, 60, what="the alarm cleared")
        # the heartbeat may have been queued after the last sale: wait for it as well
        wait_until(lambda: any(h.queued > 10 and h.dropped > 0
                               for h in col.events(DEV, wire.HeartbeatEvent)), 60,
                   what="the full outbox's heartbeat delivered")
        status = agent.status()
    finally:
        agent.stop()
        scale.close()
        if col is not None:
            col.close()
        broker.stop()
    assert col is not None
    # no sale was dropped, each arrived with its weight
    assert [s.net_mg for s in col.sales(DEV)] == [ld.mass_mg for ld in loads]
    assert all(k != "sale" or seq in col.by_seq(DEV) for k, seq, _ in assigned)
    # one outbox-full alarm event
    (full,) = col.faults(DEV, "outbox-full")
    assert "bound 10" in full.detail
    # the heartbeat sent while full shows the backlog and the drops
    beats = col.events(DEV, wire.HeartbeatEvent)
    assert any(h.queued > 10 and h.dropped > 0 for h in beats), beats
    out = status["outbox"]  # type: ignore[index]
    assert out["dropped_samples"] > 0 and out["alarms"] == 1 and not out["alarm"]
    assert "dropped_sale" not in out
