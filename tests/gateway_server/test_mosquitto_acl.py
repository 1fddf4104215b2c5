"""Sessions bound to accounts, against a real Mosquitto started with the exported files
(``mosquitto.conf``, ``passwd``, ``passwd-gateway``, ``acl``) on free loopback ports.

Device A's credentials, whatever client id and clean-session flag they send, cannot take
over device B's session (B stays connected, keeps publishing and receiving), nor the
gateway's persistent session (its queued messages are all still delivered), nor publish
on B's topics. The same attack against a broker without ``use_username_as_clientid``
kicks B off: the check can fail.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import insert
from support import Mosquitto, PortTakenError, free_port, require_binary, wait_port, wait_until

from gateway_server.ingest.mosquitto_export import Export, Listener, export, mosquitto_conf, write
from gateway_server.store.database import Store
from gateway_server.store.tables import markets, scales
from weighing.signing import mqtt_password

KEYS = {"dev-a": bytes.fromhex("aa" * 16), "dev-b": bytes.fromhex("bb" * 16),
        "gw-market-m1": bytes.fromhex("cc" * 16)}
GW_PASSWORD = "gw-secret-123"
QUEUED = 15  # the probe of issue 15 lost 15 of 15 queued messages


@dataclass
class Broker:
    mosquitto: Mosquitto
    device_port: int
    gateway_port: int
    folder: Path
    left_out: tuple[str, ...]

    def stop(self) -> None:
        self.mosquitto.stop()


def _export(tmp: Path) -> Export:
    store = Store.from_url(f"sqlite:///{tmp}/gw.db")
    store.create_all()
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="m", created_ms=0))
        for d, k in KEYS.items():
            c.execute(insert(scales).values(device=d, market="m1", registered=True,
                                            key_hex=k.hex(), state="unknown"))
        exp = export(c, gateway_user="gateway", gateway_password=GW_PASSWORD)
    store.engine.dispose()
    return exp


def start_exported_broker(tmp: Path, *, strip: str | None = None) -> Broker:
    """Mosquitto with the exported files; ``strip`` removes one config line (the control)."""
    binary = require_binary("mosquitto")
    folder = tmp / "broker"
    exp = _export(tmp)
    data = tmp / "mosquitto-data"
    data.mkdir(exist_ok=True)
    for _ in range(5):
        dev, gw = free_port(), free_port()
        if dev == gw:
            continue
        conf = mosquitto_conf(folder, devices=Listener("127.0.0.1", dev),
                              gateway=Listener("127.0.0.1", gw), persistence_location=data)
        if strip is not None:
            assert strip in conf.splitlines(), strip
            conf = "\n".join(line for line in conf.splitlines() if line != strip) + "\n"
        # as root, mosquitto drops to the "mosquitto" user, who cannot read the test's
        # private folder: stay root (tests/support.py start_mosquitto does the same)
        conf += "user root\n" if os.geteuid() == 0 else ""
        write(folder, exp, conf)
        m = Mosquitto(dev, None, folder / "mosquitto.conf", binary)  # type: ignore[arg-type]
        try:
            m.start()
            wait_port(gw)
        except (PortTakenError, TimeoutError):
            m.stop()
            continue
        if m.proc.poll() is None:
            return Broker(m, dev, gw, folder, exp.left_out)
    raise AssertionError("mosquitto did not start with the exported config")


@dataclass
class Peer:
    """A paho client that records what happens to it (connects, drops, messages)."""

    client: mqtt.Client
    connacks: list[mqtt.ReasonCode | int] = field(default_factory=list)
    session_present: list[bool] = field(default_factory=list)
    drops: list[object] = field(default_factory=list)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(port: int, user: str, password: str, *, client_id: str, clean: bool = True,
            expect_ok: bool = True) -> Peer:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=clean, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.reconnect_delay_set(1, 2)
    p = Peer(c)

    def on_connect(_c, _u, flags, rc, _p) -> None:  # type: ignore[no-untyped-def]
        p.connacks.append(rc)
        p.session_present.append(bool(flags.session_present))

    def on_message(_c, _u, m) -> None:  # type: ignore[no-untyped-def]
        with p.lock:
            p.messages.append((m.topic, m.payload))

    c.on_connect = on_connect
    c.on_disconnect = lambda *a: p.drops.append(a[3])
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_until(lambda: p.connacks, 60, 0.02, what=f"the CONNACK of {user} as {client_id}")
    if expect_ok:
        assert not p.connacks[0].is_failure, f"{user} could not connect: {p.connacks}"
    return p


def subscribe(p: Peer, topic: str) -> None:
    acked: list[int] = []
    p.client.on_subscribe = lambda _c, _u, mid, *_: acked.append(mid)
    _, mid = p.client.subscribe(topic, qos=1)
    wait_until(lambda: mid in acked, 60, 0.02, what=f"the SUBACK of {topic}")


def dev_password(device: str) -> str:
    return mqtt_password(KEYS[device], device)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_exported_broker(tmp_path)
    yield b
    b.stop()


def test_a_device_named_like_a_gateway_session_is_left_out(broker: Broker) -> None:
    assert broker.left_out == ("gw-market-m1",)
    assert "gw-market-m1:" not in (broker.folder / "passwd").read_text()
    # its key no longer logs in: it cannot become the gateway's session
    p = connect(broker.device_port, "gw-market-m1", dev_password("gw-market-m1"),
                client_id="gw-market-m1", expect_ok=False)
    p.client.loop_stop()
    assert p.connacks[0].is_failure


def test_device_credentials_cannot_take_another_session(broker: Broker) -> None:
    # the gateway's market session: persistent, subscribed, then offline with a backlog
    gw = connect(broker.gateway_port, "gateway", GW_PASSWORD, client_id="gw-market-m1",
                 clean=False)
    subscribe(gw, "scales/v1/m1/+/events")
    gw.stop()
    cmd = connect(broker.gateway_port, "gateway", GW_PASSWORD, client_id="gw-cmd-test")
    b = connect(broker.device_port, "dev-b", dev_password("dev-b"), client_id="dev-b")
    subscribe(b, "scales/v1/m1/dev-b/cmd/#")
    for i in range(QUEUED):
        b.client.publish("scales/v1/m1/dev-b/events", f"b-{i}".encode(),
                         qos=1).wait_for_publish(60)

    # A's credentials with B's client id, then with the gateway's and a clean session
    a_as_b = connect(broker.device_port, "dev-a", dev_password("dev-a"), client_id="dev-b")
    a_as_b.stop()  # both of A's connections get client id dev-a: one at a time
    a_as_gw = connect(broker.device_port, "dev-a", dev_password("dev-a"),
                      client_id="gw-market-m1", clean=True)
    # and on the gateway's listener, where device accounts do not exist
    a_on_gw = connect(broker.gateway_port, "dev-a", dev_password("dev-a"),
                      client_id="gw-market-m1", clean=True, expect_ok=False)
    a_on_gw.client.loop_stop()
    assert a_on_gw.connacks[0].is_failure
    # A may not publish on B's topics: the forgery first, then A's own marker, which
    # the broker forwards after it (one publisher's messages stay in order)
    a_as_gw.client.publish("scales/v1/m1/dev-b/events", b"forged", qos=1).wait_for_publish(60)
    a_as_gw.client.publish("scales/v1/m1/dev-a/events", b"a-marker",
                           qos=1).wait_for_publish(60)

    # B was not kicked: still connected, it publishes and receives after A's connects
    b.client.publish("scales/v1/m1/dev-b/events", b"b-after", qos=1).wait_for_publish(60)
    cmd.client.publish("scales/v1/m1/dev-b/cmd/time-sync", b"{}", qos=1).wait_for_publish(60)
    wait_until(lambda: ("scales/v1/m1/dev-b/cmd/time-sync", b"{}") in b.got(), 60,
               what="dev-b's command")
    assert b.drops == [] and len(b.connacks) == 1, (b.drops, b.connacks)

    # the gateway's session kept everything queued for it while it was away
    gw2 = connect(broker.gateway_port, "gateway", GW_PASSWORD, client_id="gw-market-m1",
                  clean=False)
    assert gw2.session_present == [True]
    wait_until(lambda: ("scales/v1/m1/dev-b/events", b"b-after") in gw2.got(), 60,
               what="the gateway's backlog")
    wait_until(lambda: ("scales/v1/m1/dev-a/events", b"a-marker") in gw2.got(), 60,
               what="dev-a's marker")
    got = gw2.got()
    from_b = [p for t, p in got if t == "scales/v1/m1/dev-b/events"]
    assert from_b == [f"b-{i}".encode() for i in range(QUEUED)] + [b"b-after"]
    assert b"forged" not in [p for _, p in got]
    for p in (gw2, cmd, b, a_as_gw):
        p.stop()


def test_without_username_as_clientid_the_takeover_works(tmp_path: Path) -> None:
    """The control: the same move against a broker without the binding kicks B off."""
    broker = start_exported_broker(tmp_path, strip="use_username_as_clientid true")
    try:
        b = connect(broker.device_port, "dev-b", dev_password("dev-b"), client_id="dev-b")
        b.client.reconnect_delay_set(60, 120)  # stay down once kicked
        a = connect(broker.device_port, "dev-a", dev_password("dev-a"), client_id="dev-b")
        wait_until(lambda: b.drops, 60, what="dev-b being kicked off")
        for p in (a, b):
            p.stop()
    finally:
        broker.stop()


def test_export_cli_writes_a_config_mosquitto_accepts(tmp_path: Path) -> None:
    """The CLI's files, unchanged but for the ports: ``mosquitto`` starts with them."""
    from support import BIN

    binary = require_binary("mosquitto")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    dev, gw = free_port(), free_port()
    proc = subprocess.run(
        [str(BIN / "gateway-server"), "export-mosquitto", "--out", "broker",
         "--database-url", f"sqlite:///{tmp_path}/gw.db",
         "--device-listener", f"127.0.0.1:{dev}", "--gateway-listener", f"127.0.0.1:{gw}",
         "--persistence-location", str(tmp_path)],
        cwd=tmp_path, env=env, input=f"{GW_PASSWORD}\n", text=True, capture_output=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "broker"
    conf = (folder / "mosquitto.conf").read_text()
    assert (folder / "passwd-gateway").read_text().startswith("gateway:$7$")
    assert oct((folder / "passwd-gateway").stat().st_mode & 0o777) == "0o600"
    for line in ("allow_anonymous false", "use_username_as_clientid true",
                 f"password_file {folder.resolve() / 'passwd'}", "persistence true",
                 f"acl_file {folder.resolve() / 'acl'}", "max_queued_messages 100000"):
        assert line in conf.splitlines(), line
    (folder / "mosquitto.conf").write_text(conf + ("user root\n" if os.geteuid() == 0 else ""))
    m = Mosquitto(dev, None, folder / "mosquitto.conf", binary)  # type: ignore[arg-type]
    try:
        m.start()
        wait_port(gw)
        p = connect(gw, "gateway", GW_PASSWORD, client_id="gw-market-m1", clean=False)
        p.stop()
    finally:
        m.stop()
