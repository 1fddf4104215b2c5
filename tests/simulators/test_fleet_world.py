"""The fleet world and generator without I/O: determinism, legal identities, scenarios."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from gateway_server.registry.uscc import is_valid
from simulators import (
    fleet_honest as honest,
    fleet_honest_world as honest_world,
    fleet_io,
    goods as gd,
)
from simulators.fleet import Simulation
from simulators.fleet_config import (
    MODELS,
    FleetConfigError,
    World,
    build_world,
    load_fleet_config,
)
from simulators.fleet_honest import HonestSection
from weighing import metrology as mt, wire
from weighing.units import amount_fen

SMALL = Path(__file__).resolve().parents[2] / "simulators" / "fleets" / "small.toml"


def _sim(seed: int | None = None) -> Simulation:
    cfg = load_fleet_config(SMALL)
    if seed is not None:
        cfg.fleet.seed = seed
    sim = Simulation(build_world(cfg))
    list(sim.run())
    return sim


def test_same_seed_same_streams_other_seed_differs() -> None:
    a, b, c = _sim(), _sim(), _sim(8)
    assert a.truth() == b.truth()
    assert a.truth()["fleet"]["stream_sha256"] != c.truth()["fleet"]["stream_sha256"]


def test_world_is_legal() -> None:
    world = build_world(load_fleet_config(SMALL))
    assert all(is_valid(m.code) for m in world.merchants.values())
    for spec in world.scales.values():
        m = MODELS[spec.model]
        mt.check_scale(m.max_mg, m.e_mg, mt.AccuracyClass(m.accuracy_class))
    kinds = {s.kind for v in world.scenarios.values() for s in v}
    assert {"impact", "preset-base", "price-trick", "tray-not-tared", "recalibration",
            "remote-gain", "chip-additive", "outage", "clock-skew"} <= kinds
    assert all(len(v) == 1 for v in world.scenarios.values())  # one scenario per scale


def test_events_decode_and_are_in_time_order() -> None:
    sim = Simulation(build_world(load_fleet_config(SMALL)))
    last_t, seqs = 0, {}
    for out in sim.run():
        assert out.t_ms >= last_t
        last_t = out.t_ms
        if out.kind != "events":
            continue
        payload = wire.event_batch_payload(out.device, list(out.data))
        _, batch = wire.decode(wire.topic(out.market, out.device, wire.Channel.EVENTS), payload)
        for ev in batch.events:
            assert ev.seq == seqs.get(out.device, 0) + 1
            seqs[out.device] = ev.seq
    truth = sim.truth()
    imp = next(s for s in truth["scales"].values()
               if s["scenarios"] and s["scenarios"][0]["kind"] == "impact")
    assert imp["scenarios"][0]["cheated_sales"] > 0
    assert all(short > 0 for _, _, short in imp["scenarios"][0]["short_sales"])


def test_a_preset_base_becomes_visible_with_the_first_idle_report_after_its_onset() -> None:
    sim = Simulation(build_world(load_fleet_config(SMALL)))
    zeros: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for out in sim.run():
        if out.kind == "events":
            evs = [json.loads(raw) for raw in out.data]  # the events as the agent signs them
            zeros[out.device] += [(ev["ts_ms"], ev["mean_mg"]) for ev in evs
                                  if ev["kind"] == "zero"]
    pre = {d: s["scenarios"][0] for d, s in sim.truth()["scales"].items()
           if s["scenarios"] and s["scenarios"][0]["kind"] == "preset-base"}
    assert pre
    for dev, sc in pre.items():
        after = [(t, m) for t, m in zeros[dev] if t >= sc["onset_ms"]]
        assert sc["visible_ms"] == after[0][0] and after[0][1] > 0  # the base shows there


def test_transmitters_report_the_load_cell_not_the_display() -> None:
    """Raw AD follows the mass on the pan; a chip gain moves the display, not the counts."""
    from simulators.fleet import AD_PER_MG, ZERO_AD
    from simulators.fleet_config import Scenario

    def events_of(gain: float | None) -> tuple[list[wire.SaleEvent], list[wire.ZeroCheckEvent]]:
        world = build_world(load_fleet_config(SMALL))
        dev = next(d for d, s in world.scales.items() if s.role == "trade")
        world.scales[dev].model = "modbus-transmitter-generic"
        world.scenarios[dev] = [] if gain is None else [
            Scenario("chip-gain", dev, world.scales[dev].merchant, world.cfg.start_ms, gain)]
        sales, zeros = [], []
        for out in Simulation(world).run():
            if out.kind != "events" or out.device != dev:
                continue
            payload = wire.event_batch_payload(out.device, list(out.data))
            _, batch = wire.decode(wire.topic(out.market, dev, wire.Channel.EVENTS), payload)
            sales += [ev for ev in batch.events if isinstance(ev, wire.SaleEvent)]
            zeros += [ev for ev in batch.events if isinstance(ev, wire.ZeroCheckEvent)]
        return sales, zeros

    e = MODELS["modbus-transmitter-generic"].e_mg
    for gain in (None, 0.10):
        sales, zeros = events_of(gain)
        assert len(sales) > 20 and zeros
        assert all(z.raw_ad is not None and abs(z.raw_ad - ZERO_AD) <= 2 for z in zeros)
        for s in sales:  # gross shown = (1 + gain) × load-cell mass, within rounding
            assert s.raw_ad is not None
            cell_mg = (s.raw_ad - ZERO_AD) / AD_PER_MG
            shown = (s.settled_mg + s.tare_mg) / (1 + (gain or 0))
            assert abs(shown - cell_mg) <= e + 0.001 * cell_mg + 40


# -- honest variation (simulators.fleet_honest) -------------------------------------------


def _world(honest: dict[str, Any], *, seed: int | None = None) -> World:
    cfg = load_fleet_config(SMALL)
    if seed is not None:
        cfg.fleet.seed = seed
    cfg = cfg.model_copy(update={"honest": HonestSection.model_validate(honest)})
    return build_world(cfg)


def _events(world: World) -> tuple[Simulation, dict[str, list[Any]]]:
    sim, got = Simulation(world), defaultdict(list)
    for out in sim.run():
        if out.kind == "events":
            payload = wire.event_batch_payload(out.device, list(out.data))
            _, batch = wire.decode(wire.topic(out.market, out.device, wire.Channel.EVENTS),
                                   payload)
            got[out.device] += batch.events
    return sim, got


def _sales(evs: dict[str, list[Any]], devices: Iterable[str]) -> list[wire.SaleEvent]:
    return [e for d in devices for e in evs.get(d, ()) if isinstance(e, wire.SaleEvent)]


ALL_ON = {
    "no-tray": {"share": 0.3}, "bagged": {"share": 0.3}, "preset-tare": {"share": 0.3},
    "fair-scale": {"models": {"fair-30kg-5g": 0.5}},
    "amount-rounding": {"modes": {"jiao-down": 0.5, "fen-down": 0.5}},
    "zero-drift": {"share": 0.5}, "scale-error": {"share": 0.5}, "drip-dry": {"share": 1.0},
    "reweigh-with-bag": {"share": 0.7}, "new-scale": {"share": 0.3},
    "price-change": {"share": 0.5}, "clock-skew": {"share": 0.3},
    "missing-heartbeats": {"share": 0.3}, "shared-scale": {"share": 0.2},
}


def test_honest_section_off_or_zero_changes_nothing() -> None:
    """Shares of 0 are off: the same event streams as a fleet without the section."""
    zeros = {name: {"share": 0.0} for name in HonestSection.names()
             if name not in ("fair-scale", "amount-rounding")}
    a, b = Simulation(_world({})), Simulation(_world(zeros))
    list(a.run())
    list(b.run())
    assert a.truth()["fleet"]["stream_sha256"] == b.truth()["fleet"]["stream_sha256"]


def test_honest_variations_never_make_a_cheater() -> None:
    off, on = Simulation(_world({})), Simulation(_world(ALL_ON))
    list(off.run())
    list(on.run())
    t_off, t_on = off.truth(), on.truth()
    assert sorted(t_on["fleet"]["honest"]) == sorted(ALL_ON)

    def cases(t: dict[str, Any]) -> list[tuple[Any, ...]]:
        return sorted((d, s["kind"], s["size"], s.get("activated_ms", s["onset_ms"]))
                      for d, v in t["scales"].items() for s in v["scenarios"])

    assert cases(t_on) == cases(t_off)  # the same cheats, on the same scales, from the same time
    for code, m in t_off["merchants"].items():
        assert t_on["merchants"][code]["honest"] == m["honest"]
    extra = set(t_on["merchants"]) - set(t_off["merchants"])  # afternoon merchants
    assert extra and all(t_on["merchants"][c]["honest"] for c in extra)
    with_variation = [c for c, m in t_on["merchants"].items() if m.get("honest_variations")]
    assert len(with_variation) > len(t_on["merchants"]) // 2


def test_same_variations_alone_or_together() -> None:
    """A behaviour picks the same units on its own as with all the others on."""
    alone, together = _world({"zero-drift": {"share": 0.5}}), _world(ALL_ON)
    pick = {d for d, v in alone.honest.scales.items() if "zero-drift" in v}
    assert pick == {d for d, v in together.honest.scales.items() if "zero-drift" in v}


def test_no_tray_sells_tray_goods_untared_and_truth_stays_honest() -> None:
    world = _world({"no-tray": {"share": 1.0}})
    styled = {c for c, v in world.honest.merchants.items() if v.get("tray") == "no-tray"}
    assert styled
    devices = [d for c in styled for d in world.merchants[c].devices]
    sim, evs = _events(world)
    tray_sales = [s for s in _sales(evs, devices) if s.plu and gd.BY_PLU[s.plu].tray]
    assert tray_sales and all(s.tare_mg == 0 for s in tray_sales)
    _, evs_off = _events(_world({}))
    assert any(s.tare_mg > 0 for s in _sales(evs_off, devices))  # they tared trays before
    truth = sim.truth()
    assert all(truth["merchants"][c]["honest_variations"]["tray"] == "no-tray" for c in styled)
    cheater = next(d for d, s in world.scenarios.items() if s[0].kind == "tray-not-tared")
    assert world.scales[cheater].merchant not in styled  # the cheat keeps its tray


def test_preset_tare_reports_the_preset_value() -> None:
    world = _world({"preset-tare": {"share": 1.0}})
    preset = {c: v["preset_tare_mg"] for c, v in world.honest.merchants.items()
              if v.get("tray") == "preset-tare"}
    assert preset
    _, evs = _events(world)
    for code, tare in preset.items():
        sales = [s for s in _sales(evs, world.merchants[code].devices)
                 if s.plu is None or gd.BY_PLU[s.plu].tray]
        assert {s.tare_mg for s in sales if s.tare_mg} == {tare}


def test_bagged_goods_sell_the_bag() -> None:
    """The same sales, each heavier by the bag's few grams (within one e of rounding)."""
    world = _world({"bagged": {"share": 1.0, "bag_g": [3, 4]}})
    code = next(c for c, v in sorted(world.honest.merchants.items())
                if v.get("tray") == "bagged" and not any(
                    gd.BY_PLU[p].tray for p in world.merchants[c].prices)
                and not any(world.scenarios.get(d) for d in world.merchants[c].devices))
    devices = world.merchants[code].devices
    _, on = _events(world)
    _, off = _events(_world({}))
    pairs = list(zip(_sales(on, devices), _sales(off, devices), strict=True))
    assert pairs
    e = max(MODELS[world.scales[d].model].e_mg for d in devices)
    assert all(0 <= a.net_mg - b.net_mg <= 4_000 + e and a.tare_mg == 0 for a, b in pairs)
    assert sum(a.net_mg - b.net_mg for a, b in pairs) > 2_000 * len(pairs)


@pytest.mark.parametrize("mode", ["fen-half-even", "fen-down", "jiao-half-up", "jiao-down"])
def test_amount_rounding_modes(mode: str) -> None:
    world = _world({"amount-rounding": {"modes": {mode: 1.0}}})
    _, evs = _events(world)
    devs = [d for d, v in world.honest.scales.items() if v.get("amount-rounding") == mode]
    sales = _sales(evs, devs)
    assert sales and all(MODELS[world.scales[d].model].can("amount") for d in devs)
    for s in sales:
        assert s.amount_fen is not None and s.unit_price_fen_per_kg is not None
        exact = s.net_mg * s.unit_price_fen_per_kg / 1_000_000
        assert s.amount_fen == honest.amount_fen(s.net_mg, s.unit_price_fen_per_kg, mode)
        unit = 10 if mode.startswith("jiao") else 1
        if mode.endswith("down"):
            assert exact - unit < s.amount_fen <= exact
        else:
            assert abs(s.amount_fen - exact) <= unit / 2
    assert any(s.amount_fen != amount_fen(s.net_mg, s.unit_price_fen_per_kg) for s in sales)


def test_amount_rounding_examples() -> None:
    # 1.25 kg × 12.34 元/kg = 15.425 元
    assert honest.amount_fen(1_250_000, 1234) == amount_fen(1_250_000, 1234) == 1543
    assert honest.amount_fen(1_250_000, 1234, "fen-half-even") == 1542
    assert honest.amount_fen(1_250_000, 1234, "fen-down") == 1542
    assert honest.amount_fen(1_250_000, 1234, "jiao-half-up") == 1540
    assert honest.amount_fen(1_250_000, 1234, "jiao-down") == 1540
    assert honest.amount_fen(1_250_000, 1236, "jiao-half-up") == 1550  # 15.45 元
    assert honest.amount_fen(1_250_000, 1236, "jiao-down") == 1540


def test_zero_drift_stays_within_a_quarter_e() -> None:
    """The zero wanders within ±0.25 e; the display rounds it to 0 unless the readings'
    noise makes it flicker, and the agent's mean of what it shows is then mostly small
    (an honest scale can still average above 0.25 e over a window: that is the point)."""
    def zeros(noise_e: float) -> list[tuple[int, int]]:
        world = _world({"zero-drift": {"share": 1.0, "noise_e": noise_e}})
        assert all(v["zero-drift"]["amplitude_e"] <= 0.25 for v in world.honest.scales.values())
        _, evs = _events(world)
        quiet = [d for d, s in world.scales.items()
                 if s.role == "trade" and not world.scenarios.get(d)]
        return [(z.mean_mg, world.scales[d].m.e_mg) for d in quiet for z in evs[d]
                if isinstance(z, wire.ZeroCheckEvent)]

    assert {mean for mean, _ in zeros(0.0)} == {0}
    noisy = zeros(0.3)
    assert any(mean for mean, _ in noisy)
    assert sum(abs(mean) <= 0.25 * e for mean, e in noisy) >= 0.95 * len(noisy)


def test_scale_error_curve_lies_inside_the_in_service_mpe() -> None:
    for m in range(0, 15_000_001, 2_500):
        for f in (-1.0, 1.0):
            err = honest.error_curve_mg(m, e_mg=5_000, accuracy_class="III", fraction=f)
            if m >= 100_000:  # Min capacity: 20 e
                assert abs(err) <= mt.mpe_mg(m, e_mg=5_000, accuracy_class=mt.AccuracyClass.III,
                                             stage=mt.Stage.IN_SERVICE)
    assert honest.error_curve_mg(2_500_000, e_mg=5_000, accuracy_class="III",
                                 fraction=1.0) == 5_000  # 2 × 0.5 e at 500 e


def test_drip_dry_and_bags_change_what_the_fair_scale_sees() -> None:
    def references(world: World) -> list[int]:
        _, evs = _events(world)
        return [e.reference_mg for d in world.fair.values() for e in evs[d]
                if isinstance(e, wire.ReweighEvent)]

    base = references(_world({}))
    dried = references(_world({"drip-dry": {"share": 1.0, "factor": 5.0}}))
    bagged = references(_world({"reweigh-with-bag": {"share": 1.0, "bag_g": [4, 5]}}))
    assert len(base) == len(dried) == len(bagged) > 10
    assert all(a <= b for a, b in zip(dried, base, strict=True)) and sum(dried) < sum(base)
    assert all(a >= b for a, b in zip(bagged, base, strict=True)) and sum(bagged) > sum(base)


def test_fair_scale_of_another_class_is_born_with_it() -> None:
    world = _world({"fair-scale": {"models": {"fair-15kg-1g-II": 1.0}}})
    births = {spec.device: wire.decode(wire.topic(spec.market, spec.device, wire.Channel.BIRTH),
                                       payload)[1]
              for spec, payload in Simulation(world).births()}
    for dev in world.fair.values():
        assert (births[dev].e_mg, births[dev].accuracy_class) == (1_000, wire.AccuracyClass.II)


def test_new_scale_reports_its_counters_first_with_old_none() -> None:
    world = _world({"new-scale": {"share": 1.0, "midday": 1.0}})
    _, evs = _events(world)
    news = {d: v["new-scale"]["connected_ms"] for d, v in world.honest.scales.items()}
    assert len(news) == sum(1 for s in world.scales.values() if s.role == "trade")
    midday = [d for d, t in news.items() if t > world.cfg.start_ms]
    assert midday
    for dev, t in news.items():
        counters = [e for e in evs[dev] if isinstance(e, wire.CounterChangeEvent)]
        assert {(c.name, c.old) for c in counters[:2]} == {("cal_counter", None),
                                                           ("cfg_counter", None)}
        assert evs[dev][0].ts_ms >= t  # nothing before it was connected


def test_price_change_registered_then_followed_by_the_scale() -> None:
    world = _world({"price-change": {"share": 1.0, "per_day": [4, 4], "lag_min": [1, 30]}})
    _, evs = _events(world)
    checked = 0
    for code, v in world.honest.merchants.items():
        for c in v.get("price-change", ()):
            assert c["registered_ms"] < c["scale_ms"] and c["new"] != c["old"]
            assert c["new"] % 10 == 0
            quiet = [d for d in world.merchants[code].devices if not world.scenarios.get(d)]
            for s in _sales(evs, quiet):  # (a price trick charges another price)
                if s.plu != c["plu"]:
                    continue
                later = [x for x in v["price-change"] if x["plu"] == s.plu
                         and x["scale_ms"] <= s.ts_ms]
                want = later[-1]["new"] if later else world.merchants[code].prices[s.plu]
                assert s.unit_price_fen_per_kg == want
                checked += 1
    assert checked > 20
    for v in world.honest.merchants.values():  # in order per PLU: the day ends as registered
        last: dict[str, dict[str, Any]] = {}
        for c in v.get("price-change", ()):
            if c["plu"] in last:
                assert c["registered_ms"] >= last[c["plu"]]["scale_ms"]
                assert c["old"] == last[c["plu"]]["new"]
            last[c["plu"]] = c
    versions = fleet_io.price_versions(world)
    assert sum(1 for *_, at in versions if at is not None) == sum(
        len(v.get("price-change", ())) for v in world.honest.merchants.values())


def test_clock_skew_and_missing_heartbeats() -> None:
    world = _world({"clock-skew": {"share": 1.0, "minutes": [5, 10]},
                    "missing-heartbeats": {"share": 1.0, "drop": 1.0}})
    sim, evs = _events(world)
    truth = sim.truth()
    skewed = {d for d, v in world.honest.scales.items() if "clock-skew" in v}
    assert skewed and not any(world.scenarios.get(d) for d in skewed)
    for d in skewed:
        assert 5 * 60_000 <= abs(truth["scales"][d]["clock_skew_ms"]) <= 10 * 60_000
    assert not any(isinstance(e, wire.HeartbeatEvent) for v in evs.values() for e in v)


def test_shared_scale_changes_merchant_at_the_handover() -> None:
    world = _world({"shared-scale": {"share": 1.0, "registered": 1.0}})
    shared = {d: v["shared-scale"] for d, v in world.honest.scales.items()}
    assert shared
    _, evs = _events(world)
    for dev, sh in shared.items():
        owner, afternoon = world.merchants[sh["owner"]], world.merchants[sh["afternoon"]]
        assert afternoon.devices == [dev] and afternoon.stall_no == owner.stall_no
        assert afternoon.market == owner.market and afternoon.code not in {
            s.merchant for s in world.scales.values()}
        hand = sh["handover_ms"][0]
        for s in _sales(evs, [dev]):
            if s.plu:
                assert s.plu in (afternoon.prices if s.ts_ms >= hand else owner.prices)
    assert fleet_io.scaleless_merchants(world) == sorted(s["afternoon"] for s in shared.values())
    assert [b[:2] for b in honest_world.bindings(world, world.honest)] == sorted(
        (d, s["afternoon"]) for d, s in shared.items())


@pytest.mark.parametrize(("section", "where"), [
    ('zero-drift = { share = 0.2, amplitude_e = [0.1, 0.4] }', "honest.zero-drift.amplitude_e"),
    ('no-trays = { share = 0.2 }', "honest.no-trays"),
    ('bagged = { share = 1.5 }', "honest.bagged.share"),
    ('amount-rounding = { modes = { fen-up = 0.1 } }', "honest.amount-rounding.modes"),
    ('fair-scale = { models = { fair-15kg-1g-II = 0.7, fair-30kg-5g = 0.5 } }',
     "honest.fair-scale.models"),
    ('no-tray = { share = 0.6 }\nbagged = { share = 0.6 }', "no-tray.share + bagged.share"),
    ('price-change = { share = 0.2, lag_min = [10, 0] }', "honest.price-change.lag_min"),
    ('scale-error = { share = 0.2, of_mpe = [0.5, 1.5] }', "honest.scale-error.of_mpe"),
])
def test_honest_config_errors_name_the_field(tmp_path: Path, section: str, where: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(SMALL.read_text(encoding="utf-8") + f"\n[honest]\n{section}\n",
                    encoding="utf-8")
    with pytest.raises(FleetConfigError) as err:
        load_fleet_config(path)
    assert where in str(err.value) and str(path) in str(err.value)


def test_city_fleet_turns_the_variations_on() -> None:
    cfg = load_fleet_config(SMALL.parent / "city-5000.toml")
    assert set(cfg.honest.enabled()) == set(HonestSection.names())
    assert cfg.fleet.seed not in cfg.fleet.tuning_seeds or cfg.fleet.tuning_seeds
