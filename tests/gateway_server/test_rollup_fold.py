"""The minute rollups' batch-wise fold (issue 17) equals the exact per-reading fold it
replaced, whatever the batches: several batches of one device, batches that straddle a
minute, negative weights, flags with and without the stable bit or with bits wire does not
define (those take the exact path), and weights far beyond int64."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from gateway_server.ingest.scale_state import _minute_folds, _minute_folds_exact
from weighing import wire

T0 = 1_790_000_000_000


@st.composite
def batches(draw: st.DrawFn, big: bool = False) -> list[tuple[str, str, wire.SampleBatch]]:
    out = []
    weight = st.integers(-(2**70), 2**70) if big else st.integers(-5_000_000, 60_000_000)
    for _ in range(draw(st.integers(0, 6))):
        device = draw(st.sampled_from(["s-1", "s-2", "s-3"]))
        n = draw(st.integers(0, 40))
        t = sorted(draw(st.lists(st.integers(T0, T0 + 300_000), min_size=n, max_size=n)))
        w = draw(st.lists(weight, min_size=n, max_size=n))
        f = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
        out.append(("m", device, wire.SampleBatch(device=device, t_ms=t, net_mg=w, flags=f)))
    return out


@settings(max_examples=300, deadline=None)
@given(batches())
def test_batch_fold_equals_the_exact_fold(b: list[tuple[str, str, wire.SampleBatch]]) -> None:
    assert _minute_folds(b) == _minute_folds_exact(b)


@settings(max_examples=100, deadline=None)
@given(batches(big=True))
def test_weights_beyond_int64_are_folded_exactly(
        b: list[tuple[str, str, wire.SampleBatch]]) -> None:
    assert _minute_folds(b) == _minute_folds_exact(b)


def test_a_minute_split_over_two_batches_is_one_row() -> None:
    b = [("m", "s-1", wire.SampleBatch(device="s-1", t_ms=[T0, T0 + 1_000], net_mg=[5, 7],
                                       flags=[1, 0])),
         ("m", "s-1", wire.SampleBatch(device="s-1", t_ms=[T0 + 2_000], net_mg=[3], flags=[1]))]
    minute = T0 - T0 % 60_000
    assert _minute_folds(b) == {("s-1", minute): [3, 3, 7, 15, 2]}
