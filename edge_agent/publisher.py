"""The publisher: drains the outbox to MQTT, one connection per device.

Rules (architecture.md §4):

* paho-mqtt, QoS 1, client id = device identity (unique: duplicate ids cause
  connect/kick storms), retained ``birth`` and ``online`` state on every connect,
  last will ``offline`` (retained).
* Rows leave the outbox only when the broker's PUBACK for them arrives. Until then
  paho keeps the message and resends it after a reconnect; if the process dies the
  rows are still on disk and are published again at the next start (the server
  deduplicates on seq).
* Events are batched (up to ``batch_size`` per message, measured ×15 the throughput
  of one per message), never held longer than ``max_delay_ms``; at most ``inflight``
  unacknowledged messages per device.
* TLS verifies the broker's certificate; a TLS failure is an error and there is no
  plaintext fallback.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.config import MqttConfig
from edge_agent.outbox import Outbox
from weighing import wire

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    connected: bool = False
    reconnects: int = 0
    published_msgs: int = 0
    acked_rows: int = 0
    last_error: str = ""
    connects: int = 0
    inflight: int = 0
    _t0: float = field(default_factory=time.monotonic)

    @property
    def uptime_s(self) -> int:
        return int(time.monotonic() - self._t0)


class Publisher:
    """Publishes one device's outbox rows; thread-safe ``notify()`` wakes it."""

    def __init__(
        self, cfg: MqttConfig, *, market: str, device: str, outbox: Outbox, birth: wire.Birth
    ) -> None:
        self.cfg = cfg
        self.market = market
        self.device = device
        self.outbox = outbox
        self.birth = birth
        self.stats = PublisherStats()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, list[int]] = {}
        self._last_id = {"events": 0, "samples": 0}
        self._thread: threading.Thread | None = None
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.device,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        c.max_inflight_messages_set(self.cfg.inflight)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 30)
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, self.cfg.password)
        if self.cfg.tls:
            c.tls_set(
                ca_certs=str(self.cfg.ca) if self.cfg.ca else None,
                certfile=str(self.cfg.cert) if self.cfg.cert else None,
                keyfile=str(self.cfg.key) if self.cfg.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        c.will_set(
            self.topic(wire.Channel.STATE),
            wire.encode(wire.State(state=wire.DeviceState.OFFLINE)),
            qos=1,
            retain=True,
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def topic(self, channel: wire.Channel) -> str:
        return wire.topic(self.market, self.device, channel)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._thread = threading.Thread(
            target=self._pump, name=f"pub-{self.device}", daemon=True
        )
        self._thread.start()

    def stop(self, *, timeout_s: float = 2.0) -> None:
        """Publish ``offline``, wait briefly for outstanding acks, disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout_s)
        if self.stats.connected:
            info = self.client.publish(
                self.topic(wire.Channel.STATE),
                wire.encode(wire.State(state=wire.DeviceState.OFFLINE, ts_ms=_now_ms())),
                qos=1, retain=True,
            )
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def notify(self) -> None:
        self._wake.set()

    # -- callbacks (paho's network thread) ---------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self.stats.last_error = f"connect refused: {reason_code}"
            log.error("%s: broker refused the connection: %s", self.device, reason_code)
            return
        self.stats.connected = True
        self.stats.connects += 1
        birth = wire.encode(self.birth)
        client.publish(self.topic(wire.Channel.BIRTH), birth, qos=1, retain=True)
        client.publish(
            self.topic(wire.Channel.STATE),
            wire.encode(wire.State(state=wire.DeviceState.ONLINE, ts_ms=_now_ms())),
            qos=1, retain=True,
        )
        log.info("%s: connected to %s:%s", self.device, self.cfg.host, self.cfg.port)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if self.stats.connected and not self._stop.is_set():
            self.stats.reconnects += 1
            log.warning("%s: disconnected (%s); will reconnect", self.device, reason_code)
        self.stats.connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        # called by paho under its out-message mutex, like the registration in _publish_ready
        ids = self._inflight.pop(mid, None)  # None: birth / state, not outbox rows
        self.stats.inflight = len(self._inflight)
        if ids:
            self.outbox.ack(ids)
            self.stats.acked_rows += len(ids)
        self._wake.set()

    # -- the pump ---------------------------------------------------------------------

    def _pump(self) -> None:
        delay = self.cfg.max_delay_ms / 1000
        while not self._stop.is_set():
            self._wake.wait(timeout=max(delay, 0.05))
            self._wake.clear()
            if not self.stats.connected:
                continue
            try:
                self._publish_ready()
            except Exception as err:  # never let the pump die; the supervisor reports it
                self.stats.last_error = repr(err)
                log.exception("%s: publishing failed", self.device)
                time.sleep(0.5)

    def _publish_ready(self) -> None:
        for channel in ("events", "samples"):
            while len(self._inflight) < self.cfg.inflight and self.stats.connected:
                limit = self.cfg.batch_size if channel == "events" else 1
                rows = self.outbox.peek(
                    self.device, channel, limit=limit, after_id=self._last_id[channel]
                )
                if not rows:
                    break
                if channel == "events":
                    payload = wire.event_batch_payload(self.device, [r.payload for r in rows])
                    topic = self.topic(wire.Channel.EVENTS)
                else:
                    payload, topic = rows[0].payload, self.topic(wire.Channel.SAMPLES)
                # paho calls on_publish holding its (reentrant) out-message mutex; holding
                # it here too means the PUBACK cannot be handled before the mid is known
                with self.client._out_message_mutex:
                    info = self.client.publish(topic, payload, qos=1)
                    if info.rc not in (
                        MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN
                    ):
                        self.stats.last_error = f"publish failed: {info.rc}"
                        return
                    self._inflight[info.mid] = [r.id for r in rows]
                    self.stats.inflight = len(self._inflight)
                self._last_id[channel] = rows[-1].id
                self.stats.published_msgs += 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
