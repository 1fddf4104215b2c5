"""``gateway-server worker --processes N``: N worker processes on one machine (issue 17).

One Python process ingests on about one core (the GIL; paho's network thread and the
writer share it), so a machine's cores are used by several processes, not threads. Each
child is an ordinary ``gateway-server worker`` with its own worker id (host-pid, or
``ID-i`` with ``--worker-id ID``): the children share the market leases exactly as
workers on different machines do (gateway_server.ingest.sharding), so no new coordination is
needed, and a child that dies loses its markets to its siblings when its leases expire.

This process only supervises: it starts the children, restarts one that exits with a
jittered, doubling delay (1 s up to 30 s), and on SIGTERM / SIGINT stops them all (SIGTERM,
then SIGKILL after 15 s). Child i serves ``/metrics`` on the base port + i, or the next
free port above it. A child is sent SIGTERM by the kernel when this process dies, even by
SIGKILL (Linux ``PR_SET_PDEATHSIG``), so no worker outlives its supervisor holding leases.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

from gateway_server.settings import Settings

log = logging.getLogger(__name__)

RESTART_MAX_S = 30.0
STEADY_S = 60.0  # a child that ran this long before exiting is restarted after 1 s again
STOP_GRACE_S = 15.0


def child_argv(args: argparse.Namespace, i: int) -> list[str]:
    """The command line of child ``i`` (0-based)."""
    argv = [sys.executable, "-m", "gateway_server.cli"]
    if getattr(args, "verbose", False):
        argv.append("-v")
    argv += ["worker", "--processes", "1", "--lease-s", str(args.lease_s)]
    if args.database_url:
        argv += ["--database-url", args.database_url]
    if args.mqtt_url:
        argv += ["--mqtt-url", args.mqtt_url]
    if args.worker_id:
        argv += ["--worker-id", f"{args.worker_id}-{i}"]
    listen = (args.metrics_listen if args.metrics_listen is not None
              else Settings().worker_metrics_listen)
    if listen:
        host, _, port = listen.rpartition(":")
        listen = f"{host}:{int(port) + i}" if port.isdigit() and int(port) else listen
    argv += ["--metrics-listen", listen]
    return argv


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux); exit at once if
    it already has. Elsewhere nothing (a systemd unit per worker is the way there)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(0)


def supervise(args: argparse.Namespace) -> int:
    n = args.processes
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    procs: list[subprocess.Popen[bytes] | None] = [None] * n
    me = os.getpid()

    def die_with_me() -> None:
        _die_with_parent(me)

    delay = [1.0] * n
    due = [0.0] * n
    started = [0.0] * n
    try:
        while not stop.is_set():
            for i in range(n):
                p = procs[i]
                if p is not None and p.poll() is None:
                    continue
                if p is not None:  # exited: restart later, a little later each time
                    if time.monotonic() - started[i] >= STEADY_S:
                        delay[i] = 1.0
                    log.error("worker process %d (pid %d) exited with %s; restarting in %.0f s",
                              i, p.pid, p.returncode, delay[i])
                    due[i] = time.monotonic() + delay[i] * random.uniform(0.8, 1.2)
                    delay[i] = min(delay[i] * 2, RESTART_MAX_S)
                    procs[i] = None
                if time.monotonic() >= due[i]:
                    procs[i] = subprocess.Popen(child_argv(args, i), preexec_fn=die_with_me)
                    started[i] = time.monotonic()
                    log.info("worker process %d started (pid %d)", i, procs[i].pid)  # type: ignore[union-attr]
            stop.wait(0.5)
    finally:
        live = [p for p in procs if p is not None and p.poll() is None]
        for p in live:
            p.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for p in live:
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return 0


__all__ = ["child_argv", "supervise"]
