"""The one root error type and the errors of the shared vocabulary.

Each layer adds its own subclasses (``FrameError`` in the codecs, ``TransportError`` in
the edge agent, ``ProfileError`` for device profiles); they all derive from
:class:`GatewayError` so a caller can catch the project's errors in one place.
"""


class GatewayError(Exception):
    """Root of every error this project raises on purpose."""


class UnitError(GatewayError, ValueError):
    """A quantity could not be represented exactly in its legal unit."""


class WireDecodeError(GatewayError, ValueError):
    """An MQTT topic or payload does not follow wire contract v1.

    ``where`` names the topic (and, where known, the field) so the dead-letter record
    says what was wrong and where.
    """

    def __init__(self, reason: str, *, where: str = "") -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)
