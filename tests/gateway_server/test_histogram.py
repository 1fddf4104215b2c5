"""The ingest transaction histogram as Prometheus reads it: cumulative buckets up to
``+Inf``, a sum and a count that agree."""

from __future__ import annotations

import re

from gateway_server.telemetry.metrics import Histogram


def parse(lines: list[str]) -> dict[str, float]:
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines)}


def test_buckets_are_cumulative_and_bounds_inclusive() -> None:
    h = Histogram()
    for s in (0.001, 0.005, 0.0051, 0.3, 0.3, 12.0):  # 0.005 is in its own bucket (le)
        h.observe(s)
    got = parse(h.lines("ingest_transaction_seconds", {"lane": "events"}))
    bucket = {re.search(r'le="([^"]+)"', k).group(1): v  # type: ignore[union-attr]
              for k, v in got.items() if "_bucket{" in k}
    assert bucket["0.005"] == 2
    assert bucket["0.01"] == 3
    assert bucket["0.25"] == 3
    assert bucket["0.5"] == 5
    assert bucket["10"] == 5
    assert bucket["+Inf"] == 6  # 12 s: above the largest bound, counted only here
    assert list(bucket.values()) == sorted(bucket.values())
    assert got['scalegw_ingest_transaction_seconds_count{lane="events"}'] == 6
    assert abs(got['scalegw_ingest_transaction_seconds_sum{lane="events"}'] - 12.6111) < 1e-9


def test_an_empty_histogram_reads_zero_everywhere() -> None:
    got = parse(Histogram().lines("ingest_transaction_seconds", {"worker": "w-1",
                                                                 "lane": "samples"}))
    assert len(got) == len(Histogram.BUCKETS) + 3
    assert set(got.values()) == {0.0}
    assert all('worker="w-1"' in k and 'lane="samples"' in k for k in got)
