"""Fleet configuration (TOML) and the world it describes: markets, merchants, scales, cheats.

``load_fleet_config(path)`` validates a fleet file (see ``simulators/fleets/*.toml``);
``build_world(cfg)`` turns it into a deterministic :class:`World`: the same seed always
gives the same markets, merchants (with valid 统一社会信用代码), scales (with models,
keys and roles), registered PLU prices and injected scenarios (cheat, onset, size).

Scale models: a model names the profile string a scale's birth carries and what its
agent can report (capabilities). Most are the shipped device profiles; ``trace-15kg-5g``
is the 15 kg / 5 g variant of the shipped ``trace-30kg-10g`` traceability scale, needed
because Art. 3 forbids selling meat (5 g deviation) on a 10 g scale. Direct mode never
loads a profile, so the variant needs no profile file; full-path mode uses shipped
profiles only.

Scenario kinds (domain.md §4): cheats ``remote-gain``, ``chip-gain``, ``chip-additive``,
``recalibration``, ``preset-base``, ``tray-not-tared``, ``impact``, ``price-trick``,
``second-scale``; a fault ``drift`` (an honest scale drifting out of tolerance); benign
conditions ``outage`` and ``clock-skew`` that must *not* raise findings. One scenario per
scale. Honest behaviours of real markets (no tray, bags, preset tare, fair scales of other
classes, amount rounding, …) are the ``[honest]`` section (``simulators.fleet_honest``):
shares of units, assigned after the scenarios and independent of them
(``simulators.fleet_honest_world``).
"""

from __future__ import annotations

import hashlib
import random
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway_server.registry.uscc import CODE_SET, check_char
from simulators import goods as gd
from simulators.fleet_honest import HonestSection
from simulators.fleet_honest_world import HonestWorld
from weighing.errors import GatewayError

CHEATS = ("remote-gain", "chip-gain", "chip-additive", "recalibration", "preset-base",
          "tray-not-tared", "impact", "price-trick", "second-scale")
FAULTS = ("drift",)
BENIGN = ("outage", "clock-skew")
KINDS = CHEATS + FAULTS + BENIGN


class FleetConfigError(GatewayError, ValueError):
    """A fleet file is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FleetSection(_Strict):
    name: str = "fleet"
    seed: int = 1
    start: datetime = Field(description="opening time of the first simulated day (with zone)")
    days: int = Field(1, ge=1, le=31)
    markets: int = Field(1, ge=1, le=1000)
    merchants_per_market: int = Field(10, ge=1, le=2000)
    second_scale_fraction: float = Field(0.25, ge=0, le=1, description="merchants with 2 scales")
    tuning_seeds: list[int] = Field(
        default_factory=list, description="seeds the detection rules were tuned on: results "
        "on them are in-sample (bench/eval_matrix.py refuses to report them)")


class TradingSection(_Strict):
    hours: float = Field(12.0, gt=0, le=24, description="trading hours from the opening")
    peak_start_h: float = Field(1.0, ge=0, description="morning peak, hours after opening")
    peak_hours: float = Field(2.0, ge=0)
    peak_factor: float = Field(3.0, ge=1)
    sales_per_hour: float = Field(6.0, gt=0, description="per trade scale, outside the peak")
    reweigh_fraction: float = Field(0.05, ge=0, le=1, description="of sales with a trace code")
    stall_reweigh_fraction: float = Field(
        0.05, ge=0, le=1, description="of purchases without a receipt (sold on a second, "
        "untracked scale) re-weighed at the fair scale, named by the stall number")
    lost_receipt_fraction: float = Field(
        0.1, ge=0, le=1, description="of re-weighs of receipted sales named by the stall "
        "instead of the trace code (the receipt was lost)")
    wrong_stall_fraction: float = Field(
        0.02, ge=0, le=1, description="of stall-named re-weighs where the consumer picks "
        "another stall of the market")
    reweigh_delay_min: tuple[float, float] = (2.0, 20.0)
    zero_report_s: float = Field(300.0, gt=0, description="zero check every this long when idle")
    heartbeat_s: float = Field(1800.0, gt=0)
    honest_untared_tray_fraction: float = Field(0.0, ge=0, le=1)


class ClockSection(_Strict):
    speed: float = Field(120.0, ge=0, description="simulated s per wall s; 0: as fast as possible")


class PublishSection(_Strict):
    connections: int = Field(4, ge=1, le=64)
    batch_max: int = Field(50, ge=1, le=5000)
    flush_s: float = Field(60.0, gt=0, description="simulated seconds a buffered event may wait")
    qos: int = Field(1, ge=0, le=1)
    max_inflight: int = Field(2000, ge=1, description="unacknowledged messages per connection")
    max_lag_messages: int = Field(30000, ge=100, description="published − ingested (backpressure)")


class ScenarioSpec(_Strict):
    count: int = Field(0, ge=0)
    fraction: float = Field(0.0, ge=0, le=1, description="of eligible trade scales")
    sizes: list[float] = Field(default_factory=list)
    onset_h: tuple[float, float] | None = None  # window after the opening


class FleetConfig(_Strict):
    fleet: FleetSection
    trading: TradingSection = TradingSection()
    clock: ClockSection = ClockSection()
    publish: PublishSection = PublishSection()
    scenarios: dict[str, ScenarioSpec] = Field(default_factory=dict)
    honest: HonestSection = Field(default_factory=HonestSection)

    @property
    def start_ms(self) -> int:
        return int(self.fleet.start.timestamp() * 1000)


def load_fleet_config(path: str | Path) -> FleetConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
        cfg = FleetConfig.model_validate(data)
    except OSError as err:
        raise FleetConfigError(f"{p}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise FleetConfigError(f"{p}: not valid TOML: {err}") from None
    except ValidationError as err:
        where = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                          for e in err.errors())
        raise FleetConfigError(f"{p}: {where}") from None
    if cfg.fleet.start.tzinfo is None:
        raise FleetConfigError(f"{p}: fleet.start needs a time zone (e.g. +08:00)")
    unknown = set(cfg.scenarios) - set(KINDS)
    if unknown:
        raise FleetConfigError(f"{p}: scenarios: unknown kinds {sorted(unknown)}; "
                               f"known: {', '.join(KINDS)}")
    return cfg


# -- scale models ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScaleModel:
    profile: str
    protocol: str
    max_mg: int
    e_mg: int
    capabilities: tuple[str, ...]
    accuracy_class: str = "III"

    def can(self, cap: str) -> bool:
        return cap in self.capabilities


_TRACE_CAPS = ("plu", "unit_price", "amount", "trace_code", "tare", "print_request")
MODELS: dict[str, ScaleModel] = {
    "trace-15kg-5g": ScaleModel("trace-15kg-5g", "trace-record", 15_000_000, 5_000, _TRACE_CAPS),
    "trace-30kg-10g": ScaleModel("trace-30kg-10g", "trace-record", 30_000_000, 10_000,
                                 _TRACE_CAPS),
    "dialog04-6-15kg-2-5g": ScaleModel("dialog04-6-15kg-2-5g", "dialog04", 15_000_000, 5_000,
                                       ("unit_price", "amount")),
    "toledo-15kg-5g": ScaleModel("toledo-15kg-5g", "toledo-continuous", 15_000_000, 5_000,
                                 ("stable_flag", "net", "tare", "print_request")),
    "reversed-display-3kg-1g": ScaleModel("reversed-display-3kg-1g", "reversed-display",
                                          3_000_000, 1_000, ()),
    "ad-text-60kg-20g": ScaleModel("ad-text-60kg-20g", "ad-text", 60_000_000, 20_000,
                                   ("stable_flag", "net")),
    # a load-cell transmitter that reports its raw AD count (K-factor monitoring)
    "modbus-transmitter-generic": ScaleModel("modbus-transmitter-generic", "modbus",
                                             30_000_000, 10_000,
                                             ("stable_flag", "net", "tare", "raw_ad")),
    # fair scales of other classes (honest `fair-scale` variation): a 15 kg / 1 g fair scale
    # is class II (n = 15,000; domain.md §2.2), a 30 kg / 5 g one class III (n = 6,000)
    "fair-15kg-1g-II": ScaleModel("fair-15kg-1g-II", "toledo-continuous", 15_000_000, 1_000,
                                  ("stable_flag", "net", "tare", "print_request"), "II"),
    "fair-30kg-5g": ScaleModel("fair-30kg-5g", "toledo-continuous", 30_000_000, 5_000,
                               ("stable_flag", "net", "tare", "print_request")),
}
FAIR_MODEL = "toledo-15kg-5g"
# which models may sell a stall's goods without breaking Art. 3 (goods.py), and how often
STALL_MODELS: dict[str, tuple[tuple[str, float], ...]] = {
    "vegetables": (("trace-30kg-10g", .30), ("trace-15kg-5g", .35), ("dialog04-6-15kg-2-5g", .15),
                   ("modbus-transmitter-generic", .05),
                   ("toledo-15kg-5g", .10), ("ad-text-60kg-20g", .05)),
    "fruit": (("trace-30kg-10g", .35), ("trace-15kg-5g", .35), ("dialog04-6-15kg-2-5g", .15),
              ("toledo-15kg-5g", .15)),
    "grain": (("trace-30kg-10g", .4), ("trace-15kg-5g", .2), ("ad-text-60kg-20g", .3),
              ("modbus-transmitter-generic", .1)),
    "meat": (("trace-15kg-5g", .85), ("toledo-15kg-5g", .15)),
    "poultry_aquatic": (("trace-15kg-5g", .85), ("toledo-15kg-5g", .15)),
    "pastry": (("trace-15kg-5g", 1.0),),
    "dried": (("reversed-display-3kg-1g", 1.0),),
}

# -- the world ---------------------------------------------------------------------------


@dataclass
class Merchant:
    code: str  # 统一社会信用代码: the merchant's identity in the truth file
    name: str
    market: str
    stall_no: str
    stall: str
    prices: dict[str, int]  # PLU → registered fen/kg
    devices: list[str] = field(default_factory=list)


@dataclass
class ScaleSpec:
    device: str
    market: str
    index: int  # position in the fleet (seeds the scale's generator)
    model: str
    role: str  # trade | fair
    key_hex: str
    merchant: str | None  # credit code
    serial: str

    @property
    def m(self) -> ScaleModel:
        return MODELS[self.model]


@dataclass
class Scenario:
    kind: str
    device: str
    merchant: str | None
    onset_ms: int  # when the cheat (or condition) starts; per-sale cheats: refined later
    size: float  # gain fraction, additive kg, price factor, minutes, ...
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    cfg: FleetConfig
    markets: list[str]
    merchants: dict[str, Merchant]
    scales: dict[str, ScaleSpec]
    fair: dict[str, str]  # market → fair scale device
    scenarios: dict[str, list[Scenario]]  # device → scenarios
    honest: HonestWorld = field(default_factory=HonestWorld)  # honest behaviours


_SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢"
             "宋唐许韩冯邓曹彭曾肖田董袁潘蔡蒋余于杜叶程")
_DEFAULT_SIZES: dict[str, list[float]] = {
    "remote-gain": [0.10, 0.20, 0.30], "chip-gain": [0.10], "chip-additive": [0.1, 0.2, 0.3],
    "recalibration": [0.03, 0.05, 0.08], "preset-base": [0.03, 0.05, 0.10],
    "tray-not-tared": [1.0], "impact": [0.6], "price-trick": [0.01, 0.1],
    "second-scale": [0.05], "drift": [0.02], "outage": [20, 60, 120],
    "clock-skew": [-30, -5, 2, 10, 30],
}


def device_key(seed: int, device: str) -> str:
    """A deterministic 16-byte HMAC key (simulation only: the same seed gives the same keys)."""
    return hashlib.sha256(f"fleet-key:{seed}:{device}".encode()).hexdigest()[:32]


def credit_code(rng: random.Random) -> str:
    """A valid 统一社会信用代码 of a 个体工商户 (92…) in a Fujian district, GB 32100-2015."""
    region = rng.choice(("350102", "350103", "350203", "350206", "350211", "350502"))
    body = "".join(rng.choice(CODE_SET) for _ in range(9))
    first17 = "92" + region + body
    return first17 + check_char(first17)


def merchant_name(rng: random.Random, stall: gd.StallType) -> str:
    """A stall's shop name as on its sign (surname + 记/氏 + the stall's goods)."""
    return f"{rng.choice(_SURNAMES)}{'记' if rng.random() < .5 else '氏'}{stall.label_zh}"


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    names = [name for name, _ in weighted]
    return rng.choices(names, weights=[weight for _, weight in weighted])[0]


def build_world(cfg: FleetConfig) -> World:
    """The deterministic world of ``cfg`` (same seed → same world)."""
    rng = random.Random(f"{cfg.fleet.seed}:world")
    stalls = tuple((s.name, s.weight) for s in gd.STALL_TYPES)
    markets, merchants, scales, fair = [], {}, {}, {}
    idx = 0
    for mi in range(cfg.fleet.markets):
        market = f"mkt{mi + 1:03d}"
        markets.append(market)
        fdev = f"{market}-fair1"
        fair[market] = fdev
        scales[fdev] = ScaleSpec(fdev, market, idx, FAIR_MODEL, "fair",
                                 device_key(cfg.fleet.seed, fdev), None, f"F{mi + 1:05d}")
        idx += 1
        n = 0
        for k in range(cfg.fleet.merchants_per_market):
            stall = _pick(rng, stalls)
            code = credit_code(rng)
            while code in merchants:
                code = credit_code(rng)
            st = gd.STALLS[stall]
            plus = rng.sample(st.plus, k=min(len(st.plus), rng.randint(2, 4)))
            prices = {p: gd.registered_price(gd.BY_PLU[p], rng) for p in sorted(plus)}
            name = merchant_name(rng, st)
            m = Merchant(code, name, market, f"{'ABCDEF'[k % 6]}-{k + 1:03d}", stall, prices)
            merchants[code] = m
            count = 2 if rng.random() < cfg.fleet.second_scale_fraction else 1
            for _ in range(count):
                n += 1
                dev = f"{market}-s{n:04d}"
                model = _pick(rng, STALL_MODELS[stall])
                scales[dev] = ScaleSpec(dev, market, idx, model, "trade",
                                        device_key(cfg.fleet.seed, dev), code,
                                        f"S{idx:07d}")
                m.devices.append(dev)
                idx += 1
    world = World(cfg, markets, merchants, scales, fair, {})
    _assign_scenarios(world, rng)
    from simulators.fleet_honest_world import assign

    world.honest = assign(world)  # own generators: the scenarios above do not depend on it
    return world


def _eligible(world: World, kind: str, spec: ScaleSpec) -> bool:
    m = spec.m
    if spec.role != "trade":
        return False
    merchant = world.merchants[spec.merchant] if spec.merchant else None
    if kind in ("remote-gain", "chip-gain", "chip-additive"):
        return m.can("trace_code") or m.can("raw_ad")  # re-weighs or K reveal them
    if kind == "tray-not-tared":
        return (m.can("plu") and m.can("tare") and merchant is not None
                and any(gd.BY_PLU[p].tray for p in merchant.prices))
    if kind == "price-trick":
        return m.can("plu") and m.can("unit_price")
    if kind == "second-scale":
        return merchant is not None and len(merchant.devices) == 1
    return True


def _assign_scenarios(world: World, rng: random.Random) -> None:
    cfg = world.cfg
    trade = [d for d, s in world.scales.items() if s.role == "trade"]
    taken: set[str] = set()  # one scenario per scale: honest, benign and cheating sets disjoint
    t_open = cfg.start_ms
    hours = cfg.trading.hours
    for kind in KINDS:
        spec = cfg.scenarios.get(kind)
        if spec is None:
            continue
        pool = [d for d in trade if _eligible(world, kind, world.scales[d])
                and d not in taken
                and not any(s.kind == kind for s in world.scenarios.get(d, ()))]
        n = min(len(pool), max(spec.count, round(spec.fraction * len(pool))))
        sizes = spec.sizes or _DEFAULT_SIZES[kind]
        lo_h, hi_h = spec.onset_h or (1.0, max(1.5, hours - 3.0))
        for i, dev in enumerate(sorted(rng.sample(pool, n))):
            day = rng.randrange(cfg.fleet.days)
            onset = t_open + day * 86_400_000 + int(rng.uniform(lo_h, hi_h) * 3_600_000)
            if kind == "clock-skew":
                onset = t_open  # the clock is off all day
            sc = Scenario(kind, dev, world.scales[dev].merchant, onset, sizes[i % len(sizes)])
            world.scenarios.setdefault(dev, []).append(sc)
            taken.add(dev)
