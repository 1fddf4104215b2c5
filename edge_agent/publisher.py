"""The publisher: drains the outbox to MQTT, one connection per device.

One module (about 440 lines) on purpose: one class per device whose three threads must be
read together. paho's network thread (PUBACKs, commands), the agent's command thread (the
gateway's ``stored`` and ``resend``) and the pump share the in-flight map, the cursors and
the resend queue under two locks, and the rule for which lock is held where (never ours
around a paho call) is only checkable with every user of them in view. The MQTT client and
its TLS context are already apart (``edge_agent.mqtt_client``).

Rules (architecture.md §4):

* paho-mqtt, QoS 1, client id = device identity (unique: duplicate ids cause
  connect/kick storms), retained ``birth`` and ``online`` state on every connect,
  last will ``offline`` (retained).
* End-to-end acknowledgement (a device with a key, ``confirm = "gateway"``): event rows
  leave the outbox only when the gateway's signed ``stored`` command covers their seq
  (:meth:`Publisher.confirmed`); the broker's PUBACK only frees the in-flight slot. What
  is not confirmed within ``ack_timeout_s`` of the last progress is published again from
  the oldest unconfirmed row (go-back-N; the timeout doubles while nothing is confirmed,
  up to 8×), and a ``resend`` command publishes the range the gateway misses at once.
  Every events message carries ``floor_seq`` (the device's lowest unconfirmed seq) so a
  restarted gateway knows where its watermark starts. Without a key (or with
  ``confirm = "broker"``) rows leave on PUBACK, as samples always do.
  Until then paho keeps the message and resends it after a reconnect; if the process
  dies the rows are still on disk and are published again at the next start (the
  server deduplicates on seq).
* Events are batched (up to ``batch_size`` per message, measured ×15 the throughput
  of one per message, and never more than ``wire.MAX_BATCH_BYTES``, the gateway's
  payload limit less a margin), never held longer than ``max_delay_ms``; at most
  ``inflight`` unacknowledged messages per device.
* TLS verifies the broker's certificate (and its host name); a TLS failure is an
  error: counted (``tls_errors``), reported in ``state`` / ``last_error``, logged, retried
  with backoff over TLS again. There is no plaintext fallback, ever. The TLS context and
  the client are ``edge_agent.mqtt_client``'s: paho's public API only.
* Commands: on every connect the publisher subscribes (QoS 1) to the device's
  ``.../cmd/+`` topics and hands each message to ``on_command`` (the agent checks its
  signature; nothing is trusted here).
* The pump thread is supervised: an exception is counted and reported and the pump
  goes on after a jittered exponential backoff; :meth:`Publisher.check` restarts a pump
  thread that died anyway.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.config import MqttConfig
from edge_agent.mqtt_client import ReportingClient, TlsContext, tls_context
from edge_agent.outbox import Outbox, Row
from edge_agent.supervision import Backoff
from weighing import wire
from weighing.signing import sign_message

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    connected: bool = False
    #: connecting | connected | disconnected | tls-error | connect-error | refused | stopped
    state: str = "connecting"
    reconnects: int = 0
    published_msgs: int = 0
    acked_rows: int = 0
    last_error: str = ""
    connects: int = 0
    connect_failures: int = 0
    tls_errors: int = 0
    inflight: int = 0
    pump_state: str = "starting"  # running | backoff | dead | stopped
    pump_failures: int = 0
    pump_restarts: int = 0
    commands_received: int = 0
    confirmed_rows: int = 0
    confirmed_seq: int = 0
    ack_timeouts: int = 0  # go-back-N resends after ack_timeout_s without confirmation
    resend_requests: int = 0
    _t0: float = field(default_factory=time.monotonic)

    @property
    def uptime_s(self) -> int:
        return int(time.monotonic() - self._t0)


class Publisher:
    """Publishes one device's outbox rows; thread-safe ``notify()`` wakes it."""

    def __init__(
        self, cfg: MqttConfig, *, market: str, device: str, outbox: Outbox, birth: wire.Birth,
        on_command: Callable[[str, bytes], None] | None = None, e2e: bool = False,
        ack_timeout_s: float = 60.0, key: bytes | None = None,
    ) -> None:
        self.cfg = cfg
        self.key = key  # signs the online / offline states (births come signed)
        #: end-to-end acknowledgement: event rows wait for the gateway's ``stored``
        self.e2e = e2e
        self.ack_timeout_s = ack_timeout_s
        self._timeout_s = ack_timeout_s  # doubles while nothing is confirmed
        self._progress = time.monotonic()  # last confirmation (or timeout resend)
        self._resend: deque[tuple[int, int]] = deque()
        self._lock = threading.Lock()  # resend queue and cursors vs command callbacks
        self.on_command = on_command
        self.market = market
        self.device = device
        self.outbox = outbox
        self.birth = birth
        self.stats = PublisherStats()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # mid → what its PUBACK frees (None: a birth or state, nothing to free). A PUBACK
        # can be handled on paho's network thread before publish() has returned the mid to
        # us: it is kept in _early and settled when the mid is registered. _mids guards
        # both and is never held around a paho call (paho holds its own lock when it calls
        # on_publish: holding ours around publish() could deadlock against it).
        self._inflight: dict[int, tuple[str, list[int]] | None] = {}
        self._early: set[int] = set()
        self._mids = threading.Lock()
        self._last_id = {"events": 0, "samples": 0}
        self._thread: threading.Thread | None = None
        #: our own TLS context (``edge_agent.mqtt_client``): it tells a failed handshake
        self._tls: TlsContext | None = (
            tls_context(ca=cfg.ca, cert=cfg.cert, key=cfg.key) if cfg.tls else None)
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = ReportingClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.device,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        c.max_inflight_messages_set(self.cfg.inflight)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, self.cfg.reconnect_max_s)
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, self.cfg.password)
        if self._tls is not None:
            # verification on: CERT_REQUIRED and host-name checking (never tls_insecure)
            c.tls_set_context(self._tls)
            c.tls_insecure_set(False)
        c.connect_error = self._on_connect_error
        c.will_set(
            self.topic(wire.Channel.STATE),
            self._state(wire.DeviceState.OFFLINE, None),
            qos=1,
            retain=True,
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        return c

    def _state(self, state: wire.DeviceState, ts_ms: int | None) -> bytes:
        """A ``state`` payload, signed with the device key (issue 15)."""
        return wire.encode(sign_message(self.key, self.device, wire.State(state=state,
                                                                            ts_ms=ts_ms)))

    def topic(self, channel: wire.Channel) -> str:
        return wire.topic(self.market, self.device, channel)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._start_pump()

    def _start_pump(self) -> None:
        self._thread = threading.Thread(
            target=self._pump, name=f"pub-{self.device}", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Supervisor hook: restart the pump thread if it died (it should not)."""
        if self._stop.is_set() or self._thread is None or self._thread.is_alive():
            return
        self.stats.pump_restarts += 1
        self.stats.pump_state = "dead"
        log.error("%s: publisher pump thread died; restarting it", self.device)
        self._start_pump()

    def stop(self, *, timeout_s: float = 2.0) -> None:
        """Publish ``offline``, wait briefly for outstanding acks, disconnect."""
        self._stop.set()
        self.stats.pump_state = "stopped"
        self._wake.set()
        if self._thread:
            self._thread.join(timeout_s)
        if self.stats.connected:
            info = self.client.publish(
                self.topic(wire.Channel.STATE),
                self._state(wire.DeviceState.OFFLINE, _now_ms()),
                qos=1, retain=True,
            )
            self._register(info.mid, None)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.stats.state = "stopped"

    def notify(self) -> None:
        self._wake.set()

    # -- callbacks (paho's network thread) ---------------------------------------------

    def _on_connect_error(self, err: OSError) -> None:
        # an error in the TLS handshake is a TLS failure whatever its type (a plaintext
        # server answers a ClientHello by resetting the connection)
        handshake = self._tls is not None and self._tls.take_handshake_failure()
        tls = handshake or isinstance(err, ssl.SSLError)
        self.stats.connect_failures += 1
        if tls:
            self.stats.tls_errors += 1
            self.stats.state = "tls-error"
            self.stats.last_error = f"TLS: {err}"
            level = logging.ERROR
        else:
            self.stats.state = "connect-error"
            self.stats.last_error = f"connect: {err}"
            level = logging.WARNING
        if self.stats.connect_failures <= 3 or self.stats.connect_failures % 100 == 0:
            log.log(level, "%s: cannot connect to %s:%s: %s (failure %d; retrying, never "
                    "in plaintext)", self.device, self.cfg.host, self.cfg.port, err,
                    self.stats.connect_failures)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self.stats.last_error = f"connect refused: {reason_code}"
            self.stats.state = "refused"
            self.stats.connect_failures += 1
            log.error("%s: broker refused the connection: %s", self.device, reason_code)
            return
        self.stats.connected = True
        self.stats.state = "connected"
        self.stats.connects += 1
        client.subscribe(f"{wire.TOPIC_ROOT}/{self.market}/{self.device}/cmd/+", qos=1)
        birth = wire.encode(self.birth)
        info = client.publish(self.topic(wire.Channel.BIRTH), birth, qos=1, retain=True)
        self._register(info.mid, None)
        info = client.publish(
            self.topic(wire.Channel.STATE),
            self._state(wire.DeviceState.ONLINE, _now_ms()),
            qos=1, retain=True,
        )
        self._register(info.mid, None)
        log.info("%s: connected to %s:%s", self.device, self.cfg.host, self.cfg.port)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if self.stats.connected and not self._stop.is_set():
            self.stats.reconnects += 1
            log.warning("%s: disconnected (%s); will reconnect", self.device, reason_code)
        self.stats.connected = False
        if not self._stop.is_set():
            self.stats.state = "disconnected"

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        # a broker may deliver what the subscription does not match (amqtt hands retained
        # births of other devices to a ".../cmd/#" subscription): not a command, ignore it
        prefix = wire.topic(self.market, self.device, wire.Channel.CMD, "x")[:-1]
        if not message.topic.startswith(prefix):
            log.debug("%s: ignoring %s: outside our command topics", self.device,
                      message.topic)
            return
        self.stats.commands_received += 1
        if self.on_command is not None:
            try:
                self.on_command(message.topic, bytes(message.payload))
            except Exception:  # a bad command must never kill paho's network thread
                log.exception("%s: command handler failed", self.device)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._mids:
            if mid in self._inflight:
                got = self._inflight.pop(mid)
            else:  # acknowledged before publish() returned its mid: settled on registering
                self._early.add(mid)
                got = None
            self.stats.inflight = len(self._inflight)
        if got:
            self._puback(got)
        self._wake.set()

    def _register(self, mid: int, frees: tuple[str, list[int]] | None) -> None:
        """Note what ``mid``'s PUBACK frees, or free it now if the PUBACK came first."""
        with self._mids:
            early = mid in self._early
            if early:
                self._early.discard(mid)
            else:
                self._inflight[mid] = frees
            self.stats.inflight = len(self._inflight)
        if early and frees:
            self._puback(frees)

    def _puback(self, frees: tuple[str, list[int]]) -> None:
        channel, ids = frees
        self.stats.acked_rows += len(ids)
        if channel == "samples" or not self.e2e:
            self.outbox.ack(ids)  # else: the rows wait for the gateway's ``stored``

    # -- end-to-end acknowledgement (the agent's command thread) ------------------------

    def confirmed(self, stored_seq: int) -> int:
        """The gateway's ``stored`` command: delete the rows it covers (idempotent)."""
        n = self.outbox.confirm(self.device, stored_seq)
        with self._lock:
            if stored_seq > self.stats.confirmed_seq:
                self.stats.confirmed_seq = stored_seq
                self._progress = time.monotonic()
                self._timeout_s = self.ack_timeout_s
        self.stats.confirmed_rows += n
        self._wake.set()
        return n

    def resend(self, from_seq: int, to_seq: int) -> None:
        """The gateway's ``resend`` command: publish ``from_seq``..``to_seq`` again."""
        with self._lock:
            self.stats.resend_requests += 1
            if to_seq >= from_seq and (from_seq, to_seq) not in self._resend:
                self._resend.append((from_seq, to_seq))
        self._wake.set()

    def _check_timeout(self) -> None:
        """Go back to the oldest unconfirmed row when nothing was confirmed for a while."""
        if not self.e2e or time.monotonic() - self._progress < self._timeout_s:
            return
        first = self.outbox.peek(self.device, "events", limit=1)
        with self._lock:
            self._progress = time.monotonic()
            if not first or first[0].id > self._last_id["events"]:
                return  # nothing published is waiting for a confirmation
            self._last_id["events"] = 0
            self._timeout_s = min(self._timeout_s * 2, self.ack_timeout_s * 8)
            self.stats.ack_timeouts += 1
        log.info("%s: no confirmation from the gateway for %.0f s: publishing the "
                 "unconfirmed events again from seq %s", self.device, self._timeout_s / 2,
                 first[0].seq)

    # -- the pump ---------------------------------------------------------------------

    def _pump(self) -> None:
        # every outbox write, acknowledgement and (re)connection wakes the pump; the
        # timeout is only a safety net, so an idle pump costs nothing
        idle_s = max(self.cfg.max_delay_ms / 1000, 1.0)
        backoff = Backoff(0.2, 10.0)
        self.stats.pump_state = "running"
        while not self._stop.is_set():
            self._wake.wait(timeout=idle_s)
            self._wake.clear()
            if not self.stats.connected:
                continue
            try:
                self._check_timeout()
                self._publish_ready()
                backoff.reset()
            except Exception as err:  # never let the pump die: report, back off, go on
                self.stats.pump_failures += 1
                self.stats.pump_state = "backoff"
                self.stats.last_error = f"publish: {type(err).__name__}: {err}"
                log.exception("%s: publishing failed; retry in %.1f s", self.device,
                              backoff.delay_s)
                backoff.wait(self._stop)
                self.stats.pump_state = "running"
                self._wake.set()

    def _publish_ready(self) -> None:
        while self._resend and len(self._inflight) < self.cfg.inflight and self.stats.connected:
            lo, hi = self._resend[0]
            after = self.outbox.id_before_seq(self.device, lo)
            rows = self.outbox.peek(self.device, "events", limit=self.cfg.batch_size,
                                    after_id=after, max_seq=hi)
            if rows:
                rows = _fit(rows)
                if not self._send("events", rows):
                    return
            last = rows[-1].seq if rows else None  # event rows always carry a seq
            with self._lock:
                if last is None or last >= hi:
                    self._resend.popleft()
                else:
                    self._resend[0] = (last + 1, hi)
        for channel in ("events", "samples"):
            while len(self._inflight) < self.cfg.inflight and self.stats.connected:
                limit = self.cfg.batch_size if channel == "events" else 1
                with self._lock:
                    after = self._last_id[channel]
                rows = self.outbox.peek(self.device, channel, limit=limit, after_id=after)
                if not rows:
                    break
                if channel == "events":
                    rows = _fit(rows)
                if not self._send(channel, rows):
                    return
                with self._lock:
                    if self._last_id[channel] == after:  # not rewound meanwhile
                        self._last_id[channel] = rows[-1].id

    def _send(self, channel: str, rows: list[Row]) -> bool:
        if channel == "events":
            floor = self.outbox.floor(self.device) if self.e2e else None
            payload = wire.event_batch_payload(self.device, [r.payload for r in rows],
                                               floor_seq=floor)
            topic = self.topic(wire.Channel.EVENTS)
        else:
            payload, topic = rows[0].payload, self.topic(wire.Channel.SAMPLES)
        info = self.client.publish(topic, payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.stats.last_error = f"publish failed: {info.rc}"
            return False
        self._register(info.mid, (channel, [r.id for r in rows]))
        self.stats.published_msgs += 1
        return True


def _fit(rows: list[Row]) -> list[Row]:
    """The longest prefix of ``rows`` whose batch stays within ``wire.MAX_BATCH_BYTES``
    (at least one row: a single event is far below the limit)."""
    size = wire.BATCH_OVERHEAD_BYTES
    for i, r in enumerate(rows):
        size += len(r.payload) + (1 if i else 0)
        if size > wire.MAX_BATCH_BYTES and i:
            return rows[:i]
    return rows


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
