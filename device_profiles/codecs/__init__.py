"""The codec registry: protocol id → sans-I/O codec class (see ``base`` for the rules)."""

from __future__ import annotations

from typing import Any

from device_profiles.codecs.base import (
    Codec,
    Command,
    EncodeError,
    FrameError,
    WeightFrame,
)
from device_profiles.codecs.toledo_continuous import ToledoContinuousCodec

CODECS: dict[str, type[Codec]] = {
    ToledoContinuousCodec.protocol_id: ToledoContinuousCodec,
}


def make_codec(protocol: str, options: dict[str, Any] | None = None) -> Codec:
    """A fresh codec for ``protocol`` with the profile's codec options."""
    try:
        cls = CODECS[protocol]
    except KeyError:
        raise EncodeError(f"unknown protocol {protocol!r}; known: {', '.join(sorted(CODECS))}") from None
    return cls(**(options or {}))


__all__ = ["CODECS", "Codec", "Command", "EncodeError", "FrameError", "WeightFrame", "make_codec"]
