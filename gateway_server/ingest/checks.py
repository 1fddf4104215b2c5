"""What the pipeline checks in each message, and how it records what it refuses.

The message as the pipeline sees it (:class:`Incoming`), the plausibility limits
(:class:`Limits`, issue 15), the result of one batch (:class:`BatchResult`), and the
checks of pipeline steps 4 and 4a (``ingest.pipeline``): signatures of births, states and
sample batches, one event's problems, a sample batch's times, whether a sample batch's
seq is new. A refused message or event becomes a dead letter with its reason; nothing
here touches the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway_server.detect.rules.legal import LEGAL_TECHNICAL
from weighing import wire
from weighing.errors import WireDecodeError
from weighing.metrology import indication_limit_mg
from weighing.signing import check_event, check_message

if TYPE_CHECKING:
    from gateway_server.settings import Settings

DEAD_LETTER_KEEP_BYTES = 64 * 1024  # an oversized payload is kept truncated, its size recorded
#: missing ranges of sample-batch seqs remembered per device: a batch that arrives later
#: than this many newer gaps is taken for a duplicate (and not counted twice)
SAMPLE_HOLES_KEPT = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Plausibility limits of the ingest (issue 15); ``None`` switches a check off.

    ``store_batch`` called directly (tests, tools) checks only what needs no setting (NUL,
    sale weights); the ingest passes :meth:`from_settings`.
    """

    ts_past_ms: int | None = None  # a device time older than receipt by more is refused
    ts_future_ms: int | None = None  # ... or ahead of receipt by more
    seq_jump: int | None = None  # a seq beyond the device's highest + this is refused
    unsigned: str = "accept"  # births / states / samples without a signature: accept | reject

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(ts_past_ms=s.event_max_age_s * 1000 or None,
                   ts_future_ms=s.event_max_ahead_s * 1000 or None,
                   seq_jump=s.seq_jump_max or None, unsigned=s.unsigned_messages)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One MQTT message, decoded (``msg``) or not (``error``)."""

    topic: str
    payload: bytes
    received_ms: int
    parts: wire.TopicParts | None = None
    msg: wire.Payload | None = None
    error: str | None = None
    #: events of the message that fail the contract alone (the others are in ``msg``)
    bad_events: tuple[wire.BadEvent, ...] = ()
    #: the signature verdicts of ``msg``'s events (``weighing.signing.check_event``, in
    #: order) checked in the network thread with the device key then known
    #: (:func:`precheck`): the key they were checked with, and the verdicts
    prechecked: tuple[bytes, tuple[str | None, ...]] | None = None


def precheck(inc: Incoming, keys: dict[str, bytes]) -> Incoming:
    """``inc`` with its events' signatures checked with the key ``keys`` has for its
    device, if any (issue 17). Called in the network thread as a message arrives, so the
    HMACs are computed while the writer waits on the database; the pipeline takes the
    verdicts only if the key it reads in its transaction is the same, else checks again."""
    msg = inc.msg
    if not isinstance(msg, wire.EventBatch) or inc.parts is None:
        return inc
    key = keys.get(inc.parts.device)
    if key is None:
        return inc
    device = inc.parts.device
    return replace(inc, prechecked=(key, tuple(check_event(key, device, ev)
                                               for ev in msg.events)))


def decode_message(topic: str, payload: bytes, received_ms: int) -> Incoming:
    try:
        parts, msg, bad = wire.decode_partial(topic, payload)
    except WireDecodeError as err:
        return Incoming(topic, payload, received_ms, error=str(err))
    return Incoming(topic, payload, received_ms, parts, msg, bad_events=tuple(bad))


@dataclass
class BatchResult:
    new_sales: list[dict[str, Any]] = field(default_factory=list)
    new_events: int = 0
    duplicates: int = 0
    dead: list[dict[str, Any]] = field(default_factory=list)
    quarantined: int = 0
    bad_signatures: int = 0
    gaps: int = 0
    samples: int = 0
    new_findings: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    sample_batches: list[tuple[str, str, wire.SampleBatch]] = field(default_factory=list)
    unsigned: int = 0  # births / states / samples of keyed devices accepted without a signature
    sample_duplicates: int = 0  # redelivered sample batches, not counted again
    #: ``id()`` of the messages whose every event the pipeline checked against the device's
    #: key, and of the events among them whose signature failed: the end-to-end
    #: acknowledgement settles on this verdict instead of checking each HMAC again
    checked_messages: set[int] = field(default_factory=set)
    #: the device keys read in the transaction (for :func:`precheck` of later messages)
    keys: dict[str, bytes] = field(default_factory=dict)
    forged_events: set[int] = field(default_factory=set)


def _text(value: str) -> str:
    """Text a database stores (PostgreSQL refuses NUL in text)."""
    return value.replace("\x00", "\ufffd")


def dead_letter(res: BatchResult, inc: Incoming, reason: str, device: str | None = None, *,
          payload: bytes | None = None) -> None:
    """A dead letter: the message (or, with ``payload``, the one event) and why."""
    body = inc.payload if payload is None else payload
    res.dead.append({
        "received_ms": inc.received_ms, "topic": _text(inc.topic[:512]), "device": device,
        "reason": _text(reason[:2000]), "payload": body[:DEAD_LETTER_KEEP_BYTES],
        "size": len(body),
    })


def nul_field(obj: Any) -> str | None:
    """The name of a text field of a wire struct holding a NUL character, if any."""
    for name in obj.__struct_fields__:
        name = str(name)
        v = getattr(obj, name)
        if isinstance(v, str) and "\x00" in v:
            return name
        if isinstance(v, list) and any(isinstance(x, str) and "\x00" in x for x in v):
            return name
    return None


def bad_signature(res: BatchResult, inc: Incoming, *, market: str, device: str, ts_ms: int,
                   now_ms: int, what: str, why: str, dedup: str,
                   payload: bytes | None = None, seq: int | None = None) -> None:
    res.bad_signatures += 1
    dead_letter(res, inc, f"{inc.topic} {what}: {why}", device, payload=payload)
    add_finding(res, kind="bad-signature", severity="high", market=market,
             device=device, ts_ms=ts_ms, created_ms=now_ms,
             title="数据签名无效 Event signature invalid",
             legal_basis=LEGAL_TECHNICAL,
             evidence={"what": what, "reason": why,
                       **({"seq": seq} if seq is not None else {})},
             dedup_key=f"bad-signature:{device}:{dedup}"[:256])


def check_signed(res: BatchResult, inc: Incoming, key: bytes | None, limits: Limits, *,
                  market: str, device: str, now_ms: int,
                  msg: wire.Birth | wire.State | wire.SampleBatch) -> bool:
    """A birth / state / sample batch of a keyed device: True when it may be used."""
    if key is None:
        return True
    why = check_message(key, device, msg)
    if why is None:
        return True
    channel = inc.parts.channel.value if inc.parts else "?"
    if why == "missing signature" and limits.unsigned == "accept":
        res.unsigned += 1  # an agent older than issue 15 (migration setting)
        return True
    if why == "missing signature":
        dead_letter(res, inc, f"{inc.topic}: missing signature (unsigned {channel} refused: "
                        "unsigned_messages = reject)", device)
        return False
    ts = getattr(msg, "ts_ms", None) or inc.received_ms
    bad_signature(res, inc, market=market, device=device, ts_ms=ts, now_ms=now_ms,
                   what=f"$ ({channel})", why=why,
                   dedup=f"{channel}:{inc.received_ms}:{hash(inc.payload) & 0xFFFFFFFF:x}")
    return False


def event_problem(ev: wire.Event, known: dict[str, Any], limits: Limits, received_ms: int,
                   top_seq: int | None, *, nul_possible: bool = True) -> str | None:
    """Why an authentic event is still not stored (issue 15), or None.

    ``nul_possible``: False when the message's JSON holds no ``\u0000`` escape, the only
    way a JSON text carries a NUL (a raw control character is malformed JSON), so the
    per-field search (12 µs an event, issue 17's profile) is skipped.
    """
    nul = nul_field(ev) if nul_possible else None
    if nul is not None:
        return f"NUL character in {nul} (not storable text)"
    if limits.ts_past_ms is not None and ev.ts_ms < received_ms - limits.ts_past_ms:
        return (f"device time {ev.ts_ms} is more than {limits.ts_past_ms // 1000} s before "
                f"receipt at {received_ms} (event_max_age_s)")
    if limits.ts_future_ms is not None and ev.ts_ms > received_ms + limits.ts_future_ms:
        return (f"device time {ev.ts_ms} is more than {limits.ts_future_ms // 1000} s after "
                f"receipt at {received_ms} (event_max_ahead_s)")
    if limits.seq_jump is not None and top_seq is not None and ev.seq > top_seq + limits.seq_jump:
        return (f"seq {ev.seq} jumps more than {limits.seq_jump} beyond the highest "
                f"seq {top_seq} of the device (seq_jump_max)")
    if isinstance(ev, wire.SaleEvent):
        if ev.net_mg < 0 or ev.settled_mg < 0:
            return f"negative sale weight (net {ev.net_mg} mg, settled {ev.settled_mg} mg)"
        if known.get("max_mg") and known.get("e_mg"):
            limit = indication_limit_mg(known["max_mg"], known["e_mg"])
            top = max(ev.net_mg, ev.settled_mg, ev.peak_mg)
            if top > limit:
                return (f"weight {top} mg above Max + 9 e = {limit} mg of the scale "
                        "(OIML R76-1 4.2.3: no indication there)")
    return None


def samples_problem(sb: wire.SampleBatch, limits: Limits, received_ms: int) -> str | None:
    if not sb.t_ms:
        return None
    lo, hi = min(sb.t_ms), max(sb.t_ms)
    if limits.ts_past_ms is not None and lo < received_ms - limits.ts_past_ms:
        return f"sample time {lo} is more than {limits.ts_past_ms // 1000} s before receipt"
    if limits.ts_future_ms is not None and hi > received_ms + limits.ts_future_ms:
        return f"sample time {hi} is more than {limits.ts_future_ms // 1000} s after receipt"
    return None


def sample_seq_new(known: dict[str, Any], seq: int) -> bool:
    """Is sample batch ``seq`` new for the device? Updates the high mark and the holes."""
    hi = known.get("samples_seq")
    holes: list[list[int]] = known.setdefault(
        "_holes", json.loads(known.get("samples_holes") or "[]"))
    if hi is None or seq > hi:
        if hi is not None and seq > hi + 1:
            holes.append([hi + 1, seq - 1])
            del holes[:-SAMPLE_HOLES_KEPT]
        known["samples_seq"] = seq
        known["_samples_dirty"] = True
        return True
    for i, (a, b) in enumerate(holes):
        if a <= seq <= b:
            holes[i:i + 1] = [h for h in ([a, seq - 1], [seq + 1, b]) if h[0] <= h[1]]
            known["_samples_dirty"] = True
            return True
    return False


def add_finding(res: BatchResult, **f: Any) -> None:
    f.setdefault("status", "open")
    f.setdefault("legal_basis", "")
    f["evidence"] = json.dumps(f.get("evidence", {}), ensure_ascii=False, sort_keys=True)
    res.new_findings.append(f)
