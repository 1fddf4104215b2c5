"""Modbus sources against the real pymodbus emulator: TCP on a free loopback port and RTU
over a socat pty pair; a silent slave on a shared line; error translation.

No test counts frames in a wall-clock window: scripts repeat until what is checked has
been seen, and the bus's schedule is checked on a clock the test advances (issue 13).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import socat_pty_pair, wait_until

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


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked ptys from socat: the emulator opens one end, the client the other."""
    with socat_pty_pair(tmp_path / "a", tmp_path / "b") as ends:
        yield ends


class SteppedEmulator(ModbusEmulator):
    """The emulator showing the script at the time the test sets (``t_s``), not the wall
    clock's: a read plan of several requests then sees one frame, however slowly it runs
    (on a live script a slow reader takes the status of one frame and the weight of the
    next — what a real transmitter does too, and what the agent's software check is for)."""

    t_s = 0.0

    def now_s(self) -> float:
        return self.t_s


def _check_follows_script(emu: SteppedEmulator, src: ModbusFrameSource) -> None:
    """Step through every frame of the script; each poll decodes exactly that frame."""
    got = []
    with src:
        for i, want in enumerate(emu.frames):
            emu.t_s = (i + 0.5) / emu.rate_hz
            polled = src.poll(60.0)
            assert not polled.errors
            (frame,) = polled.frames
            assert (frame.weight_mg, frame.stable, frame.net, frame.overload) == (
                want.weight_mg, want.stable, want.net, want.overload), (i, frame, want)
            got.append(frame)
    assert {f.weight_mg for f in got if f.stable} == {0, 5_000_000, 12_340_000}


def test_tcp_frames_follow_the_script() -> None:
    port = free_port()
    with SteppedEmulator(LOWFIRST, tcp=("127.0.0.1", port), script=SCRIPT, repeat=False) as emu:
        src = ModbusFrameSource.from_profile(LOWFIRST, tcp=f"127.0.0.1:{port}",
                                             poll_interval_s=0, timeout_s=5.0)
        _check_follows_script(emu, src)
        assert src.extras is not None
        assert src.extras["identity"]["serial"] == "EMU001-SERIAL"
        assert src.extras["counters"] == {"cal": 0, "cfg": 0}


def test_rtu_over_socat_frames_follow_the_script(pty_pair: tuple[str, str]) -> None:
    device_end, host_end = pty_pair
    with SteppedEmulator(GENERIC, rtu=device_end, script=SCRIPT, repeat=False) as emu:
        # the profile's 0.3 s answer timeout is the device's; on a loaded 2-core machine the
        # emulator behind socat can take longer, and what is checked here is the frames
        src = ModbusFrameSource.from_profile(GENERIC, rtu=host_end, poll_interval_s=0,
                                             timeout_s=5.0)
        _check_follows_script(emu, src)
        assert src.extras is not None and src.extras["cal_span"] == 3_000_000


def test_commands_and_calibration_writes_are_seen() -> None:
    port = free_port()
    assert GENERIC.modbus is not None
    long_hold = [Load(mass_mg=5_000_000, idle_ms=200, settle_ms=200, hold_ms=60_000)]
    with ModbusEmulator(GENERIC, tcp=("127.0.0.1", port), script=long_hold) as emu, \
            ModbusFrameSource(GENERIC.modbus, tcp=("127.0.0.1", port)) as src:
        wait_until(lambda: (f := src.read_once().frames[0]).stable and f.weight_mg == 5_000_000,
                   60, 0.02, what="the load settled")
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
        # it waited for the answer (its own timeout), not failed at once; how much longer
        # it took on a loaded machine is no part of the contract
        assert time.monotonic() - t0 >= 0.15
        assert "within 0.2 s" in str(tinfo.value)
        assert type(tinfo.value.__cause__).__module__.startswith("pymodbus")


class SteppedClock:
    """The bus's clock, advanced by the test: the schedule no longer races the machine."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@dataclass(frozen=True)
class Read:
    """One request of the bus to one slave: real start/end times, clock times, outcome."""

    slave: int
    start_s: float  # time.monotonic(): how long the line was busy
    end_s: float
    clock_start_s: float  # the bus's clock: what the schedule is made of
    clock_end_s: float
    error: TransportError | None


def _spy_reads(sources: list[ModbusFrameSource], clock: SteppedClock, log: list[Read], *,
               blocked_s: dict[int, float]) -> None:
    """Record every read of ``sources`` in order. A failed read of a slave in
    ``blocked_s`` moves the clock on by that much: the line was busy for its timeout."""
    for src in sources:
        real = src.read_once

        def spy(src: ModbusFrameSource = src, real=real) -> Polled:  # type: ignore[no-untyped-def]
            c0, t0 = clock(), time.monotonic()
            try:
                result = real()
            except TransportError as err:
                clock.now_s += blocked_s.get(src.slave, 0.0)
                log.append(Read(src.slave, t0, time.monotonic(), c0, clock(), err))
                raise
            log.append(Read(src.slave, t0, time.monotonic(), c0, clock(), None))
            return result

        src.read_once = spy  # type: ignore[method-assign]


@pytest.mark.parametrize("link", ["rtu", "tcp"])
def test_silent_slave_does_not_stall_the_others(link: str, request: pytest.FixtureRequest) -> None:
    silent_timeout_s, healthy_timeout_s, interval_s, base_s = 0.4, 0.4, 0.05, 0.5
    clock = SteppedClock()
    bus_kw: dict = {"poll_interval_s": interval_s, "backoff_base_s": base_s, "seed": 7,
                    "clock": clock}
    if link == "rtu":
        device_end, host_end = request.getfixturevalue("pty_pair")
        emu_kw: dict = {"rtu": device_end}
        bus = ModbusBus(rtu=host_end, **bus_kw)
        profile: Profile = GENERIC
    else:
        port = free_port()
        emu_kw = {"tcp": ("127.0.0.1", port)}
        bus = ModbusBus(tcp=("127.0.0.1", port), **bus_kw)
        profile = LOWFIRST
    log: list[Read] = []
    attempts = 4
    with ModbusEmulator(profile, slaves=[1, 2], script=SCRIPT, **emu_kw), bus:
        assert profile.modbus is not None
        sources = [bus.add_slave(profile.modbus, slave=s, timeout_s=healthy_timeout_s)
                   for s in (1, 2)]
        sources.append(bus.add_slave(profile.modbus, slave=3, timeout_s=silent_timeout_s))
        _spy_reads(sources, clock, log, blocked_s={3: silent_timeout_s})

        def silent_attempts() -> bool:
            """One round; then how often the silent slave (nobody answers) was tried."""
            bus.poll_round()
            clock.now_s += interval_s
            return sum(r.slave == 3 for r in log) >= attempts

        wait_until(silent_attempts, 120, 0, what=f"{attempts} attempts on the silent slave")
        states = bus.states()

    silent = [r for r in log if r.slave == 3]
    # the silent slave: every attempt waited for its own timeout and failed as a timeout
    assert all(isinstance(r.error, TransportTimeoutError) for r in silent)
    assert all(r.end_s - r.start_s >= 0.9 * silent_timeout_s for r in silent)
    assert states[3].health is SlaveHealth.BACKING_OFF
    assert states[3].consecutive_failures == states[3].reads_failed == len(silent) == attempts
    # ... and is tried again only after its backoff: base × 2^(k-1), jittered by at most
    # half ("equal jitter"), so it costs the line one timeout per backoff period
    for k, (a, b) in enumerate(itertools.pairwise(silent), start=1):
        assert b.clock_start_s - a.clock_end_s >= 0.5 * base_s * 2 ** (k - 1) - 1e-9, (k, a, b)
    # the healthy slaves: never a failure, and read in every gap between two attempts on
    # the silent one (while it is failing, not only before or after)
    for s in (1, 2):
        reads = [r for r in log if r.slave == s]
        assert reads and all(r.error is None for r in reads), reads
        for a, b in itertools.pairwise(silent):
            assert any(a.clock_end_s <= r.clock_start_s < b.clock_start_s for r in reads), (s, a, b)
        assert states[s].health is SlaveHealth.OK and states[s].reads_failed == 0
    busy = [r.end_s - r.start_s for r in log if r.slave != 3]
    print(f"\n{link}: {len(busy)} healthy reads, median "
          f"{statistics.median(busy) * 1000:.1f} ms, max {max(busy) * 1000:.1f} ms; silent slave: "
          f"{len(silent)} attempts, "
          f"{statistics.mean(r.end_s - r.start_s for r in silent) * 1000:.0f} ms each")


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
        frames: list = []
        ok_at_failure: dict[int, int] = {}  # slave 2's failures → slave 1's reads by then

        def read_past_late_answers() -> bool:
            """Slave 1 keeps being read cleanly past three late answers of slave 2."""
            polled = one.poll(0.5)
            assert not polled.errors
            frames.extend(polled.frames)
            st = bus.states()
            ok_at_failure.setdefault(st[2].reads_failed, st[1].reads_ok)
            return st[2].reads_failed >= 3 and st[1].reads_ok > ok_at_failure[1] + 3

        wait_until(read_past_late_answers, 120, 0, what="slave 1 read past slave 2's late answers")
        with pytest.raises(TransportTimeoutError):  # its queue holds its failures
            two.poll(0.5)
        emu.delay_s.clear()  # slave 2 recovers after its backoff
        wait_until(lambda: bus.states()[2].health is SlaveHealth.OK, 60, 0.05,
                   what="slave 2 back to OK")
        bus.stop()
        assert bus.states()[1].reads_failed == 0
    assert frames
    assert {f.weight_mg for f in frames} <= {f.weight_mg for f in emu.frames}


def test_tcp_back_to_back_polls_each_read_the_whole_plan() -> None:
    """With ``poll_interval_s=0`` every poll reads at once and returns a frame. The rate is
    printed for information; throughput is measured in bench/, not asserted here."""
    port = free_port()
    with ModbusEmulator(LOWFIRST, tcp=("127.0.0.1", port)) as emu, \
            ModbusFrameSource(LOWFIRST.modbus, tcp=("127.0.0.1", port),  # type: ignore[arg-type]
                              poll_interval_s=0) as src:
        n, t0 = 50, time.monotonic()
        before = emu.requests
        for _ in range(n):
            assert len(src.poll(60.0).frames) == 1
        rate = n / (time.monotonic() - t0)
        assert emu.requests - before == n * len(src.plan)  # the whole plan, every poll
    print(f"\ntcp: {rate:.0f} polls/s of {len(src.plan)} reads each")
