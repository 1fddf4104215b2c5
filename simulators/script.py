"""Scripted load sequences: what a simulated scale shows, frame by frame.

Pure and deterministic (a seed, no clock): a script is a list of :class:`Load`s; the
:func:`timeline` turns it into ``(t_ms, WeightFrame)`` pairs at the profile's frame
rate. Each load goes: empty pan (stable zero) → goods placed (readings in motion,
overshooting then settling) → settled (stable, the load rounded to e) → goods removed
(motion) → empty pan again. Tests compare what the agent reports with ``Load.mass_mg``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from device_profiles.codecs import WeightFrame
from device_profiles.schema import Profile


@dataclass(frozen=True, slots=True)
class Load:
    """One placement of goods on the pan."""

    mass_mg: int  # what the scale settles to (a whole number of e)
    idle_ms: int = 1000  # empty pan before the goods arrive
    settle_ms: int = 500  # motion while the goods are placed
    hold_ms: int = 1500  # settled, stable
    remove_ms: int = 300  # motion while the goods are taken off
    peak_mg: int | None = None  # overshoot while placing (default: +8 %)
    unit_price_fen_per_kg: int | None = None
    plu: str | None = None


def round_to_e(mass_mg: int, e_mg: int) -> int:
    """Round half up to a whole number of e (the displayed value of an exact load)."""
    q, r = divmod(mass_mg, e_mg)
    return (q + (1 if 2 * r >= e_mg else 0)) * e_mg


def random_script(profile: Profile, n: int, *, seed: int = 1, fast: bool = False) -> list[Load]:
    """``n`` loads between 20 e and 60 % of Max, each a whole number of e."""
    rng = random.Random(seed)
    e = profile.metrology.e_mg
    lo, hi = 20 * e, max(21 * e, profile.metrology.max_mg * 6 // 10)
    k = 0.4 if fast else 1.0
    loads = []
    for _ in range(n):
        mass = round_to_e(rng.randrange(lo, hi), e)
        loads.append(
            Load(
                mass_mg=mass,
                idle_ms=int(rng.randrange(800, 1600) * k),
                settle_ms=int(rng.randrange(300, 700) * k),
                hold_ms=int(rng.randrange(1200, 2000) * k) + 600,
                remove_ms=int(300 * k),
            )
        )
    return loads


def timeline(
    loads: list[Load],
    *,
    e_mg: int,
    frame_rate_hz: float,
    t0_ms: int = 0,
    tail_ms: int = 1000,
) -> Iterator[tuple[int, WeightFrame]]:
    """Frames of the whole script, with their times in milliseconds from ``t0_ms``."""
    step = 1000.0 / frame_rate_hz
    t = float(t0_ms)

    def frames(
        duration_ms: int, weight_at: Callable[[float], float], stable: bool
    ) -> Iterator[tuple[int, WeightFrame]]:
        nonlocal t
        end = t + duration_ms
        start = t
        while t < end:
            frac = (t - start) / duration_ms if duration_ms else 1.0
            w = round_to_e(int(weight_at(frac)), e_mg)
            yield int(t), WeightFrame(weight_mg=w, stable=stable, tare_mg=0, zero=w == 0)
            t += step

    for load in loads:
        peak = load.peak_mg if load.peak_mg is not None else load.mass_mg * 108 // 100
        yield from frames(load.idle_ms, _empty, True)
        yield from frames(load.settle_ms, _placing(load.mass_mg, peak), False)
        yield from frames(load.hold_ms, _holding(load.mass_mg), True)
        yield from frames(load.remove_ms, _removing(load.mass_mg), False)
    yield from frames(tail_ms, _empty, True)


# Weight on the pan as a function of the fraction of a phase gone by (0 … 1).


def _empty(frac: float) -> float:
    return 0.0


def _placing(mass_mg: int, peak_mg: int) -> Callable[[float], float]:
    """Placing: rise to the peak over the first 40 %, then decay to the load."""

    def at(frac: float) -> float:
        if frac < 0.4:
            return peak_mg * frac / 0.4
        return peak_mg + (mass_mg - peak_mg) * (frac - 0.4) / 0.6

    return at


def _holding(mass_mg: int) -> Callable[[float], float]:
    return lambda frac: mass_mg


def _removing(mass_mg: int) -> Callable[[float], float]:
    return lambda frac: mass_mg * (1 - frac)
