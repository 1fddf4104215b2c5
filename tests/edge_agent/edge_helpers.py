"""Helpers for the edge agent's reliability tests: a persistent-session subscriber that
records every event as it arrives, an agent's outbox read from outside, config files,
signed commands; the pty scales of ``pty_scales`` (fed by hand, or gated)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pty_scales import GatedScale, PtyScale  # noqa: F401 - re-exported

from weighing import wire
from weighing.signing import sign_command

KEY_HEX = "a1b2c3d4e5f60718"
KEY = bytes.fromhex(KEY_HEX)


class Collector:
    """A paho subscriber (persistent session, QoS 1) recording events in arrival order.

    Duplicates are kept: ``arrivals`` is what the broker delivered; ``by_seq`` is what a
    server that deduplicates on (device, seq) would store.
    """

    def __init__(self, port: int, *, client_id: str | None = None,
                 topics: Iterable[str] = ("scales/v1/+/+/events", "scales/v1/+/+/state",
                                          "scales/v1/+/+/birth")) -> None:
        self.arrivals: list[tuple[str, wire.Event]] = []
        self.states: list[tuple[str, str]] = []
        self.births: list[tuple[str, str]] = []  # (device, boot_id): one per agent connect
        self._lock = threading.Lock()
        self._topics = list(topics)
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-collector-{secrets.token_hex(4)}",
                                  clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:  # type: ignore[no-untyped-def]
        for t in self._topics:
            client.subscribe(t, qos=1)

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        parts, payload = wire.decode(msg.topic, bytes(msg.payload))
        with self._lock:
            if isinstance(payload, wire.EventBatch):
                self.arrivals += [(parts.device, e) for e in payload.events]
            elif isinstance(payload, wire.State):
                self.states.append((parts.device, payload.state.value))
            elif isinstance(payload, wire.Birth):
                self.births.append((parts.device, payload.boot_id))

    def close(self) -> None:
        self.client.disconnect()  # first: it wakes the network loop, loop_stop is then quick
        self.client.loop_stop()

    # -- views ----------------------------------------------------------------------------

    def events(self, device: str | None = None, kind: type | None = None) -> list[Any]:
        with self._lock:
            return [e for d, e in self.arrivals
                    if (device is None or d == device) and (kind is None or isinstance(e, kind))]

    def by_seq(self, device: str) -> dict[int, wire.Event]:
        """What a server deduplicating on (device, seq) keeps."""
        out: dict[int, wire.Event] = {}
        for e in self.events(device):
            out.setdefault(e.seq, e)
        return out

    def sales(self, device: str) -> list[wire.SaleEvent]:
        """Deduplicated sales in seq order."""
        return [e for _, e in sorted(self.by_seq(device).items())
                if isinstance(e, wire.SaleEvent)]

    def faults(self, device: str, code: str) -> list[wire.FaultEvent]:
        return [e for e in self.events(device, wire.FaultEvent) if e.code == code]

    def boot_ids(self, device: str) -> set[str]:
        """The agents (boot ids) that have connected for ``device``."""
        with self._lock:
            return {b for d, b in self.births if d == device}

    def first_arrival_seqs(self, device: str) -> list[int]:
        seen: set[int] = set()
        order = []
        for e in self.events(device):
            if e.seq not in seen:
                seen.add(e.seq)
                order.append(e.seq)
        return order


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, *, agent: dict[str, object], mqtt_: dict[str, object],
                 scales: list[dict[str, object]]) -> Path:
    lines = ["[agent]"] + [f"{k} = {toml_value(v)}" for k, v in agent.items()]
    lines += ["", "[mqtt]"] + [f"{k} = {toml_value(v)}" for k, v in mqtt_.items()]
    for s in scales:
        lines += ["", "[[scale]]"] + [f"{k} = {toml_value(v)}" for k, v in s.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def outbox_rows(path: Path, device: str) -> list[wire.Event]:
    """The events queued (committed, not yet acknowledged) in an agent's outbox file,
    read from outside the agent (another process may hold it open: SQLite WAL)."""
    import sqlite3

    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    try:
        payloads = [bytes(r[0]) for r in db.execute(
            "SELECT payload FROM outbox WHERE device = ? AND channel = 'events' ORDER BY id",
            (device,))]
    except sqlite3.OperationalError:  # the agent has not created its tables yet
        return []
    finally:
        db.close()
    if not payloads:
        return []
    _, batch = wire.decode(wire.topic("m", device, wire.Channel.EVENTS),
                           wire.event_batch_payload(device, payloads))
    assert isinstance(batch, wire.EventBatch)
    return list(batch.events)


def outbox_state(path: Path, device: str, name: str) -> bytes | None:
    """One state entry of an agent's outbox file (checkpoint, last frame time)."""
    import sqlite3

    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=30)
    try:
        row = db.execute("SELECT value FROM state WHERE device = ? AND name = ?",
                         (device, name)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return None if row is None else bytes(row[0])


def command(name: wire.CommandName, *, device: str, key: bytes = KEY, ts_ms: int | None = None,
            nonce: str | None = None, **fields: Any) -> bytes:
    cmd = wire.Command(name=name, ts_ms=ts_ms if ts_ms is not None else time.time_ns() // 10**6,
                       nonce=nonce or secrets.token_hex(8), **fields)
    return wire.encode_command(sign_command(key, device, cmd))


def publish(port: int, topic: str, payload: bytes) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                    client_id=f"test-pub-{secrets.token_hex(4)}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
