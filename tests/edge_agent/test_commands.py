"""Server → edge commands over a real broker: only authentic, fresh, unreplayed ones act."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
from edge_helpers import KEY, KEY_HEX, Collector, command, publish, write_config
from support import Mosquitto, wait_until

from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.commands import CommandGate
from edge_agent.config import load_config
from simulators.emulator import SerialEmulator
from weighing import wire
from weighing.signing import sign_command

PROFILE = "toledo-15kg-5g"
TS = wire.CommandName.TIME_SYNC
RELOAD = wire.CommandName.CONFIG_RELOAD


def _topic(device: str, name: str) -> str:
    return wire.topic("m-cmd", device, wire.Channel.CMD, name)


def _scale(device: str, port: str, **kw: object) -> dict[str, object]:
    return {"device": device, "profile": PROFILE, "port": port, "key": KEY_HEX, **kw}


def test_time_sync_and_config_reload_act_only_when_authentic(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    profile = load_profile(PROFILE)
    emus = [SerialEmulator(profile, []).start() for _ in range(3)]
    a, b, c = (e.path for e in emus)
    agent_sec = {"market": "m-cmd", "outbox": str(tmp_path / "outbox.db"), "heartbeat_s": 60}
    mqtt_sec = {"url": mosquitto.url, "max_delay_ms": 50, "reconnect_max_s": 1}
    cfg_path = write_config(tmp_path / "agent.toml", agent=agent_sec, mqtt_=mqtt_sec,
                            scales=[_scale("s-a", a), _scale("s-b", b)])
    agent = Agent(load_config(cfg_path), config_path=cfg_path)
    col = Collector(mosquitto.port)
    agent.start()
    try:
        wait_until(lambda: all(w.publisher.stats.connected for w in agent.workers), 60,
                   what="both scales connected")
        # -- time-sync: the server's clock is 5 s ahead --------------------------------
        sent_ms = time.time_ns() // 10**6
        good = command(TS, device="s-a", server_ms=sent_ms + 5_000)
        publish(mosquitto.port, _topic("s-a", "time-sync"), good)
        offset = wait_until(lambda: agent.clock.offset_ms, 60, what="the offset recorded")
        # 5 s less the time the command took to arrive (however long that was)
        assert 5_000 - (time.time_ns() // 10**6 - sent_ms) <= offset <= 5_000
        (skew,) = wait_until(lambda: col.faults("s-a", "clock-skew"), 60, what="clock-skew")
        (beat, *_) = wait_until(lambda: [h for h in col.events("s-a", wire.HeartbeatEvent)
                                         if h.clock_offset_ms is not None], 60,
                                what="a heartbeat with the offset")
        assert beat.clock_offset_ms == offset
        # -- forgeries and replays are rejected and counted ------------------------------
        now = time.time_ns() // 10**6
        forged = [
            (_topic("s-a", "time-sync"), good),  # replayed verbatim (same nonce)
            (_topic("s-a", "time-sync"), command(TS, device="s-a", key=b"not the key",
                                                 server_ms=now)),
            (_topic("s-a", "time-sync"), command(TS, device="s-a", ts_ms=now - 120_000,
                                                 server_ms=now)),  # stale
            (_topic("s-a", "time-sync"), command(TS, device="s-b", server_ms=now)),  # for b
            (_topic("s-a", "config-reload"), command(TS, device="s-a", server_ms=now)),
            (_topic("s-a", "time-sync"), wire.encode_command(wire.Command(
                name=TS, ts_ms=now, nonce="unsigned-1", server_ms=now))),
            (_topic("s-a", "time-sync"), b"{not json"),
        ]
        for topic, payload in forged:
            publish(mosquitto.port, topic, payload)
        wait_until(lambda: agent.gate.rejected("s-a") >= len(forged), 60, what="rejections")
        status = agent.status()
        cmds = status["scales"]["s-a"]["commands"]  # type: ignore[index]
        assert cmds["accepted"] == 1 and cmds["rejected"] == len(forged)
        assert agent.clock.offset_ms == offset  # no forgery moved it
        reasons = agent.gate.stats["s-a"].rejected_by_reason
        assert {"replayed", "bad signature", "stale", "unsigned"} <= set(reasons), reasons
        # -- config-reload: b changes, c is added, a stays as it is ------------------------
        w_a, w_b = agent.workers
        write_config(cfg_path, agent=agent_sec, mqtt_=mqtt_sec, scales=[
            _scale("s-a", a), _scale("s-b", b, window_ms=600), _scale("s-c", c)])
        publish(mosquitto.port, _topic("s-b", "config-reload"), command(RELOAD, device="s-b"))
        wait_until(lambda: agent.reloads == 1, 60, what="the reload")
        wait_until(lambda: ("s-c", "online") in col.states, 60, what="the new scale online")
        devices = [w.cfg.device for w in agent.workers]
        assert devices == ["s-a", "s-b", "s-c"]
        assert agent.workers[0] is w_a  # unchanged: not restarted
        assert agent.workers[1] is not w_b and agent.workers[1].sm.params.window_ms == 600
        # an unauthentic reload does nothing
        write_config(cfg_path, agent=agent_sec, mqtt_=mqtt_sec, scales=[_scale("s-a", a)])
        publish(mosquitto.port, _topic("s-a", "config-reload"),
                command(RELOAD, device="s-a", key=b"guess"))
        wait_until(lambda: agent.gate.rejected("s-a") > len(forged), 60, what="rejection")
        time.sleep(0.3)
        assert agent.reloads == 1 and len(agent.workers) == 3
        hb = agent.workers[0]
        hb.heartbeat()
        last = wait_until(lambda: [h for h in col.events("s-a", wire.HeartbeatEvent)
                                   if h.commands_rejected > len(forged)], 60, what="heartbeat")
        assert last[-1].commands_rejected == len(forged) + 1
    finally:
        agent.stop()
        col.close()
        for e in emus:
            e.stop()
    assert "server − agent = +" in skew.detail


def test_gate_accepts_each_nonce_once_and_only_for_its_device() -> None:
    gate = CommandGate()
    now = 1_800_000_000_000
    cmd = sign_command(KEY, "d-1", wire.Command(name=TS, ts_ms=now, nonce="n0nce-0001",
                                                server_ms=now))
    payload = msgspec.json.encode(cmd)
    topic = wire.topic("m", "d-1", wire.Channel.CMD, "time-sync")
    assert gate.check("d-1", KEY, topic, payload, now_ms=now + 59_000) == cmd
    assert gate.check("d-1", KEY, topic, payload, now_ms=now) is None  # replay
    other = wire.topic("m", "d-2", wire.Channel.CMD, "time-sync")
    assert gate.check("d-2", KEY, other, payload, now_ms=now) is None  # another device's
    assert gate.check("d-1", None, topic, payload, now_ms=now) is None  # no key: nothing
    assert gate.rejected("d-1") == 2 and gate.rejected("d-2") == 1
