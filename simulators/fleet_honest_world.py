"""Who has which honest behaviour: the assignment of ``[honest]`` to a fleet's world.

What each behaviour is, its settings and the pure functions that model it live in
:mod:`simulators.fleet_honest`; this module picks the units. Each behaviour draws from its
own generator seeded with (seed, behaviour), so it picks the same units alone or with the
others, and the world's cheats (assigned before) do not depend on it. The result,
:class:`HonestWorld`, is JSON-able where the truth carries it.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from simulators import goods as gd

if TYPE_CHECKING:
    from simulators.fleet_config import World

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass
class PriceSchedule:
    """What a merchant's scale charges and when (the registered versions are in the truth)."""

    changes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # PLU → (ms, fen)

    def at(self, plu: str, t_ms: int, base: int) -> int:
        got = self.changes.get(plu)
        if not got:
            return base
        i = bisect.bisect_right(got, (t_ms, 1 << 62))
        return got[i - 1][1] if i else base


@dataclass
class HonestWorld:
    """Who has which behaviour (JSON-able; the truth carries it)."""

    merchants: dict[str, dict[str, Any]] = field(default_factory=dict)  # code → settings
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)  # device → settings
    schedules: dict[str, PriceSchedule] = field(default_factory=dict)  # merchant → prices

    def of_scale(self, device: str) -> dict[str, Any]:
        return self.scales.get(device, {})

    def of_merchant(self, code: str) -> dict[str, Any]:
        return self.merchants.get(code, {})


def _rng(world: World, name: str) -> random.Random:
    return random.Random(f"{world.cfg.fleet.seed}:honest:{name}")


def _chosen(world: World, name: str, units: list[str], share: float) -> list[str]:
    """A fixed share of ``units`` (sorted), drawn from the behaviour's own generator."""
    rng = _rng(world, name)
    n = round(share * len(units))
    return sorted(rng.sample(sorted(units), n)) if n else []


def _problem_devices(world: World) -> set[str]:
    from simulators.fleet_config import CHEATS, FAULTS

    return {d for d, scs in world.scenarios.items()
            if any(s.kind in CHEATS + FAULTS for s in scs)}


def assign(world: World) -> HonestWorld:
    """Give the world's units their honest behaviours (after the scenarios)."""
    hw = HonestWorld()
    cfg = world.cfg.honest
    if not cfg.enabled():
        return hw
    _tray_styles(world, hw)
    if cfg.fair_scale.on():
        rng = _rng(world, "fair-scale")
        for market in world.markets:
            model = _pick_mix(rng, cfg.fair_scale.models)
            if model is not None:
                dev = world.fair[market]
                world.scales[dev].model = model
                hw.scales.setdefault(dev, {})["fair-scale"] = model
    _per_scale(world, hw)
    if cfg.drip_dry.on():
        for code in _chosen(world, "drip-dry", list(world.merchants), cfg.drip_dry.share):
            hw.merchants.setdefault(code, {})["drip-dry"] = cfg.drip_dry.factor
    if cfg.price_change.on():
        _price_changes(world, hw)
    if cfg.shared_scale.on():
        _shared_scales(world, hw)
    return hw


def _pick_mix(rng: random.Random, mix: dict[str, float]) -> str | None:
    u, acc = rng.random(), 0.0
    for option, share in sorted(mix.items()):
        acc += share
        if u < acc:
            return option
    return None


def _tray_styles(world: World, hw: HonestWorld) -> None:
    cfg = world.cfg.honest
    if not (cfg.no_tray.on() or cfg.bagged.on() or cfg.preset_tare.on()):
        return
    from simulators.fleet_config import MODELS

    rng = _rng(world, "tray")
    cheat_trays = {sc.merchant for scs in world.scenarios.values() for sc in scs
                   if sc.kind == "tray-not-tared"}
    for code in sorted(world.merchants):
        m = world.merchants[code]
        u = rng.random()
        nominal = rng.randint(*gd.TRAY_WEIGHT_G) * 1000
        if code in cheat_trays:
            continue  # the cheat is the tray left on: no other way of handling it
        tray = any(gd.BY_PLU[p].tray for p in m.prices)
        if not tray:
            if u < cfg.bagged.share:
                hw.merchants.setdefault(code, {})["tray"] = "bagged"
            continue
        names = ("bagged", "no-tray", "preset-tare")
        tops = accumulate((cfg.bagged.share, cfg.no_tray.share, cfg.preset_tare.share))
        style = next((n for n, top in zip(names, tops, strict=True) if u < top), None)
        if style is None:
            continue
        if style == "preset-tare":
            caps = [MODELS[world.scales[d].model] for d in m.devices]
            if not all(c.can("tare") for c in caps):
                continue  # a scale without a tare key has no preset tare either
            e = max(c.e_mg for c in caps)
            hw.merchants.setdefault(code, {})["tray"] = "preset-tare"
            hw.merchants[code]["preset_tare_mg"] = max(e, round(nominal / e) * e)
        else:
            hw.merchants.setdefault(code, {})["tray"] = style


def _per_scale(world: World, hw: HonestWorld) -> None:
    cfg = world.cfg.honest
    from simulators.fleet_config import MODELS

    trade = sorted(d for d, s in world.scales.items() if s.role == "trade")
    quiet = sorted(d for d in trade if not world.scenarios.get(d))  # no scenario at all
    if cfg.amount_rounding.on():
        rng = _rng(world, "amount-rounding")
        for dev in trade:
            mode = _pick_mix(rng, cfg.amount_rounding.modes)
            if mode is not None and MODELS[world.scales[dev].model].can("amount"):
                hw.scales.setdefault(dev, {})["amount-rounding"] = mode
    if cfg.zero_drift.on():
        zd = cfg.zero_drift
        rng = _rng(world, "zero-drift:params")
        for dev in _chosen(world, "zero-drift", trade, zd.share):
            hw.scales.setdefault(dev, {})["zero-drift"] = {
                "amplitude_e": round(rng.uniform(*zd.amplitude_e), 4),
                "period_h": round(rng.uniform(*zd.period_h), 3),
                "phase": round(rng.uniform(0, 2 * math.pi), 4)}
    if cfg.scale_error.on():
        rng = _rng(world, "scale-error:params")
        for dev in _chosen(world, "scale-error", trade, cfg.scale_error.share):
            f = rng.uniform(*cfg.scale_error.of_mpe) * rng.choice((-1, 1))
            hw.scales.setdefault(dev, {})["scale-error"] = round(f, 4)
    if cfg.new_scale.on():
        rng = _rng(world, "new-scale:params")
        hours = world.cfg.trading.hours
        for dev in _chosen(world, "new-scale", trade, cfg.new_scale.share):
            midday = dev in quiet and rng.random() < cfg.new_scale.midday
            at = world.cfg.start_ms + (int(rng.uniform(0.5, hours - 1.5) * HOUR_MS)
                                       if midday else 0)
            hw.scales.setdefault(dev, {})["new-scale"] = {"connected_ms": at}
    if cfg.clock_skew.on():
        rng = _rng(world, "clock-skew:params")
        lo, hi = cfg.clock_skew.minutes
        for dev in _chosen(world, "clock-skew", quiet, cfg.clock_skew.share):
            minutes = lo * (hi / lo) ** rng.random() * rng.choice((-1, 1))  # log-uniform
            hw.scales.setdefault(dev, {})["clock-skew"] = round(minutes, 2)
    if cfg.missing_heartbeats.on():
        for dev in _chosen(world, "missing-heartbeats", sorted(world.scales),
                           cfg.missing_heartbeats.share):
            hw.scales.setdefault(dev, {})["missing-heartbeats"] = cfg.missing_heartbeats.drop


def _price_changes(world: World, hw: HonestWorld) -> None:
    pc = world.cfg.honest.price_change
    rng = _rng(world, "price-change:params")
    start, hours = world.cfg.start_ms, world.cfg.trading.hours
    for code in _chosen(world, "price-change", list(world.merchants), pc.share):
        m = world.merchants[code]
        current = dict(m.prices)
        keyed: dict[str, int] = {}  # PLU → when the scale took its last change
        changes: list[dict[str, Any]] = []
        for day in range(world.cfg.fleet.days):
            times = sorted(rng.uniform(*pc.at_h) for _ in range(rng.randint(*pc.per_day)))
            for at_h in times:
                if at_h >= hours:
                    continue
                plu = rng.choice(sorted(m.prices))
                old = current[plu]
                step = 100 if old % 100 == 0 else 10
                new = max(step, round(old * (1 + rng.uniform(*pc.change)) / step) * step)
                if new == old:
                    continue
                # a PLU's next change comes after the scale has taken the last one: the
                # scale follows the register in order, never an older price after a newer
                reg_ms = max(start + day * DAY_MS + int(at_h * HOUR_MS), keyed.get(plu, 0))
                scale_ms = reg_ms + int(rng.uniform(*pc.lag_min) * 60_000)
                if reg_ms >= start + day * DAY_MS + int(hours * HOUR_MS):
                    continue
                current[plu], keyed[plu] = new, scale_ms
                changes.append({"plu": plu, "registered_ms": reg_ms, "scale_ms": scale_ms,
                                "old": old, "new": new})
        if changes:
            hw.merchants.setdefault(code, {})["price-change"] = changes
            sched = PriceSchedule()
            for c in changes:
                sched.changes.setdefault(c["plu"], []).append((c["scale_ms"], c["new"]))
            for v in sched.changes.values():
                v.sort()
            hw.schedules[code] = sched


def _shared_scales(world: World, hw: HonestWorld) -> None:
    """An afternoon merchant takes over the stall and its scale (same stall number)."""
    from simulators.fleet_config import Merchant, credit_code, merchant_name

    ss = world.cfg.honest.shared_scale
    problem = _problem_devices(world)
    honest_merchants = {c for c, m in world.merchants.items()
                        if not any(d in problem for d in m.devices)}
    pool = [d for d, s in world.scales.items() if s.role == "trade" and s.merchant
            and s.merchant in honest_merchants and not world.scenarios.get(d)]
    rng = _rng(world, "shared-scale:params")
    start, days = world.cfg.start_ms, world.cfg.fleet.days
    for dev in _chosen(world, "shared-scale", pool, ss.share):
        owner = world.merchants[world.scales[dev].merchant or ""]
        st = gd.STALLS[owner.stall]
        code = credit_code(rng)
        while code in world.merchants:
            code = credit_code(rng)
        plus = rng.sample(st.plus, k=min(len(st.plus), rng.randint(2, 4)))
        prices = {p: gd.registered_price(gd.BY_PLU[p], rng) for p in sorted(plus)}
        world.merchants[code] = Merchant(code, merchant_name(rng, st), owner.market,
                                         owner.stall_no, owner.stall, prices, [dev])
        handovers = [start + d * DAY_MS + int(rng.uniform(*ss.handover_h) * HOUR_MS)
                     for d in range(days)]
        hw.scales.setdefault(dev, {})["shared-scale"] = {"owner": owner.code, "afternoon": code,
                                           "handover_ms": handovers,
                                           "registered": rng.random() < ss.registered}
        hw.merchants.setdefault(code, {})["shared-scale"] = dev
        hw.merchants.setdefault(owner.code, {})["shared-scale"] = dev


def merchant_at(world: World, hw: HonestWorld, device: str, t_ms: int) -> str | None:
    """The merchant selling on ``device`` at true time ``t_ms``."""
    owner = world.scales[device].merchant
    sh = hw.of_scale(device).get("shared-scale")
    if sh is None:
        return owner
    day = (t_ms - world.cfg.start_ms) // DAY_MS
    hand = sh["handover_ms"]
    return sh["afternoon"] if 0 <= day < len(hand) and t_ms >= hand[day] else owner


def bindings(world: World, hw: HonestWorld) -> list[tuple[str, str, int]]:
    """(device, merchant code, from ms) of the registered shifts, in time order per device."""
    out = []
    for dev, v in sorted(hw.scales.items()):
        sh = v.get("shared-scale")
        if not sh or not sh["registered"]:
            continue
        for d, t in enumerate(sh["handover_ms"]):
            out.append((dev, sh["afternoon"], t))
            if d + 1 < len(sh["handover_ms"]):
                out.append((dev, sh["owner"], world.cfg.start_ms + (d + 1) * DAY_MS))
    return out
