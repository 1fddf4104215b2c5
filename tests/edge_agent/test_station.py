"""The fair-scale station, pure part: what a scan names, how scanner bytes split into
scans, and how a scan pairs with the weighing that follows it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from edge_agent.station import (
    MAX_LINE_BYTES,
    ScanError,
    ScannedCode,
    ScanReader,
    Station,
    classify,
)
from weighing import wire

# -- classify ---------------------------------------------------------------------------

TOKEN = "q3ZxY-_0aBcDeFgHiJkLmNoP"  # secrets.token_urlsafe(18): 24 characters


@pytest.mark.parametrize(("text", "expected"), [
    # receipt codes: the trace-record example and a superset (docs/protocols.md)
    ("3301020240501000042", ScannedCode(trace_code="3301020240501000042")),
    ("TR-0001", ScannedCode(trace_code="TR-0001")),
    ("  AB_12.3/x\t", ScannedCode(trace_code="AB_12.3/x")),
    ("x" * 256, ScannedCode(trace_code="x" * 256)),
    # the merchant's trust QR: gateway_server.registry.qr.trust_url(base, token)
    (f"https://trust.example.org/m/{TOKEN}", ScannedCode(merchant_token=TOKEN)),
    (f"HTTP://10.0.0.5:8080/base/m/{TOKEN}/", ScannedCode(merchant_token=TOKEN)),
    (f"https://t.example/m/x/m/{TOKEN}", ScannedCode(merchant_token=TOKEN)),
    ("https://t.example/m/abc%2Ddef_123", ScannedCode(merchant_token="abc-def_123")),
    # a receipt QR pointing at a traceability page
    ("https://trace.example.gov.cn/q?code=3301-42", ScannedCode(trace_code="3301-42")),
    ("https://trace.example.gov.cn/q?x=1&trace=T%2F9", ScannedCode(trace_code="T/9")),
    ("https://t.example/q?trace=B&code=A", ScannedCode(trace_code="A")),
    # stall cards and the station keypad
    ("STALL:A-12", ScannedCode(stall_no="A-12")),
    ("stall: 7", ScannedCode(stall_no="7")),
    ("摊位:东区 3号", ScannedCode(stall_no="东区 3号")),
    ("摊位：12", ScannedCode(stall_no="12")),
])
def test_classify_names_the_purchase(text: str, expected: ScannedCode) -> None:
    assert classify(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    (" \t ", "empty"),
    ("x" * 257, "too-long"),
    ("x" * 600, "too-long"),
    ("TR\x07001", "bad-character"),
    ("\x1b[2JTR1", "bad-character"),
    ("TR\u2028001", "bad-character"),
    ("TR 0001", "bad-trace-code"),
    ("码123", "bad-trace-code"),
    ("TR,0001", "bad-trace-code"),
    ("https://t.example/m/short", "bad-token"),
    ("https://t.example/m/" + "a" * 65, "bad-token"),
    ("https://t.example/m/abc%20defghij", "bad-token"),
    ("https://t.example/m/%ff%fe%fd%fc%fb%fa%f9%f8", "bad-token"),
    ("https://t.example/about", "bad-url"),
    ("https://[t.example/m/" + TOKEN, "bad-url"),
    ("https://t.example/q?code=A%20B", "bad-trace-code"),
    ("https://t.example/q?code=", "bad-trace-code"),
    ("https://t.example/q?code=" + "A" * 300, "too-long"),
    ("STALL:", "bad-stall-no"),
    ("STALL:" + "9" * 65, "bad-stall-no"),
])
def test_classify_rejects_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ScanError) as info:
        classify(text)
    assert info.value.reason == reason


def test_scan_error_shows_the_text_truncated_and_escaped() -> None:
    with pytest.raises(ScanError) as info:
        classify("\x07" + "A" * 300)
    msg = str(info.value)
    assert "U+0007" in msg and "'\\x07AAAA" in msg and msg.endswith("…'")
    assert len(msg) < 120 and isinstance(info.value, ValueError)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=700) | st.from_regex(r"https?://[a-z.]{1,12}/(m/|\?code=)\S{0,80}",
                                             fullmatch=True))
def test_classify_raises_only_scan_error_and_a_result_goes_on_the_wire(text: str) -> None:
    try:
        code = classify(text)
    except ScanError as err:
        assert err.reason and str(err)
        return
    # exactly one field set, and a re-weigh naming it encodes and decodes unchanged
    assert [code.trace_code, code.merchant_token, code.stall_no].count(None) == 2
    ev = wire.ReweighEvent(seq=1, ts_ms=1, reference_mg=1000, trace_code=code.trace_code,
                           merchant_token=code.merchant_token, stall_no=code.stall_no)
    batch = wire.EventBatch(device="d-1", events=[ev])
    topic = wire.topic("m-1", "d-1", wire.Channel.EVENTS)
    _, decoded = wire.decode(topic, wire.encode(batch))
    assert decoded == batch


# -- ScanReader -------------------------------------------------------------------------


def _summary(items: list[ScannedCode | ScanError]) -> list[object]:
    return [(i.reason, str(i)) if isinstance(i, ScanError) else i for i in items]


def test_reader_splits_on_cr_lf_and_crlf_without_empty_scans() -> None:
    r = ScanReader()
    got = r.feed(b"A1\r\nB2\rC3\n\r\n\nSTALL:9")
    assert got == [ScannedCode(trace_code=c) for c in ("A1", "B2", "C3")]
    assert r.feed(b"\r\n") == [ScannedCode(stall_no="9")]


def test_reader_rejects_non_utf8_and_keeps_going() -> None:
    got = ScanReader().feed(b"\xff\xfeAB\r\n" + "摊位:五".encode() + b"\n")
    assert isinstance(got[0], ScanError) and got[0].reason == "not-utf8"
    assert got[1] == ScannedCode(stall_no="五")


def test_reader_bounds_a_line_without_end_and_recovers() -> None:
    r = ScanReader()
    got = r.feed(b"x" * (MAX_LINE_BYTES + 1))
    assert [e.reason for e in got if isinstance(e, ScanError)] == ["too-long"]
    assert len(r._buf) == 0  # bounded: nothing kept of the runaway line
    assert r.feed(b"y" * 5000) == []  # the same line goes on: reported once
    assert r.feed(b"\nTR-2\n") == [ScannedCode(trace_code="TR-2")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"TR-1", b"\r", b"\n", b"\x00", b"\xe6\x91", b"https://a/m/",
                                 b"x" * 700, b"STALL:", "摊位:".encode(), b" "]),
                max_size=30))
def test_reader_all_at_once_equals_byte_by_byte(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    whole = ScanReader().feed(data)
    r = ScanReader()
    pieces = [item for i in range(len(data)) for item in r.feed(data[i:i + 1])]
    assert _summary(pieces) == _summary(whole)


# -- Station ----------------------------------------------------------------------------


def _sale(ts_ms: int, settled_mg: int = 1_250_000, seq: int = 7) -> wire.SaleEvent:
    return wire.SaleEvent(seq=seq, ts_ms=ts_ms, net_mg=settled_mg + 5_000, settled_mg=settled_mg,
                          peak_mg=settled_mg + 90_000, stable_device=True, stable_software=True)


RECEIPT = ScannedCode(trace_code="TR-0001")
TRUST = ScannedCode(merchant_token=TOKEN)


def test_a_scan_turns_the_next_sale_into_a_reweigh_once() -> None:
    s = Station(pair_window_ms=120_000)
    s.scan(1_000, RECEIPT)
    got = s.commit(_sale(5_000))
    assert got == wire.ReweighEvent(seq=7, ts_ms=5_000, trace_code="TR-0001",
                                    reference_mg=1_250_000, claimed_mg=None)
    assert s.pending is None
    assert s.commit(_sale(9_000)) == _sale(9_000)  # consumed: the next one is a sale
    assert (s.stats.scans, s.stats.reweighs, s.stats.unpaired) == (1, 1, 1)


def test_goods_already_on_the_pan_when_scanned_pair() -> None:
    # the load started at 0 ms; the consumer scans at 3 s; the sale is emitted at lifting
    s = Station(pair_window_ms=120_000)
    s.scan(3_000, TRUST)
    got = s.commit(_sale(4_000, settled_mg=480_000))
    assert isinstance(got, wire.ReweighEvent)
    assert (got.merchant_token, got.reference_mg, got.trace_code) == (TOKEN, 480_000, None)


def test_a_sale_without_a_scan_passes_and_other_events_are_untouched() -> None:
    s = Station(pair_window_ms=1000)
    s.scan(0, RECEIPT)
    zero = wire.ZeroCheckEvent(seq=3, ts_ms=100, mean_mg=0, spread_mg=0, n=5, duration_ms=2000)
    fault = wire.FaultEvent(seq=4, ts_ms=200, code="unsettled-load")
    assert s.commit(zero) is zero and s.commit(fault) is fault
    assert s.pending == RECEIPT  # still waiting for a weighing


def test_a_newer_scan_replaces_the_pending_one() -> None:
    s = Station(pair_window_ms=120_000)
    s.scan(0, RECEIPT)
    s.scan(500, TRUST)
    got = s.commit(_sale(2_000))
    assert isinstance(got, wire.ReweighEvent) and got.merchant_token == TOKEN
    assert got.trace_code is None and s.stats.replaced == 1


def test_an_expired_scan_is_dropped_and_counted() -> None:
    s = Station(pair_window_ms=10_000)
    s.scan(0, RECEIPT)
    assert s.commit(_sale(10_000)) != _sale(10_000)  # exactly the window: pairs
    s.scan(20_000, RECEIPT)
    assert s.commit(_sale(30_001)) == _sale(30_001)
    assert (s.stats.expired, s.stats.unpaired, s.pending) == (1, 1, None)
    s.scan(40_000, RECEIPT)
    s.expire(50_001)  # the agent expires on every read, not only on a commit
    s.scan(50_002, TRUST)
    assert (s.stats.expired, s.stats.replaced) == (2, 0)


def test_a_scan_after_the_commit_waits_for_the_next_load() -> None:
    s = Station(pair_window_ms=120_000)
    s.scan(5_000, RECEIPT)
    assert s.commit(_sale(4_900)) == _sale(4_900)
    got = s.commit(_sale(8_000))
    assert isinstance(got, wire.ReweighEvent) and got.trace_code == "TR-0001"


def test_a_scan_from_the_future_expires() -> None:
    # the clock was stepped back by an hour after the scan
    s = Station(pair_window_ms=120_000)
    s.scan(3_600_000, RECEIPT)
    assert s.commit(_sale(1_000)) == _sale(1_000)
    assert s.pending is None and s.stats.expired == 1


def test_scanned_code_names_exactly_one_thing() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ScannedCode()
    with pytest.raises(ValueError, match="exactly one"):
        ScannedCode(trace_code="A", stall_no="1")
    assert ScannedCode(stall_no="1").kind == "stall_no"
