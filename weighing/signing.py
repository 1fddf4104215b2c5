"""HMAC-SHA256 signatures on events, with a per-device key (architecture.md §4).

The signed bytes are the event's canonical JSON: the msgspec encoding of the event
with ``sig`` left out (fields in definition order, defaults omitted), so the server
re-encodes the decoded event and gets the same bytes. The device id is mixed into the
MAC so an event cannot be replayed under another device's name with the same key.

Commands (server → edge, ``.../cmd/{name}``) are signed the same way with the device key,
in their own domain (``"cmd"`` prefix), and carry a timestamp and a one-use nonce against
replay (:func:`verify_command`).

Births, states and sample batches (edge → server, issue 15) are signed like events, each
in the domain of its channel (``"birth"``, ``"state"``, ``"samples"`` + 0x00 + device id +
0x00 + the canonical message without ``sig``), scheme tag ``m1:``
(:func:`sign_message` / :func:`check_message`).

Verification never raises on what a device sent: a signature that is not ASCII (which
``hmac.compare_digest`` refuses with ``TypeError``), too long or of an unknown scheme is
simply invalid, and :func:`check_event` / :func:`check_message` say why in words.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TypeVar

import msgspec

from weighing.errors import GatewayError
from weighing.wire import (
    Birth,
    Command,
    Event,
    SampleBatch,
    State,
    encode,
    encode_command,
    encode_event,
)

_SIG_PREFIX = "h1:"  # scheme tag: HMAC-SHA256 over device id + 0x00 + canonical event


def _mac(key: bytes, device: str, event: Event) -> str:
    body = encode_event(msgspec.structs.replace(event, sig=None))
    digest = hmac.new(key, device.encode() + b"\x00" + body, hashlib.sha256).hexdigest()
    return _SIG_PREFIX + digest


def sign_event(key: bytes, device: str, event: Event) -> Event:
    """Return ``event`` with its ``sig`` set."""
    return msgspec.structs.replace(event, sig=_mac(key, device, event))


def verify_event(key: bytes, device: str, event: Event) -> bool:
    """True when the event carries a valid signature for ``device`` under ``key``."""
    return check_event(key, device, event) is None


def _same(sig: str, expected: str) -> bool:
    """Constant-time comparison that never raises (non-ASCII text is simply unequal)."""
    return sig.isascii() and hmac.compare_digest(sig.encode(), expected.encode())


def check_event(key: bytes, device: str, event: Event) -> str | None:
    """None when the event's signature is valid; else why not (``missing signature``,
    ``invalid signature``, ...). Never raises on what the device sent."""
    if event.sig is None:
        return "missing signature"
    try:
        ok = _same(event.sig, _mac(key, device, event))
    except Exception as err:  # an event that cannot be re-encoded is not authentic
        return f"signature not verifiable: {type(err).__name__}"
    return None if ok else "invalid signature"


# -- births, states, sample batches (edge → server) --------------------------------------

_MSG_PREFIX = "m1:"  # scheme tag: HMAC-SHA256 over channel + 0x00 + device + 0x00 + message
Signed = Birth | State | SampleBatch
M = TypeVar("M", Birth, State, SampleBatch)


def _domain(message: Signed) -> bytes:
    if isinstance(message, Birth):
        return b"birth"
    if isinstance(message, State):
        return b"state"
    return b"samples"


def _message_mac(key: bytes, device: str, message: Signed) -> str:
    body = encode(msgspec.structs.replace(message, sig=None))
    msg = _domain(message) + b"\x00" + device.encode() + b"\x00" + body
    return _MSG_PREFIX + hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_message(key: bytes | None, device: str, message: M) -> M:
    """``message`` (a birth, state or sample batch) with its ``sig`` set; unchanged
    without a key (a device that has none publishes unsigned, as its events)."""
    if key is None:
        return message
    return msgspec.structs.replace(message, sig=_message_mac(key, device, message))


def check_message(key: bytes, device: str, message: Signed) -> str | None:
    """None when the birth / state / sample batch is validly signed; else why not."""
    if message.sig is None:
        return "missing signature"
    try:
        ok = _same(message.sig, _message_mac(key, device, message))
    except Exception as err:
        return f"signature not verifiable: {type(err).__name__}"
    return None if ok else "invalid signature"


# -- commands (server → edge) -----------------------------------------------------------

#: a command is accepted only if its ``ts_ms`` is this close to the receiver's clock
COMMAND_WINDOW_MS = 60_000

_CMD_PREFIX = "c1:"  # scheme tag: HMAC-SHA256 over "cmd" + 0x00 + device id + 0x00 + command


def _command_mac(key: bytes, device: str, command: Command) -> str:
    body = encode_command(msgspec.structs.replace(command, sig=None))
    msg = b"cmd\x00" + device.encode() + b"\x00" + body
    return _CMD_PREFIX + hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_command(key: bytes, device: str, command: Command) -> Command:
    """Return ``command`` with its ``sig`` set (the server's side).

    The MAC covers the device id, the command name, every payload field, ``ts_ms`` and
    ``nonce``, and is domain-separated from event signatures, so neither another
    device's command nor a signed event can be passed off as this command.
    """
    return msgspec.structs.replace(command, sig=_command_mac(key, device, command))


class CommandRejectedError(GatewayError):
    """A command is not authentic or not fresh (remote error); ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def verify_command(
    key: bytes, device: str, command: Command, *, now_ms: int,
    window_ms: int = COMMAND_WINDOW_MS,
) -> None:
    """Check a command's signature and freshness; raise :class:`CommandRejectedError`.

    Replay protection needs the receiver's help too: within the window it must refuse a
    ``nonce`` it has already accepted (the edge agent keeps them for ``2 × window_ms``).
    """
    if command.sig is None:
        raise CommandRejectedError("unsigned")
    if not _same(command.sig, _command_mac(key, device, command)):
        raise CommandRejectedError("bad signature")
    skew = command.ts_ms - now_ms
    if abs(skew) > window_ms:
        raise CommandRejectedError(
            f"stale: ts_ms differs from the receiver's clock by {skew} ms"
        )


def mqtt_password(key: bytes, device: str) -> str:
    """The device's MQTT password, derived from its HMAC key (so the agent needs no
    second secret): 32 hex digits of HMAC-SHA256(key, "mqtt-password:v1:" + device).
    ``gateway-server export-mosquitto`` writes the matching Mosquitto password file."""
    mac = hmac.new(key, b"mqtt-password:v1:" + device.encode(), hashlib.sha256)
    return mac.hexdigest()[:32]
