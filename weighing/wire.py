"""Wire contract v1: MQTT topics and message models between edge agents and the gateway.
One module (about 620 lines) on purpose: it is the contract, read as one document, and
its JSON Schema export (:func:`json_schema`, committed in docs/) is generated from the
models here, so a field added in this file is in the decoder, the encoder and the
schema at once; splitting topics, models and codec apart would split that one place.

Rules (architecture.md §5):

* Topics: ``scales/v1/{market}/{device}/{birth|state|events|samples}`` edge → server,
  ``scales/v1/{market}/{device}/cmd/{name}`` server → edge.
* Mass is an integer number of milligrams (``*_mg``), money an integer number of fen
  (``*_fen``), time UTC milliseconds since the epoch (``*_ms``). Never a float.
* Every payload is a JSON object with ``"v": 1`` (encoders may omit it: absent means 1;
  any other version is rejected). Decoders reject unknown versions,
  wrong types and out-of-range values with :class:`WireDecodeError` naming the topic
  and the field; they never return a partial message.
* Events carry a per-device monotonic ``seq`` (it survives agent restarts); the server
  deduplicates on (device, seq) and records gaps.
* Samples are columnar (parallel arrays) so the server can build numpy arrays
  without touching one Python object per reading.

Models are msgspec ``Struct``s: typed decoding at ~0.3 µs per reading (measured, see
DEVELOPERS.md) and a JSON Schema export (:func:`json_schema`, committed in docs/).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec

from weighing.errors import WireDecodeError

WIRE_VERSION: Final = 1
TOPIC_ROOT: Final = "scales/v1"
MAX_PAYLOAD_BYTES: Final = 256 * 1024  # larger payloads are rejected before decoding
#: the edge sizes its event batches to stay at or under this many bytes, whatever
#: ``batch_size`` says (the gateway dead-letters anything beyond ``MAX_PAYLOAD_BYTES``);
#: the margin covers a few header bytes and keeps the two limits one constant apart
MAX_BATCH_BYTES: Final = MAX_PAYLOAD_BYTES - 1024

_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

# -- topics -------------------------------------------------------------------------


class Channel(StrEnum):
    """The last topic level of an edge → server message."""

    BIRTH = "birth"
    STATE = "state"
    EVENTS = "events"
    SAMPLES = "samples"
    CMD = "cmd"


def check_id(value: str, what: str) -> str:
    """Validate a market or device id: 1–64 of ``[A-Za-z0-9_.-]``, no MQTT wildcards."""
    if not _ID_RE.match(value):
        raise WireDecodeError(f"invalid {what} id {value!r}", where=what)
    return value


def topic(market: str, device: str, channel: Channel, name: str | None = None) -> str:
    """Build a v1 topic. ``name`` is required for (and only for) ``Channel.CMD``."""
    check_id(market, "market")
    check_id(device, "device")
    base = f"{TOPIC_ROOT}/{market}/{device}/{channel.value}"
    if channel is Channel.CMD:
        if not name:
            raise WireDecodeError("a command topic needs a name", where="topic")
        return f"{base}/{check_id(name, 'command')}"
    if name is not None:
        raise WireDecodeError(f"only command topics take a name, not {channel}", where="topic")
    return base


def subscription(market: str = "+", channel: Channel | None = None) -> str:
    """Subscription filter for one market (or all: ``+``), one channel or all of them."""
    if market != "+":
        check_id(market, "market")
    return f"{TOPIC_ROOT}/{market}/+/{channel.value}" if channel else f"{TOPIC_ROOT}/{market}/+/+"


@dataclass(frozen=True, slots=True)
class TopicParts:
    """A parsed v1 topic."""

    market: str
    device: str
    channel: Channel
    name: str | None = None


@functools.lru_cache(maxsize=65_536)
def parse_topic(text: str) -> TopicParts:
    """Split a v1 topic into its parts, or raise :class:`WireDecodeError`.

    Cached (the parts are frozen): a device sends on the same few topics all day, and the
    ingest parses each message's topic (issue 17: 5 µs a message); a bad topic raises
    every time, as exceptions are not cached.
    """
    parts = text.split("/")
    if len(parts) < 5 or parts[0] != "scales" or parts[1] != "v1":
        raise WireDecodeError("not a scales/v1 topic", where=text)
    market, device, chan = parts[2], parts[3], parts[4]
    try:
        channel = Channel(chan)
    except ValueError:
        raise WireDecodeError(f"unknown channel {chan!r}", where=text) from None
    if channel is Channel.CMD:
        if len(parts) != 6:
            raise WireDecodeError("a command topic is .../cmd/{name}", where=text)
        name: str | None = check_id(parts[5], "command")
    else:
        if len(parts) != 5:
            raise WireDecodeError("too many topic levels", where=text)
        name = None
    try:
        check_id(market, "market")
        check_id(device, "device")
    except WireDecodeError as err:
        raise WireDecodeError(err.reason, where=text) from None
    return TopicParts(market, device, channel, name)


# -- shared field types ---------------------------------------------------------------

Mg = Annotated[int, msgspec.Meta(ge=-(10**12), le=10**12, description="mass in milligrams")]
PosMg = Annotated[int, msgspec.Meta(ge=0, le=10**12, description="mass in milligrams")]
Fen = Annotated[int, msgspec.Meta(ge=0, le=10**11, description="money in fen (0.01 yuan)")]
TsMs = Annotated[
    int, msgspec.Meta(ge=0, le=10**14, description="UTC time, milliseconds since the epoch")
]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1, description="per-device sequence")]
Id = Annotated[str, msgspec.Meta(pattern=_ID_RE.pattern, description="identifier")]
Text = Annotated[str, msgspec.Meta(max_length=256)]
Sig = Annotated[str, msgspec.Meta(max_length=128, description="HMAC-SHA256 signature")]
RawAd = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**32 - 1,
                                    description="raw AD count (int32 / uint32 register)")]


class Role(StrEnum):
    """What a scale is for: trading at a stall, or a market's fair scale (公平秤)."""

    TRADE = "trade"
    FAIR = "fair"


class AccuracyClass(StrEnum):
    """OIML R76 / JJG 539 accuracy classes used for trade."""

    I = "I"  # noqa: E741 - the class is called I
    II = "II"
    III = "III"
    IIII = "IIII"


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


# -- messages ---------------------------------------------------------------------------


class _Msg(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every payload: version 1; unknown fields are ignored (forward compatible)."""

    v: Literal[1] = 1


class Birth(_Msg, frozen=True, kw_only=True):
    """Retained on ``.../birth``: who the device is and what it can do."""

    device: Id
    market: Id
    role: Role = Role.TRADE
    profile: Text
    protocol: Text
    max_mg: PosMg
    e_mg: PosMg
    accuracy_class: AccuracyClass = AccuracyClass.III
    serial: Text | None = None
    production_code: Text | None = None  # 生产码
    verification_code: Text | None = None  # 检定码
    software_id: Text | None = None
    capabilities: list[Text] = msgspec.field(default_factory=list)
    agent_version: Text
    boot_id: Text
    ts_ms: TsMs
    #: HMAC-SHA256 with the device key (``weighing.signing.sign_message``, domain "birth")
    sig: Sig | None = None


class State(_Msg, frozen=True, kw_only=True):
    """Retained on ``.../state``: ``online`` on connect, ``offline`` as the last will."""

    state: DeviceState
    ts_ms: TsMs | None = None  # absent in the last will (the broker sends it, not us)
    #: HMAC-SHA256 with the device key (``weighing.signing.sign_message``, domain "state")
    sig: Sig | None = None


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=True):
    """Common fields of every event: its sequence number, device time and signature."""

    seq: Seq
    ts_ms: TsMs
    sig: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class SaleEvent(_Event, frozen=True, kw_only=True, tag="sale"):
    """A committed weighing: a sale, or a settled load on a scale without transactions.

    ``net_mg`` is the weight the sale was committed at; ``settled_mg`` the weight the
    pan settled to (software window), ``peak_mg`` the highest reading of the load.
    ``stable_device`` / ``stable_software`` tell who judged the commit stable;
    ``unsettled_commit`` is set when the sale was taken while moving or above the
    following settled weight by more than 1 e (impact cheat signature, domain.md §4).
    """

    net_mg: Mg
    settled_mg: Mg
    peak_mg: Mg
    tare_mg: Mg = 0
    stable_device: bool
    stable_software: bool
    unsettled_commit: bool = False
    duration_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    unit_price_fen_per_kg: Fen | None = None
    amount_fen: Fen | None = None
    plu: Text | None = None
    trace_code: Text | None = None
    #: median raw AD count of the readings at ``settled_mg``, where the device reports one
    #: (Modbus transmitters): with the idle pan's ``raw_ad`` it gives the scale's
    #: measurement coefficient K = (AD − AD0) / W (domain.md §4, K_real vs K_cal)
    raw_ad: RawAd | None = None


class ZeroCheckEvent(_Event, frozen=True, kw_only=True, tag="zero"):
    """Idle-pan statistics over a window: mean and spread of the empty-pan reading
    (``raw_ad``: median raw AD count over the window, where the device reports one)."""

    mean_mg: Mg
    spread_mg: PosMg
    n: Annotated[int, msgspec.Meta(ge=1)]
    duration_ms: Annotated[int, msgspec.Meta(ge=0)]
    raw_ad: RawAd | None = None


class ReweighEvent(_Event, frozen=True, kw_only=True, tag="reweigh"):
    """A fair-scale re-weigh (核称) of a purchase.

    The purchase is named by the receipt's traceability code (``trace_code``) or, when the
    consumer has no receipt, by the stall: the fair-scale station scans the merchant's
    trust QR code (放心消费诚信码, ``merchant_token``) or the consumer picks the stall
    number on its screen (``stall_no``, of the fair scale's market). At least one of the
    three is required; a trace code wins. A re-weigh named only by the stall is matched by
    weight and time against that merchant's recorded sales: goods that no recorded sale
    explains were weighed on a scale the system does not see (second, untracked scale,
    domain.md §4).
    """

    trace_code: Text | None = None
    merchant_token: Annotated[str, msgspec.Meta(min_length=8, max_length=64)] | None = None
    stall_no: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    reference_mg: Mg
    claimed_mg: Mg | None = None

    def __post_init__(self) -> None:
        if self.trace_code is None and self.merchant_token is None and self.stall_no is None:
            raise ValueError("a re-weigh needs `trace_code`, `merchant_token` or `stall_no`")


class CounterChangeEvent(_Event, frozen=True, kw_only=True, tag="counter"):
    """A calibration / configuration counter, identity or calibration register changed."""

    name: Text
    old: Text | None
    new: Text


SeqRange = Annotated[tuple[Seq, Seq], msgspec.Meta(description="first and last seq, inclusive")]


class FaultEvent(_Event, frozen=True, kw_only=True, tag="fault"):
    """A device or agent fault (transport lost, overload, outbox full, ...).

    ``duration_ms`` is set for faults that describe a period, e.g. ``no-data`` (no frames
    from the device for that long, reported when data resumes).
    ``dropped_seqs`` (code ``outbox-dropped``): the events the agent's outbox dropped
    under its retention bound, as inclusive seq ranges, so the gateway can tell a
    declared drop from an unexplained gap (``dropped_samples``: sample batches dropped).
    """

    code: Text
    detail: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    duration_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    dropped_seqs: Annotated[list[SeqRange], msgspec.Meta(max_length=256)] | None = None
    dropped_samples: Annotated[int, msgspec.Meta(ge=0)] | None = None


class HeartbeatEvent(_Event, frozen=True, kw_only=True, tag="heartbeat"):
    """Agent health counters."""

    queued: int = 0
    sent: int = 0
    dropped: int = 0
    reconnects: int = 0
    frame_errors: int = 0
    uptime_s: int = 0
    #: server time minus agent time, from the last authentic ``time-sync`` command
    clock_offset_ms: int | None = None
    commands_rejected: int = 0


Event = SaleEvent | ZeroCheckEvent | ReweighEvent | CounterChangeEvent | FaultEvent | HeartbeatEvent


class EventBatch(_Msg, frozen=True, kw_only=True):
    """Payload of ``.../events``: one or more events of one device, in seq order."""

    device: Id
    events: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=5000)]
    #: every seq of this device below ``floor_seq`` is settled at the edge: confirmed by
    #: the gateway (``stored`` command) or dropped and declared (``outbox-dropped``). The
    #: gateway starts its acknowledgement watermark there after a restart.
    floor_seq: Seq | None = None


class SampleBatch(_Msg, frozen=True, kw_only=True):
    """Payload of ``.../samples``: raw readings, columnar.

    ``t_ms[i]`` is the time of reading ``i``; ``net_mg[i]`` its net weight; ``flags[i]``
    a bit set of :class:`SampleFlag`. The three arrays have the same length.

    ``seq`` numbers the device's sample batches (its own sequence, apart from the events'):
    the gateway folds a batch into its minute rollups once, whatever the redeliveries.
    ``sig``: HMAC-SHA256 with the device key (``weighing.signing.sign_message``, domain
    "samples"). Both are absent from agents older than issue 15.
    """

    device: Id
    t_ms: Annotated[list[int], msgspec.Meta(max_length=100_000)]
    net_mg: list[int]
    flags: list[int]
    seq: Seq | None = None
    sig: Sig | None = None


class SampleFlag:
    """Bits of ``SampleBatch.flags``."""

    STABLE: Final = 1
    ZERO: Final = 2
    NET: Final = 4
    OVERLOAD: Final = 8
    UNDERLOAD: Final = 16


class CommandName(StrEnum):
    """Commands the server may send on ``.../cmd/{name}``."""

    TIME_SYNC = "time-sync"
    CONFIG_RELOAD = "config-reload"
    #: end-to-end acknowledgement: every event of the device up to ``stored_seq`` is
    #: committed (or settled) at the gateway; the edge outbox may delete it
    STORED = "stored"
    #: the gateway saw a gap: publish the events ``from_seq``..``to_seq`` again
    RESEND = "resend"


Nonce = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="one-use")]


class Command(_Msg, frozen=True, kw_only=True):
    """Payload of ``scales/v1/{market}/{device}/cmd/{name}`` (server → edge).

    ``name`` repeats the topic's last level (so the signature covers it). ``ts_ms`` is the
    server's send time and ``nonce`` a one-use token: the edge accepts a command only if
    its HMAC-SHA256 ``sig`` (``weighing.signing.sign_command``) verifies with the device
    key, ``ts_ms`` is within ±60 s of its clock and the nonce was not seen before.
    Name-specific fields: ``server_ms`` (``time-sync``: the server clock, UTC ms);
    ``stored_seq`` (``stored``: everything up to it is committed at the gateway);
    ``from_seq`` / ``to_seq`` (``resend``: the inclusive range to publish again).
    """

    name: CommandName
    ts_ms: TsMs
    nonce: Nonce
    server_ms: TsMs | None = None
    stored_seq: Seq | None = None
    from_seq: Seq | None = None
    to_seq: Seq | None = None
    sig: Annotated[str, msgspec.Meta(max_length=128)] | None = None


Payload = Birth | State | EventBatch | SampleBatch

_DECODERS: Final[dict[Channel, msgspec.json.Decoder[Any]]] = {
    Channel.BIRTH: msgspec.json.Decoder(Birth),
    Channel.STATE: msgspec.json.Decoder(State),
    Channel.EVENTS: msgspec.json.Decoder(EventBatch),
    Channel.SAMPLES: msgspec.json.Decoder(SampleBatch),
}
_ENCODER: Final = msgspec.json.Encoder()


def encode(message: Payload) -> bytes:
    """Serialise a message to its JSON payload."""
    return _ENCODER.encode(message)


def encode_event(event: Event) -> bytes:
    """Serialise one event (an element of ``EventBatch.events``)."""
    return _ENCODER.encode(event)


def encode_command(command: Command) -> bytes:
    """Serialise a command payload."""
    return _ENCODER.encode(command)


_COMMAND_DECODER: Final = msgspec.json.Decoder(Command)


def decode_command(topic_text: str, payload: bytes) -> tuple[TopicParts, Command]:
    """Parse a command topic and its payload; the payload's name must match the topic's.

    Checks the shape only: authenticity is :func:`weighing.signing.verify_command`'s job.
    """
    parts = parse_topic(topic_text)
    if parts.channel is not Channel.CMD:
        raise WireDecodeError("not a command topic", where=topic_text)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireDecodeError(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", where=topic_text
        )
    try:
        cmd = _COMMAND_DECODER.decode(payload)
    except msgspec.ValidationError as err:
        raise WireDecodeError(f"invalid payload: {err}", where=topic_text) from None
    except msgspec.DecodeError as err:
        raise WireDecodeError(f"malformed JSON: {err}", where=topic_text) from None
    if cmd.name.value != parts.name:
        raise WireDecodeError(
            f"payload name {cmd.name.value!r} differs from the topic's", where=topic_text
        )
    return parts, cmd


def event_batch_payload(device: str, encoded_events: list[bytes], *,
                        floor_seq: int | None = None) -> bytes:
    """Assemble an ``EventBatch`` payload from already-encoded events, without re-encoding.

    The edge outbox stores each event encoded once; batching is then a byte join. Its
    size is at most :data:`BATCH_OVERHEAD_BYTES` plus the events and their commas.
    """
    head = _ENCODER.encode(check_id(device, "device"))
    tail = b"]}" if floor_seq is None else b'],"floor_seq":' + str(floor_seq).encode() + b"}"
    return b'{"v":1,"device":' + head + b',"events":[' + b",".join(encoded_events) + tail


#: bytes of an ``EventBatch`` payload besides its events and their separating commas,
#: for the longest device id and floor_seq (so a batch sized with it never exceeds)
BATCH_OVERHEAD_BYTES: Final = len(event_batch_payload("d" * 64, [], floor_seq=2**63 - 1))


def decode(topic_text: str, payload: bytes) -> tuple[TopicParts, Payload]:
    """Parse a topic and decode its payload, checking the whole message.

    Raises :class:`WireDecodeError` naming the topic and the offending field for a bad
    topic, an oversized or malformed payload, a wrong version, a device in the payload
    that differs from the topic, or sample columns of unequal length.
    """
    parts = parse_topic(topic_text)
    if parts.channel is Channel.CMD:
        raise WireDecodeError("command topics are server → edge", where=topic_text)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireDecodeError(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", where=topic_text
        )
    try:
        msg: Payload = _DECODERS[parts.channel].decode(payload)
    except msgspec.ValidationError as err:
        raise WireDecodeError(f"invalid payload: {err}", where=topic_text) from None
    except msgspec.DecodeError as err:
        raise WireDecodeError(f"malformed JSON: {err}", where=topic_text) from None
    if isinstance(msg, Birth | EventBatch | SampleBatch) and msg.device != parts.device:
        raise WireDecodeError(
            f"payload device {msg.device!r} differs from the topic's", where=topic_text
        )
    if isinstance(msg, Birth) and msg.market != parts.market:
        raise WireDecodeError(
            f"payload market {msg.market!r} differs from the topic's", where=topic_text
        )
    if isinstance(msg, SampleBatch) and not (len(msg.t_ms) == len(msg.net_mg) == len(msg.flags)):
        raise WireDecodeError("sample columns t_ms, net_mg, flags differ in length",
                              where=f"{topic_text} $.t_ms")
    if isinstance(msg, EventBatch):
        seqs = [e.seq for e in msg.events]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            raise WireDecodeError("events are not in increasing seq order",
                                  where=f"{topic_text} $.events")
    return parts, msg


@dataclass(frozen=True, slots=True)
class BadEvent:
    """One event of an ``EventBatch`` that fails the contract on its own."""

    index: int  # position in ``events``
    seq: int | None  # its ``seq`` where one can be read
    reason: str
    raw: bytes = b""  # the event's JSON (re-encoded), for the dead letter


def _where(i: int, err: str) -> str:
    """msgspec's ``"Expected `int`, got `float` - at `$.net_mg`"`` about event ``i`` →
    ``"$.events[i].net_mg: Expected `int`, got `float`"``: the path in the message first."""
    head, sep, path = err.rpartition(" - at `$")
    if sep and path.endswith("`"):
        return f"$.events[{i}]{path[:-1]}: {head}"
    return f"$.events[{i}]: {err}"


def decode_partial(topic_text: str, payload: bytes) -> tuple[TopicParts, Payload | None,
                                                              list[BadEvent]]:
    """:func:`decode`, except that an event batch whose *events* fail one by one keeps
    the good ones: returns the batch of the good events (``None`` if none is good) and
    the bad ones with their reasons (issue 15: one garbled event must not take up to
    4,999 good ones down with it).

    Whatever is wrong with the message as a whole (topic, size, JSON, version, device,
    seq order of the good events) still raises :class:`WireDecodeError`, as in
    :func:`decode`. The fast path is :func:`decode` itself; the per-event path runs only
    for a message that failed.
    """
    try:
        parts, msg = decode(topic_text, payload)
        return parts, msg, []
    except WireDecodeError as err:
        whole = err
    parts = parse_topic(topic_text)
    if parts.channel is not Channel.EVENTS or len(payload) > MAX_PAYLOAD_BYTES:
        raise whole
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        raise whole from None
    items = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items or len(items) > 5000:
        raise whole
    good: list[Any] = []
    bad: list[BadEvent] = []
    for i, item in enumerate(items):
        try:
            msgspec.convert(item, Event)
        except (msgspec.ValidationError, ValueError) as err:
            seq = item.get("seq") if isinstance(item, dict) else None
            seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            bad.append(BadEvent(i, seq, f"{topic_text} {_where(i, str(err))}",
                                _ENCODER.encode(item)))
        else:
            good.append(item)
    if not bad:
        raise whole  # every event is fine alone: the message itself is wrong
    try:
        if good:
            batch = msgspec.convert({**doc, "events": good}, EventBatch)
        else:  # the envelope alone must still be right (version, device)
            msgspec.convert({**doc, "events": [{"kind": "heartbeat", "seq": 0, "ts_ms": 0}]},
                            EventBatch)
            batch = None
    except (msgspec.ValidationError, ValueError):
        raise whole from None
    device = doc.get("device")
    if device != parts.device:
        raise WireDecodeError(f"payload device {device!r} differs from the topic's",
                              where=topic_text)
    if batch is not None and any(
            b.seq <= a.seq for a, b in itertools.pairwise(batch.events)):
        raise WireDecodeError("events are not in increasing seq order",
                              where=f"{topic_text} $.events")
    return parts, batch, bad


def clean_descriptions(node: Any) -> Any:
    """``node`` with every ``description`` string passed through ``inspect.cleandoc``.

    msgspec copies class docstrings into schemas, and whether it dedents them changed
    between releases (0.18 kept the indentation, 0.23 strips it): normalising here keeps
    the generated contract documents byte-identical whichever version is installed.
    """
    if isinstance(node, dict):
        return {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str)
                else clean_descriptions(v) for k, v in node.items()}
    if isinstance(node, list):
        return [clean_descriptions(v) for v in node]
    return node


def schema_components(ref_template: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """msgspec's schemas of the five v1 payloads and their components, descriptions cleaned."""
    schemas, components = msgspec.json.schema_components(
        [Birth, State, EventBatch, SampleBatch, Command], ref_template=ref_template
    )
    return clean_descriptions(list(schemas)), clean_descriptions(components)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of every v1 payload, keyed by channel."""
    schemas, components = schema_components("#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "smart-scale gateway wire contract v1",
        "description": "Payloads of scales/v1/{market}/{device}/{channel} (architecture.md §5)",
        "oneOf": list(schemas),
        "x-channels": dict(
            zip(["birth", "state", "events", "samples", "cmd"], schemas, strict=True)
        ),
        "$defs": components,
    }
