"""The fleet world and generator without I/O: determinism, legal identities, scenarios."""

from __future__ import annotations

from pathlib import Path

from gateway_server.uscc import is_valid
from simulators.fleet import Simulation
from simulators.fleet_config import MODELS, build_world, load_fleet_config
from weighing import metrology as mt
from weighing import wire

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
