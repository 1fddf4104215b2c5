"""``scale-sim station``: a fair-scale station without hardware. The command's ptys carry
the codes and the weights in the right order, and the real agent reading the emulator's
ptys sends a re-weigh for a scanned load and a sale for an unscanned one."""

from __future__ import annotations

import os
import secrets
import select
import subprocess
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
                                  client_id=f"test-station-sim-{secrets.token_hex(4)}")
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


class Line:
    """One pty the command prints, opened here as an agent would, read without blocking."""

    def __init__(self, printed: str) -> None:
        self.fd = os.open(printed.split('"')[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.data = b""
        self.open = True

    def drain(self) -> bytes:
        """Everything the command has written so far (b"" once it closed its end)."""
        got = b""
        while self.open:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            except OSError:  # EIO: the command closed its end
                chunk = b""
            if not chunk:
                self.open = False
            got += chunk
        self.data += got
        return got


def test_the_command_scans_each_code_before_its_goods_are_placed() -> None:
    # the last weighing (no scan) is a tail: the command closes its ptys when done, and
    # what an agent has not read by then is gone
    proc = subprocess.Popen(
        [str(BIN / "scale-sim"), "station", "--profile", PROFILE, "--code", "TR-1",
         "--weight-g", "500", "--code", TRUST, "--weight-g", "1250.5", "--code", "",
         "--weight-g", "300", "--gap-s", "0.6", "--hold-s", "0.8", "--lead-s", "0.3",
         "--exit-when-done"],
        stdout=subprocess.PIPE, text=True)
    profile = load_profile(PROFILE)
    codec = make_codec(profile.protocol, profile.codec)
    # Each line is read as soon as it has something; when one shows something new, the
    # other is read at once: what was sent there before is there by then. So "Y was sent
    # before X" is checked as "Y is there when X is seen", however late this reader runs.
    settled: list[int] = []  # weights, in the order they first showed settled
    scans_when_settled: dict[int, bytes] = {}  # weight → the scanner's bytes by then
    settled_when_scanned: dict[bytes, list[int]] = {}  # scanned line → weights settled by then
    lines: list[Line] = []
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        scanner_line = proc.stdout.readline().strip()
        assert port.startswith('port = "/dev/') and scanner_line.startswith('scanner = "/dev/')
        scale, scanner = Line(port), Line(scanner_line)
        lines += [scale, scanner]

        def read_scale() -> None:
            frames, errors = codec.feed(scale.drain())
            assert not errors
            for f in frames:
                if f.stable and f.weight_mg and f.weight_mg not in settled:
                    settled.append(f.weight_mg)
                    scanner.drain()
                    scans_when_settled[f.weight_mg] = scanner.data

        def read_scanner() -> None:
            scanner.drain()
            for line in scanner.data.splitlines(keepends=True):
                if line.endswith(b"\n") and line not in settled_when_scanned:
                    read_scale()
                    settled_when_scanned[line] = list(settled)

        def both_closed() -> bool:
            select.select([x.fd for x in lines if x.open], [], [], 0.1)
            read_scanner()
            read_scale()
            return not scale.open and not scanner.open

        wait_until(both_closed, 120, 0, what="the command to play its script and close")
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        for x in lines:
            os.close(x.fd)
    code1, code2 = b"TR-1\r\n", f"{TRUST}\r\n".encode()
    assert scanner.data == code1 + code2
    # 1250.5 g on a 5 g scale shows 1250 g
    assert settled == [500_000, 1_250_000, 300_000]
    # each code arrives before its goods settle, and after the goods before it settled
    assert code1 in scans_when_settled[500_000]
    assert 500_000 in settled_when_scanned[code2]
    assert code2 in scans_when_settled[1_250_000]


def test_the_real_agent_turns_the_emulated_station_into_a_reweigh_and_a_sale(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # the scan pairs with the weighing whose time follows the scan's: an agent starved of
    # the CPU for the whole 4 s from scan to lifting would read both at once and see the
    # scan last (the agent's pairing rule, not this test's timing)
    emu = StationEmulator(load_profile(PROFILE),
                          [Reweigh("TR-SIM-1", 750_000, gap_s=2.0), Reweigh("", 300_000, 0.6)],
                          lead_ms=300, hold_ms=2000)
    col = Events(mosquitto.port)
    agent = Agent(AgentConfig.model_validate({
        "agent": {"market": "m-test", "outbox": str(tmp_path / "o.db"), "heartbeat_s": 60},
        "mqtt": {"url": mosquitto.url, "max_delay_ms": 50},
        "scale": [{"device": "fair-sim", "profile": PROFILE, "port": emu.path, "role": "fair",
                   "scanner": emu.scanner_path}]}))
    agent.start()
    try:
        wait_until(lambda: agent.status()["scales"]["fair-sim"]["station"]["scanner"]  # type: ignore[index]
                   == "open", 60, what="scanner open")
        emu.start()

        def events() -> list[wire.Event]:
            return [e for e in list(col.events)
                    if isinstance(e, wire.ReweighEvent | wire.SaleEvent)]

        got = wait_until(lambda: len(events()) >= 2 and events(), 120, what="two weighings")
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
