"""Errors of the register: invalid input (naming its field), not found, conflicting.

The API translates them once (``api.auth.get_conn``: 422 / 404 / 409); the CSV import reports
them with the row and column.
"""

from __future__ import annotations

from weighing.errors import GatewayError


class RegistryError(GatewayError, ValueError):
    """Invalid register input; ``field`` names the offending field when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class NotFoundError(RegistryError):
    """A market, merchant or scale that does not exist."""


class ConflictError(RegistryError):
    """The input contradicts the register (duplicate id, other market, history rewrite)."""
