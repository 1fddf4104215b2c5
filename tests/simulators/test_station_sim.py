"""``scale-sim station``: a fair-scale station without hardware. The command's ptys carry
the codes and the weights in the right order, and the real agent reading the emulator's
ptys sends a re-weigh for a scanned load and a sale for an unscanned one."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import BIN, Mosquitto, wait_until

from device_profiles.codecs import make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from simulators.station import Reweigh, StationEmulator, StationScriptError, load_script
from weighing import wire

PROFILE = "toledo-15kg-5g"
TRUST = "https://t.example/m/q3ZxY-_0aBcDeFgHiJkLmNoP"


class Events:
    """A subscriber on the events topics of every device: what the broker delivers."""

    def __init__(self, port: int) -> None:
        self.events: list[wire.Event] = []
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id="test-station-sim")
        self.client.on_connect = lambda c, *_: c.subscribe("scales/v1/+/+/events", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        _, payload = wire.decode(msg.topic, bytes(msg.payload))
        if isinstance(payload, wire.EventBatch):
            self.events.extend(payload.events)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_command_scans_each_code_before_its_goods_are_placed() -> None:
    proc = subprocess.Popen(
        [str(BIN / "scale-sim"), "station", "--profile", PROFILE, "--code", "TR-1",
         "--weight-g", "500", "--code", TRUST, "--weight-g", "1250.5", "--gap-s", "0.6",
         "--hold-s", "0.8", "--lead-s", "0.3", "--exit-when-done"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        scanner = proc.stdout.readline().strip()
        assert port.startswith('port = "/dev/') and scanner.startswith('scanner = "/dev/')
        fds = {os.open(line.split('"')[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK): name
               for line, name in ((port, "scale"), (scanner, "scanner"))}
        got: dict[str, list[tuple[float, bytes]]] = {"scale": [], "scanner": []}
        deadline = time.monotonic() + 9
        open_fds = set(fds)
        while open_fds and time.monotonic() < deadline:
            for fd in select.select(list(open_fds), [], [], 0.1)[0]:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the emulator closed its end
                    data = b""
                if data:
                    got[fds[fd]].append((time.monotonic(), data))
                else:
                    open_fds.discard(fd)
        for fd in fds:
            os.close(fd)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert b"".join(d for _, d in got["scanner"]) == f"TR-1\r\n{TRUST}\r\n".encode()
    profile = load_profile(PROFILE)
    codec = make_codec(profile.protocol, profile.codec)
    stable_at: dict[int, float] = {}  # weight -> first arrival as a stable reading
    for t, data in got["scale"]:
        frames, errors = codec.feed(data)
        assert not errors
        for f in frames:
            if f.stable and f.weight_mg:
                stable_at.setdefault(f.weight_mg, t)
    # 1250.5 g on a 5 g scale shows 1250 g; each code arrives before its goods settle
    assert sorted(stable_at) == [500_000, 1_250_000]
    (t_scan1, _), (t_scan2, _) = got["scanner"][0], got["scanner"][-1]
    assert t_scan1 < stable_at[500_000] < t_scan2 < stable_at[1_250_000]


def test_the_real_agent_turns_the_emulated_station_into_a_reweigh_and_a_sale(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    emu = StationEmulator(load_profile(PROFILE),
                          [Reweigh("TR-SIM-1", 750_000, gap_s=0.6), Reweigh("", 300_000, 0.6)],
                          lead_ms=300, hold_ms=1000)
    col = Events(mosquitto.port)
    agent = Agent(AgentConfig.model_validate({
        "agent": {"market": "m-test", "outbox": str(tmp_path / "o.db"), "heartbeat_s": 60},
        "mqtt": {"url": mosquitto.url, "max_delay_ms": 50},
        "scale": [{"device": "fair-sim", "profile": PROFILE, "port": emu.path, "role": "fair",
                   "scanner": emu.scanner_path}]}))
    agent.start()
    try:
        wait_until(lambda: agent.status()["scales"]["fair-sim"]["station"]["scanner"]  # type: ignore[index]
                   == "open", 5, what="scanner open")
        emu.start()

        def events() -> list[wire.Event]:
            return [e for e in list(col.events)
                    if isinstance(e, wire.ReweighEvent | wire.SaleEvent)]

        got = wait_until(lambda: len(events()) >= 2 and events(), 10, what="two weighings")
    finally:
        agent.stop()
        emu.stop()
        col.close()
    assert emu.scans_sent == 1
    rw, sale = sorted(got, key=lambda e: e.seq)[:2]
    assert isinstance(rw, wire.ReweighEvent)
    assert (rw.trace_code, rw.reference_mg) == ("TR-SIM-1", 750_000)
    assert isinstance(sale, wire.SaleEvent) and sale.settled_mg == 300_000


def test_scripts_load_from_toml_and_csv_and_bad_ones_name_the_entry(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('[[reweigh]]\ncode = "TR-1"\nweight_g = 1250\ngap_s = 2\n\n'
                    '[[reweigh]]\ncode = ""\nweight_g = 0.5\n', encoding="utf-8")
    assert load_script(toml) == [Reweigh("TR-1", 1_250_000, 2.0), Reweigh("", 500, 3.0)]
    csv_ = tmp_path / "s.csv"
    csv_.write_text(f"code,weight_g,gap_s\n{TRUST},480,1.5\nSTALL:A-12,730,\n",
                    encoding="utf-8")
    assert load_script(csv_) == [Reweigh(TRUST, 480_000, 1.5), Reweigh("STALL:A-12", 730_000)]
    bad = tmp_path / "bad.csv"
    bad.write_text("code,weight_g\nTR-1,1250\nTR-2,12x\n", encoding="utf-8")
    with pytest.raises(StationScriptError, match=r"bad\.csv: entry 2"):
        load_script(bad)
    with pytest.raises(StationScriptError, match="outside 10 e"):
        StationEmulator(load_profile(PROFILE), [Reweigh("TR-1", 16_000_000)])
