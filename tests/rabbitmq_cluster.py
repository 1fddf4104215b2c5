"""A RabbitMQ cluster with the MQTT plugin on loopback, for the scale-out tests (issue 17).

Every node runs as the current user from the Debian package's scripts
(``/usr/lib/rabbitmq/bin``: the ``/usr/sbin`` wrappers would ``su rabbitmq``), with its
own node name (``rabbit-a-<hex>@localhost``: unique, so parallel test workers never meet
in epmd), its own AMQP, MQTT and Erlang distribution ports (free loopback ports), its
data, logs and configuration in the test's temporary folder, and one Erlang cookie for
all nodes and the CLI (``HOME``). The system's epmd is reused when it runs (port 4369),
otherwise one is started on a free port (``ERL_EPMD_PORT``) and stopped with the cluster.

Nodes are waited on with ``rabbitmqctl await_startup`` and the MQTT port, never a fixed
sleep; node *b* (and any further node) joins node *a* with ``stop_app`` /
``join_cluster`` / ``start_app``. :meth:`RabbitNode.kill` is a SIGKILL of the node's whole
process group (a crash); :meth:`RabbitNode.start` brings it back on the same data, and
it rejoins the cluster by itself.

:class:`FailoverProxy` stands for the TCP load balancer (HAProxy, a cloud LB) in front of
a cluster: the gateway and the agents take one ``mqtt://host:port``, so a client reaches
"the cluster" through it, and it connects each new client to the first node of its list
that accepts.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import free_port, require_binary, wait_until

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
SYSTEM_EPMD_PORT = 4369


def rabbit_scripts() -> tuple[Path, Path]:
    """``rabbitmq-server`` and ``rabbitmqctl`` that run as the caller (skipped on a
    developer machine without RabbitMQ, a failure in CI: see ``support.require_binary``)."""
    require_binary("rabbitmq-server")
    server, ctl = RABBIT_BIN / "rabbitmq-server", RABBIT_BIN / "rabbitmqctl"
    if not (server.exists() and ctl.exists()):
        if os.environ.get("CI"):
            pytest.fail(f"{RABBIT_BIN}/rabbitmq-server and rabbitmqctl are required in CI")
        pytest.skip(f"{RABBIT_BIN} has no rabbitmq-server / rabbitmqctl")
    return server, ctl


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)


@dataclass
class RabbitNode:
    name: str  # short name, "a"
    node: str  # Erlang node name, "rabbit-a-1f2e3d4c@localhost"
    amqp_port: int
    mqtt_port: int
    dist_port: int
    base: Path
    env: dict[str, str]
    server: Path
    ctl: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def log(self) -> Path:
        return self.base / "log" / "node.log"

    def spawn(self) -> None:
        """Start the node's process, in a process group of its own."""
        with (self.base / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen([str(self.server)], env=self.env, cwd=self.base,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def start(self) -> None:
        """Start the node (again: on the same data it rejoins its cluster) and wait until
        it runs and its MQTT listener accepts."""
        self.spawn()
        self.await_startup()
        self.wait_mqtt()

    def await_startup(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"rabbitmq node {self.node} exited "
                                     f"({self.proc.returncode}):\n{self.tail()}")
            r = self.rabbitmqctl("await_startup", "--timeout", "30", check=False)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.node} did not start: {r.stdout}{r.stderr}\n"
                                     + self.tail())

    def wait_mqtt(self) -> None:
        wait_until(lambda: _port_open(self.mqtt_port), 120, 0.1,
                   what=f"the MQTT listener of {self.node}")

    def rabbitmqctl(self, *args: str, check: bool = True,
                    timeout: float = 180) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(self.ctl), "-n", self.node, *args], env=self.env,
                           cwd=self.base, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"rabbitmqctl -n {self.node} {' '.join(args)}: "
                                 f"{r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def kill(self) -> None:
        """SIGKILL the node's whole process group: a crash, no goodbye to its peers."""
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(self.proc)  # what is left of the group (erl_child_setup, …)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 4000) -> str:
        parts = []
        for p in (self.base / "stdout.log", self.log):
            if p.exists():
                parts.append(f"--- {p}\n" + p.read_text(errors="replace")[-n:])
        return "\n".join(parts)


@dataclass
class RabbitCluster:
    nodes: list[RabbitNode]
    epmd: subprocess.Popen[bytes] | None = None

    def __getitem__(self, name: str) -> RabbitNode:
        return next(n for n in self.nodes if n.name == name)

    def running_nodes(self, via: RabbitNode) -> list[str]:
        out = via.rabbitmqctl("cluster_status", "--formatter", "json").stdout
        return sorted(json.loads(out).get("running_nodes", []))

    def stop(self) -> None:
        """Kill every node's process group (its data is the test's: nothing to flush)."""
        for n in self.nodes:
            n.kill()
        if self.epmd is not None:
            _kill_group(self.epmd)


def _rabbit_conf(node: RabbitNode, extra_conf: str) -> str:
    return (
        f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n"
        f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}\n"
        "mqtt.allow_anonymous = true\n"
        "loopback_users = none\n"
        # nothing but the cluster's own disk in the test folder: no free-disk alarm
        "disk_free_limit.absolute = 1MB\n"
        "log.file.level = info\n"
        "log.console = false\n"
        + extra_conf
    )


def _ensure_epmd(tmp: Path) -> tuple[int, subprocess.Popen[bytes] | None]:
    if _port_open(SYSTEM_EPMD_PORT):
        return SYSTEM_EPMD_PORT, None
    epmd = require_binary("epmd")
    port = free_port()
    proc = subprocess.Popen([epmd, "-port", str(port), "-address", "127.0.0.1"],
                            stdout=(tmp / "epmd.log").open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_until(lambda: proc.poll() is not None or _port_open(port), 60, 0.05,
               what="epmd to listen")
    assert proc.poll() is None, "epmd exited"
    return port, proc


class PortTaken(AssertionError):
    """A node could not bind a port ``free_port`` gave (taken meanwhile)."""


def start_cluster(tmp: Path, names: tuple[str, ...] = ("a", "b"), *, extra_conf: str = "",
                  advanced_config: str = "") -> RabbitCluster:
    """Start ``names`` as RabbitMQ nodes with the MQTT plugin and join them into one
    cluster (every node after the first joins the first). Stop it with ``.stop()``.
    A port taken between ``free_port`` and the node's bind: again, on other ports."""
    for attempt in range(3):
        try:
            return _start_cluster(tmp / f"rabbitmq-{attempt}", names, extra_conf=extra_conf,
                                  advanced_config=advanced_config)
        except PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_cluster(tmp: Path, names: tuple[str, ...], *, extra_conf: str,
                   advanced_config: str) -> RabbitCluster:
    server, ctl = rabbit_scripts()
    tmp.mkdir(parents=True, exist_ok=True)
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(20))
    cookie.chmod(0o400)
    epmd_port, epmd = _ensure_epmd(tmp)
    tag = secrets.token_hex(4)
    cluster = RabbitCluster([], epmd)
    try:
        for name in names:
            base = tmp / name
            (base / "log").mkdir(parents=True, exist_ok=True)
            (base / "mnesia").mkdir(exist_ok=True)
            node = f"rabbit-{name}-{tag}@localhost"
            ctl_min = free_port()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                "HOME": str(home),
                "ERL_EPMD_PORT": str(epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                # loopback only, for the distribution of the node and of the CLI
                "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
                "RABBITMQ_NODENAME": node,
                "RABBITMQ_USE_LONGNAME": "false",
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": "0",  # set below
                "RABBITMQ_DIST_PORT": "0",
                "RABBITMQ_CTL_DIST_PORT_MIN": str(ctl_min),
                "RABBITMQ_CTL_DIST_PORT_MAX": str(min(ctl_min + 20, 65535)),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_LOGS": str(base / "log" / "node.log"),
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            }
            n = RabbitNode(name, node, free_port(), free_port(), free_port(), base, env,
                           server, ctl)
            env["RABBITMQ_NODE_PORT"] = str(n.amqp_port)
            env["RABBITMQ_DIST_PORT"] = str(n.dist_port)
            (base / "rabbitmq-env.conf").write_text("")
            (base / "rabbitmq.conf").write_text(_rabbit_conf(n, extra_conf))
            (base / "advanced.config").write_text(advanced_config or "[].\n")
            (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
            cluster.nodes.append(n)
        # start all, then join: the nodes boot in parallel (each boot is CPU-bound)
        for n in cluster.nodes:
            n.spawn()
        for n in cluster.nodes:
            n.await_startup()
        first = cluster.nodes[0]
        for n in cluster.nodes[1:]:
            n.rabbitmqctl("stop_app")
            n.rabbitmqctl("join_cluster", first.node)
            n.rabbitmqctl("start_app")
        for n in cluster.nodes:
            n.await_startup()
            n.wait_mqtt()
        wanted = sorted(n.node for n in cluster.nodes)
        wait_until(lambda: cluster.running_nodes(first) == wanted, 120, 0.5,
                   what="every node running in one cluster")
        return cluster
    except BaseException:
        cluster.stop()
        if any("eaddrinuse" in n.tail(200_000).lower() for n in cluster.nodes):
            raise PortTaken("a port was taken: " + ", ".join(n.node for n in cluster.nodes)) from None
        raise


@contextlib.contextmanager
def rabbit_cluster(tmp: Path, names: tuple[str, ...] = ("a", "b"),
                   **kw: str) -> Iterator[RabbitCluster]:
    cluster = start_cluster(tmp, names, **kw)
    try:
        yield cluster
    finally:
        cluster.stop()


class FailoverProxy:
    """A TCP forwarder on a free loopback port: each new client is connected to the first
    upstream port that accepts, in the order given (``prefer``); bytes are copied both
    ways until either side closes, then both are closed. It stands for the load balancer
    in front of a broker cluster; ``connections`` counts the upstream each client got."""

    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = list(upstreams)
        self.connections: dict[int, int] = {p: 0 for p in upstreams}
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(128)
        self.port = int(self._srv.getsockname()[1])
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="failover-proxy",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def prefer(self, upstreams: list[int]) -> None:
        self.upstreams = list(upstreams)

    def _accept(self) -> None:
        self._srv.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for port in list(self.upstreams):
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            self.connections[port] = self.connections.get(port, 0) + 1
            break
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._pairs.append((client, upstream))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.5):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def drop_all(self) -> None:
        """Close every forwarded connection (as a load balancer does when a backend's
        health check fails)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._srv.close()
        self.drop_all()
        self._thread.join(5)
