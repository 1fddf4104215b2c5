"""Helpers for the edge agent's reliability tests: a persistent-session subscriber that
records every event as it arrives, config files, ptys fed by hand, signed commands."""

from __future__ import annotations

import os
import secrets
import threading
import time
import tty
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles.codecs import Codec, WeightFrame
from weighing import wire
from weighing.signing import sign_command

KEY_HEX = "a1b2c3d4e5f60718"
KEY = bytes.fromhex(KEY_HEX)


class Collector:
    """A paho subscriber (persistent session, QoS 1) recording events in arrival order.

    Duplicates are kept: ``arrivals`` is what the broker delivered; ``by_seq`` is what a
    server that deduplicates on (device, seq) would store.
    """

    def __init__(self, port: int, *, client_id: str = "test-collector",
                 topics: Iterable[str] = ("scales/v1/+/+/events", "scales/v1/+/+/state")) -> None:
        self.arrivals: list[tuple[str, wire.Event]] = []
        self.states: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._topics = list(topics)
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=client_id, clean_session=False)
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


class PtyScale:
    """A pty fed by hand: the test writes frames with a codec's ``encode`` in real time."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    def play(self, frames: list[tuple[int, WeightFrame]]) -> None:
        """Write ``(t_ms, frame)`` pairs at their times, in a thread."""

        def run() -> None:
            t0 = time.monotonic()
            for t_ms, frame in frames:
                delay = t0 + t_ms / 1000 - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                try:
                    os.write(self.master, self.codec.encode(frame))
                except BlockingIOError:
                    pass
                except OSError:
                    return
            self.done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


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
