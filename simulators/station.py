"""A fair-scale station (公平秤) without hardware: an emulated scale and a code scanner.

``scale-sim station`` opens two ptys: the scale (the profile's codec through
:class:`simulators.emulator.SerialEmulator`, as ``scale-sim serial``) and the scanner
(a USB barcode / QR scanner in serial mode: one line per code, CR LF). An agent's
``[[scale]]`` points ``port`` and ``scanner`` at them (``role = "fair"``). The station
then plays a script of re-weighs in real time: the code is scanned during the empty-pan
gap, ``scan_lead_ms`` before the goods are placed; the goods settle, stay, are lifted.

Script files (``--script``), one re-weigh per entry; ``code = ""`` is a weighing
without a scan (the agent sends it as a sale)::

    # TOML                                 # CSV (header required)
    [[reweigh]]                            code,weight_g,gap_s
    code = "3301020240501000042"           3301020240501000042,1250,3
    weight_g = 1250                        https://t.example/m/q3ZxY-_0aBcDeFgHiJk,480,2
    gap_s = 3        # empty pan before    STALL:A-12,730,2
"""

from __future__ import annotations

import csv
import os
import threading
import time
import tomllib
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_profiles.schema import Profile
from simulators.emulator import SerialEmulator, close_fds
from simulators.script import Load, round_to_e
from weighing.errors import GatewayError
from weighing.units import decimal_to_mg

SETTLE_MS = 500  # goods placed: readings in motion
REMOVE_MS = 300  # goods lifted


class StationScriptError(GatewayError, ValueError):
    """A station script is invalid (names the file or option and the entry)."""


@dataclass(frozen=True, slots=True)
class Reweigh:
    """One consumer at the station: a scan (``""``: none), then the goods on the pan."""

    code: str
    weight_mg: int
    gap_s: float = 3.0  # empty pan before the goods are placed (the scan falls in it)


def reweigh(code: str, weight_g: object, gap_s: object = 3.0, *, where: str = "") -> Reweigh:
    """A validated :class:`Reweigh` from text or TOML values (weight in grams, exact)."""
    try:
        weight_mg = decimal_to_mg(str(weight_g), "g")
        gap = float(str(gap_s))
    except (GatewayError, ValueError) as err:
        raise StationScriptError(f"{where}: {err}") from None
    if weight_mg <= 0 or not 0 <= gap <= 3600:
        raise StationScriptError(f"{where}: weight_g must be > 0 and gap_s within 0–3600")
    if any(ch in code for ch in "\r\n"):
        raise StationScriptError(f"{where}: a code is one line")
    return Reweigh(code, weight_mg, gap)


def load_script(path: str | Path) -> list[Reweigh]:
    """Re-weighs from a ``.toml`` (``[[reweigh]]``) or ``.csv`` file (module docstring)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise StationScriptError(f"{p}: cannot read: {err.strerror}") from None
    rows: list[dict[str, Any]]
    if p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise StationScriptError(f"{p}: not valid TOML: {err}") from None
        rows = data.get("reweigh", [])
    else:
        rows = list(csv.DictReader(text.splitlines()))
    out = []
    for i, row in enumerate(rows):
        where = f"{p}: entry {i + 1}"
        if not isinstance(row, dict) or "weight_g" not in row or row["weight_g"] in (None, ""):
            raise StationScriptError(f"{where}: needs code and weight_g")
        out.append(reweigh(str(row.get("code") or ""), row["weight_g"],
                           row.get("gap_s") or 3.0, where=where))
    if not out:
        raise StationScriptError(f"{p}: no re-weighs ([[reweigh]] or CSV rows)")
    return out


class StationEmulator:
    """A scale pty (``path``) and a scanner pty (``scanner_path``) playing ``reweighs``."""

    def __init__(self, profile: Profile, reweighs: list[Reweigh], *, lead_ms: int = 5000,
                 hold_ms: int = 1500, scan_lead_ms: int = 1000,
                 line_end: bytes = b"\r\n") -> None:
        m = profile.metrology
        for r in reweighs:
            if not 10 * m.e_mg < r.weight_mg <= m.max_mg:
                raise StationScriptError(f"{r.weight_mg} mg is outside 10 e … Max of "
                                         f"{profile.id}")
        loads = [Load(round_to_e(r.weight_mg, m.e_mg), idle_ms=int(r.gap_s * 1000),
                      settle_ms=SETTLE_MS, hold_ms=hold_ms, remove_ms=REMOVE_MS)
                 for r in reweighs]
        self.scale = SerialEmulator(profile, loads, lead_ms=lead_ms)
        self.path = self.scale.path
        # the scan falls in the empty-pan gap before its goods (times from the start)
        self.schedule: list[tuple[int, bytes]] = []
        t = lead_ms
        for r, ld in zip(reweighs, loads, strict=True):
            place = t + ld.idle_ms
            if r.code:
                self.schedule.append((place - min(scan_lead_ms, ld.idle_ms // 2),
                                      r.code.encode() + line_end))
            t = place + ld.settle_ms + ld.hold_ms + ld.remove_ms
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.scanner_path = os.ttyname(self._slave)
        self.scans_sent = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StationEmulator:
        t0 = time.monotonic()  # the scale's script starts now too
        self._thread = threading.Thread(target=self._scan, args=(t0,), name="station-scanner",
                                        daemon=True)
        self.scale.start()
        self._thread.start()
        return self

    def _scan(self, t0: float) -> None:
        for t_ms, line in self.schedule:
            if self._stop.wait(max(0.0, t0 + t_ms / 1000 - time.monotonic())):
                return
            try:
                os.write(self._master, line)
                self.scans_sent += 1
            except OSError:
                return
        while not self.scale.done.is_set():
            if self._stop.wait(0.1):
                return
        self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self.scale.stop()
        if self._thread:
            self._thread.join(2)
        close_fds(self._master, self._slave)

    def __enter__(self) -> StationEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
