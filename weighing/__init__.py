"""The shared vocabulary of the smart-scale gateway.

Rules of this package (architecture.md §2, style.md):

* It imports nothing of ours; every other package may import it.
* It is pure: no sockets, serial ports, threads, clocks, logging or globals.
  Time is always a parameter (milliseconds since the Unix epoch, UTC).
* Legal quantities are exact: mass in integer milligrams, money in integer fen.
"""

from weighing.errors import GatewayError, WireDecodeError

__all__ = ["GatewayError", "WireDecodeError"]
