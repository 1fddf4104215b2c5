"""Full-path fleet mode: real edge agents read emulated scales over ptys (tens of scales).

Every trade scale of the world becomes a ``toledo-15kg-5g`` (continuous output with a
print key) played by a :class:`FramePlayer` on a pty; one real
:class:`edge_agent.agent.Agent` per market reads them, runs its weighing state machine,
outbox, signing and publisher. Only cheats the byte stream can express are injected:

* ``remote-gain`` / ``chip-gain`` / ``chip-additive``: the displayed weight of each load
  (invisible to the stream rules without a trace code, as on real scales of this type);
* ``impact``: the print key pressed at the peak while the goods still move;
* ``preset-base``: every reading, the empty pan included, offset by the base.

Times are wall-clock (the agent stamps events with its own clock), so the truth's
onsets are the wall times at which the emulator plays the first cheated frame.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from device_profiles.codecs import WeightFrame
from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from simulators import goods as gd
from simulators.emulator import SerialEmulator
from simulators.fleet_config import World
from simulators.script import Load, timeline

FULL_PATH_MODEL = "toledo-15kg-5g"
FULL_PATH_KINDS = ("remote-gain", "chip-gain", "chip-additive", "impact", "preset-base")


class FramePlayer(SerialEmulator):
    """A serial emulator that plays a prepared list of ``(t_ms, WeightFrame)``."""

    def __init__(self, profile: Any, frames: list[tuple[int, WeightFrame]], **kw: Any) -> None:
        super().__init__(profile, [], **kw)
        self.frames = frames
        self.t0 = 0.0

    def _play(self) -> None:
        self.t0 = time.monotonic()
        for t_ms, frame in self.frames:
            due = self.t0 + t_ms / 1000 / self.speed
            while not self._stop.is_set():
                delay = due - time.monotonic()
                if delay <= 0:
                    break
                time.sleep(min(delay, 0.05))
            if self._stop.is_set():
                return
            self._current = frame
            self._send(self.codec.encode(frame))
        self.done.set()
        while not self._stop.is_set():
            time.sleep(0.05)


def _wait(done: Callable[[], bool], timeout_s: float) -> None:
    """Until ``done()`` or ``timeout_s`` has passed (the caller goes on either way)."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)


def full_path_world(world: World) -> World:
    """The world with every trade scale a toledo-15kg-5g and only byte-stream cheats."""
    for spec in world.scales.values():
        if spec.role == "trade":
            spec.model = FULL_PATH_MODEL
    world.scenarios = {d: [s for s in v if s.kind in FULL_PATH_KINDS]
                       for d, v in world.scenarios.items()}
    return world


def scale_frames(world: World, device: str, *, loads: int, onset_load: int,
                 lead_ms: int = 1500) -> tuple[list[tuple[int, WeightFrame]], dict[str, Any]]:
    """Frames of ``loads`` sales of one scale and the truth of its scenario (if any)."""
    spec = world.scales[device]
    profile = load_profile(spec.m.profile)
    e, rate = profile.metrology.e_mg, profile.emulator.frame_rate_hz
    rng = random.Random(f"{world.cfg.fleet.seed}:full:{device}")
    merchant = world.merchants[spec.merchant or ""]
    scenarios = world.scenarios.get(device)
    sc = scenarios[0] if scenarios else None
    frames: list[tuple[int, WeightFrame]] = []
    t = lead_ms
    truth: dict[str, Any] = {"kind": sc.kind if sc else None, "size": sc.size if sc else None,
                             "onset_offset_ms": None, "short_sales": []}
    base = round(sc.size * 1_000_000 / e) * e if sc and sc.kind == "preset-base" else 0
    for i in range(loads):
        goods = gd.BY_PLU[rng.choice(sorted(merchant.prices))]
        true_mg = min(gd.purchase_mg(goods, rng), spec.m.max_mg // 2)
        active = sc is not None and i >= onset_load
        shown = true_mg
        if active and sc is not None and sc.kind in ("remote-gain", "chip-gain"):
            shown = int(true_mg * (1 + sc.size))
        elif active and sc is not None and sc.kind == "chip-additive":
            shown = true_mg + int(sc.size * 1_000_000)
        load = Load(mass_mg=round(shown / e) * e, idle_ms=rng.randrange(2500, 4000),
                    settle_ms=600, hold_ms=1500, remove_ms=300)
        part = list(timeline([load], e_mg=e, frame_rate_hz=rate, t0_ms=t, tail_ms=0))
        impact = active and sc is not None and sc.kind == "impact"
        if impact:  # the print key at the peak, while the goods still move
            k = max(range(len(part)), key=lambda j: part[j][1].weight_mg)
            part[k] = (part[k][0], replace(part[k][1], print_request=True))
        if active and truth["onset_offset_ms"] is None:
            truth["onset_offset_ms"] = part[0][0] if base else part[-1][0]
        if base:
            part = [(tt, replace(f, weight_mg=f.weight_mg + base, zero=False)) for tt, f in part]
        frames += part
        t = part[-1][0] + 1000 // int(rate)
        if active:
            truth["short_sales"].append(i)
    frames += [(t + k * 50, WeightFrame(weight_mg=base, stable=True, tare_mg=0,
                                        zero=base == 0)) for k in range(60)]
    return frames, truth


def run_full_path(world: World, mqtt_url: str, work: Path, *, loads: int = 12,
                  onset_load: int = 3, settle_s: float = 8.0) -> dict[str, Any]:
    """Play every trade scale through a real agent; returns the (wall-clock) truth.

    The scales start once every agent has its ports open; after the last frame the
    agents get at most ``settle_s`` to read what is left and publish their outboxes
    (no longer than they need).
    """
    players: dict[str, FramePlayer] = {}
    truths: dict[str, Any] = {}
    for dev, spec in world.scales.items():
        if spec.role != "trade":
            continue
        frames, tr = scale_frames(world, dev, loads=loads, onset_load=onset_load)
        players[dev] = FramePlayer(load_profile(spec.m.profile), frames,
                                   seed=spec.index)
        truths[dev] = tr
    agents = []
    for market in world.markets:
        devs = [d for d in players if world.scales[d].market == market]
        if not devs:
            continue
        agents.append(Agent(AgentConfig.model_validate({
            "agent": {"market": market, "outbox": str(work / f"outbox-{market}.db"),
                      "heartbeat_s": 30},
            "mqtt": {"url": mqtt_url},
            "scale": [{"device": d, "profile": world.scales[d].m.profile,
                       "port": players[d].path, "key": world.scales[d].key_hex,
                       "samples": False} for d in devs],
        })))
    for a in agents:
        a.start()
    # the agents open their ports before the scales talk (a port is flushed as it opens)
    _wait(lambda: all(w.stats.state == "running" for a in agents for w in a.workers), 60.0)
    wall0 = int(time.time() * 1000)
    for p in players.values():
        p.start()
    try:
        while not all(p.done.is_set() for p in players.values()):
            time.sleep(0.2)
        # the last loads end (each agent has read every frame), the outboxes publish
        _wait(lambda: all(
            w.stats.frames >= players[w.cfg.device].stats.frames
            - players[w.cfg.device].stats.dropped_writes for a in agents for w in a.workers)
            and not any(a.outbox.depth() for a in agents), settle_s)
    finally:
        for a in agents:
            a.stop()
        for p in players.values():
            p.stop()
    scales = {}
    for dev, tr in truths.items():
        kind = tr["kind"]
        scen = [] if kind is None else [{
            "kind": kind, "size": tr["size"], "effective": True,
            "onset_ms": wall0 + int(tr["onset_offset_ms"] or 0), "short_sales": tr["short_sales"],
            "cheated_sales": len(tr["short_sales"])}]
        spec = world.scales[dev]
        scales[dev] = {"market": spec.market, "merchant": spec.merchant, "model": spec.model,
                       "role": spec.role, "scenarios": scen, "reweighs": []}
    return {"version": 1, "mode": "full-path", "start_ms": wall0, "scales": scales}
