"""Modbus RTU/TCP frame sources: a register map polled through pymodbus (imperative shell).

* :class:`ModbusLine` is one link: a serial port (RTU) or one TCP connection (a device, or
  a gateway in front of an RS-485 line). It serialises requests with a lock, sets each
  request's own timeout, and translates pymodbus errors into :class:`TransportError` /
  :class:`TransportTimeoutError` (``raise … from err``) – nothing from pymodbus leaks out.
* After a timeout the line is *dirty*: the late answer of a slow slave may still arrive and
  would be read as the answer to the next request (neuron #1602, grid-x/modbus #78). So the
  input is flushed right after the timeout and again before the next request
  (``reset_input_buffer`` on serial, a non-blocking drain on TCP). pymodbus also drops
  frames whose slave id or transaction id does not match the request.
* :class:`ModbusFrameSource` executes the map's read plan (``build_read_plan``) once per
  poll and decodes it (``decode_registers``); ``extras`` keeps raw AD, calibration
  registers, counters and identity of the last poll; ``send`` writes tare/zero commands.
* :class:`ModbusBus` shares one line among several slaves, polled round-robin. Each slave
  has its own timeout and, after a failure, a jittered exponential backoff, so a silent
  slave costs the others at most its timeout once per backoff period. Per-slave state is
  inspectable (:meth:`ModbusBus.states`). The bus's clock is injectable (``clock=``,
  ``time.monotonic`` by default), so a test can check the schedule without racing it.

The sync pymodbus clients are used: ``poll(timeout_s)`` is called from a plain thread.
"""

from __future__ import annotations

import contextlib
import random
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import serial
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from device_profiles.codecs import Command, FrameError, WeightFrame
from device_profiles.modbus_map import (
    Function,
    ModbusMap,
    ReadBlock,
    build_read_plan,
    decode_registers,
    encode_command,
)
from device_profiles.schema import LinkKind, Profile
from edge_agent.transport import FrameSource, Polled, TransportError, TransportTimeoutError


class ModbusDeviceError(TransportError):
    """The slave answered with a Modbus exception response (illegal address, busy, ...)."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


def _parse_tcp(tcp: tuple[str, int] | str) -> tuple[str, int]:
    if isinstance(tcp, tuple):
        return tcp
    host, _, port = tcp.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TCP target {tcp!r} is not host:port")
    return host, int(port)


def _close(client: Any) -> None:
    """Close a pymodbus client: its ``close()`` is unannotated (pymodbus 3.x), which a
    typed caller may not call directly; taken as ``Any`` here, in one place."""
    client.close()


class ModbusLine:
    """One RTU port or TCP connection; thread-safe, one request at a time."""

    def __init__(
        self,
        *,
        rtu: str | None = None,
        tcp: tuple[str, int] | str | None = None,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        if (rtu is None) == (tcp is None):
            raise ValueError("give exactly one of rtu= (a serial port) or tcp= (host, port)")
        self.name = rtu if rtu is not None else "{}:{}".format(*_parse_tcp(tcp))  # type: ignore[arg-type]
        self._client: ModbusSerialClient | ModbusTcpClient
        if rtu is not None:
            self._client = ModbusSerialClient(
                rtu, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                retries=0, timeout=1.0, name=f"modbus-rtu {rtu}",
            )
        else:
            host, port = _parse_tcp(tcp)  # type: ignore[arg-type]
            self._client = ModbusTcpClient(host, port=port, retries=0, timeout=1.0,
                                           name=f"modbus-tcp {self.name}")
        self._lock = threading.Lock()
        self._dirty = False

    def open(self) -> None:
        with self._lock:
            self._connect()

    def close(self) -> None:
        with self._lock:
            _close(self._client)

    def _connect(self) -> None:
        try:
            ok = self._client.connect()
        except (ModbusException, OSError, serial.SerialException) as err:
            raise TransportError(f"cannot open Modbus line {self.name}: {err}") from err
        if not ok:
            raise TransportError(f"cannot open Modbus line {self.name}")

    def _flush(self) -> None:
        """Drop input bytes that arrived after a timeout (a late answer)."""
        sock = self._client.socket
        if sock is None:
            return
        try:
            if isinstance(sock, serial.SerialBase):
                sock.reset_input_buffer()
            else:
                while select.select([sock], [], [], 0)[0]:
                    if not sock.recv(4096):
                        break
        except (OSError, serial.SerialException):
            _close(self._client)  # reconnect on the next request
        self._dirty = False

    def _execute(self, what: str, slave: int, timeout_s: float, call: Any) -> Any:
        with self._lock:
            self._connect()
            if self._dirty:
                self._flush()
            self._client.comm_params.timeout_connect = timeout_s
            try:
                response = call(self._client)
            except ModbusIOException as err:
                self._flush()
                self._dirty = True  # flush again before the next request
                if "No response" in str(err):
                    raise TransportTimeoutError(
                        f"{self.name} slave {slave}: no answer to {what} within {timeout_s} s"
                    ) from err
                raise TransportError(f"{self.name} slave {slave}: {what}: {err}") from err
            except ConnectionException as err:
                _close(self._client)
                raise TransportError(f"{self.name} slave {slave}: {what}: {err}") from err
            except (ModbusException, OSError, serial.SerialException) as err:
                _close(self._client)
                raise TransportError(f"{self.name} slave {slave}: {what}: {err}") from err
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise ModbusDeviceError(
                f"{self.name} slave {slave}: {what}: exception code {code}", code=code
            )
        return response

    def read(self, slave: int, block: ReadBlock, *, timeout_s: float) -> list[int]:
        """Read one block of registers from ``slave``."""
        what = f"read {block.function} 0x{block.address:04X}+{block.count}"
        registers: list[int] = []
        # A late answer to an earlier, timed-out request can arrive while this one is in
        # flight and be taken for its answer (transaction ids drift after a timeout,
        # grid-x/modbus #78). An answer of the wrong device or size is such a stray: drop
        # it, flush the line and ask once more.
        for _attempt in range(2):
            if block.function is Function.INPUT:
                response = self._execute(what, slave, timeout_s, lambda c: c.read_input_registers(
                    block.address, count=block.count, device_id=slave))
            else:
                response = self._execute(
                    what, slave, timeout_s, lambda c: c.read_holding_registers(
                        block.address, count=block.count, device_id=slave))
            registers = list(response.registers)
            dev = getattr(response, "dev_id", slave)
            if len(registers) == block.count and dev in (slave, 0):
                return registers
            with self._lock:
                self._dirty = True
        raise TransportError(
            f"{self.name} slave {slave}: {what}: got {len(registers)} registers twice"
        )

    def write(self, slave: int, address: int, words: list[int], *, timeout_s: float) -> None:
        """Write holding registers (FC 16, or FC 6 for a single register)."""
        what = f"write 0x{address:04X}={words}"
        if len(words) == 1:
            self._execute(what, slave, timeout_s,
                          lambda c: c.write_register(address, words[0], device_id=slave))
        else:
            self._execute(what, slave, timeout_s,
                          lambda c: c.write_registers(address, words, device_id=slave))


class SlaveHealth(StrEnum):
    UNKNOWN = "unknown"  # not polled yet
    OK = "ok"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True, slots=True)
class SlaveState:
    """What the supervisor sees of one slave (times from the bus's clock)."""

    slave: int
    name: str
    health: SlaveHealth
    consecutive_failures: int = 0
    next_try_s: float = 0.0
    last_error: str | None = None
    reads_ok: int = 0
    reads_failed: int = 0
    last_latency_s: float | None = None


class ModbusFrameSource(FrameSource):
    """One Modbus device as a frame source: each poll reads the plan and decodes one frame.

    Standalone (``rtu=`` or ``tcp=``), ``poll`` paces itself to ``poll_interval_s`` and
    raises :class:`TransportError` / :class:`TransportTimeoutError` on link failures. On a
    running :class:`ModbusBus` (``bus.add_slave``) the bus polls and ``poll`` returns what
    it collected for this slave.
    """

    def __init__(
        self,
        map_: ModbusMap,
        *,
        rtu: str | None = None,
        tcp: tuple[str, int] | str | None = None,
        line: ModbusLine | None = None,
        slave: int | None = None,
        timeout_s: float = 0.3,
        poll_interval_s: float = 0.1,
        name: str | None = None,
        **line_settings: Any,
    ) -> None:
        self.map = map_
        self.plan = build_read_plan(map_)
        self.slave = map_.slave if slave is None else slave
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._own_line = line is None
        self.line = line if line is not None else ModbusLine(rtu=rtu, tcp=tcp, **line_settings)
        self.name = name or f"{self.line.name}#{self.slave}"
        self.extras: dict[str, Any] | None = None  # of the last successful poll
        self.last_frame: WeightFrame | None = None
        self._next_due = 0.0
        self._bus: ModbusBus | None = None
        self._queue: deque[Polled | TransportError] = deque(maxlen=256)
        self.dropped = 0  # bus results dropped because this source's queue was full
        self.state = SlaveState(self.slave, self.name, SlaveHealth.UNKNOWN)

    @classmethod
    def from_profile(cls, profile: Profile, **kwargs: Any) -> ModbusFrameSource:
        """A source for ``profile`` (its map, timeout, poll interval, serial settings)."""
        if profile.modbus is None:
            raise TransportError(f"profile {profile.id} has no [modbus] register map")
        link = profile.link
        kwargs.setdefault("timeout_s", link.timeout_ms / 1000)
        kwargs.setdefault("poll_interval_s", link.poll_interval_ms / 1000)
        if link.kind is LinkKind.MODBUS_RTU and "line" not in kwargs:
            for k in ("baudrate", "bytesize", "parity", "stopbits"):
                kwargs.setdefault(k, getattr(link, k))
        return cls(profile.modbus, **kwargs)

    @property
    def bus(self) -> ModbusBus | None:
        """The bus that polls this slave (a shared line), or None (the source polls)."""
        return self._bus

    def open(self) -> None:
        if self._own_line:
            self.line.open()

    def close(self) -> None:
        if self._own_line:
            self.line.close()

    def read_once(self) -> Polled:
        """Execute the read plan now; decode errors go to ``Polled.errors``."""
        values = {b: self.line.read(self.slave, b, timeout_s=self.timeout_s) for b in self.plan}
        try:
            frame, extras = decode_registers(self.map, values)
        except FrameError as err:
            return Polled(errors=[err], nbytes=2 * sum(b.count for b in self.plan))
        self.extras, self.last_frame = extras, frame
        return Polled(frames=[frame], nbytes=2 * sum(b.count for b in self.plan))

    def poll(self, timeout_s: float) -> Polled:
        if self._bus is not None and self._bus.running:
            return self._drain(timeout_s)
        wait = self._next_due - time.monotonic()
        if wait > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            return Polled()
        if wait > 0:
            time.sleep(wait)
        self._next_due = time.monotonic() + self.poll_interval_s
        return self.read_once()

    def _drain(self, timeout_s: float) -> Polled:
        assert self._bus is not None
        cond = self._bus._cond
        with cond:
            cond.wait_for(lambda: bool(self._queue) or not self._bus.running, timeout_s)  # type: ignore[union-attr]
            items = list(self._queue)
            self._queue.clear()
        out = Polled()
        failure: TransportError | None = None
        for item in items:
            if isinstance(item, TransportError):
                failure = item
            else:
                out.frames += item.frames
                out.errors += item.errors
                out.nbytes += item.nbytes
        if failure is not None and not out.frames:
            raise failure
        return out

    def send(self, command: Command) -> None:
        """Write the map's register for ``command`` (``tare``, ``zero``, ...)."""
        decimals = self.last_frame.decimals if self.last_frame else None
        address, words = encode_command(self.map, command, decimals=decimals)
        self.line.write(self.slave, address, words, timeout_s=self.timeout_s)


class ModbusBus:
    """Several slaves on one shared line, polled round-robin with per-slave backoff."""

    def __init__(
        self,
        *,
        rtu: str | None = None,
        tcp: tuple[str, int] | str | None = None,
        poll_interval_s: float = 0.1,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        **line_settings: Any,
    ) -> None:
        self.line = ModbusLine(rtu=rtu, tcp=tcp, **line_settings)
        self.clock = clock  # schedules polls and backoffs; request timeouts are real time
        self.poll_interval_s = poll_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._sources: list[ModbusFrameSource] = []
        self._next: dict[int, float] = {}
        self._rr = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_slave(
        self, map_: ModbusMap, *, slave: int | None = None, timeout_s: float = 0.3,
        name: str | None = None,
    ) -> ModbusFrameSource:
        """Attach a slave; the returned source is what that scale's worker polls."""
        src = ModbusFrameSource(map_, line=self.line, slave=slave, timeout_s=timeout_s,
                                poll_interval_s=self.poll_interval_s, name=name)
        if any(s.slave == src.slave for s in self._sources):
            raise ValueError(f"slave {src.slave} is already on this bus")
        src._bus = self
        self._sources.append(src)
        self._next[src.slave] = 0.0
        return src

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> None:
        with contextlib.suppress(TransportError):  # a dead line is retried per request
            self.line.open()

    def close(self) -> None:
        self.stop()
        self.line.close()

    def __enter__(self) -> ModbusBus:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def states(self) -> dict[int, SlaveState]:
        """Per-slave health: ok / backing off, next try time, consecutive failures."""
        with self._cond:
            return {s.slave: s.state for s in self._sources}

    def _backoff_s(self, failures: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (failures - 1))
        return delay * (0.5 + 0.5 * self._rng.random())  # "equal jitter"

    def poll_round(self) -> dict[int, Polled | TransportError]:
        """Poll every slave that is due, once, starting one further each round."""
        results: dict[int, Polled | TransportError] = {}
        n = len(self._sources)
        order = [self._sources[(self._rr + i) % n] for i in range(n)] if n else []
        self._rr = (self._rr + 1) % max(n, 1)
        for src in order:
            if self.clock() < self._next[src.slave]:
                continue
            results[src.slave] = self._poll_slave(src)
        return results

    def _poll_slave(self, src: ModbusFrameSource) -> Polled | TransportError:
        t0 = self.clock()
        result: Polled | TransportError
        try:
            result = src.read_once()
        except TransportError as err:
            result = err
        t1 = self.clock()
        st = src.state
        with self._cond:
            if isinstance(result, TransportError):
                fails = st.consecutive_failures + 1
                self._next[src.slave] = t1 + self._backoff_s(fails)
                src.state = replace(st, health=SlaveHealth.BACKING_OFF, consecutive_failures=fails,
                                    next_try_s=self._next[src.slave], last_error=str(result),
                                    reads_failed=st.reads_failed + 1, last_latency_s=t1 - t0)
            else:
                self._next[src.slave] = t0 + self.poll_interval_s
                src.state = replace(st, health=SlaveHealth.OK, consecutive_failures=0,
                                    next_try_s=self._next[src.slave], reads_ok=st.reads_ok + 1,
                                    last_latency_s=t1 - t0)
            if len(src._queue) == src._queue.maxlen:
                src.dropped += 1
            src._queue.append(result)
            self._cond.notify_all()
        return result

    def start(self) -> None:
        """Poll in a background thread until :meth:`stop`."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"modbus-bus {self.line.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_round()
            due = min(self._next.values(), default=self.clock() + self.poll_interval_s)
            self._stop.wait(max(0.0, min(due - self.clock(), self.poll_interval_s)))
