"""HMAC-SHA256 signatures on events, with a per-device key (architecture.md §4).

The signed bytes are the event's canonical JSON: the msgspec encoding of the event
with ``sig`` left out (fields in definition order, defaults omitted), so the server
re-encodes the decoded event and gets the same bytes. The device id is mixed into the
MAC so an event cannot be replayed under another device's name with the same key.
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from weighing.wire import Event, encode_event

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
    if event.sig is None:
        return False
    return hmac.compare_digest(event.sig, _mac(key, device, event))
