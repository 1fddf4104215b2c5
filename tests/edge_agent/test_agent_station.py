"""A fair-scale station end to end: a scale on one pty, a code scanner on another (or on
a TCP line), the real agent, a real Mosquitto. A scan followed by a weighing arrives as
a signed ``reweigh``; a weighing without a scan as a ``sale``; bad scans are counted and
never stop the station; a lost scanner is reported once and the scale keeps weighing."""

from __future__ import annotations

import os
import socket
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edge_helpers import KEY, KEY_HEX, Collector, write_config
from support import Mosquitto, free_port, wait_until

from device_profiles.codecs import WeightFrame, make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, ConfigError, load_config
from edge_agent.metrics import MetricsServer
from weighing import wire
from weighing.signing import verify_event

PROFILE = "toledo-15kg-5g"  # continuous output, 20 frames/s, e = 5 g, window 400 ms
DEVICE = "fair-1"
TOKEN = "q3ZxY-_0aBcDeFgHiJkLmNoP"


class Pty:
    """Both ends of a raw pty: the agent opens ``path``, the test writes to ``master``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class Station:
    """The scale pty fed frame by frame in real time (20 frames/s), and the agent."""

    def __init__(self, tmp: Path, mosquitto: Mosquitto, *, scanner: str | None = None) -> None:
        profile = load_profile(PROFILE)
        self.codec = make_codec(profile.protocol, profile.codec)
        self.scale = Pty()
        self.scanner = Pty()
        # the agent reaches the scanner through a link of this test's own: unplugged, it
        # stays gone, whereas /dev/pts/N is soon reused by another test's pty (xdist
        # workers), which the retrying agent would open and read
        self.scanner_port = tmp / "scanner-tty"
        self.scanner_port.symlink_to(self.scanner.path)
        self.col = Collector(mosquitto.port)
        self.agent = Agent(AgentConfig.model_validate({
            "agent": {"market": "m-test", "outbox": str(tmp / "outbox.db"), "heartbeat_s": 60},
            "mqtt": {"url": mosquitto.url, "max_delay_ms": 50},
            "scale": [{"device": DEVICE, "profile": PROFILE, "port": self.scale.path,
                       "role": "fair", "scanner": scanner or str(self.scanner_port),
                       "key": KEY_HEX}]}))
        self.agent.start()
        if scanner is None:
            # pyserial flushes the input at open: scans before that are lost (as on a
            # real line), so the test scans only once the agent reads the scanner
            wait_until(lambda: self.station()["scanner"] == "open", 60, what="scanner open")

    def close(self) -> None:
        self.agent.stop()
        self.col.close()
        self.scale.close()
        self.scanner.close()

    def station(self) -> dict[str, Any]:
        return self.agent.status()["scales"][DEVICE]["station"]  # type: ignore[index, no-any-return]

    def scan(self, line: bytes, *, accepted: int | None = None, errors: int = 0) -> None:
        """Write a scanner line; wait until the agent has taken it."""
        self.scanner.write(line)
        if accepted is not None:
            wait_until(lambda: self.station()["scans"] == accepted
                       and self.station()["scan_errors"] == errors, 60,
                       what=f"{accepted} scans and {errors} scan errors")

    def weigh(self, weight_mg: int) -> None:
        """Goods placed, settled for 0.7 s, lifted: one committed weighing."""
        w = weight_mg
        steps = ([(0, True)] * 4 + [(w * 6 // 10 // 5000 * 5000, False), (w + 40_000, False)]
                 + [(w, True)] * 14 + [(w // 2 // 5000 * 5000, False)] + [(0, True)] * 4)
        for weight, stable in steps:
            self.scale.write(self.codec.encode(WeightFrame(weight_mg=weight, stable=stable,
                                                           tare_mg=0)))
            time.sleep(0.05)

    def wait_events(self, n: int) -> list[wire.Event]:
        """The first ``n`` reweigh / sale events (deduplicated, in seq order)."""

        def got() -> list[wire.Event]:
            return [e for _, e in sorted(self.col.by_seq(DEVICE).items())
                    if isinstance(e, wire.ReweighEvent | wire.SaleEvent)]

        return wait_until(lambda: len(got()) >= n and got(), 120,  # type: ignore[no-any-return]
                          what=f"{n} reweigh/sale events")[:n]


@pytest.fixture
def station(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Station]:
    s = Station(tmp_path, mosquitto)
    yield s
    s.close()


def test_scans_turn_weighings_into_reweighs_and_an_unscanned_weighing_is_a_sale(
    station: Station,
) -> None:
    station.scan(b"TR-20261128-0001\r\n", accepted=1)
    station.weigh(1_250_000)
    # trust QR (gateway_server.registry.qr.trust_url); this scanner ends lines with LF only
    station.scan(f"https://trust.example.org/m/{TOKEN}\n".encode(), accepted=2)
    station.weigh(480_000)
    station.weigh(2_000_000)
    receipt, trust, sale = station.wait_events(3)

    assert isinstance(receipt, wire.ReweighEvent)
    assert (receipt.trace_code, receipt.merchant_token, receipt.stall_no) == (
        "TR-20261128-0001", None, None)
    assert (receipt.reference_mg, receipt.claimed_mg) == (1_250_000, None)
    assert isinstance(trust, wire.ReweighEvent)
    assert (trust.merchant_token, trust.trace_code, trust.reference_mg) == (TOKEN, None, 480_000)
    assert isinstance(sale, wire.SaleEvent) and sale.settled_mg == 2_000_000
    assert receipt.seq < trust.seq < sale.seq
    assert all(verify_event(KEY, DEVICE, e) for e in (receipt, trust, sale))
    st = station.station()
    assert (st["reweighs"], st["unpaired"], st["scan_errors"], st["pending"]) == (2, 1, 0, False)


def test_bad_scans_are_rejected_and_counted_and_the_next_good_scan_pairs(
    station: Station,
) -> None:
    station.scan(b"\x07\x1b[2JTR-1\r\n")  # control characters (a terminal escape)
    station.scan(b"A" * 300 + b"\r\n")  # longer than a trace code may be
    station.scan(b"https://example.org/about\r\n")  # a URL of neither kind
    station.scan(b"STALL:B-07\r\n", accepted=1, errors=3)
    station.weigh(730_000)
    (reweigh,) = station.wait_events(1)

    assert isinstance(reweigh, wire.ReweighEvent)
    assert (reweigh.stall_no, reweigh.trace_code, reweigh.reference_mg) == ("B-07", None, 730_000)
    st = station.station()
    assert st["scan_errors_by_reason"] == {"bad-character": 1, "too-long": 1, "bad-url": 1}
    assert station.agent.status()["scales"][DEVICE]["restarts"] == 0  # type: ignore[index]
    with MetricsServer(station.agent.status) as ms:
        text = httpx.get(f"http://127.0.0.1:{ms.port}/metrics", timeout=5).text
    assert f'scaleedge_scan_errors_total{{device="{DEVICE}"}} 3' in text
    assert f'scaleedge_reweighs_total{{device="{DEVICE}"}} 1' in text
    assert f'scaleedge_scanner_up{{device="{DEVICE}"}} 1' in text


def test_a_lost_scanner_is_reported_once_and_the_scale_keeps_weighing(
    station: Station,
) -> None:
    station.scanner_port.unlink()  # unplugged: the device node goes away
    station.scanner.close()  # and the line hangs up
    (fault,) = wait_until(lambda: station.col.faults(DEVICE, "scanner-lost"), 60,
                          what="a scanner-lost fault")
    station.weigh(900_000)
    (sale,) = station.wait_events(1)

    assert isinstance(sale, wire.SaleEvent) and sale.settled_mg == 900_000
    assert str(station.scanner_port) in fault.detail
    # retried with backoff (0.5 s, 1 s, ...) while the scale went on; reported once
    wait_until(lambda: station.station()["scanner_failures"] >= 2, 60, what="a retry")
    assert len(station.col.faults(DEVICE, "scanner-lost")) == 1
    status = station.agent.status()["scales"][DEVICE]  # type: ignore[index]
    assert (status["restarts"], status["station"]["scanner"]) == (0, "down")


def test_a_scanner_line_that_comes_back_is_used_again(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    # a scanner behind a serial-to-network adapter (pyserial socket://): a real TCP line
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(120)
    s = Station(tmp_path, mosquitto, scanner=f"socket://127.0.0.1:{port}")
    try:
        conn, _ = server.accept()
        conn.close()  # the line drops
        wait_until(lambda: s.col.faults(DEVICE, "scanner-lost"), 60, what="scanner-lost")
        conn, _ = server.accept()  # the agent reconnects after its backoff
        with conn:
            # pyserial discards what is pending right after connecting: scan after that
            wait_until(lambda: s.station()["scanner"] == "open", 60, what="scanner back")
            conn.sendall(b"TR-NET-7\r\n")
            wait_until(lambda: s.station()["scans"] == 1, 60, what="the scan over TCP")
            s.weigh(1_000_000)
            (reweigh,) = s.wait_events(1)
    finally:
        s.close()
        server.close()
    assert isinstance(reweigh, wire.ReweighEvent) and reweigh.trace_code == "TR-NET-7"
    assert len(s.col.faults(DEVICE, "scanner-lost")) == 1


def test_a_scanner_on_a_trade_scale_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "agent.toml", agent={"market": "m-test"}, mqtt_={},
        scales=[{"device": "s-1", "profile": PROFILE, "port": "/dev/ttyUSB0",
                 "scanner": "/dev/ttyACM0"}])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and "scale.0" in msg and "scanner" in msg and 'role = "fair"' in msg
    # the same file with role = "fair" loads, with the default pairing window
    write_config(path, agent={"market": "m-test"}, mqtt_={},
                 scales=[{"device": "s-1", "profile": PROFILE, "port": "/dev/ttyUSB0",
                          "scanner": "/dev/ttyACM0", "role": "fair"}])
    scale = load_config(path).scale[0]
    assert (scale.scanner, scale.pair_window_s) == ("/dev/ttyACM0", 120)


@pytest.mark.parametrize("window", [0, -1, 3601])
def test_the_pairing_window_is_bounded(tmp_path: Path, window: float) -> None:
    path = write_config(
        tmp_path / "agent.toml", agent={"market": "m-test"}, mqtt_={},
        scales=[{"device": "s-1", "profile": PROFILE, "port": "/dev/ttyUSB0", "role": "fair",
                 "scanner": "/dev/ttyACM0", "pair_window_s": window}])
    with pytest.raises(ConfigError, match="pair_window_s"):
        load_config(path)
