"""Commands from the server (``scales/v1/{market}/{device}/cmd/{name}``): authenticate first.

Rules:

* A command is accepted only when it is authentic and fresh: its HMAC-SHA256
  (``weighing.signing.verify_command``) verifies with the *device's* key over the device
  id, the name, every payload field, ``ts_ms`` and ``nonce``; ``ts_ms`` lies within
  ``window_ms`` (±60 s) of the agent's clock; and the nonce was not accepted before
  (nonces are remembered for twice the window, so a captured command cannot be replayed
  while it would still be fresh). A device without a key accepts no command.
* Anything else is rejected, logged (rate-limited: the topic is writable by whoever can
  reach the broker) and counted. A rejection never produces an event: a flood of forged
  commands must not fill the outbox with never-dropped fault events.
* This module decides; the agent acts (``time-sync``, ``config-reload``, and the
  end-to-end acknowledgement's ``stored`` and ``resend``, which go to the publisher).
  A replayed ``stored`` could only repeat a confirmation already given (it is
  idempotent and never lowers the mark), yet it is refused like any replay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from weighing import wire
from weighing.errors import WireDecodeError
from weighing.signing import COMMAND_WINDOW_MS, CommandRejectedError, verify_command

log = logging.getLogger(__name__)

_MAX_NONCES = 10_000  # bounded: the oldest are forgotten first (they are stale by then)


@dataclass
class CommandStats:
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    last_rejection: str = ""


class CommandGate:
    """Authenticates commands for the devices of one agent; thread-safe."""

    def __init__(self, *, window_ms: int = COMMAND_WINDOW_MS) -> None:
        self.window_ms = window_ms
        self.stats: dict[str, CommandStats] = {}
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check(
        self, device: str, key: bytes | None, topic: str, payload: bytes, *, now_ms: int
    ) -> wire.Command | None:
        """The command if it is authentic and fresh; ``None`` (counted, logged) if not."""
        st = self.stats.setdefault(device, CommandStats())
        try:
            parts, cmd = wire.decode_command(topic, payload)
            if parts.device != device:
                raise CommandRejectedError("topic names another device")
            if key is None:
                raise CommandRejectedError("no key configured for the device")
            verify_command(key, device, cmd, now_ms=now_ms, window_ms=self.window_ms)
            self._use_nonce(cmd.nonce)
        except (WireDecodeError, CommandRejectedError) as err:
            reason = err.reason if isinstance(err, CommandRejectedError) else str(err)
            with self._lock:
                st.rejected += 1
                short = reason.split(":")[0]
                st.rejected_by_reason[short] = st.rejected_by_reason.get(short, 0) + 1
                st.last_rejection = reason
                n = st.rejected
            if n <= 5 or n % 100 == 0:
                log.warning("%s: rejected command on %s: %s (%d rejected)",
                            device, topic, reason, n)
            return None
        with self._lock:
            st.accepted += 1
        # ``stored`` comes with every ingest batch: logged at debug level only
        log.log(logging.DEBUG if cmd.name is wire.CommandName.STORED else logging.INFO,
                "%s: accepted command %s", device, cmd.name.value)
        return cmd

    def _use_nonce(self, nonce: str) -> None:
        now = time.monotonic()
        with self._lock:
            while self._nonces and (
                next(iter(self._nonces.values())) < now or len(self._nonces) >= _MAX_NONCES
            ):
                self._nonces.popitem(last=False)
            if nonce in self._nonces:
                raise CommandRejectedError("replayed: nonce already used")
            self._nonces[nonce] = now + 2 * self.window_ms / 1000

    def rejected(self, device: str) -> int:
        st = self.stats.get(device)
        return st.rejected if st else 0
