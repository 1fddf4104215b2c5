"""With the exported password file and ACL loaded in a real Mosquitto, a device cannot
publish as another, nor read another's commands."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import insert
from support import start_mosquitto, wait_until

from gateway_server.ingest.mosquitto_export import export, mosquitto_hash
from gateway_server.store.database import Store
from gateway_server.store.tables import markets, scales
from weighing.signing import mqtt_password

KEYS = {"dev-a": bytes.fromhex("aa" * 16), "dev-b": bytes.fromhex("bb" * 16)}


def client(port: int, user: str, password: str) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=user)
    c.username_pw_set(user, password)
    rc = []
    c.on_connect = lambda *a: rc.append(a[3])
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_until(lambda: rc, 60, 0.02, what=f"{user}'s CONNACK")
    assert not rc[0].is_failure, f"{user} could not connect: {rc}"
    return c


def subscribe(c: mqtt.Client, topic: str) -> None:
    """Subscribe and wait for the SUBACK: from then on the broker routes to ``c``."""
    acked: list[int] = []
    c.on_subscribe = lambda _c, _u, mid, *_: acked.append(mid)
    _, mid = c.subscribe(topic, qos=1)
    wait_until(lambda: mid in acked, 60, 0.02, what=f"the SUBACK of {topic}")


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
    # one listener with both password files' accounts: the topic ACL alone (the exported
    # mosquitto.conf, with its two listeners, is tested in test_mosquitto_acl.py)
    (tmp_path / "passwd").write_text(exp.gateway_passwd + exp.passwd)
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
        subscribe(gw, "scales/v1/#")
        a = client(broker.port, "dev-a", mqtt_password(KEYS["dev-a"], "dev-a"))
        a.publish("scales/v1/m1/dev-a/events", b"own", qos=1).wait_for_publish(60)
        a.publish("scales/v1/m1/dev-b/events", b"forged", qos=1).wait_for_publish(60)
        a.publish("scales/v1/m2/dev-a/events", b"other-market", qos=1).wait_for_publish(60)
        # the broker forwards one publisher's messages in order: once this one is in, a
        # forged one let through would be in too (no quiet time to wait for)
        a.publish("scales/v1/m1/dev-a/events", b"own-2", qos=1).wait_for_publish(60)

        def device_msgs() -> list[tuple[str, bytes]]:
            with lock:
                return [g for g in got if "/cmd/" not in g[0]]

        wait_until(lambda: ("scales/v1/m1/dev-a/events", b"own-2") in device_msgs(), 60,
                   what="dev-a's second own message")
        assert device_msgs() == [("scales/v1/m1/dev-a/events", b"own"),
                                 ("scales/v1/m1/dev-a/events", b"own-2")]
        # dev-a must not read dev-b's commands (sent first: it would come first)
        a_cmds: list[str] = []
        a.on_message = lambda _c, _u, m: a_cmds.append(m.topic)
        subscribe(a, "scales/v1/m1/+/cmd/#")
        gw.publish("scales/v1/m1/dev-b/cmd/time-sync", b"{}", qos=1).wait_for_publish(60)
        gw.publish("scales/v1/m1/dev-a/cmd/time-sync", b"{}", qos=1).wait_for_publish(60)
        wait_until(lambda: "scales/v1/m1/dev-a/cmd/time-sync" in a_cmds, 60,
                   what="dev-a's own command")
        assert a_cmds == ["scales/v1/m1/dev-a/cmd/time-sync"]
        # a wrong password is refused
        bad = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="dev-b")
        bad.username_pw_set("dev-b", "guess")
        rcs = []
        bad.on_connect = lambda *x: rcs.append(x[3])
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        wait_until(lambda: rcs, 60, 0.02, what="the CONNACK of a wrong password")
        bad.loop_stop()
        assert rcs[0].is_failure
        store.engine.dispose()
        for c in (gw, a):
            c.loop_stop()
            c.disconnect()
    finally:
        broker.stop()


# -- the CLI: where the gateway's password comes from -------------------------------------


def _export_argv(tmp_path: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    import os

    from support import BIN

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return [str(BIN / "gateway-server"), "export-mosquitto", "--out", "broker",
            "--database-url", f"sqlite:///{tmp_path}/gw.db", *args], env


def _export_cli(tmp_path: Path, *args: str, **kw):  # type: ignore[no-untyped-def]
    import subprocess

    argv, env = _export_argv(tmp_path, *args)
    return subprocess.run(argv, cwd=tmp_path, env=env, timeout=120, capture_output=True,
                          text=True, **kw)


def test_export_cli_help_says_where_the_gateway_password_comes_from(tmp_path: Path) -> None:
    proc = _export_cli(tmp_path, "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "asked for on a terminal, else the first line of stdin" in text


def test_export_cli_without_a_password_says_how_to_give_one(tmp_path: Path) -> None:
    import subprocess

    proc = _export_cli(tmp_path, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "first line of stdin" in lines[0] and "--gateway-password" in lines[0]
    assert not (tmp_path / "broker").exists()


def test_export_cli_reads_the_first_line_of_stdin(tmp_path: Path) -> None:
    proc = _export_cli(tmp_path, input="gw-secret-123\nignored\n")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "broker" / "passwd-gateway").read_text().startswith("gateway:$7$")


def test_export_cli_asks_on_a_terminal(tmp_path: Path) -> None:
    """stdin a terminal (a pty made the process's controlling terminal): asked twice."""
    import fcntl
    import os
    import select
    import subprocess
    import termios

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    argv, env = _export_argv(tmp_path)
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=controlling_tty)
        seen = b""

        def read_until(text: bytes) -> None:
            nonlocal seen
            deadline = time.monotonic() + 30
            while text not in seen and time.monotonic() < deadline:
                if select.select([master], [], [], 0.2)[0]:
                    seen += os.read(master, 1024)
            assert text in seen, seen

        read_until(b"MQTT password for the gateway account 'gateway': ")
        os.write(master, b"gw-secret-123\n")
        read_until(b"again: ")
        os.write(master, b"gw-secret-123\n")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert b"gw-secret-123" not in seen  # not echoed
        assert (tmp_path / "broker" / "passwd-gateway").read_text().startswith("gateway:$7$")
    finally:
        os.close(slave)
        os.close(master)
