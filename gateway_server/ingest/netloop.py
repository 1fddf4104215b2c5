"""One network thread for all the MQTT sessions of a worker process (issue 17).

A sharded worker holds one persistent session per market it owns (``sharding``); with
paho's ``loop_start`` each is a thread of its own, woken through a socket pair for every
acknowledgement the writer queues, and reading one packet per ``select``. Measured with
5,000 sample streams on 2 processes (bench_scaleout.py): 0.85 worker cores with one
session a process, 1.30 with 25; the difference is those threads contending for the GIL.

:class:`NetLoop` drives every client of the process from one thread through paho's public
external-loop interface (``socket``, ``loop_read``, ``loop_write``, ``loop_misc``,
``want_write``, ``on_socket_register_write``):

* all socket I/O happens in this thread: the writer thread only queues (``ack``,
  ``publish``), and paho's ``on_socket_register_write`` wakes the loop (a socket pair of
  its own, once per drained queue, not once per packet), so two threads never write
  one socket;
* a readable socket is read until it is drained (paho reads one packet per call), so a
  burst costs one ``select``, not one each;
* while ``paused()`` (the writer's backlog above its high-water mark) no socket is read:
  what the broker has not delivered waits in its session queues, and TCP pushes back,
  instead of the process holding it in memory; writes (acknowledgements) go on;
* an *urgent* client (``add(urgent=True)``: a market's events lane,
  ``gateway_server.ingest.ingestor``) is read first in every turn and again between
  the other sockets' drains, and is paused only by ``urgent_paused()`` (its own
  high-water mark), so a sale is read as soon as it arrives, however many sample
  batches wait on the other sockets;
* ``loop_misc`` every second keeps the keep-alive; a lost connection is reconnected with
  a doubling delay (1 s up to 10 s), as ``loop_start`` would, and the persistent
  session's messages come back unacknowledged, so nothing is lost.

A connection attempt blocks the thread for at most paho's connect timeout (5 s): the
sessions share one broker address, so when one cannot connect none can.

:class:`IngestClient` is the paho client of every ingest session (``NetLoop`` or
``loop_start``): paho reads a packet in three to six ``recv`` calls (its first byte, each
byte of its length, the rest), each a system call that gives up the GIL and must win it
back from the writer thread. Measured in a worker under 5,000 sample streams (py-spy,
bench_province.py): the network thread was 55 % of the process's busy samples, the
``recv`` calls and a ``select`` per packet to see whether another one waited about a
third of that. Its socket is wrapped in :class:`BufferedSocket`, which takes what the
kernel holds in one ``recv`` and serves paho's small reads from memory; ``pending()``
tells both loops that a packet is already in hand, so no ``select`` is needed for it.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MISC_S = 1.0
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 10.0
MAX_READS = 200  # packets read from one socket before the others get their turn
RECV_BYTES = 65_536  # one read from the kernel, at most


class BufferedSocket:
    """A connected socket whose ``recv`` is served from one large read of the kernel's.

    Only ``recv`` and ``pending`` differ from the socket's own; everything else (``send``,
    ``fileno``, ``close``, ``setblocking``, TLS's ``do_handshake``…) is the socket's.
    ``recv`` raises what the socket raises (``BlockingIOError``, ``SSLWantReadError``)
    only when nothing is buffered, and returns ``b""`` at the end of the stream, as the
    socket does.
    """

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            data: bytes = self._sock.recv(max(n, RECV_BYTES))
            if not data:
                return data
            if len(data) <= n:
                return data
            self._buf, self._pos = data, 0
        end = self._pos + n
        out = self._buf[self._pos:end]
        self._pos = min(end, len(self._buf))
        return out

    def pending(self) -> int:
        """Bytes that a ``recv`` returns without the kernel: buffered here, or decrypted
        by TLS and not read yet."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class IngestClient(mqtt.Client):
    """paho's client reading through a :class:`BufferedSocket`."""

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())


@dataclass
class _Conn:
    host: str
    port: int
    keepalive: int
    connected_once: bool = False
    up: bool = False  # had a socket at the last turn
    due: float = 0.0  # when to try (re)connecting
    delay: float = RECONNECT_MIN_S
    leaving: bool = False
    urgent: bool = False


class NetLoop:
    """Drives many paho clients from one thread: see the module docstring."""

    def __init__(self, paused: Callable[[], bool] = lambda: False,
                 urgent_paused: Callable[[], bool] = lambda: False) -> None:
        self.paused = paused
        self.urgent_paused = urgent_paused
        self._lock = threading.Lock()
        self._conns: dict[mqtt.Client, _Conn] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-netloop", daemon=True)
        self._thread.start()

    def add(self, client: mqtt.Client, host: str, port: int, keepalive: int, *,
            urgent: bool = False) -> None:
        """Connect ``client`` (its callbacks set) and drive it until :meth:`remove`;
        ``urgent``: read it first, paused only by ``urgent_paused``."""
        client.on_socket_register_write = self._on_register_write
        with self._lock:
            self._conns[client] = _Conn(host, port, keepalive, urgent=urgent)
        self._wake()

    def remove(self, client: mqtt.Client, timeout_s: float = 5.0) -> None:
        """Send DISCONNECT (the broker keeps the persistent session) and stop driving
        ``client`` once it is written, or after ``timeout_s``. Does not wait: a worker's
        coordinator drops many markets in a row, and a new owner's CONNECT with the same
        client id takes the session over at the broker anyway."""
        with self._lock:
            conn = self._conns.get(client)
            if conn is None or conn.leaving:
                return
            conn.leaving = True
            conn.due = time.monotonic() + timeout_s
        if client.socket() is not None:
            client.disconnect()  # queued; written (and the socket closed) by the loop
        self._wake()

    def stop(self) -> None:
        """Stop the thread; the DISCONNECTs still queued are written here, best effort."""
        self._stop.set()
        self._wake()
        self._thread.join(5)
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for client in conns:
            if client.socket() is not None and client.want_write():
                client.loop_write()
        self._wake_r.close()
        self._wake_w.close()

    def _on_register_write(self, client: mqtt.Client, userdata: object,
                           sock: object) -> None:
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pair is full (the loop is awake anyway) or closed (stopping)

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        last_misc = time.monotonic()
        while not self._stop.is_set():
            try:
                last_misc = self._turn(last_misc)
            except Exception:  # one client's trouble never stops the others
                log.exception("MQTT network loop")
                time.sleep(0.1)

    def _turn(self, last_misc: float) -> float:
        now = time.monotonic()
        with self._lock:
            conns = list(self._conns.items())
        for client, conn in conns:
            if conn.leaving:
                if client.socket() is None or now >= conn.due:  # gone, or given up on
                    with self._lock:
                        self._conns.pop(client, None)
                continue
            if client.socket() is not None:
                continue
            if conn.up:  # lost since the last turn: wait before reconnecting
                conn.up = False
                conn.due = now + conn.delay
                log.warning("MQTT %s:%s: connection lost; reconnecting in %.0f s",
                            conn.host, conn.port, conn.delay)
                conn.delay = min(conn.delay * 2, RECONNECT_MAX_S)
            elif now >= conn.due:
                self._connect(client, conn)
        by_sock: dict[Any, mqtt.Client] = {}  # paho's socket (plain or TLS) → its client
        urgent: list[Any] = []  # the sockets of urgent clients, read first
        wlist: list[Any] = []
        for client, conn in conns:
            sock = client.socket()
            if sock is not None:
                by_sock[sock] = client
                if conn.urgent:
                    urgent.append(sock)
                if client.want_write():
                    wlist.append(sock)
        paused, urgent_paused = self.paused(), self.urgent_paused()
        urgent_set = set(urgent)
        readers = [sk for sk in by_sock
                   if not (urgent_paused if sk in urgent_set else paused)]
        # packets already read from the kernel (BufferedSocket, TLS) make no socket
        # readable: they are read now, without waiting for the next byte to come
        in_hand = [sk for sk in readers if _pending(sk)]
        readable, writable, _ = select.select([self._wake_r, *readers], wlist, [],
                                              0 if in_hand else 0.02 if paused else 0.1)
        readable = [*readable, *(sk for sk in in_hand if sk not in readable)]
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        first = [r for r in readable if r in urgent_set]
        for r in first:
            self._drain(by_sock[r], r, self.urgent_paused)
        for r in readable:
            if r in urgent_set or (reader := by_sock.get(r)) is None:
                continue
            self._drain(reader, r, self.paused)
            if urgent and not urgent_paused:  # an event arrived meanwhile: it goes first
                for u in _ready(urgent):
                    self._drain(by_sock[u], u, self.urgent_paused)
        for w in writable:
            if (writer := by_sock.get(w)) is not None and writer.socket() is w:
                writer.loop_write()
        now = time.monotonic()
        if now - last_misc >= MISC_S:
            for client, _ in conns:
                client.loop_misc()  # keep-alive: PINGREQ, and a dead link noticed
            last_misc = now
        return last_misc

    def _drain(self, client: mqtt.Client, sock: Any, paused: Callable[[], bool]) -> None:
        """Read ``client``'s packets until none is waiting, ``MAX_READS`` of them, or
        ``paused()`` (what is left is read on a later turn: ``_pending``)."""
        fd: int = sock.fileno()
        for _ in range(MAX_READS):
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or client.socket() is not sock:
                return  # the connection is gone: reconnected on a later turn
            if paused():
                return
            if _pending(sock):
                continue
            ready, _, _ = select.select([fd], [], [], 0)
            if not ready:
                return

    def _connect(self, client: mqtt.Client, conn: _Conn) -> None:
        try:
            if conn.connected_once:
                client.reconnect()
            else:
                client.connect(conn.host, conn.port, keepalive=conn.keepalive)
                conn.connected_once = True
            conn.up = True
            conn.delay = RECONNECT_MIN_S
        except OSError as err:
            log.warning("MQTT %s:%s: cannot connect (%s); again in %.0f s",
                        conn.host, conn.port, err, conn.delay)
            conn.due = time.monotonic() + conn.delay
            conn.delay = min(conn.delay * 2, RECONNECT_MAX_S)


def _ready(socks: list[Any]) -> list[Any]:
    """Those of ``socks`` with a packet to read now (in hand, or in the kernel)."""
    ready = [sk for sk in socks if _pending(sk)]
    try:
        more, _, _ = select.select([sk for sk in socks if sk not in ready], [], [], 0)
    except (OSError, ValueError):  # a socket closed meanwhile: read on the next turn
        return ready
    return [*ready, *more]


def _pending(sock: Any) -> int:
    """Bytes of ``sock`` read from the kernel and not yet by paho (BufferedSocket, TLS)."""
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0


__all__ = ["BufferedSocket", "IngestClient", "NetLoop"]
