"""With the exported password file and ACL loaded in a real Mosquitto, a device cannot
publish as another, nor read another's commands."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import insert
from support import start_mosquitto

from gateway_server.mosquitto_export import export, mosquitto_hash
from gateway_server.store import Store
from gateway_server.tables import markets, scales
from weighing.signing import mqtt_password

KEYS = {"dev-a": bytes.fromhex("aa" * 16), "dev-b": bytes.fromhex("bb" * 16)}


def client(port: int, user: str, password: str) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=user)
    c.username_pw_set(user, password)
    rc = []
    c.on_connect = lambda *a: rc.append(a[3])
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not rc and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rc and not rc[0].is_failure, f"{user} could not connect: {rc}"
    return c


def test_hash_matches_mosquitto_format() -> None:
    h = mosquitto_hash("secret123", salt=b"\x00" * 12)
    assert h.startswith("$7$101$AAAAAAAAAAAAAAAA$") and len(h.split("$")[-1]) == 88


def test_exported_acl_confines_each_device(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="m", created_ms=0))
        for d, k in KEYS.items():
            c.execute(insert(scales).values(device=d, market="m1", registered=True,
                                            key_hex=k.hex(), state="unknown"))
        exp = export(c, gateway_user="gateway", gateway_password="gw-secret-123")
    assert exp.devices == 2
    (tmp_path / "passwd").write_text(exp.passwd)
    (tmp_path / "acl").write_text(exp.acl)
    broker = start_mosquitto(tmp_path, persistence=False, extra=(
        "allow_anonymous false\n"
        f"password_file {tmp_path / 'passwd'}\n"
        f"acl_file {tmp_path / 'acl'}\n"))
    try:
        got: list[tuple[str, bytes]] = []
        lock = threading.Lock()
        gw = client(broker.port, "gateway", "gw-secret-123")

        def on_message(_c, _u, m) -> None:  # type: ignore[no-untyped-def]
            with lock:
                got.append((m.topic, m.payload))

        gw.on_message = on_message
        gw.subscribe("scales/v1/#", qos=1)
        time.sleep(0.3)
        a = client(broker.port, "dev-a", mqtt_password(KEYS["dev-a"], "dev-a"))
        a.publish("scales/v1/m1/dev-a/events", b"own", qos=1).wait_for_publish(5)
        a.publish("scales/v1/m1/dev-b/events", b"forged", qos=1).wait_for_publish(5)
        a.publish("scales/v1/m2/dev-a/events", b"other-market", qos=1).wait_for_publish(5)
        # dev-a must not read dev-b's commands
        a_cmds: list[str] = []
        a.on_message = lambda _c, _u, m: a_cmds.append(m.topic)
        a.subscribe("scales/v1/m1/+/cmd/#", qos=1)
        time.sleep(0.3)
        gw.publish("scales/v1/m1/dev-b/cmd/time-sync", b"{}", qos=1).wait_for_publish(5)
        gw.publish("scales/v1/m1/dev-a/cmd/time-sync", b"{}", qos=1).wait_for_publish(5)
        time.sleep(1.0)
        with lock:
            device_msgs = [g for g in got if "/cmd/" not in g[0]]
        assert device_msgs == [("scales/v1/m1/dev-a/events", b"own")]
        assert a_cmds == ["scales/v1/m1/dev-a/cmd/time-sync"]
        # a wrong password is refused
        bad = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="dev-b")
        bad.username_pw_set("dev-b", "guess")
        rcs = []
        bad.on_connect = lambda *x: rcs.append(x[3])
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        deadline = time.monotonic() + 5
        while not rcs and time.monotonic() < deadline:
            time.sleep(0.02)
        bad.loop_stop()
        assert rcs and rcs[0].is_failure
        store.engine.dispose()
        for c in (gw, a):
            c.loop_stop()
            c.disconnect()
    finally:
        broker.stop()
