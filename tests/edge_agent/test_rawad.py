"""The raw AD tracker: sales and zero checks get the median AD of their own frames."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from device_profiles.codecs import WeightFrame
from edge_agent.rawad import RawAdTrack
from edge_agent.statemachine import Params, WeighingStateMachine
from weighing import wire

AD0 = 120_000


def sale(ts_ms: int, duration_ms: int, settled_mg: int, **kw: object) -> wire.SaleEvent:
    return wire.SaleEvent(seq=0, ts_ms=ts_ms, net_mg=settled_mg, settled_mg=settled_mg,
                          peak_mg=settled_mg, stable_device=True, stable_software=True,
                          duration_ms=duration_ms, **kw)  # type: ignore[arg-type]


def zero(ts_ms: int, duration_ms: int, mean_mg: int = 0, spread_mg: int = 0,
         ) -> wire.ZeroCheckEvent:
    return wire.ZeroCheckEvent(seq=0, ts_ms=ts_ms, mean_mg=mean_mg, spread_mg=spread_mg, n=10,
                               duration_ms=duration_ms)


def test_a_sale_gets_the_lower_median_of_its_settled_frames() -> None:
    tr = RawAdTrack()
    tr.feed(0, 0, AD0)
    tr.feed(100, 400_000, 160_000, stable=False)  # placing: another weight
    tr.feed(200, 500_000, 169_000, stable=False)  # passing the settled weight, moving
    for t, ad in ((300, 170_004), (400, 170_001), (500, 170_003), (600, 170_002)):
        tr.feed(t, 500_000, ad, stable=True)
    tr.feed(700, 0, AD0)
    out = tr.annotate(sale(700, 600, 500_000))
    assert isinstance(out, wire.SaleEvent)
    assert out.raw_ad == 170_002  # lower median of the four settled frames, an int
    assert out == sale(700, 600, 500_000, raw_ad=170_002)  # nothing else changed


def test_a_zero_check_gets_the_median_of_its_empty_pan_frames() -> None:
    tr = RawAdTrack()
    for t, ad in ((0, AD0 + 5), (100, AD0 - 1), (200, AD0), (300, AD0 + 1)):
        tr.feed(t, 0, ad)
    tr.feed(350, 0, AD0 + 900, stable=False)  # a moving empty pan is left out
    tr.feed(400, 300_000, 150_000)  # the loaded frame that ended the idle period
    out = tr.annotate(zero(400, 400))
    assert isinstance(out, wire.ZeroCheckEvent) and out.raw_ad == AD0


def test_a_drifted_zero_still_finds_its_empty_pan_frames() -> None:
    tr = RawAdTrack()
    for t, (w, ad) in enumerate([(0, AD0), (10_000, AD0 + 1), (10_000, AD0 + 1),
                                  (0, AD0)]):
        tr.feed(t * 100, w, ad)
    tr.feed(400, 600_000, 180_000)
    out = tr.annotate(zero(400, 400, mean_mg=5_000, spread_mg=10_000))
    assert isinstance(out, wire.ZeroCheckEvent) and out.raw_ad == AD0


def test_frames_of_another_weight_or_outside_the_window_are_ignored() -> None:
    tr = RawAdTrack()
    tr.feed(0, 500_000, 999_999)  # same weight, an earlier load: before the window
    tr.feed(1_000, 0, AD0)
    tr.feed(1_200, 500_000, 170_000)
    tr.feed(1_300, 510_000, 171_000)  # another weight in the window
    tr.feed(1_400, 500_000, 170_000)
    tr.feed(1_500, 0, AD0)
    tr.feed(2_000, 500_000, 888_888)  # after the event
    out = tr.annotate(sale(1_500, 400, 500_000))
    assert isinstance(out, wire.SaleEvent) and out.raw_ad == 170_000
    z = tr.annotate(zero(1_000, 1_000))
    assert isinstance(z, wire.ZeroCheckEvent) and z.raw_ad == AD0  # not the 999 999 load


def test_no_matching_frame_leaves_the_event_unchanged() -> None:
    tr = RawAdTrack()
    s, z = sale(1_000, 500, 500_000), zero(1_000, 500)
    assert tr.annotate(s) is s and tr.annotate(z) is z  # nothing tracked yet
    tr.feed(700, 400_000, 160_000)
    assert tr.annotate(s) is s and tr.annotate(z) is z  # nothing of those weights
    assert tr.annotate(sale(600, 100, 400_000)).raw_ad is None  # type: ignore[union-attr]


def test_other_events_and_events_with_raw_ad_pass_unchanged() -> None:
    tr = RawAdTrack()
    tr.feed(0, 0, AD0)
    tr.feed(100, 500_000, 170_000)
    fault = wire.FaultEvent(seq=0, ts_ms=100, code="overload", detail="x")
    given_ad = sale(100, 100, 500_000, raw_ad=1)
    assert tr.annotate(fault) is fault
    assert tr.annotate(given_ad) is given_ad


def test_memory_is_bounded_by_age_and_by_count() -> None:
    tr = RawAdTrack(max_age_ms=1_000, max_frames=10_000)
    for t in range(0, 100_000, 50):
        tr.feed(t, 0, AD0)
    assert len(tr) == 21  # the last second of frames at 20 frames/s
    by_count = RawAdTrack(max_age_ms=10**9, max_frames=100)
    for t in range(10_000):
        by_count.feed(t, 0, AD0 + t)
    assert len(by_count) == 100
    # the zero check of a longer idle period is judged on the frames kept
    out = by_count.annotate(zero(9_999, 9_999))
    assert isinstance(out, wire.ZeroCheckEvent) and out.raw_ad == AD0 + 9_949
    with pytest.raises(ValueError):
        RawAdTrack(max_frames=0)


@given(st.lists(st.integers(-(2**31), 2**32 - 1), min_size=1, max_size=30))
def test_the_median_is_one_of_the_counts_seen(ads: list[int]) -> None:
    tr = RawAdTrack()
    for i, ad in enumerate(ads):
        tr.feed(i, 500_000, ad)
    out = tr.annotate(sale(len(ads), len(ads), 500_000))
    assert isinstance(out, wire.SaleEvent) and out.raw_ad in ads
    below = sum(a < out.raw_ad for a in ads)
    above = sum(a > out.raw_ad for a in ads)
    assert below <= (len(ads) - 1) // 2 and above <= len(ads) // 2


def test_the_state_machine_s_events_find_their_frames() -> None:
    """Windows and weights as the state machine builds them: net readings under a tare."""
    sm = WeighingStateMachine(Params(e_mg=10_000, window_ms=400))
    tr = RawAdTrack()
    events: list[wire.Event] = []
    t = 0

    def run(weight_mg: int, ad: int, n: int, *, stable: bool = True, tare_mg: int = 0) -> None:
        nonlocal t
        for _ in range(n):
            tr.feed(t, weight_mg, ad, stable=stable)
            events.extend(tr.annotate(e)
                          for e in sm.feed(t, WeightFrame(weight_mg=weight_mg, stable=stable,
                                                          tare_mg=tare_mg)))
            t += 100

    run(0, AD0, 25)
    run(300_000, 150_000, 2, stable=False, tare_mg=200_000)
    run(500_000, 190_000, 10, tare_mg=200_000)  # net 500 g over a 200 g tare: AD counts 700 g
    run(0, AD0, 25)
    run(500_000, 170_000, 1)  # ends the second idle period
    zeros = [e for e in events if isinstance(e, wire.ZeroCheckEvent)]
    sales = [e for e in events if isinstance(e, wire.SaleEvent)]
    assert [z.raw_ad for z in zeros] == [AD0, AD0]
    assert len(sales) == 1 and sales[0].raw_ad == 190_000 and sales[0].tare_mg == 200_000
