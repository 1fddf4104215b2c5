"""A shared RS-485 line: three Modbus RTU slaves on ONE socat pty pair, the real agent
(``[[line]]`` configuration, one ``ModbusBus`` for the line) and a real Mosquitto.

The emulator on the far end of the pty answers for slave ids 1 and 2 and ignores id 3, as
a line where that transmitter is dead: devices 1 and 2 deliver their sales, device 3 is
reported (``transport-lost``, its slave backing off), 1 and 2 never notice. Then device 3
comes back and delivers too. Every wait is on a condition, never a timed window.

Also the ``[[line]]`` configuration's errors, and the old ``[[scale]]`` form loading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_helpers import KEY_HEX, Collector
from support import Mosquitto, socat_pty_pair, wait_until

from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import ConfigError, load_config
from edge_agent.metrics import render
from simulators.modbus_server import ModbusEmulator
from simulators.script import Load
from weighing import wire

GENERIC = load_profile("modbus-transmitter-generic")  # RTU, 30 kg / 10 g
SCRIPT = [
    Load(mass_mg=5_000_000, idle_ms=600, settle_ms=300, hold_ms=1200, remove_ms=200),
    Load(mass_mg=12_340_000, idle_ms=600, settle_ms=300, hold_ms=1200, remove_ms=200),
]
MASSES = {load.mass_mg for load in SCRIPT}
DEVICES = {1: "rs-01", 2: "rs-02", 3: "rs-03"}  # slave id -> device id


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked ptys from socat: the emulator opens one end, the agent's line the other."""
    with socat_pty_pair(tmp_path / "rs485-a", tmp_path / "rs485-b") as ends:
        yield ends


def line_config(path: Path, *, mqtt_url: str, line: str) -> Path:
    path.write_text(f"""\
[agent]
market = "m-test"
outbox = "outbox.db"
heartbeat_s = 60

[mqtt]
url = "{mqtt_url}"
max_delay_ms = 50
reconnect_max_s = 1

{line}""", encoding="utf-8")
    return path


def shared_line(port: str) -> str:
    out = f"""\
[[line]]
id = "rs485-a"
kind = "modbus-rtu"
port = "{port}"
backoff_max_s = 2
"""
    for slave, device in DEVICES.items():
        out += f"""
  [[line.device]]
  device = "{device}"
  profile = "modbus-transmitter-generic"
  slave = {slave}
  key = "{KEY_HEX}"
"""
        if slave != 3:  # generous for the answering slaves (a loaded CI machine); the
            out += "  timeout_ms = 2000\n"  # silent one keeps its profile's 300 ms
    return out


def test_three_slaves_on_one_line_a_silent_one_costs_the_others_nothing(
    tmp_path: Path, mosquitto: Mosquitto, pty_pair: tuple[str, str]
) -> None:
    agent_end, emulator_end = pty_pair
    cfg_path = line_config(tmp_path / "edge.toml", mqtt_url=mosquitto.url,
                           line=shared_line(agent_end))
    cfg = load_config(cfg_path)
    col = Collector(mosquitto.port)
    emu = ModbusEmulator(GENERIC, rtu=emulator_end, slaves=(1, 2, 3), silent=(3,),
                         script=SCRIPT, repeat=True)
    agent = Agent(cfg, config_path=cfg_path)
    d1, d2, d3 = DEVICES.values()

    def delivered(device: str) -> bool:
        return {s.settled_mg for s in col.sales(device)} >= MASSES

    emu.start()
    agent.start()
    try:
        # one line, one bus, three workers reading from it
        assert len(agent.lines) == 1 and agent.lines[0].bus is not None
        assert [w.cfg.device for w in agent.workers] == [d1, d2, d3]
        wait_until(lambda: delivered(d1) and delivered(d2), 120,
                   what="both loads of the script sold on devices 1 and 2")
        wait_until(lambda: col.faults(d3, "transport-lost"), 60,
                   what="device 3 reported as lost")
        status = agent.status()
        faults_3 = col.faults(d3, "transport-lost")
        sales_3 = col.sales(d3)
        emu.set_silent(3, False)  # the transmitter is repaired (or plugged back in)
        wait_until(lambda: delivered(d3), 120, what="device 3's sales once it answers")
        after = agent.status()
    finally:
        agent.stop()
        emu.stop()
        col.close()

    scales = status["scales"]
    assert isinstance(scales, dict)
    # device 3: reported once per outage, its slave backing off, no sale invented
    assert len(faults_3) == 1 and "slave 3" in (faults_3[0].detail or "")
    assert sales_3 == []
    line3 = scales[d3]["line"]
    assert line3["line"] == "rs485-a" and line3["slave"] == 3
    assert line3["health"] == "backing_off" and line3["reads_ok"] == 0
    assert line3["reads_failed"] >= 1 and "no answer" in line3["last_error"]
    # devices 1 and 2: every read answered, never restarted, nothing reported
    for device, slave in ((d1, 1), (d2, 2)):
        s = scales[device]
        assert s["line"]["slave"] == slave and s["line"]["health"] == "ok"
        assert s["line"]["reads_failed"] == 0 and s["line"]["reads_ok"] > 0
        assert s["restarts"] == 0 and s["state"] == "running", s
        assert not col.faults(device, "transport-lost")
        assert not col.faults(device, "worker-restart")
        assert {e.settled_mg for e in col.sales(device)} >= MASSES
    assert status["lines"] == {"rs485-a": {
        "port": agent_end, "devices": [d1, d2, d3], "kind": "modbus-rtu", "bus": "running",
        "bus_restarts": 0}}
    metrics = render(status)
    assert f'scaleedge_slave_up{{device="{d3}",line="rs485-a",slave="3"}} 0' in metrics
    assert f'scaleedge_slave_up{{device="{d1}",line="rs485-a",slave="1"}} 1' in metrics
    # once it answers, device 3 is read like the others, and its outage is over
    assert after["scales"][d3]["line"]["health"] == "ok"  # type: ignore[index]
    assert len(col.faults(d3, "transport-lost")) == 1
    assert all(isinstance(e, wire.SaleEvent) for e in col.sales(d3))


# -- configuration --------------------------------------------------------------------


def _load(tmp_path: Path, body: str) -> object:
    return load_config(line_config(tmp_path / "edge.toml", mqtt_url="mqtt://127.0.0.1:1883",
                                   line=body))


DEVICE = '\n  [[line.device]]\n  device = "{d}"\n  profile = "{p}"\n'


@pytest.mark.parametrize(("body", "key", "says"), [
    ('[[line]]\nid = "l1"\nkind = "modbus-rtu"\nport = "192.168.1.20:502"\n'
     + DEVICE.format(d="a", p="modbus-transmitter-generic"),
     "line.0", 'is a host:port, but a modbus-rtu line is a serial device'),
    ('[[line]]\nid = "l1"\nkind = "modbus-rtu"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="a", p="modbus-transmitter-generic") + "  slave = 1\n"
     + DEVICE.format(d="b", p="modbus-transmitter-generic") + "  slave = 1\n",
     "line.0.device.1.slave", "unit id 1 is also line.0.device.0 (a)"),
    # no slave set: both take the map's default unit id
    ('[[line]]\nid = "l1"\nkind = "modbus-rtu"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="a", p="modbus-transmitter-generic")
     + DEVICE.format(d="b", p="modbus-transmitter-generic"),
     "line.0.device.1.slave", "every device on a line needs its own slave id"),
    ('[[line]]\nid = "l1"\nkind = "serial"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="a", p="toledo-15kg-5g") + DEVICE.format(d="b", p="toledo-15kg-5g"),
     "line.0", "serial scale protocols carry no address"),
    ('[[line]]\nid = "l1"\nkind = "serial"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="a", p="modbus-transmitter-generic"),
     "line.0.device.0.profile", "is a Modbus device, line 'l1' is serial"),
    ('[[line]]\nid = "l1"\nkind = "modbus-rtu"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="a", p="toledo-15kg-5g"),
     "line.0.device.0.profile", "not Modbus"),
    ('[[line]]\nid = "l1"\nkind = "modbus-tcp"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="a", p="modbus-transmitter-generic"),
     "line.0", "a modbus-tcp line is host:port"),
    ('[[line]]\nid = "l1"\nkind = "modbus-tcp"\nport = "10.0.0.5:502"\nbaudrate = 9600\n'
     + DEVICE.format(d="a", p="modbus-transmitter-generic"),
     "line.0", "baudrate: serial settings on a modbus-tcp line"),
    ('[[line]]\nid = "l1"\nkind = "modbus-rtu"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="a", p="no-such-profile"),
     "line.0.device.0.profile", "no-such-profile"),
    # the old form: what docs/edge-agent.md's example did (RTU profile at a host:port)
    ('[[scale]]\ndevice = "a"\nprofile = "modbus-transmitter-generic"\n'
     'port = "192.168.1.20:502"\nslave = 3\n',
     "scale.0.port", 'use a [[line]] with kind = "modbus-tcp"'),
    # two old scales on one tty: the case [[line]] exists for
    ('[[scale]]\ndevice = "a"\nprofile = "modbus-transmitter-generic"\nport = "/dev/ttyUSB0"\n'
     'slave = 1\n\n[[scale]]\ndevice = "b"\nprofile = "modbus-transmitter-generic"\n'
     'port = "/dev/ttyUSB0"\nslave = 2\n',
     "scale.1.port", "devices sharing an RS-485 line go in one [[line]]"),
    ('[[scale]]\ndevice = "a"\nprofile = "toledo-15kg-5g"\nport = "/dev/ttyUSB0"\n\n'
     '[[line]]\nid = "l1"\nkind = "modbus-rtu"\nport = "/dev/ttyUSB0"\n'
     + DEVICE.format(d="b", p="modbus-transmitter-generic"),
     "line.0.port", "is also scale.0.port's"),
    ('[[scale]]\ndevice = "a"\nprofile = "toledo-15kg-5g"\nport = "/dev/ttyUSB0"\n\n'
     '[[line]]\nid = "l1"\nkind = "modbus-rtu"\nport = "/dev/ttyUSB1"\n'
     + DEVICE.format(d="a", p="modbus-transmitter-generic"),
     "line.0.device.0.device", "duplicate device id 'a' (also scale.0)"),
    ('', "", "no device: add a [[scale]] or a [[line]]"),
])
def test_a_bad_line_is_refused_naming_the_file_and_key(
    tmp_path: Path, body: str, key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, body)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "edge.toml")), msg
    assert f": {key}" in msg and says in msg, msg


def test_the_old_scale_form_loads_unchanged_and_each_scale_is_a_line_of_one(
    tmp_path: Path,
) -> None:
    cfg = _load(tmp_path, '[[scale]]\ndevice = "a"\nprofile = "toledo-15kg-5g"\n'
                          'port = "/dev/ttyUSB0"\n\n[[scale]]\ndevice = "b"\n'
                          'profile = "modbus-indicator-lowfirst"\nport = "10.0.0.5:502"\n\n'
                          '[[scale]]\ndevice = "c"\nprofile = "modbus-indicator-lowfirst"\n'
                          'port = "10.0.0.5:502"\nslave = 2\n')
    assert [(s.device, s.port) for s in cfg.scale] == [  # type: ignore[attr-defined]
        ("a", "/dev/ttyUSB0"), ("b", "10.0.0.5:502"), ("c", "10.0.0.5:502")]
    assert cfg.line == []  # type: ignore[attr-defined]


def test_the_documented_shared_line_example_loads(tmp_path: Path) -> None:
    """docs/edge-agent.md's ``[[line]]`` example (the one marked ``shared RS-485 line``)."""
    doc = (Path(__file__).parents[2] / "docs" / "edge-agent.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(# a shared RS-485 line.*?)```", doc, re.S)
    assert block, "the example is in docs/edge-agent.md"
    cfg = _load(tmp_path, block.group(1))
    lines = cfg.line  # type: ignore[attr-defined]
    kinds = {ln.id: (ln.kind.value, [d.slave for d in ln.device]) for ln in lines}
    assert kinds["rs485-a"] == ("modbus-rtu", [1, 2, 3])
    assert kinds["gw-hall-b"][0] == "modbus-tcp"
