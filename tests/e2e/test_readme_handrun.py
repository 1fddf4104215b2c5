"""README.md, "Running each piece by hand": the block run top to bottom stores a weighing.

The commands and edge.toml are read from the README itself, so the README cannot drift
from what works: its first ``sh`` block is run line by line in a fresh folder (the
repository's ``deploy/`` linked in, as seen from the repository root), its ``toml`` block
is the agent's edge.toml. What a person fills in is substituted: the broker (a private
Mosquitto on a free port, never 1883), the HTTP port, the pty path ``scale-sim serial``
prints, the password typed at the prompt. Real processes throughout; each is stopped.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import BIN, ROOT, free_port, start_mosquitto, wait_port, wait_until

#: the steps of the README's hand-run block, in order (command, subcommand)
STEPS = [(".", ".venv/bin/activate"), ("gateway-server", "init-db"),
         ("gateway-server", "create-user"), ("gateway-server", "import"),
         ("gateway-server", "serve"), ("scale-sim", "serial"), ("edge-agent", "run")]
PASSWORD = "readme-admin-pw-2031"


def readme_handrun() -> tuple[list[list[str]], str]:
    """The commands of the section's first ``sh`` block and its ``toml`` block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Running each piece by hand", 1)[1].split("\n## ", 1)[0]
    sh = re.search(r"```sh\n(.*?)```", section, re.S)
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert sh and toml, "the section lost its sh or toml block"
    commands = [shlex.split(line, comments=True) for line in sh.group(1).splitlines()]
    return [c for c in commands if c], toml.group(1)


def option(argv: list[str], name: str, value: str) -> list[str]:
    """``argv`` with the value of ``name`` replaced (the option must be there)."""
    i = argv.index(name)
    return [*argv[: i + 1], value, *argv[i + 2:]]


def substitute(toml: str, key: str, value: str) -> str:
    out, n = re.subn(rf'^{key} = "[^"]*"', f'{key} = "{value}"', toml, flags=re.M)
    assert n == 1, f"edge.toml in the README has {n} {key} lines"
    return out


def first_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no line from {proc.args}: {line!r}"
        if select.select([proc.stdout], [], [], left)[0]:
            chunk = os.read(proc.stdout.fileno(), 1)
            assert chunk, f"{proc.args} closed its stdout"
            line += chunk
    return line.decode().strip()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in reversed(procs):  # agent, emulator, gateway
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_readme_handrun_stores_a_weighing_without_dead_letters(
        tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    commands, toml = readme_handrun()
    assert [tuple(c[:2]) for c in commands] == STEPS, "the README's hand-run block changed"
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")  # paths as from the repository root
    broker = start_mosquitto(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "MQTT_URL") and not k.startswith("GATEWAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # what activate does
    http_port = free_port()

    def run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=tmp_path, env=env,
                              input=stdin, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        return proc

    def start(argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (tmp_path / log).open("wb") as err:
            proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=tmp_path, env=env,
                                    stdout=subprocess.PIPE, stderr=err)
        processes.append(proc)
        return proc

    try:
        _activate, init_db, create_user, import_, serve, serial, agent = commands
        run(init_db)
        run(create_user, stdin=PASSWORD + "\n")
        assert "imported 1" in run(import_).stdout
        serve = option(option(serve, "--mqtt-url", broker.url), "--port", str(http_port))
        start(serve, "gateway.log")
        wait_port(http_port, 30)
        url = f"http://127.0.0.1:{http_port}"
        wait_until(lambda: httpx.get(url + "/healthz", timeout=5).json().get("mqtt_connected"),
                   30, what="gateway MQTT connect")
        pty = first_line(start(serial, "scale-sim.log"), 30)
        assert pty.startswith("/dev/"), pty
        config = agent[agent.index("--config") + 1]
        edge_toml = substitute(substitute(toml, "port", pty), "url", broker.url)
        (tmp_path / config).write_text(edge_toml, encoding="utf-8")
        start(agent, "edge-agent.log")

        token = httpx.post(url + "/api/v1/auth/token", timeout=10, json={
            "username": "admin", "password": PASSWORD}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        def weighings() -> list[dict]:
            r = httpx.get(url + "/api/v1/weighings", params={"device": "s-0001"},
                          headers=auth, timeout=10)
            r.raise_for_status()
            return list(r.json()["items"])

        stored = wait_until(weighings, 120, interval_s=0.5, what="a stored weighing")
        assert all(w["market"] == "m001" and w["signed"] for w in stored)
        dead = httpx.get(url + "/api/v1/dead-letters", headers=auth, timeout=10).json()
        assert dead == []
        ingest = httpx.get(url + "/healthz", timeout=10).json()["ingest"]
        assert (ingest["dead_letters"], ingest["bad_signatures"]) == (0, 0)
    except BaseException:
        for log in ("gateway.log", "scale-sim.log", "edge-agent.log"):
            path = tmp_path / log
            if path.exists():
                print(f"--- {log}\n{path.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.terminate()
        broker.stop()
