"""Test support: real services on free loopback ports, never mocks.

A test whose real service (mosquitto, socat, victoria-metrics, PostgreSQL) is missing
is skipped on a developer machine, but fails in CI (``CI`` set), so a broken CI
image can never pass by skipping.

Timing rule (issue 13): a test waits for a condition with a generous deadline
(:func:`wait_until`, :func:`wait_port`) and fails only on wrong content. A deadline is
never the thing a test checks: the suite must pass on a loaded machine and under
pytest-xdist, so the deadlines here are minutes, not the seconds a test takes idle.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from gateway_server.store.database import Store

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def socat_pty_pair(a: Path, b: Path) -> Iterator[tuple[str, str]]:
    """Two linked ptys from socat at the links ``a`` and ``b`` (one end for an emulator,
    the other for the reader); socat is stopped on exit."""
    socat = require_binary("socat")
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: proc.poll() is not None or (a.exists() and b.exists()), 60, 0.02,
                   what="socat's pty links")
        assert proc.poll() is None, "socat exited"
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def require_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI but not installed (see .ci/run)")
    pytest.skip(f"{name} not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def wait_until(pred, timeout_s: float = 60.0, interval_s: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``pred`` until it returns a truthy value; return it, or fail with ``what``.

    ``timeout_s`` is a deadline against a hung condition, not a performance bound: make
    it generous (30–120 s), it costs nothing when the condition comes true early.
    """
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last value {last!r}")


@dataclass
class Mosquitto:
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    binary: str

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_listening()

    def _wait_listening(self) -> None:
        """Until this broker listens; raise :class:`PortTakenError` if it exited first."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PortTakenError(f"mosquitto exited ({self.proc.returncode}): "
                                     f"port {self.port} taken?")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if self.proc.poll() is None:  # the listener is ours, not a neighbour's
                return
        raise TimeoutError(f"mosquitto does not listen on 127.0.0.1:{self.port}")


class PortTakenError(RuntimeError):
    """A service could not bind the free port it was given (taken meanwhile)."""


def start_mosquitto(tmp: Path, *, persistence: bool = True, extra: str = "",
                    default_config: bool = False) -> Mosquitto:
    """A private broker on a free port. Between ``free_port`` and the broker's bind another
    process (an xdist worker, an outgoing connection) may take the port: then retry.

    ``default_config``: Mosquitto's own defaults (``max_queued_messages 1000``, no
    persistence, its in-flight window) with only the listener and anonymous access set,
    as the end-to-end acknowledgement must hold against a broker that drops and forgets
    (``persistence`` is then ignored)."""
    for attempt in range(5):
        try:
            return _start_mosquitto(tmp, persistence=persistence, extra=extra,
                                    default_config=default_config)
        except PortTakenError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _start_mosquitto(tmp: Path, *, persistence: bool, extra: str,
                     default_config: bool = False) -> Mosquitto:
    binary = require_binary("mosquitto")
    port = free_port()
    data = tmp / "mosquitto-data"
    data.mkdir(parents=True, exist_ok=True)
    conf = tmp / "mosquitto.conf"
    if default_config:
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        + ("user root\n" if os.geteuid() == 0 else "") + extra)
        m = Mosquitto(port, None, conf, binary)  # type: ignore[arg-type]
        m.start()
        return m
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"persistence {'true' if persistence else 'false'}\n"
        f"persistence_location {data}/\n"
        # as root, mosquitto drops to the "mosquitto" user, who cannot read files in the
        # test's private temporary folder (password files, ACLs): stay root
        + ("user root\n" if os.geteuid() == 0 else "")
        # bound the queues: an unbounded QoS 1 backlog grew to ~1 GB (stack-notes.md)
        + "max_queued_messages 100000\n"
        "max_inflight_messages 1000\n"
        + extra
    )
    m = Mosquitto(port, None, conf, binary)  # type: ignore[arg-type]
    m.start()
    return m


@dataclass
class GatewayProc:
    port: int
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    token: str | None = None  # bearer token of the "tester" account (inspector)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **params):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = httpx.get(self.url + path, params=params, headers=headers, timeout=30)
        r.raise_for_status()
        return r.json()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def start_gateway(tmp: Path, mqtt_url: str, *, db_url: str | None = None, port: int | None = None,
                  client_id: str = "gw-test", extra_env: dict[str, str] | None = None) -> GatewayProc:
    """``gateway-server serve`` on ``port`` (default: a free one; retried on another free
    port if it was taken between ``free_port`` and the bind)."""
    for attempt in range(5):
        try:
            return _start_gateway(tmp, mqtt_url, db_url=db_url, port=port or free_port(),
                                  client_id=client_id, extra_env=extra_env)
        except PortTakenError:
            if port is not None or attempt == 4:
                raise
    raise AssertionError("unreachable")


def _start_gateway(tmp: Path, mqtt_url: str, *, db_url: str | None, port: int, client_id: str,
                   extra_env: dict[str, str] | None) -> GatewayProc:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": db_url or f"sqlite:///{tmp}/gateway.db",
        "MQTT_URL": mqtt_url,
        "GATEWAY_HTTP_PORT": str(port),
        "GATEWAY_MQTT_CLIENT_ID": client_id,
        **(extra_env or {}),
    })
    log = tmp / f"gateway-{port}.log"
    # an account for the API (every /api/v1 route but /public needs a bearer token)
    password = secrets.token_urlsafe(16)
    subprocess.run([str(BIN / "gateway-server"), "create-user", "--username", "tester",
                    "--role", "inspector", "--if-exists", "update"], env=env, check=True,
                   input=password + "\n", text=True, capture_output=True, timeout=120)
    with log.open("ab") as out:
        proc = subprocess.Popen([str(BIN / "gateway-server"), "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    gw = GatewayProc(port, proc, env, log)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            text = log.read_text()
            if "address already in use" in text.lower():
                raise PortTakenError(f"gateway port {port} taken")
            raise AssertionError("gateway exited at start:\n" + text[-3000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                gw.kill()
                raise AssertionError("gateway did not start:\n" + log.read_text()[-3000:]) from None
            time.sleep(0.05)
    r = httpx.post(gw.url + "/api/v1/auth/token",
                   json={"username": "tester", "password": password}, timeout=30)
    r.raise_for_status()
    gw.token = r.json()["access_token"]
    wait_until(lambda: gw.get("/healthz").get("mqtt_connected"), 60, what="gateway MQTT connect")
    return gw


def gateway_barrier(gw: GatewayProc, mqtt_port: int) -> None:
    """Return once the gateway has processed everything the broker got before this call.

    A marker sale of a device of its own goes through the broker after everything else;
    Mosquitto delivers a subscriber's messages in the order it received them and the
    gateway stores them in that order, so once the marker is stored, so is all before
    it. (The gateway must accept unregistered devices: ``GATEWAY_UNKNOWN_DEVICES``.)
    What arrives at the gateway is then known without waiting for a quiet time.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from weighing import wire

    device = f"barrier-{secrets.token_hex(4)}"
    sale = wire.SaleEvent(seq=1, ts_ms=time.time_ns() // 10**6, net_mg=1_000, settled_mg=1_000,
                          peak_mg=1_000, stable_device=True, stable_software=True)
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=device)
    c.connect("127.0.0.1", mqtt_port)
    c.loop_start()
    try:
        c.publish(wire.topic("m-barrier", device, wire.Channel.EVENTS),
                  wire.encode(wire.EventBatch(device=device, events=[sale])),
                  qos=1).wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()
    wait_until(lambda: gw.get("/api/v1/weighings", device=device)["items"], 120,
               what="the gateway to store the barrier's marker")


def freeze_rate_limits(app, settings) -> None:  # type: ignore[no-untyped-def]
    """Stop the clock of ``app``'s rate limiters (``gateway_server.api.ratelimit``).

    With the real clock a bucket refills while the test sends its burst: on a slow or
    loaded machine the request past the burst finds a token back and is allowed. With
    the clock stopped the burst is exactly the allowance, however long the requests take.
    """
    from gateway_server.api.ratelimit import TokenBucketLimiter

    app.state.rate_limiters = {
        "public": TokenBucketLimiter(settings.public_rate_per_min, settings.public_rate_burst,
                                     clock=lambda: 0.0),
        "login": TokenBucketLimiter(settings.login_rate_per_min, settings.login_rate_burst,
                                    clock=lambda: 0.0),
    }


def register_keyed_markets(url: str, devices: dict[str, list[str]], key: bytes,
                           created_ms: int) -> Store:
    """A fresh store at ``url`` with each market of ``devices`` and its registered scales,
    all keyed with ``key`` (15 kg / 5 g trade scales): the sharding and cluster tests'
    register. Returns the ``Store``."""
    from sqlalchemy import insert

    from gateway_server.store.database import Store
    from gateway_server.store.tables import markets, scales

    store: Store = Store.from_url(url)
    store.create_all()
    with store.engine.begin() as c:
        for m, devs in devices.items():
            c.execute(insert(markets).values(id=m, name=m, created_ms=created_ms))
            for d in devs:
                c.execute(insert(scales).values(device=d, market=m, registered=True,
                                                key_hex=key.hex(), e_mg=5_000,
                                                max_mg=15_000_000, state="unknown"))
    return store


def publish_qos1(port: int, msgs: list[tuple[str, bytes]], client_id: str = "") -> None:
    """Publish ``(topic, payload)`` pairs at QoS 1 to the broker on ``port``; return once
    the broker has acknowledged every one."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                    client_id=client_id or f"sim-{port}", protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for info in [c.publish(t, p, qos=1) for t, p in msgs]:
            info.wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()


def open_session(port: int, client_id: str, subscription: str) -> None:
    """Create the persistent session ``client_id`` with the ingest's ``subscription`` on
    the broker (node) at ``port``, as it exists in production once a market has been
    ingested: what is published before the ingest connects is queued for it, instead of
    a test guessing when the ingest's own SUBSCRIBE has reached the broker. (RabbitMQ
    3.10 puts the session's durable queue on the node it was created on.)"""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=False, protocol=mqtt.MQTTv311)
    acked: list[int] = []
    c.on_subscribe = lambda _c, _u, mid, *_: acked.append(mid)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        _, mid = c.subscribe(subscription, qos=1)
        wait_until(lambda: mid in acked, 60, 0.02, what=f"the session of {client_id}")
    finally:
        c.disconnect()
        c.loop_stop()
