"""The codec registry: protocol id → sans-I/O codec class (see ``base`` for the rules)."""

from __future__ import annotations

from typing import Any

from device_profiles.codecs.ad_text import AdTextCodec
from device_profiles.codecs.base import (
    REQUEST_WEIGHT,
    TARE,
    ZERO,
    Codec,
    Command,
    EncodeError,
    FrameError,
    StatusReplyError,
    WeightFrame,
)
from device_profiles.codecs.dialog04 import Dialog04Codec
from device_profiles.codecs.ean13_weight import Ean13WeightCodec
from device_profiles.codecs.mt_sics import MtSicsCodec
from device_profiles.codecs.reversed_display import ReversedDisplayCodec
from device_profiles.codecs.toledo_8217 import Toledo8217Codec
from device_profiles.codecs.toledo_continuous import ToledoContinuousCodec
from device_profiles.codecs.trace_record import TraceRecordCodec
from device_profiles.codecs.yaohua_a9 import YaohuaA9Codec
from device_profiles.codecs.yaohua_a12 import YaohuaA12Codec

CODECS: dict[str, type[Codec]] = {
    cls.protocol_id: cls
    for cls in (
        ToledoContinuousCodec,
        YaohuaA9Codec,
        YaohuaA12Codec,
        ReversedDisplayCodec,
        AdTextCodec,
        MtSicsCodec,
        Toledo8217Codec,
        Dialog04Codec,
        Ean13WeightCodec,
        TraceRecordCodec,
    )
}


def make_codec(protocol: str, options: dict[str, Any] | None = None) -> Codec:
    """A fresh codec for ``protocol`` with the profile's codec options."""
    try:
        cls = CODECS[protocol]
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise EncodeError(f"unknown protocol {protocol!r}; known: {known}") from None
    return cls(**(options or {}))


__all__ = [
    "CODECS",
    "REQUEST_WEIGHT",
    "TARE",
    "ZERO",
    "Codec",
    "Command",
    "EncodeError",
    "FrameError",
    "StatusReplyError",
    "WeightFrame",
    "make_codec",
]
