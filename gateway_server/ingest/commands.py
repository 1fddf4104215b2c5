"""Commands to a device, from the API and the CLI: ``time-sync``, ``config-reload``,
``resend`` (the gateway's own ``stored`` confirmations come from the ingest).

Rules:

* A command is signed with the device's key from the register
  (``weighing.signing.sign_command``, via :func:`gateway_server.ingest.acks.command`) and
  published with QoS 1 on ``scales/v1/{market}/{device}/cmd/{name}``; the agent accepts it
  only with a valid signature, a fresh ``ts_ms`` and a new nonce. A device without a key
  accepts no command: that is an error here, not a silent no-op.
* Publishing goes through the running ingest's connection when there is one (``serve``),
  else through a short-lived connection of its own (the CLI, an API-only process), and
  returns once the broker has acknowledged it; an unreachable broker is an error.
* Nothing is stored: the command's effect shows in the device's next heartbeat
  (``clock_offset_ms``), its status and, for ``resend``, in the events that arrive.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Connection, select

from gateway_server.ingest.acks import command
from gateway_server.store.tables import scales
from weighing import wire
from weighing.errors import GatewayError

#: what an operator may send (``stored`` is the ingest's alone)
SENDABLE = (wire.CommandName.TIME_SYNC, wire.CommandName.CONFIG_RELOAD,
            wire.CommandName.RESEND)


class CommandError(GatewayError):
    """A command cannot be sent; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


def build(conn: Connection, device: str, name: str, *, now_ms: int,
          from_seq: int | None = None, to_seq: int | None = None) -> tuple[str, bytes]:
    """The signed command's topic and payload; :class:`CommandError` if it cannot be."""
    try:
        cname = wire.CommandName(name)
    except ValueError:
        raise CommandError(f"unknown command {name!r}; one of "
                           f"{', '.join(c.value for c in SENDABLE)}", status=422) from None
    if cname not in SENDABLE:
        raise CommandError(f"{name!r} is sent by the ingest only", status=422)
    fields: dict[str, int] = {}
    if cname is wire.CommandName.TIME_SYNC:
        fields["server_ms"] = now_ms
    elif cname is wire.CommandName.RESEND:
        if from_seq is None or to_seq is None or not 1 <= from_seq <= to_seq:
            raise CommandError("resend needs 1 ≤ from_seq ≤ to_seq", status=422)
        fields.update(from_seq=from_seq, to_seq=to_seq)
    row = conn.execute(select(scales.c.market, scales.c.key_hex, scales.c.registered)
                       .where(scales.c.device == device)).first()
    if row is None:
        raise CommandError(f"no scale {device}", status=404)
    if not row.key_hex:
        raise CommandError(f"scale {device} has no key: it accepts no command", status=409)
    return command(bytes.fromhex(row.key_hex), row.market, device, cname, now_ms, **fields)


def publish(mqtt_url: str, topic: str, payload: bytes, *, client: Any = None,
            timeout_s: float = 10.0) -> None:
    """Publish with QoS 1 and wait for the broker's PUBACK (``client``: a connected one
    to reuse, e.g. the ingest's); :class:`CommandError` (503) if it does not come."""
    if client is not None and client.is_connected():
        info = client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as err:
            raise CommandError(f"broker did not take the command: {err}", status=503) from err
        if not info.is_published():
            raise CommandError("broker did not acknowledge the command in time", status=503)
        return
    u = urlsplit(mqtt_url)
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                    client_id=f"gw-cmd-{secrets.token_hex(4)}", protocol=mqtt.MQTTv311)
    if u.username:
        c.username_pw_set(u.username, u.password)
    try:
        c.connect(u.hostname or "127.0.0.1", u.port or 1883, keepalive=30)
    except OSError as err:
        raise CommandError(f"cannot reach the broker at {mqtt_url}: {err}", status=503) from err
    c.loop_start()
    try:
        info = c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + timeout_s
        while not info.is_published() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not info.is_published():
            raise CommandError("broker did not acknowledge the command in time", status=503)
    finally:
        c.disconnect()
        c.loop_stop()
