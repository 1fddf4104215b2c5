"""Errors of the device-profile layer, below every module that raises them.

``schema`` (profiles) and the Modbus register map both raise :class:`ProfileError`; it
lives here so neither imports the other for it (import-linter contract "Device profiles
without an import circle" in ``pyproject.toml``).
"""

from __future__ import annotations

from weighing.errors import GatewayError


class ProfileError(GatewayError, ValueError):
    """A profile file is missing, unreadable or invalid; the message names file and field."""
