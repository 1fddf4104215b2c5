"""The agent end to end with real ptys and Mosquitto: cheats flagged, scales isolated,
a failing publisher pump recovered, counters watched, offline periods reported."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from edge_helpers import KEY_HEX, Collector, GatedScale, PtyScale
from support import Mosquitto, wait_until

from device_profiles.codecs import WeightFrame, make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import Agent, ScaleWorker, flatten_extras
from edge_agent.config import AgentConfig
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from edge_agent.transport import FrameSource, Polled, SerialFrameSource, TransportError
from simulators.emulator import SerialEmulator
from simulators.script import random_script
from weighing import wire

PROFILE = "toledo-15kg-5g"


def agent_config(tmp: Path, url: str, scales: list[dict[str, Any]], **agent_kw: Any) -> AgentConfig:
    return AgentConfig.model_validate({
        "agent": {"market": "m-test", "outbox": str(tmp / "outbox.db"), "heartbeat_s": 60,
                  **agent_kw},
        "mqtt": {"url": url, "max_delay_ms": 50, "reconnect_max_s": 1},
        "scale": [{"profile": PROFILE, "key": KEY_HEX, **s} for s in scales],
    })


def _impact_and_honest() -> list[tuple[int, WeightFrame]]:
    """Two sales of the same goods (155 g) on a toledo-continuous scale at 20 frames/s.

    First the impact cheat (domain.md §4): the goods are thrown on and the print key is
    pressed at the peak (200 g, in motion). Then an honest sale: placed, settled, printed.
    """
    frames: list[tuple[int, WeightFrame]] = []
    t = 0

    def add(weight: int, stable: bool, n: int = 1, *, print_at: int | None = None) -> None:
        nonlocal t
        for i in range(n):
            frames.append((t, WeightFrame(weight_mg=weight, stable=stable, tare_mg=0,
                                          print_request=print_at == i)))
            t += 50

    for commit_at_peak in (True, False):
        add(0, True, 24)
        add(120_000, False)
        add(200_000, False, print_at=0 if commit_at_peak else None)
        for w in (185_000, 170_000, 160_000):
            add(w, False)
        add(155_000, True, 30, print_at=None if commit_at_peak else 15)
        add(60_000, False)
    add(0, True, 30)
    return frames


def test_impact_cheat_through_a_pty_is_flagged_and_the_honest_sale_is_not(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    profile = load_profile(PROFILE)
    scale = PtyScale(make_codec(profile.protocol, profile.codec))
    col = Collector(mosquitto.port)
    agent = Agent(agent_config(tmp_path, mosquitto.url, [{"device": "s-imp", "port": scale.path}]))
    agent.start()
    try:
        # pyserial flushes the port as it opens it: play once the agent reads
        wait_until(lambda: agent.workers[0].stats.state == "running", 60, what="port open")
        scale.play(_impact_and_honest())
        cheat, honest = wait_until(lambda: len(col.sales("s-imp")) >= 2 and col.sales("s-imp"),
                                   120, what="two sales")
    finally:
        agent.stop()
        scale.close()
        col.close()
    assert cheat.unsettled_commit
    assert (cheat.net_mg, cheat.settled_mg, cheat.peak_mg) == (200_000, 155_000, 200_000)
    assert not cheat.stable_device and not cheat.stable_software
    assert not honest.unsettled_commit
    assert honest.net_mg == honest.settled_mg == 155_000 and honest.peak_mg == 200_000
    assert honest.stable_device and honest.stable_software


class ExplodingSource(FrameSource):
    """Wraps a real source; the codec path "explodes" once (a bug, not an I/O error)."""

    def __init__(self, inner: FrameSource, *, after_polls: int) -> None:
        self.inner = inner
        self.after = after_polls
        self.polls = 0

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def poll(self, timeout_s: float) -> Polled:
        self.polls += 1
        if self.polls == self.after:
            raise RuntimeError("codec exploded")
        return self.inner.poll(timeout_s)


def test_one_scale_failing_never_stops_another(tmp_path: Path, mosquitto: Mosquitto) -> None:
    profile = load_profile(PROFILE)
    good_loads = random_script(profile, 4, seed=5, fast=True)
    bad_loads = random_script(profile, 20, seed=6, fast=True)
    col = Collector(mosquitto.port)
    good = GatedScale(make_codec(profile.protocol, profile.codec), good_loads,
                      e_mg=profile.metrology.e_mg, rate_hz=profile.link.output_rate_hz)
    with SerialEmulator(profile, bad_loads) as bad:
        # the agent reaches the bad scale through a link of this test's own: once the link
        # is gone the port is gone for good, whereas /dev/pts/N itself is soon reused by a
        # pty of another test (xdist workers), which the retrying agent would open and read
        bad_port = tmp_path / "bad-scale-tty"
        bad_port.symlink_to(bad.path)
        agent = Agent(agent_config(tmp_path, mosquitto.url, [
            {"device": "s-bad", "port": str(bad_port)}, {"device": "s-good", "port": good.path}]))
        w_bad = agent.workers[0]
        assert isinstance(w_bad.source, SerialFrameSource)
        w_bad.source = ExplodingSource(w_bad.source, after_polls=5)
        # the publisher pump of the good scale fails twice: recovered and reported
        real_peek = agent.outbox.peek
        fails = {"n": 0}

        def flaky_peek(device: str, channel: str, **kw: Any) -> Any:
            if device == "s-good" and fails["n"] < 2:
                fails["n"] += 1
                raise OSError("disk hiccup")
            return real_peek(device, channel, **kw)

        agent.outbox.peek = flaky_peek  # type: ignore[method-assign]
        agent.start()
        try:
            # the good scale sells once its worker reads (the port is flushed at open)
            wait_until(lambda: agent.workers[1].stats.state == "running", 60, what="port open")
            good.start(gate=len(good.frames))
            wait_until(lambda: col.faults("s-bad", "worker-restart"), 60, what="the bug reported")
            # that outage ends when frames flow again (an outage is reported once, however
            # many failures it has): then the port's loss is a new one
            frames = w_bad.stats.frames
            wait_until(lambda: w_bad.stats.state == "running" and w_bad.stats.frames > frames,
                       60, what="the bad scale restarted and reading")
            bad_port.unlink()  # the bad scale's port disappears for good
            bad.stop()
            # the supervisor may be in a backoff of up to ~12 s (jittered, doubling) when
            # the port vanishes: the loss is reported at the next reopen attempt
            wait_until(lambda: col.faults("s-bad", "transport-lost"), 120, what="transport lost")
            wait_until(lambda: len(col.sales("s-good")) >= len(good_loads), 120,
                       what="every sale of the good scale")
            status = agent.status()
        finally:
            agent.stop()
            col.close()
            good.close()
    assert [s.net_mg for s in col.sales("s-good")] == [ld.mass_mg for ld in good_loads]
    scales = status["scales"]  # type: ignore[index]
    bad_st, good_st = scales["s-bad"], scales["s-good"]
    assert bad_st["restarts"] >= 2 and bad_st["state"] in ("backoff", "opening")
    assert "TransportError" in bad_st["last_error"]
    assert good_st["state"] == "running" and good_st["restarts"] == 0
    assert good_st["publisher"]["pump_failures"] == 2
    assert good_st["publisher"]["pump_state"] == "running"
    assert "disk hiccup" in good_st["publisher"]["last_error"]
    # one transport-lost event per outage, however many reopen attempts failed
    assert len(col.faults("s-bad", "transport-lost")) == 1


def test_a_dead_pump_thread_is_restarted_and_counted(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, "mqtt://127.0.0.1:9", [{"device": "s-1", "port": "loop://"}])
    ob = Outbox(tmp_path / "o.db")
    pub = Publisher(cfg.mqtt, market="m", device="s-1", outbox=ob, birth=wire.Birth(
        device="s-1", market="m", profile="p", protocol="x", max_mg=1, e_mg=1,
        agent_version="0", boot_id="b", ts_ms=1))
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    pub._thread = dead  # as if the pump had died
    pub.check()
    assert pub._thread is not dead and pub._thread.is_alive()
    assert pub.stats.pump_restarts == 1
    pub.check()  # alive: nothing to do
    assert pub.stats.pump_restarts == 1
    pub._stop.set()
    pub.notify()
    pub._thread.join(2)
    ob.close()


class ModbusLikeSource(FrameSource):
    """Frames plus ``extras`` the way ``ModbusFrameSource`` reports them."""

    def __init__(self) -> None:
        self.extras: dict[str, Any] | None = None
        self.frames: list[Polled] = []
        self.lock = threading.Lock()

    def open(self) -> None: ...

    def close(self) -> None: ...

    def poll(self, timeout_s: float) -> Polled:
        time.sleep(0.02)
        with self.lock:
            return self.frames.pop(0) if self.frames else Polled()

    def push(self, extras: dict[str, Any], n: int = 1) -> None:
        with self.lock:
            self.extras = extras
            self.frames += [Polled(frames=[WeightFrame(weight_mg=0, stable=True)])] * n


def _extras(cal: int, span: int, sw: str = "V1.0") -> dict[str, Any]:
    return {"raw_ad": 812_345 + cal, "cal_zero": 8100, "cal_span": span,
            "counters": {"cal": cal, "cfg": 2}, "identity": {"software_id": sw}}


def test_counter_identity_and_calibration_changes_become_events(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, "mqtt://127.0.0.1:9", [{"device": "s-mb", "port": "x"}])
    ob = Outbox(tmp_path / "o.db")

    def run(src: ModbusLikeSource, pushes: list[dict[str, Any]]) -> list[wire.Event]:
        w = ScaleWorker(cfg.scale[0], market="m-test", outbox=ob, agent=cfg, source=src)
        t = threading.Thread(target=w._supervise, daemon=True)
        t.start()
        for ex in pushes:
            src.push(ex, 3)
            wait_until(lambda: not src.frames, 60, what="frames consumed")
        w._stop.set()
        t.join(60)
        rows = ob.peek("s-mb", "events", limit=1000)
        ob.ack([r.id for r in rows])
        _, batch = wire.decode("scales/v1/m-test/s-mb/events",
                               wire.event_batch_payload("s-mb", [r.payload for r in rows]))
        assert isinstance(batch, wire.EventBatch)
        return list(batch.events)

    first = run(ModbusLikeSource(), [_extras(3, 41_000), _extras(3, 41_000), _extras(4, 43_210)])
    changes = [(e.name, e.old, e.new) for e in first if isinstance(e, wire.CounterChangeEvent)]
    # the first observation is the baseline (old = None), then only what changed
    assert changes == [
        ("cal_zero", None, "8100"), ("cal_span", None, "41000"), ("counter.cal", None, "3"),
        ("counter.cfg", None, "2"), ("identity.software_id", None, "V1.0"),
        ("cal_span", "41000", "43210"), ("counter.cal", "3", "4"),
    ]
    # across a restart the last values are remembered: a re-flash while the agent was
    # down is reported against what was seen before
    second = run(ModbusLikeSource(), [_extras(4, 43_210, sw="V9.9")])
    changes = [(e.name, e.old, e.new) for e in second if isinstance(e, wire.CounterChangeEvent)]
    assert changes == [("identity.software_id", "V1.0", "V9.9")]
    assert "raw_ad" not in flatten_extras(_extras(1, 1))
    ob.close()


class GappySource(FrameSource):
    """Empty-pan frames, then silence for a while, then frames again."""

    def __init__(self, silent_after: int, silent_s: float) -> None:
        self.n = 0
        self.silent_after = silent_after
        self.silent_s = silent_s

    def open(self) -> None: ...

    def close(self) -> None: ...

    def poll(self, timeout_s: float) -> Polled:
        self.n += 1
        time.sleep(self.silent_s if self.n == self.silent_after else 0.05)
        if self.n == self.silent_after:
            raise TransportError("cable pulled")
        return Polled(frames=[WeightFrame(weight_mg=0, stable=True)])


def test_an_offline_period_is_reported_with_its_duration(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, "mqtt://127.0.0.1:9",
                       [{"device": "s-gap", "port": "x", "no_data_s": 0.5}])
    ob = Outbox(tmp_path / "o.db")
    src = GappySource(silent_after=10, silent_s=1.2)
    w = ScaleWorker(cfg.scale[0], market="m-test", outbox=ob, agent=cfg, source=src)
    t = threading.Thread(target=w._supervise, daemon=True)
    t0_ms = time.time_ns() // 10**6
    t.start()
    # the poll after the first frames past the silence has begun: those were checked
    wait_until(lambda: src.n > src.silent_after + 2, 60, what="frames past the silence")
    w._stop.set()
    t.join(60)
    run_ms = time.time_ns() // 10**6 - t0_ms
    rows = ob.peek("s-gap", "events", limit=100)
    events = [wire.decode("scales/v1/m-test/s-gap/events",
                          wire.event_batch_payload("s-gap", [r.payload]))[1].events[0]  # type: ignore[union-attr]
              for r in rows]
    faults = [e for e in events if isinstance(e, wire.FaultEvent)]
    codes = [e.code for e in faults]
    # (a loaded machine may stall this worker past no_data_s elsewhere too: the agent
    # rightly reports that as well, so only the silence's own report is checked)
    assert codes.count("transport-lost") == 1 and set(codes) == {"transport-lost", "no-data"}
    gap = faults[codes.index("transport-lost") + 1]
    assert gap.code == "no-data"
    # at least the silence; at most the whole run (however slowly this machine ran it)
    assert gap.duration_ms is not None and 1_200 <= gap.duration_ms <= run_ms
    ob.close()


def test_multi_range_scale_uses_the_e_of_the_range_the_load_is_in() -> None:
    from edge_agent.statemachine import Params, WeighingStateMachine

    p = Params(e_mg=5_000, ranges=((6_000_000, 2_000), (15_000_000, 5_000)))
    assert p.threshold_mg == 20_000 and p.e_at(1_000_000) == 2_000 and p.e_at(9_000_000) == 5_000
    # a reading flickering by 4 g: settled at 9 kg (e = 5 g), never at 1 kg (e = 2 g)
    for base, settles in ((9_000_000, True), (1_000_000, False)):
        sm = WeighingStateMachine(p)
        events: list[wire.Event] = []
        for i in range(40):
            events += sm.feed(i * 50, WeightFrame(weight_mg=base + (i % 2) * 4_000, stable=True))
        events += sm.feed(2_000, WeightFrame(weight_mg=0, stable=True))
        assert any(isinstance(e, wire.SaleEvent) for e in events) is settles

