from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, strategies as st

from weighing import wire
from weighing.errors import WireDecodeError
from weighing.signing import sign_event, verify_event

DOCS = Path(__file__).resolve().parents[2] / "docs"


def sale(seq: int = 1, **kw: object) -> wire.SaleEvent:
    base: dict[str, object] = dict(seq=seq, ts_ms=1_700_000_000_000, net_mg=1_250_000,
                                   settled_mg=1_250_000, peak_mg=1_300_000,
                                   stable_device=True, stable_software=True)
    base.update(kw)
    return wire.SaleEvent(**base)  # type: ignore[arg-type]


def test_topics_round_trip() -> None:
    t = wire.topic("m1", "d-1", wire.Channel.EVENTS)
    assert t == "scales/v1/m1/d-1/events"
    assert wire.parse_topic(t) == wire.TopicParts("m1", "d-1", wire.Channel.EVENTS)
    c = wire.topic("m1", "d-1", wire.Channel.CMD, "time-sync")
    assert wire.parse_topic(c).name == "time-sync"
    assert wire.subscription("m1") == "scales/v1/m1/+/+"


@pytest.mark.parametrize("bad", ["scales/v2/m/d/events", "scales/v1/m/d/nope", "scales/v1/m/d",
                                 "scales/v1/m/+/events", "scales/v1/m/d/events/x",
                                 "scales/v1/m/d/cmd"])
def test_bad_topics_are_rejected_with_the_topic_named(bad: str) -> None:
    with pytest.raises(WireDecodeError) as err:
        wire.parse_topic(bad)
    assert bad in str(err.value)


def test_event_batch_round_trip_and_union_tags() -> None:
    batch = wire.EventBatch(device="d-1", events=[
        sale(1), wire.ZeroCheckEvent(seq=2, ts_ms=5, mean_mg=0, spread_mg=0, n=3, duration_ms=10),
        wire.ReweighEvent(seq=3, ts_ms=6, trace_code="T1", reference_mg=1_245_000),
        wire.FaultEvent(seq=4, ts_ms=7, code="x"),
        wire.ReweighEvent(seq=5, ts_ms=8, stall_no="B-12", reference_mg=805_000),
        wire.ReweighEvent(seq=6, ts_ms=9, merchant_token="tok-abcdefgh", reference_mg=5_000),
    ])
    parts, got = wire.decode("scales/v1/m1/d-1/events", wire.encode(batch))
    assert got == batch and parts.device == "d-1"


def test_event_batch_payload_join_equals_encoding() -> None:
    events = [sale(1), sale(2, net_mg=5)]
    joined = wire.event_batch_payload("d-1", [wire.encode_event(e) for e in events])
    assert wire.decode("scales/v1/m/d-1/events", joined)[1] == wire.EventBatch(
        device="d-1", events=events)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b"{", "malformed"),
        (b'{"v":2,"device":"d-1","events":[]}', "$.v"),
        (b'{"device":"d-1","events":[]}', "$.events"),
        (b'{"device":"d-1","events":[{"kind":"sale","seq":1,"ts_ms":1,"net_mg":1.5,'
         b'"settled_mg":1,"peak_mg":1,"stable_device":true,"stable_software":true}]}',
         "$.events[0].net_mg"),
        (b'{"device":"d-1","events":[{"kind":"teleport","seq":1,"ts_ms":1}]}', "kind"),
        (b'{"device":"d-1","events":[{"kind":"fault","seq":2,"ts_ms":1,"code":"a"},'
         b'{"kind":"fault","seq":2,"ts_ms":1,"code":"b"}]}', "increasing seq"),
        (b'{"device":"other","events":[{"kind":"fault","seq":2,"ts_ms":1,"code":"a"}]}',
         "differs from the topic"),
        (b'{"device":"d-1","events":[{"kind":"fault","seq":1,"ts_ms":1,"code":"a"},'
         b'{"kind":"reweigh","seq":2,"ts_ms":1,"reference_mg":5}]}',
         "re-weigh needs `trace_code`, `merchant_token` or `stall_no` - at `$.events[1]`"),
    ],
)
def test_bad_payloads_say_what_and_where(payload: bytes, where: str) -> None:
    with pytest.raises(WireDecodeError) as err:
        wire.decode("scales/v1/m/d-1/events", payload)
    assert where.lower() in str(err.value).lower()
    assert "scales/v1/m/d-1/events" in str(err.value)


def test_oversized_payload_rejected_before_decoding() -> None:
    with pytest.raises(WireDecodeError, match="exceeds"):
        wire.decode("scales/v1/m/d-1/events", b" " * (wire.MAX_PAYLOAD_BYTES + 1))


def test_sample_columns_must_match() -> None:
    bad = wire.encode(wire.SampleBatch(device="d-1", t_ms=[1, 2], net_mg=[0], flags=[0, 0]))
    with pytest.raises(WireDecodeError, match="differ in length"):
        wire.decode("scales/v1/m/d-1/samples", bad)


def test_no_float_in_any_legal_quantity() -> None:
    schema = json.dumps(wire.json_schema())
    assert '"number"' not in schema  # every mass, money and time field is an integer


def test_committed_json_schema_is_current() -> None:
    from weighing import export_schema

    committed = (DOCS / "wire-v1.schema.json").read_text(encoding="utf-8")
    assert committed == export_schema.text(), "run: python -m weighing.export_schema"


@given(st.integers(1, 2**40), st.integers(-(10**9), 10**9), st.binary(min_size=1, max_size=32))
def test_signature_verifies_and_detects_tampering(seq: int, net: int, key: bytes) -> None:
    ev = sign_event(key, "d-1", sale(seq, net_mg=net))
    assert verify_event(key, "d-1", ev)
    assert not verify_event(key, "d-2", ev)
    assert not verify_event(key, "d-1", msgspec.structs.replace(ev, net_mg=net + 1))
    assert not verify_event(key + b"x", "d-1", ev)
    # what the server decodes verifies too (canonical encoding is stable)
    _, batch = wire.decode("scales/v1/m/d-1/events", wire.encode(wire.EventBatch(
        device="d-1", events=[ev])))
    assert isinstance(batch, wire.EventBatch) and verify_event(key, "d-1", batch.events[0])


def test_committed_asyncapi_document_is_current() -> None:
    from weighing.asyncapi import text

    assert (DOCS / "asyncapi.json").read_text(encoding="utf-8") == text(), \
        "run: python -m weighing.asyncapi"
    committed = json.loads(text())
    assert committed["asyncapi"].startswith("3.")
    assert set(committed["channels"]) == {"birth", "state", "events", "samples", "command"}
    for msg in committed["components"]["messages"].values():
        name = msg["payload"]["$ref"].rsplit("/", 1)[1]
        assert name in committed["components"]["schemas"]
