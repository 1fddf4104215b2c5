"""Honest variation: what real markets do that the detection rules must not punish.

The ``[honest]`` section of a fleet file switches each behaviour on for a share of its
units (merchants, scales, markets or re-weighs); absent or ``share = 0`` is off, and a
fleet without the section simulates exactly as before (the same event streams). Each
behaviour is lawful and honest, so it never makes a merchant a cheater in the truth;
the truth lists who has which (``scales[*].honest`` and ``merchants[*].honest_variations``).

Behaviours (docs/detection.md, "Honest variation", gives the shares of the city fleet and
their reasoning):

* ``no-tray`` / ``bagged`` / ``preset-tare``: how a stall selling tray goods (meat,
  poultry, aquatic) handles the tray: none (goods on the pan), the consumer's thin bag
  instead (not tared: its grams are sold with the goods), or a preset tare value (预置皮重)
  instead of taring each tray; ``bagged`` also covers other stalls that weigh the goods in
  the bag the consumer filled. One of the three per merchant (shares add up to ≤ 1).
* ``fair-scale``: the market's fair scale is 15 kg / 1 g class II or 30 kg / 5 g class III
  instead of 15 kg / 5 g class III (domain.md §2.2: a 1 g fair scale is class II).
* ``amount-rounding``: the scale rounds the amount to the fen half-even or down, or to the
  角 half-up or down, instead of to the fen half-up.
* ``zero-drift``: the empty pan wanders within ±0.25 e (zero-setting accuracy) with the
  temperature of the day; the idle-pan mean is what the displayed readings average to.
* ``scale-error``: a verified scale's error curve anywhere inside the in-service MPE
  (JJG 539: the null hypothesis of docs/detection.md), in place of the ±0.05 % span error.
* ``drip-dry``: goods lose water between the sale and the fair-scale re-weigh
  (``goods.Goods.loss_pct_per_h``).
* ``reweigh-with-bag``: the consumer re-weighs the goods in the bag they were handed in.
* ``new-scale``: a scale connected for the first time reports its counters with
  ``old = None`` (the agent's first observation), at the opening or mid-day.
* ``price-change``: the merchant registers a new price during the day and the scale
  follows after a lag.
* ``clock-skew``, ``missing-heartbeats``: an agent's clock off by minutes; heartbeats lost.
* ``shared-scale``: a morning and an afternoon merchant share one stall and its scale
  (the shift registered as bindings, or not).

Who has which behaviour is :mod:`simulators.fleet_honest_world` (deterministic and
independent per behaviour); this module holds the settings and the pure functions that
model each behaviour.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simulators import goods as gd
from weighing import metrology as mt

if TYPE_CHECKING:
    pass

HOUR_MS = 3_600_000
ROUNDINGS = ("fen-half-up", "fen-half-even", "fen-down", "jiao-half-up", "jiao-down")
DEFAULT_ROUNDING = "fen-half-up"
#: fair-scale models (fleet_config.MODELS) a market may have instead of the default
FAIR_MODELS = ("toledo-15kg-5g", "fair-15kg-1g-II", "fair-30kg-5g")
ZERO_SETTING_E = 0.25  # OIML R76-1 / JJG 539 zero-setting accuracy (domain.md §2.2)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"range [{v[0]}, {v[1]}] is empty: its low end is above its high end")
    return v


class _Share(_Strict):
    share: float = Field(0.0, ge=0, le=1, description="of the eligible units")

    def on(self) -> bool:
        return self.share > 0


class TraySpec(_Share):
    """``no-tray`` (of merchants selling tray goods)."""


class BagSpec(_Share):
    """``bagged`` (of all merchants) and ``reweigh-with-bag`` (of re-weighs)."""

    bag_g: tuple[float, float] = (1.0, 4.0)  # a thin 背心袋
    _r = field_validator("bag_g")(_ordered)


class PresetTareSpec(_Share):
    tray_spread_g: float = Field(2.0, ge=0, le=10,
                                 description="a tray weighs the preset value ± this")


class _MixSpec(_Strict):
    """A categorical choice per unit: option → share (the rest keeps the default)."""

    def mix(self) -> dict[str, float]:
        raise NotImplementedError

    def on(self) -> bool:
        return any(v > 0 for v in self.mix().values())


def _check_mix(v: dict[str, float], known: tuple[str, ...], what: str) -> dict[str, float]:
    bad = sorted(set(v) - set(known))
    if bad:
        raise ValueError(f"unknown {what} {bad}; known: {', '.join(known)}")
    if any(not 0 <= x <= 1 for x in v.values()):
        raise ValueError("each share must be within 0–1")
    if sum(v.values()) > 1 + 1e-9:
        raise ValueError(f"shares add up to {sum(v.values()):g} > 1")
    return v


class FairScaleSpec(_MixSpec):
    models: dict[str, float] = Field(default_factory=dict, description="of markets")

    @field_validator("models")
    @classmethod
    def _models(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_mix(v, FAIR_MODELS, "fair-scale model")

    def mix(self) -> dict[str, float]:
        return self.models


class RoundingSpec(_MixSpec):
    modes: dict[str, float] = Field(default_factory=dict,
                                    description="of scales that compute the amount")

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_mix(v, ROUNDINGS, "rounding mode")

    def mix(self) -> dict[str, float]:
        return self.modes


class ZeroDriftSpec(_Share):
    amplitude_e: tuple[float, float] = (0.05, 0.25)
    period_h: tuple[float, float] = (3.0, 10.0)
    noise_e: float = Field(0.15, ge=0, le=1, description="reading noise of the idle pan, σ")
    samples: int = Field(30, ge=1, le=1000, description="independent readings per window")
    _r = field_validator("period_h")(_ordered)

    @field_validator("amplitude_e")
    @classmethod
    def _amplitude(cls, v: tuple[float, float]) -> tuple[float, float]:
        _ordered(v)
        if v[0] < 0 or v[1] > ZERO_SETTING_E:
            raise ValueError("honest zero drift stays within ±0.25 e (zero-setting accuracy, "
                             "OIML R76-1); a larger one is the `drift` fault or a preset base")
        return v


class ScaleErrorSpec(_Share):
    of_mpe: tuple[float, float] = (0.3, 1.0)

    @field_validator("of_mpe")
    @classmethod
    def _of_mpe(cls, v: tuple[float, float]) -> tuple[float, float]:
        _ordered(v)
        if v[0] < 0 or v[1] > 1:
            raise ValueError("an honest error curve lies within the in-service MPE: 0 ≤ of_mpe ≤ 1")
        return v


class DripDrySpec(_Share):
    factor: float = Field(1.0, ge=0, le=10, description="× the goods' loss rates")


class NewScaleSpec(_Share):
    midday: float = Field(0.5, ge=0, le=1, description="of them connected during trading")


class PriceChangeSpec(_Share):
    per_day: tuple[int, int] = (1, 2)
    change: tuple[float, float] = (-0.3, 0.2)
    lag_min: tuple[float, float] = (0.0, 10.0)
    at_h: tuple[float, float] = (1.0, 11.0)
    _r = field_validator("per_day", "change", "lag_min", "at_h")(_ordered)

    @field_validator("change")
    @classmethod
    def _change(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= -0.9 or v[1] > 5:
            raise ValueError("a price change is a fraction of the price within (-0.9, 5]")
        return v


class ClockSkewSpec(_Share):
    minutes: tuple[float, float] = (0.5, 30.0)

    @field_validator("minutes")
    @classmethod
    def _minutes(cls, v: tuple[float, float]) -> tuple[float, float]:
        _ordered(v)
        if v[0] <= 0:
            raise ValueError("the skew range is of magnitudes in minutes, > 0 (the sign is drawn)")
        return v


class HeartbeatSpec(_Share):
    drop: float = Field(0.5, ge=0, le=1, description="of the agent's heartbeats lost")


class SharedScaleSpec(_Share):
    handover_h: tuple[float, float] = (5.0, 7.0)
    registered: float = Field(0.5, ge=0, le=1, description="shifts registered as bindings")
    _r = field_validator("handover_h")(_ordered)


class HonestSection(_Strict):
    """The ``[honest]`` section: one table per behaviour, keys as in the fleet file."""

    no_tray: TraySpec = Field(default_factory=TraySpec, alias="no-tray")
    bagged: BagSpec = Field(default_factory=BagSpec)
    preset_tare: PresetTareSpec = Field(default_factory=PresetTareSpec, alias="preset-tare")
    fair_scale: FairScaleSpec = Field(default_factory=FairScaleSpec, alias="fair-scale")
    amount_rounding: RoundingSpec = Field(default_factory=RoundingSpec, alias="amount-rounding")
    zero_drift: ZeroDriftSpec = Field(default_factory=ZeroDriftSpec, alias="zero-drift")
    scale_error: ScaleErrorSpec = Field(default_factory=ScaleErrorSpec, alias="scale-error")
    drip_dry: DripDrySpec = Field(default_factory=DripDrySpec, alias="drip-dry")
    reweigh_with_bag: BagSpec = Field(default_factory=lambda: BagSpec(bag_g=(1.0, 5.0)),
                                      alias="reweigh-with-bag")
    new_scale: NewScaleSpec = Field(default_factory=NewScaleSpec, alias="new-scale")
    price_change: PriceChangeSpec = Field(default_factory=PriceChangeSpec, alias="price-change")
    clock_skew: ClockSkewSpec = Field(default_factory=ClockSkewSpec, alias="clock-skew")
    missing_heartbeats: HeartbeatSpec = Field(default_factory=HeartbeatSpec,
                                              alias="missing-heartbeats")
    shared_scale: SharedScaleSpec = Field(default_factory=SharedScaleSpec, alias="shared-scale")

    @model_validator(mode="after")
    def _one_tray_style(self) -> HonestSection:
        total = self.no_tray.share + self.bagged.share + self.preset_tare.share
        if total > 1 + 1e-9:
            raise ValueError(f"no-tray.share + bagged.share + preset-tare.share = {total:g} > 1 "
                             "(a merchant handles a tray one way)")
        return self

    @classmethod
    def names(cls) -> list[str]:
        return [f.alias or n for n, f in cls.model_fields.items()]

    def spec(self, name: str) -> Any:
        for n, f in type(self).model_fields.items():
            if (f.alias or n) == name:
                return getattr(self, n)
        raise KeyError(name)

    def enabled(self) -> list[str]:
        return [n for n in self.names() if self.spec(n).on()]

    def only(self, *names: str) -> HonestSection:
        """A copy with every behaviour but ``names`` switched off (their settings kept)."""
        unknown = set(names) - set(self.names())
        if unknown:
            raise KeyError(f"unknown honest behaviours {sorted(unknown)}")
        data = {n: (self.spec(n).model_dump() if n in names else {}) for n in self.names()}
        return HonestSection.model_validate(data)


# -- pure helpers ------------------------------------------------------------------------


def amount_fen(net_mg: int, price_fen_per_kg: int, mode: str = DEFAULT_ROUNDING) -> int:
    """Amount of ``net_mg`` at ``price_fen_per_kg`` under a rounding mode (exact integers)."""
    num = net_mg * price_fen_per_kg  # fen × 10⁻⁶
    unit = 1_000_000 if mode.startswith("fen") else 10_000_000  # 1 fen or 1 角
    q, r = divmod(num, unit)
    if mode.endswith("half-up"):
        q += 1 if 2 * r >= unit else 0
    elif mode.endswith("half-even"):
        q += 1 if 2 * r > unit or (2 * r == unit and q % 2) else 0
    elif not mode.endswith("down"):
        raise ValueError(f"unknown rounding mode {mode!r}")
    return q * (unit // 1_000_000)


def error_curve_mg(mass_mg: float, *, e_mg: int, accuracy_class: str, fraction: float) -> float:
    """An honest error at ``mass_mg``: ``fraction`` (−1…1) of a piecewise-linear curve through
    0 and the in-service MPE at each band's upper end (inside the MPE at every load)."""
    bands = mt.MPE_BANDS_E[mt.AccuracyClass(accuracy_class)]
    factor = mt.STAGE_FACTOR[mt.Stage.IN_SERVICE]
    m_e = max(0.0, mass_mg / e_mg)
    lo_e, lo_err = 0.0, 0.0
    for upper_e, mpe_e in bands:
        err = float(mpe_e) * factor
        if upper_e is None:  # an open last band (class I): flat at its MPE
            return fraction * e_mg * err
        if m_e <= upper_e:
            return fraction * e_mg * (lo_err + (err - lo_err) * (m_e - lo_e) / (upper_e - lo_e))
        lo_e, lo_err = float(upper_e), err
    return fraction * e_mg * lo_err


def zero_wander_mg(t_ms: int, drift: dict[str, float], e_mg: int) -> float:
    """The honest zero's offset at ``t_ms`` (a temperature cycle within ±amplitude)."""
    phase = 2 * math.pi * t_ms / (drift["period_h"] * HOUR_MS) + drift["phase"]
    return drift["amplitude_e"] * e_mg * math.sin(phase)


def idle_readings_mean(offset_mg: float, e_mg: int, *, noise_e: float, samples: int,
                       rng: random.Random) -> tuple[int, int]:
    """(mean, spread) of ``samples`` displayed readings of an idle pan at ``offset_mg``:
    each reading is rounded to e, as the agent averages what the indicator reports."""
    got = [math.floor((offset_mg + rng.gauss(0, noise_e * e_mg)) / e_mg + 0.5) * e_mg
           for _ in range(samples)]
    return round(sum(got) / len(got)), max(got) - min(got)


def reweigh_mass_mg(true_mg: int, *, plu: str, delay_ms: int, loss_factor: float,
                    rng: random.Random) -> int:
    """The goods' mass at the fair scale after ``delay_ms`` of dripping or drying."""
    lo, hi = gd.BY_PLU[plu].loss_pct_per_h
    if hi <= 0 or loss_factor <= 0:
        return true_mg
    pct = rng.uniform(lo, hi) * loss_factor * delay_ms / HOUR_MS
    return round(true_mg * max(0.0, 1 - pct / 100))
