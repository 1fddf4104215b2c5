"""Modbus weighing-transmitter emulator: a real pymodbus server playing a load script.

One server (TCP on ``host:port``, or RTU on a serial device such as one end of a socat
pty pair) serves one or more slave ids. Each slave's registers follow a profile's
register map and show the script's frame for the current time: the frame index is
``elapsed × frame_rate`` (the script plays in real time at the profile's frame rate, and
then repeats, or holds the empty pan with ``repeat=False``). The register image is
rendered by :func:`device_profiles.modbus_map.encode_registers` – the very function the
tests invert – inside the server's request hook, so a read always sees one consistent
frame and no updater thread races the server.

The physics is a small load-cell model, so calibration cheats show in the numbers:
``raw_ad = factory_zero + mass × factory_span / Max`` (plus drift), and the displayed gross
is ``(raw_ad − cal_zero) × Max / cal_span`` rounded to e, minus the zero-setting offset.
Writing ``cal_span`` / ``cal_zero`` over Modbus (or :meth:`ModbusEmulator.recalibrate`)
changes what the scale shows and bumps the CAL counter.

Faults: ``silent`` slave ids never answer (requests are dropped before the datastore, as
on a line where that device is dead); ``delay_s`` answers late (stale bytes for the
client to flush); ``noise_e`` adds ±n e jitter (reported unstable); ``drift_e_per_min``
drifts the zero.

The pymodbus 3.16 server is given ``SimDevice``/``SimData`` (the non-deprecated datastore
API; pinned in pyproject because it is marked experimental).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device_profiles.codecs import WeightFrame
from device_profiles.modbus_map import (
    Function,
    ModbusMap,
    RegType,
    decode_value,
    encode_registers,
    mg_to_steps,
    steps_to_mg,
)
from device_profiles.schema import Profile, load_profile
from gateway_server.ingest.broker import free_port
from simulators.script import Load, random_script, round_to_e, timeline

_FC_FUNCTION = {3: Function.HOLDING, 6: Function.HOLDING, 16: Function.HOLDING,
                23: Function.HOLDING, 4: Function.INPUT}
FACTORY_ZERO_AD = 120_000  # AD counts of the empty pan


@dataclass
class SlaveModel:
    """The state of one emulated transmitter (mutated under the emulator's lock)."""

    slave: int
    factory_span: int  # AD counts for a load of Max
    cal_zero: int = FACTORY_ZERO_AD
    cal_span: int = 0  # set to factory_span at start
    zero_offset_mg: int = 0
    tare_mg: int = 0
    cal_counter: int = 0
    cfg_counter: int = 0
    identity: dict[str, Any] = field(default_factory=dict)


class ModbusEmulator:
    """A pymodbus server in a background thread; ``start``/``stop`` or ``with``."""

    def __init__(
        self,
        profile: Profile,
        *,
        tcp: tuple[str, int] | None = None,
        rtu: str | None = None,
        slaves: Sequence[int] = (1,),
        script: list[Load] | None = None,
        repeat: bool = True,
        silent: Sequence[int] = (),
        delay_s: dict[int, float] | None = None,
        noise_e: int = 0,
        drift_e_per_min: float = 0.0,
        seed: int = 1,
    ) -> None:
        if profile.modbus is None:
            raise ValueError(f"profile {profile.id} has no [modbus] register map")
        if (tcp is None) == (rtu is None):
            raise ValueError("give exactly one of tcp=(host, port) or rtu=path")
        self.profile, self.map = profile, profile.modbus
        self.tcp, self.rtu = tcp, rtu
        self.e_mg, self.max_mg = profile.metrology.e_mg, profile.metrology.max_mg
        self.rate_hz = profile.emulator.frame_rate_hz
        loads = script if script is not None else random_script(profile, 4, seed=seed, fast=True)
        self.frames: list[WeightFrame] = [
            f for _, f in timeline(loads, e_mg=self.e_mg, frame_rate_hz=self.rate_hz)]
        self.repeat = repeat
        self.silent = set(silent)
        self.delay_s = dict(delay_s or {})
        self.noise_e, self.drift_e_per_min, self.seed = noise_e, drift_e_per_min, seed
        self.decimals = self._display_decimals()
        span = self.max_mg // 10  # one AD count per 10 mg: integral for every e ≥ 10 mg
        self.models = {
            s: SlaveModel(s, factory_span=span, cal_span=span,
                          identity=self._identity(s)) for s in slaves}
        self._lock = threading.Lock()
        self._t0 = 0.0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.requests = 0

    # -- model -------------------------------------------------------------------------

    def _display_decimals(self) -> int:
        if self.map.decimals is not None:
            return self.map.decimals
        d = 0  # enough decimals to show e exactly in the map's unit
        while mg_to_steps_ok(self.e_mg, d, self.map) is False:
            d += 1
        return d

    def _identity(self, slave: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, reg in self.map.identity.items():
            if reg.type is RegType.STRING:
                out[name] = f"EMU{slave:03d}-{name.upper()}"[: 2 * reg.width]
            else:
                out[name] = 100 + slave
        return out

    def frame_at(self, slave: int, t_s: float) -> tuple[WeightFrame, dict[str, Any]]:
        """The frame and extras slave ``slave`` shows ``t_s`` seconds after start."""
        m = self.models[slave]
        idx = int(t_s * self.rate_hz)
        if self.repeat:
            idx %= len(self.frames)
        base = self.frames[min(idx, len(self.frames) - 1)]
        mass = base.weight_mg
        stable = base.stable
        if self.noise_e:
            k = random.Random(hash((self.seed, slave, idx))).randint(-self.noise_e, self.noise_e)
            mass += k * self.e_mg
            stable = stable and k == 0
        drift_counts = round(self.drift_e_per_min * t_s / 60 * self.e_mg * m.factory_span
                             / self.max_mg)
        raw_ad = FACTORY_ZERO_AD + mass * m.factory_span // self.max_mg + drift_counts
        gross = round_to_e((raw_ad - m.cal_zero) * self.max_mg // m.cal_span, self.e_mg)
        gross -= m.zero_offset_mg
        over = gross > self.max_mg + 9 * self.e_mg
        frame = WeightFrame(
            weight_mg=gross - m.tare_mg, stable=stable, net=m.tare_mg != 0, tare_mg=m.tare_mg,
            overload=over, zero=gross == 0, decimals=self.decimals, unit=str(self.map.unit))
        extras = {"raw_ad": raw_ad, "cal_zero": m.cal_zero, "cal_span": m.cal_span,
                  "counters": {"cal": m.cal_counter, "cfg": m.cfg_counter},
                  "identity": m.identity}
        return frame, extras

    def now_s(self) -> float:
        return time.monotonic() - self._t0

    def recalibrate(self, slave: int, *, span: int | None = None, zero: int | None = None,
                    bump_counter: bool = True) -> None:
        """Emulate a recalibration (or a 改标定 cheat): new span/zero, CAL counter + 1."""
        with self._lock:
            m = self.models[slave]
            if span is not None:
                m.cal_span = span
            if zero is not None:
                m.cal_zero = zero
            if bump_counter:
                m.cal_counter += 1

    def set_silent(self, slave: int, silent: bool = True) -> None:
        with self._lock:
            (self.silent.add if silent else self.silent.discard)(slave)

    # -- server hooks --------------------------------------------------------------------

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if not sending and (pdu.dev_id in self.silent or pdu.dev_id not in self.models):
            return None  # dropped: no answer at all, as from a dead device on the line
        return pdu

    async def _action(self, slave: int, fc: int, start: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None,
                      ) -> ExcCodes | None:
        self.requests += 1
        if (delay := self.delay_s.get(slave)) is not None:
            await asyncio.sleep(delay)
        function = _FC_FUNCTION.get(fc, Function.HOLDING)
        with self._lock:
            if values is not None and fc in (6, 16, 23):
                result = self._write(slave, address, [int(v) for v in values])
                if result is not None:
                    return result
            frame, extras = self.frame_at(slave, self.now_s())
            image = encode_registers(self.map, frame, extras=extras, decimals=self.decimals)
        for (f, a), word in image.items():
            if f is function and 0 <= a - start < len(registers):
                registers[a - start] = word
        return None

    def _write(self, slave: int, address: int, words: list[int]) -> ExcCodes | None:
        """Apply a host write: a command, a tare, or a calibration register."""
        m, regs = self.models[slave], self.map.registers
        for name, spec in self.map.commands.items():
            if spec.address != address or len(words) != spec.as_register().width:
                continue
            value = decode_value(spec.as_register(), words, self.map)
            if spec.value is not None and value != spec.value:
                continue
            frame, _ = self.frame_at(slave, self.now_s())
            gross = frame.weight_mg + (frame.tare_mg or 0)
            if name == "zero":
                m.zero_offset_mg += gross
            elif name == "clear_tare":
                m.tare_mg = 0
            elif name == "tare" and spec.value is not None:
                m.tare_mg = gross
            else:  # a preset tare in display steps
                m.tare_mg = steps_to_mg(int(value), self.decimals, self.map.unit)
            return None
        if regs.tare is not None and address == regs.tare.address:
            steps = int(decode_value(regs.tare, words, self.map))
            m.tare_mg = steps_to_mg(steps, self.decimals, self.map.unit)
            return None
        for attr in ("cal_zero", "cal_span"):
            reg = getattr(regs, attr)
            if reg is not None and address == reg.address and len(words) == reg.width:
                value = int(decode_value(reg, words, self.map))
                if attr == "cal_span" and value <= 0:
                    return ExcCodes.ILLEGAL_VALUE
                setattr(m, attr, value)
                m.cal_counter += 1  # the event logger sees every calibration write
                return None
        return ExcCodes.ILLEGAL_ADDRESS

    def _devices(self) -> list[SimDevice]:
        spans = [(r.function, r.address + r.width) for _, r in self.map.named_registers()]
        spans += [(Function.HOLDING, c.address + c.as_register().width)
                  for c in self.map.commands.values()]
        top = {f: max([end for g, end in spans if g is f], default=1) for f in Function}

        def block(f: Function) -> list[SimData]:
            return [SimData(0, count=top[f] + 1, values=0, datatype=DataType.REGISTERS)]

        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        devices = []
        for s in self.models:
            async def action(fc: int, start: int, address: int, count: int, regs: list[int],
                             values: Any, _s: int = s) -> ExcCodes | None:
                return await self._action(_s, fc, start, address, count, regs, values)

            devices.append(SimDevice(s, simdata=(bits, list(bits), block(Function.HOLDING),
                                                 block(Function.INPUT)), action=action))
        return devices

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> ModbusEmulator:
        """Start serving; returns when the server listens (raises if it cannot)."""
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="modbus-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("Modbus emulator did not start")
        if self._error is not None:
            raise RuntimeError(f"Modbus emulator failed: {self._error}") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # reported to start()
            self._error = err
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        devices = self._devices()
        # pymodbus 3.16 annotates trace_pdu as returning a PDU, but its request handler
        # drops a request whose trace returns None (server/requesthandler.py: "if
        # self.last_pdu"): the silent slave relies on that
        trace = cast("Callable[[bool, ModbusPDU], ModbusPDU]", self._trace_pdu)
        server: ModbusTcpServer | ModbusSerialServer
        if self.tcp is not None:
            server = ModbusTcpServer(devices, address=self.tcp, trace_pdu=trace)
        else:
            server = ModbusSerialServer(devices, port=self.rtu or "", trace_pdu=trace,
                                        baudrate=self.profile.link.baudrate)
        await server.serve_forever(background=True)
        self._t0 = time.monotonic()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus 3.16: unannotated

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> ModbusEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mg_to_steps_ok(mass_mg: int, decimals: int, map_: ModbusMap) -> bool:
    try:
        mg_to_steps(mass_mg, decimals, map_.unit)
    except ValueError:
        return False
    return True


def run_modbus_emulator(
    profile_id: str,
    *,
    tcp: tuple[str, int] | None = None,
    rtu: str | None = None,
    slaves: Sequence[int] = (1,),
    script: list[Load] | None = None,
    silent: Sequence[int] = (),
    duration_s: float | None = None,
    **faults: Any,
) -> int:
    """Serve ``profile_id`` until interrupted (or ``duration_s``); the CLI's entry point."""
    profile = load_profile(profile_id)
    with ModbusEmulator(profile, tcp=tcp, rtu=rtu, slaves=slaves, script=script,
                        silent=silent, **faults) as emu:
        where = f"tcp {tcp[0]}:{tcp[1]}" if tcp else f"rtu {rtu}"
        print(f"modbus emulator {profile.id} on {where}, slaves {list(slaves)}"
              f"{f', silent {list(silent)}' if silent else ''}", flush=True)
        try:
            if duration_s is None:
                threading.Event().wait()
            else:
                time.sleep(duration_s)
        except KeyboardInterrupt:
            pass
        del emu
    return 0


__all__ = ["ModbusEmulator", "SlaveModel", "free_port", "run_modbus_emulator"]
