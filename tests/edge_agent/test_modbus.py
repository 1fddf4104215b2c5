"""Modbus sources against the real pymodbus emulator: TCP on a free loopback port and RTU
over a socat pty pair; a silent slave on a shared line; error translation."""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_profiles.codecs.base import TARE, Command
from device_profiles.modbus_map import encode_value
from device_profiles.schema import Profile, load_profile
from edge_agent.modbus import ModbusBus, ModbusDeviceError, ModbusFrameSource, SlaveHealth
from edge_agent.transport import Polled, TransportError, TransportTimeoutError
from simulators.modbus_server import ModbusEmulator, free_port
from simulators.script import Load

GENERIC = load_profile("modbus-transmitter-generic")  # RTU, 30 kg / 10 g
LOWFIRST = load_profile("modbus-indicator-lowfirst")  # TCP, 60 kg / 20 g

SCRIPT = [
    Load(mass_mg=5_000_000, idle_ms=400, settle_ms=300, hold_ms=900, remove_ms=200),
    Load(mass_mg=12_340_000, idle_ms=400, settle_ms=300, hold_ms=900, remove_ms=200),
]


def require_binary(name: str) -> str:
    """Path of ``name``; skip without it, unless CI is set (then the test fails)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked ptys from socat: the emulator opens one end, the client the other."""
    socat = require_binary("socat")
    a, b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            assert proc.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat did not create the pty links"
            time.sleep(0.02)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _script_end_s(emu: ModbusEmulator) -> float:
    return len(emu.frames) / emu.rate_hz


def _read_whole_script(emu: ModbusEmulator, src: ModbusFrameSource) -> list[Polled]:
    polls = []
    with src:
        while emu.now_s() < _script_end_s(emu) + 0.3:
            polls.append(src.poll(1.0))
    return polls


def _check_follows_script(emu: ModbusEmulator, polls: list[Polled]) -> None:
    frames = [f for p in polls for f in p.frames]
    assert not [e for p in polls for e in p.errors]
    assert len(frames) > 100
    shown = {f.weight_mg for f in emu.frames}
    assert {f.weight_mg for f in frames} <= shown  # nothing the script did not show
    settled = {f.weight_mg for f in frames if f.stable}
    assert settled == {f.weight_mg for f in emu.frames if f.stable} == {0, 5_000_000, 12_340_000}


def test_tcp_frames_follow_the_script() -> None:
    port = free_port()
    with ModbusEmulator(LOWFIRST, tcp=("127.0.0.1", port), script=SCRIPT, repeat=False) as emu:
        src = ModbusFrameSource.from_profile(LOWFIRST, tcp=f"127.0.0.1:{port}",
                                             poll_interval_s=0.02)
        _check_follows_script(emu, _read_whole_script(emu, src))
        assert src.extras is not None
        assert src.extras["identity"]["serial"] == "EMU001-SERIAL"
        assert src.extras["counters"] == {"cal": 0, "cfg": 0}


def test_rtu_over_socat_frames_follow_the_script(pty_pair: tuple[str, str]) -> None:
    device_end, host_end = pty_pair
    with ModbusEmulator(GENERIC, rtu=device_end, script=SCRIPT, repeat=False) as emu:
        src = ModbusFrameSource.from_profile(GENERIC, rtu=host_end, poll_interval_s=0.02)
        _check_follows_script(emu, _read_whole_script(emu, src))
        assert src.extras is not None and src.extras["cal_span"] == 3_000_000


def test_commands_and_calibration_writes_are_seen() -> None:
    port = free_port()
    assert GENERIC.modbus is not None
    long_hold = [Load(mass_mg=5_000_000, idle_ms=200, settle_ms=200, hold_ms=60_000)]
    with ModbusEmulator(GENERIC, tcp=("127.0.0.1", port), script=long_hold) as emu, \
            ModbusFrameSource(GENERIC.modbus, tcp=("127.0.0.1", port)) as src:
        while not (f := src.read_once().frames[0]).stable or f.weight_mg != 5_000_000:
            time.sleep(0.02)
        src.send(TARE)
        f = src.read_once().frames[0]
        assert f.net and f.tare_mg == 5_000_000 and f.weight_mg == 0
        src.send(Command("clear_tare"))
        before = src.read_once()
        assert before.frames[0].weight_mg == 5_000_000 and src.extras is not None
        cal = src.extras["counters"]["cal"]
        # the cheat vector: a span write over Modbus makes the same load weigh 10 % more
        span = GENERIC.modbus.registers.cal_span
        assert span is not None
        words = encode_value(span, 3_000_000 * 10 // 11, GENERIC.modbus)
        src.line.write(1, span.address, words, timeout_s=0.5)
        after = src.read_once().frames[0]
        assert after.weight_mg == 5_500_000
        assert src.extras["counters"]["cal"] == cal + 1
        emu.recalibrate(1, span=3_000_000)
        src.read_once()
        assert src.extras["counters"]["cal"] == cal + 2
        with pytest.raises(ModbusDeviceError) as info:  # the status register is read-only
            src.line.write(1, 0x08, [0], timeout_s=0.5)
        assert isinstance(info.value, TransportError) and info.value.code == 2


def test_errors_are_translated() -> None:
    port = free_port()
    src = ModbusFrameSource(LOWFIRST.modbus, tcp=("127.0.0.1", port), timeout_s=0.2)  # type: ignore[arg-type]
    with pytest.raises(TransportError) as info:
        src.open()  # nobody listens
    assert not isinstance(info.value, TransportTimeoutError)
    with ModbusEmulator(LOWFIRST, tcp=("127.0.0.1", port), slaves=[1], silent=[1]), src:
        t0 = time.monotonic()
        with pytest.raises(TransportTimeoutError) as tinfo:
            src.read_once()
        assert 0.15 < time.monotonic() - t0 < 2.0
        assert type(tinfo.value.__cause__).__module__.startswith("pymodbus")


def _run_bus(bus: ModbusBus, seconds: float) -> dict[int, list[tuple[float, float, bool]]]:
    """Drive ``poll_round`` for ``seconds``; per slave: (end time, latency, ok)."""
    log: dict[int, list[tuple[float, float, bool]]] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        results = bus.poll_round()
        states = bus.states()
        for slave, result in results.items():
            latency = states[slave].last_latency_s
            assert latency is not None
            log.setdefault(slave, []).append(
                (time.monotonic(), latency, not isinstance(result, TransportError)))
        time.sleep(0.01)
    return log


@pytest.mark.parametrize("link", ["rtu", "tcp"])
def test_silent_slave_does_not_stall_the_others(link: str, request: pytest.FixtureRequest) -> None:
    silent_timeout_s, healthy_timeout_s, interval_s = 0.4, 0.4, 0.05
    if link == "rtu":
        device_end, host_end = request.getfixturevalue("pty_pair")
        emu_kw: dict = {"rtu": device_end}
        bus = ModbusBus(rtu=host_end, poll_interval_s=interval_s, seed=7)
        profile: Profile = GENERIC
    else:
        port = free_port()
        emu_kw = {"tcp": ("127.0.0.1", port)}
        bus = ModbusBus(tcp=("127.0.0.1", port), poll_interval_s=interval_s, seed=7)
        profile = LOWFIRST
    with ModbusEmulator(profile, slaves=[1, 2], script=SCRIPT, **emu_kw), bus:
        assert profile.modbus is not None
        for s in (1, 2):
            bus.add_slave(profile.modbus, slave=s, timeout_s=healthy_timeout_s)
        bus.add_slave(profile.modbus, slave=3, timeout_s=silent_timeout_s)  # nobody answers
        log = _run_bus(bus, 3.0)
        states = bus.states()

    silent = log[3]
    assert not any(ok for _, _, ok in silent)
    assert all(0.9 * silent_timeout_s <= lat < silent_timeout_s + 0.5 for _, lat, _ in silent)
    assert 2 <= len(silent) <= 6  # backoff: 0.5, 1, 2 s (jittered) after each failure
    assert states[3].health is SlaveHealth.BACKING_OFF and states[3].consecutive_failures >= 2
    for s in (1, 2):
        reads = log[s]
        assert all(ok for _, _, ok in reads) and len(reads) >= 15
        latencies = [lat for _, lat, _ in reads]
        # a healthy read never waits for the silent slave: it stays within its own budget
        assert max(latencies) < healthy_timeout_s
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(reads)]
        # between two reads of a healthy slave, at most one silent timeout (plus slack)
        assert max(gaps) < silent_timeout_s + interval_s + 0.75
        assert states[s].health is SlaveHealth.OK
        print(f"\n{link} slave {s}: {len(reads)} reads, latency median "
              f"{statistics.median(latencies) * 1000:.1f} ms max {max(latencies) * 1000:.1f} ms, "
              f"max gap {max(gaps) * 1000:.0f} ms; silent slave: {len(silent)} attempts, "
              f"{statistics.mean(lat for _, lat, _ in silent) * 1000:.0f} ms each")


def test_late_answers_are_flushed_and_bus_thread_delivers() -> None:
    port = free_port()
    # slave 2 answers after 0.5 s, its timeout is 0.2 s: its late answers arrive while the
    # bus already talks to slave 1; they must not be taken for slave 1's answers
    with ModbusEmulator(LOWFIRST, tcp=("127.0.0.1", port), slaves=[1, 2], script=SCRIPT,
                        delay_s={2: 0.5}) as emu, \
            ModbusBus(tcp=("127.0.0.1", port), poll_interval_s=0.02, backoff_base_s=0.1,
                      backoff_max_s=0.3, seed=1) as bus:
        assert LOWFIRST.modbus is not None
        one = bus.add_slave(LOWFIRST.modbus, slave=1, timeout_s=0.3)
        two = bus.add_slave(LOWFIRST.modbus, slave=2, timeout_s=0.2)
        bus.start()
        frames, end = [], time.monotonic() + 2.0
        while time.monotonic() < end:
            polled = one.poll(0.5)
            assert not polled.errors
            frames += polled.frames
        with pytest.raises(TransportTimeoutError):
            two.poll(0.5)
        emu.delay_s.clear()  # slave 2 recovers after its backoff
        deadline = time.monotonic() + 3.0
        while bus.states()[2].health is not SlaveHealth.OK:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        bus.stop()
    assert len(frames) > 30
    assert {f.weight_mg for f in frames} <= {f.weight_mg for f in emu.frames}


def test_tcp_read_rate() -> None:
    port = free_port()
    with ModbusEmulator(LOWFIRST, tcp=("127.0.0.1", port)) as _emu, \
            ModbusFrameSource(LOWFIRST.modbus, tcp=("127.0.0.1", port),  # type: ignore[arg-type]
                              poll_interval_s=0) as src:
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 1.0:
            assert src.poll(1.0).frames
            n += 1
        rate = n / (time.monotonic() - t0)
    print(f"\ntcp: {rate:.0f} polls/s of {len(src.plan)} reads each")
    assert rate > 20  # generous: a 2-core machine under load
