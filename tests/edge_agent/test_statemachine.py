from __future__ import annotations

from hypothesis import given, settings, strategies as st

from device_profiles.codecs import WeightFrame
from device_profiles.schema import load_profile
from edge_agent.statemachine import Params, WeighingStateMachine
from simulators.script import Load, random_script, timeline
from weighing import wire

E = 5_000  # 15 kg / 5 g scale


def run(frames: list[tuple[int, WeightFrame]], **kw: int) -> list[wire.Event]:
    sm = WeighingStateMachine(Params(e_mg=E, **kw))  # type: ignore[arg-type]
    out: list[wire.Event] = []
    for t, f in frames:
        out += sm.feed(t, f)
    return out + sm.flush(frames[-1][0] + 1)


def sales(events: list[wire.Event]) -> list[wire.SaleEvent]:
    return [e for e in events if isinstance(e, wire.SaleEvent)]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 10_000), st.integers(1, 6))
def test_one_sale_per_scripted_load_at_its_settled_weight(seed: int, n: int) -> None:
    profile = load_profile("toledo-15kg-5g")
    loads = random_script(profile, n, seed=seed)
    got = sales(run(list(timeline(loads, e_mg=E, frame_rate_hz=20))))
    assert [s.net_mg for s in got] == [ld.mass_mg for ld in loads]
    assert all(s.stable_device and s.stable_software and not s.unsettled_commit for s in got)
    assert all(s.peak_mg >= s.net_mg for s in got)


def test_time_shift_changes_nothing_but_times() -> None:
    profile = load_profile("toledo-15kg-5g")
    frames = list(timeline(random_script(profile, 3, seed=4), e_mg=E, frame_rate_hz=20))
    a = sales(run(frames))
    b = sales(run([(t + 86_400_000, f) for t, f in frames]))
    assert [(s.net_mg, s.duration_ms) for s in a] == [(s.net_mg, s.duration_ms) for s in b]


def test_idle_pan_gives_a_zero_check_with_offset_and_spread() -> None:
    frames = [(t * 50, WeightFrame(weight_mg=(E if t % 2 else 0), stable=True)) for t in range(80)]
    frames.append((80 * 50, WeightFrame(weight_mg=1_000_000, stable=True)))
    zeros = [e for e in run(frames) if isinstance(e, wire.ZeroCheckEvent)]
    assert zeros and zeros[0].spread_mg == E and zeros[0].mean_mg == 2_500
    assert zeros[0].n == 80


def test_load_that_never_settles_is_a_fault_not_a_sale() -> None:
    frames = [(0, WeightFrame(weight_mg=0, stable=True))]
    frames += [(50 * i, WeightFrame(weight_mg=1_000_000 + (i % 2) * 50_000, stable=False))
               for i in range(1, 40)]
    frames.append((2_000, WeightFrame(weight_mg=0, stable=True)))
    events = run(frames)
    assert not sales(events)
    assert any(isinstance(e, wire.FaultEvent) and e.code == "unsettled-load" for e in events)


def _impact(commit_at_peak: bool) -> list[tuple[int, WeightFrame]]:
    """Goods thrown on: 0.155 kg read 0.198 kg at the peak (domain.md §4)."""
    frames: list[tuple[int, WeightFrame]] = []
    t = 0
    for _ in range(10):
        frames.append((t, WeightFrame(weight_mg=0, stable=True)))
        t += 50
    for w in (120_000, 198_000, 185_000, 170_000, 160_000):
        frames.append((t, WeightFrame(weight_mg=w, stable=False,
                                      print_request=commit_at_peak and w == 198_000)))
        t += 50
    for i in range(30):
        frames.append((t, WeightFrame(weight_mg=155_000, stable=True,
                                      print_request=not commit_at_peak and i == 15)))
        t += 50
    for _ in range(10):
        frames.append((t, WeightFrame(weight_mg=0, stable=True)))
        t += 50
    return frames


def test_impact_commit_at_peak_is_flagged_with_peak_and_settled_weights() -> None:
    (sale,) = sales(run(_impact(commit_at_peak=True)))
    assert sale.unsettled_commit
    assert sale.net_mg == 198_000 and sale.settled_mg == 155_000 and sale.peak_mg == 198_000
    assert not sale.stable_device


def test_honest_sale_of_the_same_goods_is_not_flagged() -> None:
    (sale,) = sales(run(_impact(commit_at_peak=False)))
    assert not sale.unsettled_commit
    assert sale.net_mg == sale.settled_mg == 155_000 and sale.peak_mg == 198_000
    assert sale.stable_device and sale.stable_software


def test_small_load_below_threshold_is_not_a_sale() -> None:
    frames = [(i * 50, WeightFrame(weight_mg=5 * E, stable=True)) for i in range(40)]
    assert not sales(run(frames))


def test_scripted_load_with_explicit_peak() -> None:
    loads = [Load(mass_mg=2_000_000, peak_mg=2_600_000)]
    (sale,) = sales(run(list(timeline(loads, e_mg=E, frame_rate_hz=20))))
    assert sale.peak_mg == 2_600_000 and sale.net_mg == 2_000_000


def _plateau(w: int, n: int, t0: int, *, stable: bool = True) -> list[tuple[int, WeightFrame]]:
    return [(t0 + 50 * i, WeightFrame(weight_mg=w, stable=stable)) for i in range(n)]


def test_a_killed_agent_resumes_a_settled_load_from_its_checkpoint() -> None:
    sm = WeighingStateMachine(Params(e_mg=E))
    for t, f in _plateau(0, 10, 0) + _plateau(1_000_000, 20, 500):
        assert not sales(sm.feed(t, f))
    cp = sm.checkpoint()
    assert cp is not None
    # a new process: the pan is already empty when it starts reading
    sm2 = WeighingStateMachine(Params(e_mg=E))
    assert sm2.restore(cp)
    (sale,) = sales(sm2.feed(5_000, WeightFrame(weight_mg=0, stable=True)))
    assert sale.net_mg == 1_000_000 and sale.duration_ms == 4_500
    assert sm2.checkpoint() is None
    # the same goods still on the pan: the load goes on, one sale at unloading
    sm3 = WeighingStateMachine(Params(e_mg=E))
    assert sm3.restore(cp)
    events = [e for t, f in _plateau(1_000_000, 5, 6_000) for e in sm3.feed(t, f)]
    assert not sales(events)
    assert [s.net_mg for s in sales(sm3.feed(7_000, WeightFrame(weight_mg=0, stable=True)))] == [
        1_000_000]
    # other goods on the pan: the old load is emitted, the new one starts
    sm4 = WeighingStateMachine(Params(e_mg=E))
    assert sm4.restore(cp)
    events = [e for t, f in _plateau(2_500_000, 20, 6_000) for e in sm4.feed(t, f)]
    events += sm4.feed(8_000, WeightFrame(weight_mg=0, stable=True))
    assert [s.net_mg for s in sales(events)] == [1_000_000, 2_500_000]
    assert not WeighingStateMachine(Params(e_mg=E)).restore(b"garbage")


def test_print_flag_held_for_frames_is_one_sale_and_a_reprint_after_moving_is_another() -> None:
    frames = _plateau(0, 10, 0)
    frames += [(500 + 50 * i, WeightFrame(weight_mg=1_000_000, stable=True,
                                          print_request=10 <= i < 13)) for i in range(20)]
    frames += [(1_500, WeightFrame(weight_mg=1_300_000, stable=False))]  # goods added
    frames += [(1_550 + 50 * i, WeightFrame(weight_mg=1_500_000, stable=True,
                                            print_request=i == 12)) for i in range(20)]
    frames += _plateau(0, 5, 2_600)
    got = sales(run(frames))
    assert [s.net_mg for s in got] == [1_000_000, 1_500_000]
    assert not any(s.unsettled_commit for s in got)


def test_overload_is_one_fault_per_episode() -> None:
    frames = _plateau(0, 5, 0)
    frames += [(250 + 50 * i, WeightFrame(weight_mg=0, overload=True)) for i in range(10)]
    frames += _plateau(0, 5, 800)
    frames += [(1_100 + 50 * i, WeightFrame(weight_mg=0, overload=True)) for i in range(3)]
    faults = [e for e in run(frames) if isinstance(e, wire.FaultEvent)]
    assert [f.code for f in faults] == ["overload", "overload"]


def test_long_idle_reports_zero_periodically_from_stable_readings_only() -> None:
    frames = [(50 * i, WeightFrame(weight_mg=0 if i % 10 else 40_000, stable=i % 10 != 0))
              for i in range(1, 500)]
    zeros = [e for e in run(frames, zero_report_ms=10_000) if isinstance(e, wire.ZeroCheckEvent)]
    # every 10 s of a 25 s idle pan, and the rest when the stream ends
    assert [z.duration_ms for z in zeros] == [10_000, 10_000, 4_901]
    assert all(z.mean_mg == 0 and z.spread_mg == 0 for z in zeros)  # moving readings left out


def test_a_late_reader_squeezing_frame_times_still_sees_the_plateau() -> None:
    # 10 frames of a plateau stamped within 100 ms (read in one late burst): the device
    # sent them over 500 ms, which fills a 400 ms window of a 20 frames/s device
    frames = _plateau(0, 5, 0) + [(300 + 10 * i, WeightFrame(weight_mg=1_000_000, stable=True))
                                  for i in range(10)]
    frames += [(420, WeightFrame(weight_mg=0, stable=True))]
    assert not sales(run(frames))
    assert [s.net_mg for s in sales(run(frames, window_frames=8))] == [1_000_000]


def _record(code: str | None, w: int, *, plu: str | None = "101") -> WeightFrame:
    return WeightFrame(weight_mg=w, stable=True, print_request=True, trace_code=code, plu=plu,
                       unit_price_fen_per_kg=1_200 if w else None,
                       amount_fen=(w * 1_200 + 500_000) // 1_000_000 if w else None)


def test_transaction_records_alone_are_one_sale_each() -> None:
    """A traceability scale that sends only its sale records, nothing in between."""
    frames = [(i * 1000, _record(f"T{i}", 1_000_000 + i * 5_000)) for i in range(3)]
    got = sales(run(frames))
    assert [s.trace_code for s in got] == ["T0", "T1", "T2"]
    assert [s.net_mg for s in got] == [1_000_000, 1_005_000, 1_010_000]
    assert all(s.amount_fen and s.plu == "101" and not s.unsettled_commit for s in got)


def test_repeated_record_is_one_sale_and_empty_records_are_an_idle_pan() -> None:
    frames = [(i * 50, _record(None, 0, plu="0")) for i in range(10)]
    frames += [(500 + i * 50, _record(None, 2_000_000, plu="0")) for i in range(20)]
    frames += [(1500 + i * 50, _record(None, 0, plu="0")) for i in range(10)]
    frames += [(2000 + i * 50, _record(None, 2_000_000, plu="0")) for i in range(20)]
    got = sales(run(frames))
    assert [s.net_mg for s in got] == [2_000_000, 2_000_000]  # two loads of equal mass
