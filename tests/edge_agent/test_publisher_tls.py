"""TLS to a real Mosquitto TLS listener, with certificates made here by ``openssl``.

One listener speaks TLS (CA-signed server certificate, client certificate required,
username/password), another plaintext (for the test's subscriber only). A matching CA
gets the agent's events through; a wrong CA, or TLS aimed at the plaintext port, gets
no connection, an error in the agent's status and nothing in the clear.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from edge_helpers import KEY_HEX, Collector
from support import Mosquitto, free_port, require_binary, wait_port, wait_until

from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from simulators.emulator import SerialEmulator
from weighing import wire


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_binary("openssl"), *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def _signed(d: Path, name: str, ca: str, *, san: str | None = None) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.pem", cwd=d)


@dataclass
class TlsBroker:
    broker: Mosquitto
    tls_port: int
    certs: Path

    @property
    def plain_port(self) -> int:
        return self.broker.port


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    d = tmp_path_factory.mktemp("tls")
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _signed(d, "server", "ca", san="IP:127.0.0.1,DNS:localhost")
    _signed(d, "s-tls", "ca")
    pw = d / "passwd"
    pw.write_text("")
    subprocess.run([require_binary("mosquitto_passwd"), "-b", str(pw), "agent", "s3cret"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tls_port, plain_port = free_port(), free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings true\n"
        + ("user root\n" if os.geteuid() == 0 else "")
        + "persistence false\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
        "require_certificate true\n"
        "allow_anonymous false\n"
        f"password_file {pw}\n"
        f"listener {plain_port} 127.0.0.1\n"
        "allow_anonymous true\n"
    )
    broker = Mosquitto(plain_port, None, conf, require_binary("mosquitto"))  # type: ignore[arg-type]
    broker.start()
    wait_port(tls_port)
    yield TlsBroker(broker, tls_port, d)
    broker.stop()


def _agent(tmp: Path, url: str, port: str, device: str, **mqtt: object) -> Agent:
    return Agent(AgentConfig.model_validate({
        "agent": {"market": "m-tls", "outbox": str(tmp / f"{device}.db"), "heartbeat_s": 0.3},
        "mqtt": {"url": url, "max_delay_ms": 50, "reconnect_max_s": 1, **mqtt},
        "scale": [{"device": device, "profile": "toledo-15kg-5g", "port": port, "key": KEY_HEX}],
    }))


def test_tls_with_the_right_ca_and_client_certificate_delivers(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    c = tls_broker.certs
    col = Collector(tls_broker.plain_port, client_id="tls-ok-collector")
    with SerialEmulator(load_profile("toledo-15kg-5g"), []) as emu:
        agent = _agent(tmp_path, f"mqtts://127.0.0.1:{tls_broker.tls_port}", emu.path, "s-tls",
                       ca=str(c / "ca.pem"), cert=str(c / "s-tls.pem"), key=str(c / "s-tls.key"),
                       username="agent", password="s3cret")
        agent.start()
        try:
            wait_until(lambda: col.events("s-tls", wire.HeartbeatEvent), 60,
                       what="heartbeats over TLS")
            st = agent.status()["scales"]["s-tls"]["publisher"]  # type: ignore[index]
        finally:
            agent.stop()
            col.close()
    assert st["connected"] and st["state"] == "connected" and st["tls_errors"] == 0
    assert ("s-tls", "online") in col.states


@pytest.mark.parametrize("case", ["wrong-ca", "tls-to-plaintext-port"])
def test_a_tls_failure_is_an_error_and_never_falls_back_to_plaintext(
    tmp_path: Path, tls_broker: TlsBroker, case: str
) -> None:
    c = tls_broker.certs
    device = f"s-{case}"
    port = tls_broker.tls_port if case == "wrong-ca" else tls_broker.plain_port
    col = Collector(tls_broker.plain_port, client_id=f"col-{case}",
                    topics=(f"scales/v1/+/{device}/#",))
    seen: list[str] = []
    col.client.on_message = lambda cl, ud, msg: seen.append(msg.topic)
    with SerialEmulator(load_profile("toledo-15kg-5g"), []) as emu:
        agent = _agent(tmp_path, f"mqtts://127.0.0.1:{port}", emu.path, device,
                       ca=str(c / ("rogue-ca.pem" if case == "wrong-ca" else "ca.pem")),
                       cert=str(c / "s-tls.pem"), key=str(c / "s-tls.key"),
                       username="agent", password="s3cret")
        agent.start()
        try:
            pub = agent.workers[0].publisher
            wait_until(lambda: pub.stats.tls_errors >= 2, 60, what="TLS errors, retried")
            wait_until(lambda: agent.workers[0].stats.events, 60, what="events queued meanwhile")
            time.sleep(0.5)  # a chance for anything sent in the clear to show
            st = agent.status()["scales"][device]  # type: ignore[index]
        finally:
            agent.stop()
            col.close()
    p = st["publisher"]
    assert p["state"] == "tls-error" and not p["connected"] and p["connects"] == 0
    assert p["last_error"].startswith("TLS:")
    if case == "wrong-ca":
        assert "CERTIFICATE_VERIFY_FAILED" in p["last_error"]
    # the agent kept running (heartbeats pile up in the outbox) but nothing left in the clear
    assert st["state"] == "running" and st["events"] > 0
    assert seen == []
