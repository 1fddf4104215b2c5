"""Fleet simulation: a whole trading day of many scales as signed wire events, with truth.
One module (about 590 lines) on purpose: it is one discrete-event loop, and its handlers
(sale, zero check, re-weigh, counter, outage) share the heap, each scale's state and the
truth they record; the I/O is ``fleet_io``, the honest behaviours ``fleet_honest``.

Pure and deterministic: no sockets, no clock (``simulators.fleet_io`` does the I/O).
:func:`generate` is a discrete-event simulation over simulated time: one heap of
pending actions (sale, zero check, heartbeat, re-weigh, counter change, outage end)
ordered by (time, scale index, per-scale serial). Every scale draws from its own
``random.Random`` seeded with (seed, device), so the same seed gives the same event
streams (byte for byte: keys are derived from the seed too) and the same ground truth.

What a scale does (one emulated edge agent per scale, as its agent would report it):

* **Sales** arrive as a Poisson process of ``sales_per_hour``, × ``peak_factor`` in the
  morning peak, within trading hours. A sale is committed when the goods come off the
  pan (``ts_ms`` = placing + load duration), with the fields its model can report
  (PLU, unit price, amount, trace code, tare). Honest scales have a small fixed span
  error (±0.05 %) and round to e; honest sellers tare trays.
* **Zero checks**: each idle period (≥ 2 s) yields one, at its end or every
  ``zero_report_s`` while it lasts (the real agent reports every 60 s; the fleet default
  is 300 s to keep the volume of a 5,000-scale day manageable). The mean is what the
  display shows (a multiple of e), so an honest scale reports 0.
* **Re-weighs**: a ``reweigh_fraction`` of sales with a trace code is re-weighed at the
  market's fair scale 2–20 min later (``ReweighEvent`` from the fair scale: the trace code
  and the reference weight = true mass × (1 + the fair scale's own span error), rounded
  to its e). A ``lost_receipt_fraction`` of them is named by the stall number instead
  (the receipt was lost), and a ``wrong_stall_fraction`` of stall-named ones names another
  stall of the market. A stall with a second, untracked scale sells part of its goods on
  it: no event, no receipt; a ``stall_reweigh_fraction`` of those purchases is re-weighed,
  named by the stall.
* **Heartbeats** every ``heartbeat_s``.

Scenarios (``fleet_config.KINDS``) change what is displayed, charged or sent; the truth
records each one's onset (for per-sale cheats — impact, price trick, tray — the first
cheated sale), size, and every short sale (sold − true mass) while it is active; for a
preset base also ``visible_ms``, the first idle-pan report after the onset (the agent
reports an idle period when it ends, so nothing in the stream can show the base before).

Honest behaviours (``simulators.fleet_honest``, the ``[honest]`` section) change how an
honest stall weighs, charges and reports (no tray, bags, preset tare, amount rounding,
zero drift, an error curve within the MPE, price changes, a shared scale, …) and how its
goods arrive at the fair scale (dripping, in the consumer's bag). They draw from a second
generator per scale, so with the section absent the event streams are those of before.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from simulators import fleet_honest as hon, fleet_honest_world as honest_world, goods as gd
from simulators.fleet_config import CHEATS, FAULTS, Merchant, ScaleSpec, Scenario, World
from weighing import wire
from weighing.signing import sign_event

AGENT_VERSION = "fleet-sim/1"
HOUR_MS = 3_600_000
MIN_IDLE_MS = 2_000  # the agent's zero_window_ms: a shorter idle period says nothing
HONEST_SPAN_ERROR = 0.0005  # ±0.05 %: a verified scale well inside ±0.5 e at mid load
ZERO_AD = 200_000  # raw AD count of an empty pan (transmitters that report raw AD)
AD_PER_MG = 0.05  # 1,500,000 counts at 30 kg


def round_e(mass_mg: float, e_mg: int) -> int:
    """Round half up to a whole number of e (what the display shows)."""
    return math.floor(mass_mg / e_mg + 0.5) * e_mg


@dataclass(frozen=True, slots=True)
class Out:
    """One output of the simulation, in simulated (true) time order.

    ``kind`` is ``"events"`` (``data`` = encoded signed events of ``device``, seq order)
    or ``"state"`` (``data`` = ``b"online"`` / ``b"offline"``).
    """

    t_ms: int
    kind: str
    device: str
    market: str
    data: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _Rw:
    """A purchase on its way to the fair scale."""

    trace: str | None
    stall: str | None
    true_mg: int
    claimed: int | None
    seller: str
    plu: str
    sale_ms: int
    bag_mg: int  # the bag the goods were weighed in (0: none)


@dataclass
class _Scale:
    spec: ScaleSpec
    rng: random.Random
    span_error: float
    vrng: random.Random  # honest behaviours draw from this one
    hv: dict[str, Any] = field(default_factory=dict)  # the scale's honest behaviours
    connected_ms: int = 0
    skew_ms: int = 0
    seq: int = 0
    sales: int = 0
    serial: int = 0
    cal_counter: int = 0
    scenario: Scenario | None = None
    outage: tuple[int, int] | None = None
    held: list[bytes] = field(default_factory=list)
    on_intervals: list[tuple[int, int]] = field(default_factory=list)
    tricked_plu: str | None = None
    truth: dict[str, Any] = field(default_factory=dict)


class Simulation:
    """The discrete-event simulation of one :class:`World`; iterate :meth:`run`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.cfg = world.cfg
        self.tr = world.cfg.trading
        seed = world.cfg.fleet.seed
        self.scales: dict[str, _Scale] = {}
        self.honest = world.honest
        for dev, spec in world.scales.items():
            rng = random.Random(f"{seed}:{dev}")
            st = _Scale(spec, rng, rng.uniform(-HONEST_SPAN_ERROR, HONEST_SPAN_ERROR),
                        random.Random(f"{seed}:{dev}:honest"), world.honest.of_scale(dev))
            st.cal_counter = rng.randint(1, 40)
            for sc in world.scenarios.get(dev, ()):
                self._arm(st, sc)
            if "clock-skew" in st.hv:
                st.skew_ms = int(st.hv["clock-skew"] * 60_000)
            if "new-scale" in st.hv:
                st.connected_ms = st.hv["new-scale"]["connected_ms"]
            self.scales[dev] = st
        self._heap: list[tuple[int, int, int, str, str, Any]] = []
        self.events = 0
        self.digest = hashlib.sha256()
        self.reweighs: dict[str, list[list[Any]]] = {}  # selling device → [[ts, trace, fair]]
        self.stall_reweighs: dict[str, list[list[Any]]] = {}  # → [[ts, stall, fair, seq]]
        self._stalls: dict[str, list[str]] = {}  # market → stall numbers
        for m in sorted(world.merchants.values(), key=lambda m: m.stall_no):
            self._stalls.setdefault(m.market, []).append(m.stall_no)

    # -- set-up ---------------------------------------------------------------------------

    def _arm(self, st: _Scale, sc: Scenario) -> None:
        rng = st.rng
        if sc.kind == "clock-skew":
            st.skew_ms = int(sc.size * 60_000)
            return
        if sc.kind == "outage":
            st.outage = (sc.onset_ms, sc.onset_ms + int(sc.size * 60_000))
            return
        st.scenario = sc
        if sc.kind == "remote-gain":  # gears switched on and off through the day
            t, end = sc.onset_ms, self._close(sc.onset_ms)
            while t < end:
                on = int(rng.uniform(10, 40) * 60_000)
                st.on_intervals.append((t, min(t + on, end)))
                t += on + int(rng.uniform(20, 90) * 60_000)
            sc.params["on_intervals"] = [list(i) for i in st.on_intervals]
        if sc.kind == "price-trick":
            merchant = self.world.merchants[st.spec.merchant or ""]
            st.tricked_plu = rng.choice(sorted(merchant.prices))
            sc.params["plu"] = st.tricked_plu
        st.truth = {"kind": sc.kind, "activated_ms": sc.onset_ms, "onset_ms": sc.onset_ms,
                    "size": sc.size, "params": sc.params, "effective": sc.kind not in (
                        "impact", "price-trick", "tray-not-tared", "remote-gain"),
                    "short_sales": [], "short_total_mg": 0, "cheated_sales": 0}

    def _day_open(self, t_ms: int) -> int:
        start = self.cfg.start_ms
        return start + (t_ms - start) // 86_400_000 * 86_400_000

    def _close(self, t_ms: int) -> int:
        return self._day_open(t_ms) + int(self.tr.hours * HOUR_MS)

    def _push(self, t_ms: int, dev: str, what: str, data: Any = None) -> None:
        st = self.scales[dev]
        st.serial += 1
        heapq.heappush(self._heap, (t_ms, st.spec.index, st.serial, dev, what, data))

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Iterator[Out]:
        """All outputs of the simulated days, in time order."""
        start = self.cfg.start_ms
        for dev, st in self.scales.items():
            for day in range(self.cfg.fleet.days):
                # a scale connected mid-day (honest `new-scale`) reports from then on
                open_ms = max(start + day * 86_400_000, st.connected_ms)
                self._push(open_ms + int(st.rng.uniform(0, self.tr.heartbeat_s) * 1000), dev,
                           "hb")
                if st.spec.role == "trade":  # the idle pan reports from the opening
                    self._idle_then_next(open_ms, st)
            if "new-scale" in st.hv:  # the agent's first observation of its counters
                self._push(max(start, st.connected_ms), dev, "counter",
                           ("cal_counter", None, None))
                self._push(max(start, st.connected_ms), dev, "counter",
                           ("cfg_counter", None, str(st.vrng.randint(1, 30))))
            sc = st.scenario
            if sc is not None and sc.kind == "recalibration":
                self._push(sc.onset_ms, dev, "cal")
            if st.outage:
                self._push(st.outage[0], dev, "down")
                self._push(st.outage[1], dev, "up")
        handlers: dict[str, Callable[[int, _Scale, Any], Out | None]] = {
            "sale": self._sale, "zero": self._zero, "hb": self._heartbeat, "rw": self._reweigh,
            "cal": self._calibration, "down": self._down, "up": self._up,
            "release": self._release, "counter": self._counter}
        while self._heap:
            t, _, _, dev, what, data = heapq.heappop(self._heap)
            out = handlers[what](t, self.scales[dev], data)
            if out is not None:
                yield out

    # -- emitting ---------------------------------------------------------------------------

    def _emit(self, t: int, st: _Scale, event: wire.Event) -> Out | None:
        st.seq += 1
        ev = msgspec.structs.replace(event, seq=st.seq, ts_ms=t + st.skew_ms)
        dev = st.spec.device
        body = wire.encode_event(sign_event(bytes.fromhex(st.spec.key_hex), dev, ev))
        self.events += 1
        self.digest.update(dev.encode() + b"\x00" + body + b"\n")
        if st.held or (st.outage and st.outage[0] <= t < st.outage[1]):
            st.held.append(body)  # the agent's outbox keeps it until the link is back
            return None
        return Out(t, "events", dev, st.spec.market, (body,))

    def _down(self, t: int, st: _Scale, _: Any) -> Out:
        return Out(t, "state", st.spec.device, st.spec.market, (b"offline",))

    def _up(self, t: int, st: _Scale, _: Any) -> Out:
        self._push(t, st.spec.device, "release")
        return Out(t, "state", st.spec.device, st.spec.market, (b"online",))

    def _release(self, t: int, st: _Scale, _: Any) -> Out | None:
        held, st.held = tuple(st.held), []
        return Out(t, "events", st.spec.device, st.spec.market, held) if held else None

    # -- trading ------------------------------------------------------------------------------

    def _rate_per_ms(self, st: _Scale, t: int) -> float:
        h = (t - self._day_open(t)) / HOUR_MS
        rate = self.tr.sales_per_hour
        if self.tr.peak_start_h <= h < self.tr.peak_start_h + self.tr.peak_hours:
            rate *= self.tr.peak_factor
        return rate / HOUR_MS

    def _gap(self, st: _Scale, t: int) -> int:
        return int(st.rng.expovariate(self._rate_per_ms(st, t))) + 1

    def _active(self, st: _Scale, t: int) -> Scenario | None:
        sc = st.scenario
        if sc is None or t < sc.onset_ms:
            return None
        if sc.kind == "remote-gain" and not any(a <= t < b for a, b in st.on_intervals):
            return None
        return sc

    def _span(self, st: _Scale, t: int, sc: Scenario | None) -> tuple[float, float]:
        """(gain, additive mg on a loaded pan) of the scale at ``t``."""
        gain, add = 1.0 + st.span_error, 0.0
        if sc is None:
            return gain, add
        if sc.kind in ("remote-gain", "chip-gain", "recalibration"):
            gain += sc.size
        elif sc.kind == "chip-additive":
            add += sc.size * 1_000_000
        elif sc.kind == "drift":
            gain += sc.size * (t - sc.onset_ms) / (8 * HOUR_MS)
        return gain, add

    def _zero_mg(self, st: _Scale, t: int, sc: Scenario | None) -> int:
        """What the empty pan shows (preset base; drift of 0.5 e per hour)."""
        e = st.spec.m.e_mg
        if sc is None:
            return 0
        if sc.kind == "preset-base":
            return round_e(sc.size * 1_000_000, e)
        if sc.kind == "drift":
            return round_e(0.5 * e * (t - sc.onset_ms) / HOUR_MS, e)
        return 0

    def _wander(self, st: _Scale, t: int) -> float:
        """The honest zero's offset (``zero-drift``), mg."""
        zd = st.hv.get("zero-drift")
        return hon.zero_wander_mg(t, zd, st.spec.m.e_mg) if zd else 0.0

    def _err(self, st: _Scale, mass_mg: float) -> float:
        """The honest error curve (``scale-error``) at a gross load, mg."""
        f = st.hv.get("scale-error")
        if not f:
            return 0.0
        m = st.spec.m
        return hon.error_curve_mg(mass_mg, e_mg=m.e_mg, accuracy_class=m.accuracy_class,
                                  fraction=f)

    def _merchant(self, st: _Scale, t: int) -> Merchant:
        code = honest_world.merchant_at(self.world, self.honest, st.spec.device, t)
        return self.world.merchants[code or ""]

    def _price(self, merchant: Merchant, plu: str, t: int) -> int:
        """The unit price the scale charges (honest `price-change`: it follows the register)."""
        sched = self.honest.schedules.get(merchant.code)
        base = merchant.prices[plu]
        return sched.at(plu, t, base) if sched else base

    def _sale(self, t: int, st: _Scale, _: Any) -> Out | None:
        rng, spec = st.rng, st.spec
        model, e = spec.m, spec.m.e_mg
        merchant = self._merchant(st, t)
        mh = self.honest.of_merchant(merchant.code)
        plu = rng.choice(sorted(merchant.prices))
        goods = gd.BY_PLU[plu]
        true_mg = gd.purchase_mg(goods, rng)
        sc = st.scenario
        if (sc is not None and sc.kind == "second-scale" and t >= sc.onset_ms
                and rng.random() >= sc.size):
            # weighed on the untracked scale beside it: nothing recorded, no receipt
            self._untracked_sale(t, st, true_mg, plu)
            self._idle_then_next(t, st)
            return None
        tray_mg = rng.randint(*gd.TRAY_WEIGHT_G) * 1000 if goods.tray else 0
        duration = int(rng.uniform(2_000, 6_000))  # the load began this long before
        commit_t = t  # a sale is emitted when the goods come off the pan
        sc = self._active(st, t)
        gain, add = self._span(st, t, sc)
        if "scale-error" in st.hv:
            gain -= st.span_error  # the error curve replaces the small span error
        zero = self._zero_mg(st, t, sc) + self._wander(st, t)
        cheated = sc is not None and sc.kind not in ("second-scale", "impact", "price-trick",
                                                     "tray-not-tared")

        def shown(mass: float) -> int:
            return round_e(mass * gain + add + zero + self._err(st, mass), e)

        tare, bag_mg = 0, 0
        style = mh.get("tray")  # honest tray handling (None: a tray tared per sale)
        untared = goods.tray and style is None and (
            (sc is not None and sc.kind == "tray-not-tared")
            or rng.random() < self.tr.honest_untared_tray_fraction)
        on_pan = true_mg + (tray_mg if goods.tray else 0)  # what the load cell carries
        if style == "bagged":  # weighed in the consumer's thin bag, not tared
            bag_mg = round(st.vrng.uniform(*self.cfg.honest.bagged.bag_g) * 1000)
            on_pan = true_mg + bag_mg
            settled = shown(on_pan)
        elif goods.tray and untared:
            settled = shown(true_mg + tray_mg)
            cheated = cheated or (sc is not None and sc.kind == "tray-not-tared")
        elif goods.tray and style == "no-tray":  # the goods straight on the pan
            on_pan = true_mg
            settled = shown(true_mg)
        elif goods.tray and style == "preset-tare":  # a preset value, trays vary around it
            spread = self.cfg.honest.preset_tare.tray_spread_g * 1000
            tare = mh["preset_tare_mg"]
            on_pan = true_mg + max(0, tare + round(st.vrng.uniform(-spread, spread)))
            settled = shown(on_pan) - tare
        elif goods.tray and model.can("tare"):
            tare = round_e(tray_mg * gain + zero + self._err(st, tray_mg), e)  # tray on the pan
            settled = shown(true_mg + tray_mg) - tare
        else:
            settled = shown(true_mg)
        net, peak = settled, round_e(settled * rng.uniform(1.02, 1.10), e)
        impact = sc is not None and sc.kind == "impact" and rng.random() < sc.size
        if impact:
            net = peak = max(settled + 2 * e, round_e(settled * rng.uniform(1.05, 1.30), e))
            cheated = True
        st.sales += 1
        price = self._price(merchant, plu, t)
        if sc is not None and sc.kind == "price-trick" and plu == st.tricked_plu:
            price = max(1, round(price * sc.size))
            cheated = True
        rounding = st.hv.get("amount-rounding", hon.DEFAULT_ROUNDING)
        event = wire.SaleEvent(
            raw_ad=self._raw_ad(st, t, sc, on_pan) if model.can("raw_ad") else None,
            seq=0, ts_ms=0, net_mg=net, settled_mg=settled, peak_mg=max(peak, net),
            tare_mg=tare if model.can("tare") else 0, stable_device=not impact,
            stable_software=not impact, unsettled_commit=impact, duration_ms=duration,
            unit_price_fen_per_kg=price if model.can("unit_price") else None,
            amount_fen=hon.amount_fen(net, price, rounding) if model.can("amount") else None,
            plu=plu if model.can("plu") else None,
            trace_code=f"{spec.device}-{st.sales:06d}" if model.can("trace_code") else None)
        out = self._emit(commit_t, st, event)
        if cheated:
            self._record_short(st, commit_t, event, net - true_mg)
        self._idle_then_next(commit_t, st)
        if event.trace_code and rng.random() < self.tr.reweigh_fraction:
            rw = _Rw(event.trace_code, None, true_mg, net, spec.device, plu, commit_t, bag_mg)
            if rng.random() < self.tr.lost_receipt_fraction:
                self._stall_reweigh(commit_t, st, rw)
            else:
                self._schedule_reweigh(commit_t, st, rw)
        return out

    def _idle_then_next(self, commit_t: int, st: _Scale) -> None:
        """The idle period after a sale: zero checks, then the next sale."""
        dev = st.spec.device
        nxt = commit_t + self._gap(st, commit_t) + 6_000
        close = self._close(commit_t)
        idle_end = min(nxt - 6_000, close)  # the next load may begin up to 6 s before its sale
        k, s = 1, commit_t
        while s + MIN_IDLE_MS <= idle_end:
            end = min(commit_t + int(k * self.tr.zero_report_s * 1000), idle_end)
            self._push(end, dev, "zero", end - s)
            s, k = end, k + 1
        if nxt < close:
            self._push(nxt, dev, "sale")

    def _schedule_reweigh(self, t: int, st: _Scale, rw: _Rw) -> None:
        """A consumer re-weighs the purchase at the market's fair scale 2–20 min later."""
        lo, hi = self.tr.reweigh_delay_min
        rw_t = t + int(st.rng.uniform(lo, hi) * 60_000)
        if rw_t < self._close(t):
            self._push(rw_t, self.world.fair[st.spec.market], "rw", rw)

    def _stall_reweigh(self, t: int, st: _Scale, rw: _Rw) -> None:
        """A re-weigh without a receipt: the consumer names the stall (sometimes the wrong
        one) on the fair-scale station."""
        stall = self.world.merchants[st.spec.merchant or ""].stall_no
        if st.rng.random() < self.tr.wrong_stall_fraction:
            others = [s for s in self._stalls[st.spec.market] if s != stall]
            stall = st.rng.choice(others) if others else stall
        self._schedule_reweigh(t, st, _Rw(None, stall, rw.true_mg, None, rw.seller, rw.plu,
                                          rw.sale_ms, rw.bag_mg))

    def _untracked_sale(self, t: int, st: _Scale, true_mg: int, plu: str) -> None:
        st.truth["untracked_sales"] = st.truth.get("untracked_sales", 0) + 1
        if st.rng.random() < self.tr.stall_reweigh_fraction:
            self._stall_reweigh(t, st, _Rw(None, None, true_mg, None, st.spec.device, plu, t, 0))

    def _record_short(self, st: _Scale, t: int, ev: wire.SaleEvent, short_mg: int) -> None:
        tr = st.truth
        if not tr["effective"]:
            tr["effective"] = True
            if tr["kind"] in ("impact", "price-trick", "tray-not-tared", "remote-gain"):
                tr["onset_ms"] = t  # the cheat shows with its first cheated sale
        tr["cheated_sales"] += 1
        tr["short_sales"].append([st.seq, ev.trace_code, short_mg])
        tr["short_total_mg"] += max(short_mg, 0)

    def _raw_ad(self, st: _Scale, t: int, sc: Scenario | None, on_pan_mg: int) -> int:
        """The load cell's count: the true mass on the pan, never the display's cheats; a
        drifting scale drifts in the cell itself (zero and span), and so do an honest
        scale's zero wander and error curve."""
        counts = ZERO_AD + on_pan_mg * AD_PER_MG
        if sc is not None and sc.kind == "drift":
            gain, _ = self._span(st, t, sc)
            counts = ZERO_AD + on_pan_mg * AD_PER_MG * gain + self._zero_mg(st, t, sc) * AD_PER_MG
        if st.hv:
            counts += (self._wander(st, t) + self._err(st, on_pan_mg)) * AD_PER_MG
        return round(counts) + st.rng.randint(-2, 2)  # converter noise

    def _zero(self, t: int, st: _Scale, duration_ms: int) -> Out | None:
        sc = self._active(st, t)
        mean = self._zero_mg(st, t, sc)
        if sc is not None and sc.kind == "preset-base" and "visible_ms" not in st.truth:
            st.truth["visible_ms"] = t  # a preset base shows in the first idle-pan report
        e = st.spec.m.e_mg
        if "zero-drift" in st.hv:  # what the displayed readings of a wandering zero average to
            zd = self.cfg.honest.zero_drift
            mean, spread = hon.idle_readings_mean(
                mean + self._wander(st, t), e, noise_e=zd.noise_e,
                samples=min(zd.samples, max(1, duration_ms // 100)), rng=st.vrng)
        else:
            spread = e if mean and st.rng.random() < 0.2 else 0
        raw = self._raw_ad(st, t, sc, 0) if st.spec.m.can("raw_ad") else None
        return self._emit(t, st, wire.ZeroCheckEvent(
            seq=0, ts_ms=0, mean_mg=mean, spread_mg=spread,
            n=max(1, duration_ms // 100), duration_ms=duration_ms, raw_ad=raw))

    def _reweigh(self, t: int, st: _Scale, rw: _Rw) -> Out | None:
        trace, stall, seller = rw.trace, rw.stall, rw.seller
        e = st.spec.m.e_mg
        mass = rw.true_mg
        sold_by = self.scales[seller]
        drip = self.honest.of_merchant(self._merchant(sold_by, rw.sale_ms).code).get("drip-dry")
        if drip:  # the goods dripped or dried on the way
            mass = hon.reweigh_mass_mg(mass, plu=rw.plu, delay_ms=t - rw.sale_ms,
                                       loss_factor=drip, rng=sold_by.vrng)
        wb = self.cfg.honest.reweigh_with_bag
        if wb.on() and sold_by.vrng.random() < wb.share:  # re-weighed in the consumer's bag
            mass += rw.bag_mg or round(sold_by.vrng.uniform(*wb.bag_g) * 1000)
        reference = round_e(mass * (1 + st.span_error), e)
        out = self._emit(t, st, wire.ReweighEvent(
            seq=0, ts_ms=0, trace_code=trace, stall_no=stall, reference_mg=reference,
            claimed_mg=rw.claimed))
        if self.scales[seller].scenario is not None:
            if trace is not None:  # a re-weigh pair of the residual detector
                self.reweighs.setdefault(seller, []).append([t, trace, st.spec.device, st.seq])
            else:
                self.stall_reweighs.setdefault(seller, []).append(
                    [t, stall, st.spec.device, st.seq])
        return out

    def _calibration(self, t: int, st: _Scale, _: Any) -> Out | None:
        old, st.cal_counter = st.cal_counter, st.cal_counter + 1
        return self._emit(t, st, wire.CounterChangeEvent(
            seq=0, ts_ms=0, name="cal_counter", old=str(old), new=str(st.cal_counter)))

    def _counter(self, t: int, st: _Scale, data: tuple[str, str | None, str | None]) -> Out | None:
        """A counter as the agent first sees it (``old = None``; ``new`` None: the CAL
        counter's current value)."""
        name, old, new = data
        return self._emit(t, st, wire.CounterChangeEvent(
            seq=0, ts_ms=0, name=name, old=old, new=new or str(st.cal_counter)))

    def _heartbeat(self, t: int, st: _Scale, _: Any) -> Out | None:
        if t < self._close(t):
            self._push(t + int(self.tr.heartbeat_s * 1000), st.spec.device, "hb")
        drop = st.hv.get("missing-heartbeats")
        if drop and st.vrng.random() < drop:
            return None  # lost (honest `missing-heartbeats`): the agent's timer, a restart
        return self._emit(t, st, wire.HeartbeatEvent(
            seq=0, ts_ms=0, queued=len(st.held), sent=st.seq,
            uptime_s=max(0, (t - self.cfg.start_ms) // 1000 + 1800)))

    # -- births and truth -------------------------------------------------------------------

    def births(self) -> Iterator[tuple[ScaleSpec, bytes]]:
        """The retained birth of every device, as its agent would publish it at start-up."""
        for dev, st in self.scales.items():
            m = st.spec.m
            boot = hashlib.sha256(f"{self.cfg.fleet.seed}:boot:{dev}".encode()).hexdigest()[:16]
            yield st.spec, wire.encode(wire.Birth(
                device=dev, market=st.spec.market, role=wire.Role(st.spec.role),
                profile=m.profile, protocol=m.protocol, max_mg=m.max_mg, e_mg=m.e_mg,
                accuracy_class=wire.AccuracyClass(m.accuracy_class), serial=st.spec.serial,
                capabilities=list(m.capabilities), agent_version=AGENT_VERSION, boot_id=boot,
                ts_ms=self.cfg.start_ms - 1_800_000 + st.skew_ms))

    def truth(self) -> dict[str, Any]:
        """The ground truth (call after :meth:`run` is exhausted)."""
        w, cfg = self.world, self.cfg
        problem = CHEATS + FAULTS
        scales: dict[str, Any] = {}
        for dev, st in self.scales.items():
            scen = []
            for sc in w.scenarios.get(dev, ()):
                if sc.kind in problem:
                    scen.append(dict(st.truth))
                else:
                    scen.append({"kind": sc.kind, "onset_ms": sc.onset_ms, "size": sc.size,
                                 "effective": True})
            scales[dev] = {"market": st.spec.market, "merchant": st.spec.merchant,
                           "model": st.spec.model, "role": st.spec.role,
                           "clock_skew_ms": st.skew_ms, "sales": st.sales, "events": st.seq,
                           "scenarios": scen, "reweighs": self.reweighs.get(dev, []),
                           "stall_reweighs": self.stall_reweighs.get(dev, [])}
            if st.hv:
                scales[dev]["honest"] = st.hv
        merchants = {}
        for code, m in w.merchants.items():
            kinds = [s["kind"] for d in m.devices for s in scales[d]["scenarios"]]
            merchants[code] = {"name": m.name, "market": m.market, "stall": m.stall,
                               "stall_no": m.stall_no, "devices": m.devices, "prices": m.prices,
                               "honest": not any(k in problem for k in kinds)}
            if self.honest.of_merchant(code):  # lawful behaviour: never a cheat
                merchants[code]["honest_variations"] = self.honest.of_merchant(code)
        return {
            "version": 1,
            "fleet": {"name": cfg.fleet.name, "seed": cfg.fleet.seed, "start_ms": cfg.start_ms,
                      "days": cfg.fleet.days, "trading_hours": cfg.trading.hours,
                      "end_ms": cfg.start_ms + (cfg.fleet.days - 1) * 86_400_000
                      + int(cfg.trading.hours * HOUR_MS),
                      "markets": len(w.markets), "merchants": len(w.merchants),
                      "scales": len(w.scales), "events": self.events,
                      "stream_sha256": self.digest.hexdigest(),
                      "honest": cfg.honest.enabled()},
            "markets": {mk: {"fair": w.fair[mk]} for mk in w.markets},
            "merchants": merchants,
            "scales": scales,
        }
