"""Commands to an edge agent from the API and the CLI: signed with the scale's key,
published on its command topic through a real Mosquitto, refused with a clear status."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from support import start_mosquitto, wait_until

from conftest import PASSWORD
from gateway_server.api import auth
from gateway_server.api.app import create_app
from gateway_server.cli import main as gw_main
from gateway_server.registry import register as registry
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from weighing import wire
from weighing.signing import verify_command

KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


class Listener:
    """A subscriber to every command topic: what an agent would receive."""

    def __init__(self, port: int) -> None:
        self.got: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id="cmd-listener")
        self.c.on_connect = lambda c, *_: c.subscribe("scales/v1/+/+/cmd/+", qos=1)
        self.c.on_subscribe = lambda *_: self._ready.set()
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self._ready.wait(60)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    m = start_mosquitto(tmp_path, persistence=False, default_config=True)
    yield m
    m.stop()


def _register(store: Store, *, key: str | None = KEY) -> None:
    now = time.time_ns() // 1_000_000
    with store.engine.begin() as conn:
        registry.create_market(conn, "m-cmd", now_ms=now, name="m")
        registry.register_scale(conn, "s-cmd", market_id="m-cmd", now_ms=now, key_hex=key,
                                max_mg=15_000_000, e_mg=5_000)


def test_api_sends_signed_commands_and_refuses_what_it_cannot(
        tmp_path: Path, broker) -> None:  # type: ignore[no-untyped-def]
    store = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    _register(store)
    settings = Settings(database_url="sqlite://", mqtt_url=broker.url)
    listener = Listener(broker.port)
    try:
        with TestClient(create_app(store, None, settings)) as client:
            auth.ensure_user(store, "insp", PASSWORD, "inspector")
            auth.ensure_user(store, "adm", PASSWORD, "admin")
            tok = {u: client.post("/api/v1/auth/token", json={"username": u, "password": PASSWORD}
                                  ).json()["access_token"] for u in ("insp", "adm")}

            def send(body: dict, user: str | None = "insp", device: str = "s-cmd"):  # type: ignore[no-untyped-def,type-arg]
                h = {"Authorization": f"Bearer {tok[user]}"} if user else {}
                return client.post(f"/api/v1/scales/{device}/commands", json=body, headers=h)

            assert send({"name": "time-sync"}, user=None).status_code == 401
            r = send({"name": "time-sync"})
            assert r.status_code == 202, r.text
            r2 = send({"name": "resend", "from_seq": 3, "to_seq": 9})
            assert r2.status_code == 202, r2.text
            assert send({"name": "config-reload"}).status_code == 403  # inspector
            assert send({"name": "config-reload"}, user="adm").status_code == 202
            assert send({"name": "stored"}).status_code == 422  # the ingest's alone
            assert send({"name": "resend", "from_seq": 9, "to_seq": 3}).status_code == 422
            assert send({"name": "reboot"}).status_code == 422
            assert send({"name": "time-sync"}, device="s-none").status_code == 404
        wait_until(lambda: len(listener.got) == 3, 60, what="three commands delivered")
    finally:
        listener.close()
    key = bytes.fromhex(KEY)
    now = time.time_ns() // 1_000_000
    names = []
    for topic, payload in listener.got:
        parts, cmd = wire.decode_command(topic, payload)
        assert parts.device == "s-cmd" and parts.market == "m-cmd"
        verify_command(key, "s-cmd", cmd, now_ms=now)  # raises if forged or stale
        names.append(cmd.name.value)
        if cmd.name is wire.CommandName.RESEND:
            assert (cmd.from_seq, cmd.to_seq) == (3, 9)
        if cmd.name is wire.CommandName.TIME_SYNC:
            assert cmd.server_ms is not None and abs(cmd.server_ms - now) < 600_000
    assert names == ["time-sync", "resend", "config-reload"]


def test_cli_sends_a_command_and_says_why_it_cannot(
        tmp_path: Path, broker, capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/gw.db"
    store = Store.from_url(url)
    store.migrate()
    _register(store)
    listener = Listener(broker.port)
    try:
        args = ["--database-url", url, "--mqtt-url", broker.url]
        assert gw_main(["command", "s-cmd", "resend", "--from-seq", "1", "--to-seq", "4",
                        *args]) == 0
        wait_until(lambda: listener.got, 60, what="the command delivered")
        assert gw_main(["command", "s-none", "time-sync", *args]) == 2
        assert "no scale s-none" in capsys.readouterr().err
        assert gw_main(["command", "s-cmd", "resend", *args]) == 2
        assert "from_seq" in capsys.readouterr().err
    finally:
        listener.close()
    _, cmd = wire.decode_command(*listener.got[0])
    assert (cmd.name, cmd.from_seq, cmd.to_seq) == (wire.CommandName.RESEND, 1, 4)


def test_a_scale_without_key_gets_no_command(tmp_path: Path) -> None:
    from gateway_server.ingest import commands

    store = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    now = time.time_ns() // 1_000_000
    with store.engine.begin() as conn:
        registry.create_market(conn, "m-cmd", now_ms=now, name="m")
        registry.register_scale(conn, "s-cmd", market_id="m-cmd", now_ms=now,
                                max_mg=15_000_000, e_mg=5_000)
        conn.execute(registry.scales.update().values(key_hex=None))
        with pytest.raises(commands.CommandError, match="no key") as err:
            commands.build(conn, "s-cmd", "time-sync", now_ms=now)
    assert err.value.status == 409
