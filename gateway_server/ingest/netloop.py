"""One network thread for all the MQTT sessions of a worker process (issue 17).

A sharded worker holds two persistent sessions per market it owns (``sharding``: one per
lane); with paho's ``loop_start`` each is a thread of its own, woken through a socket pair
for every acknowledgement the writer queues, and reading one packet per ``select``.
Measured with 5,000 sample streams on 2 processes (bench_scaleout.py): 0.85 worker cores
with one session a process, 1.30 with 25; the difference is those threads contending for
the GIL.

:class:`NetLoop` drives every client of the process from one thread through paho's public
external-loop interface (``socket``, ``loop_read``, ``loop_write``, ``loop_misc``,
``want_write``, ``on_socket_register_write``):

* all socket I/O happens in this thread: the writer thread only queues (``ack``,
  ``publish``), and paho's ``on_socket_register_write`` wakes the loop (a socket pair of
  its own, once per drained queue, not once per packet), so two threads never write
  one socket;
* a readable socket is read until it is drained (paho reads one packet per call), so a
  burst costs one wait for readiness, not one each; the wait is ``poll``, not ``select``,
  which refuses descriptors numbered 1024 and above (two sockets a market: a worker
  with a few hundred markets would have stopped reading);
* while ``paused()`` (the writer's backlog above its high-water mark) no socket is read:
  what the broker has not delivered waits in its session queues, and TCP pushes back,
  instead of the process holding it in memory; writes (acknowledgements) go on;
* an *urgent* client (``add(urgent=True)``: a market's events lane,
  ``gateway_server.ingest.ingestor``) is read first in every turn, again between the
  other sockets' drains and every ``URGENT_EVERY`` packets within one (its sockets are
  kept in a selector, so a look costs one system call), and is paused only by
  ``urgent_paused()`` (its own
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
import selectors
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
#: packets of a samples socket read between two looks at the events lane's sockets (a look
#: is one ``epoll_wait`` of the selector that holds them)
URGENT_EVERY = 8
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

    def fileno(self) -> int:
        # a method of its own, not ``__getattr__``'s: the loop asks every socket's on
        # every turn
        return int(self._sock.fileno())

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
        #: the urgent clients' sockets, kept registered from turn to turn (descriptor →
        #: the socket registered under it), so that asking which of them has a packet
        #: between two other sockets' drains costs one system call, not one look at each
        self._urgent_sel = selectors.DefaultSelector()
        self._urgent_reg: dict[int, Any] = {}
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
        self._urgent_sel.close()

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
        fds: dict[Any, int] = {}  # each socket's descriptor, asked once a turn
        sock_of: dict[int, Any] = {}  # and back
        urgent: dict[int, Any] = {}  # the sockets of urgent clients (read first), by fd
        wlist: list[int] = []
        for client, conn in conns:
            sock = client.socket()
            if sock is not None:
                fd = sock.fileno()
                if fd < 0:
                    continue  # closed meanwhile: its client notices on the next turn
                by_sock[sock] = client
                fds[sock] = fd
                sock_of[fd] = sock
                if conn.urgent:
                    urgent[fd] = sock
                if client.want_write():
                    wlist.append(fd)
        self._register_urgent(urgent)
        paused, urgent_paused = self.paused(), self.urgent_paused()
        readers = [sk for sk, fd in fds.items()
                   if not (urgent_paused if fd in urgent else paused)]
        # packets already read from the kernel (BufferedSocket, TLS) make no socket
        # readable: they are read now, without waiting for the next byte to come
        in_hand = [sk for sk in readers if _pending(sk)]
        wake = self._wake_r.fileno()
        ready_fds, writable_fds = _poll([wake, *(fds[sk] for sk in readers)], wlist,
                                        0 if in_hand else 0.02 if paused else 0.1)
        readable = [sock_of[fd] for fd in ready_fds if fd != wake]
        readable += [sk for sk in in_hand if sk not in readable]
        if wake in ready_fds:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        for r in readable:
            if fds[r] in urgent:
                self._drain(by_sock[r], r, fds[r], self.urgent_paused)
        def events_first() -> None:  # an event arrived meanwhile: it goes first
            for fd in self._urgent_ready():
                if (u := urgent.get(fd)) is not None:
                    self._drain(by_sock[u], u, fd, self.urgent_paused)

        check = events_first if urgent and not urgent_paused else None
        for r in readable:
            if fds[r] in urgent:
                continue
            self._drain(by_sock[r], r, fds[r], self.paused, check)
            if check is not None:
                check()
        for fd in writable_fds:
            w = sock_of[fd]
            if (writer := by_sock.get(w)) is not None and writer.socket() is w:
                writer.loop_write()
        now = time.monotonic()
        if now - last_misc >= MISC_S:
            for client, _ in conns:
                client.loop_misc()  # keep-alive: PINGREQ, and a dead link noticed
            last_misc = now
        return last_misc

    def _register_urgent(self, urgent: dict[int, Any]) -> None:
        """Keep :attr:`_urgent_sel` holding exactly the sockets of ``urgent`` (fd →
        socket). A socket is known by itself, not by its number: a closed socket's
        registration is gone from the kernel, and a new socket may get its number."""
        for fd, sock in list(self._urgent_reg.items()):
            if urgent.get(fd) is not sock:
                self._urgent_sel.unregister(fd)  # a closed one's error is ignored there
                del self._urgent_reg[fd]
        for fd, sock in urgent.items():
            if fd not in self._urgent_reg:
                self._urgent_sel.register(fd, selectors.EVENT_READ)
                self._urgent_reg[fd] = sock

    def _urgent_ready(self) -> list[int]:
        """The descriptors of the urgent sockets with something to read in the kernel
        (one in hand, left by ``MAX_READS``, is read on the next turn)."""
        try:
            return [key.fd for key, _ in self._urgent_sel.select(0)]
        except OSError:  # a socket closed meanwhile: read on the next turn
            return []

    def _drain(self, client: mqtt.Client, sock: Any, fd: int, paused: Callable[[], bool],
               between: Callable[[], None] | None = None) -> None:
        """Read ``client``'s packets until none is waiting, ``MAX_READS`` of them, or
        ``paused()`` (what is left is read on a later turn: ``_pending``); ``between``
        is called every ``URGENT_EVERY`` packets (the events lane's turn, within a
        samples socket's drain)."""
        for n in range(1, MAX_READS + 1):
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or client.socket() is not sock:
                return  # the connection is gone: reconnected on a later turn
            if paused():
                return
            if between is not None and n % URGENT_EVERY == 0:
                between()
            if _pending(sock):
                continue
            ready, _ = _poll([fd], [], 0)
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


#: what makes a socket "readable" to :func:`_poll`, as to ``select``: data, or an end or an
#: error its next read reports
_READ_EVENTS = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR


def _poll(readers: list[int], writers: list[int], timeout_s: float) -> tuple[list[int],
                                                                           list[int]]:
    """``select.select(readers, writers, [], timeout_s)`` on descriptors, without its
    limit: ``select`` refuses a descriptor numbered 1024 (FD_SETSIZE) or above, and a
    worker holds two sockets a market besides its database connections and files, so one
    with a few hundred markets would stop reading. ``poll`` takes any descriptor."""
    want = dict.fromkeys(readers, select.POLLIN | select.POLLPRI)
    for fd in writers:
        want[fd] = want.get(fd, 0) | select.POLLOUT
    poller = select.poll()
    for fd, flags in want.items():
        poller.register(fd, flags)
    readable, writable = [], []
    for fd, got in poller.poll(int(timeout_s * 1000)):
        if got & select.POLLNVAL:
            continue  # closed meanwhile: its client notices on the next turn
        if got & _READ_EVENTS and want[fd] & select.POLLIN:
            readable.append(fd)
        if got & (select.POLLOUT | select.POLLHUP | select.POLLERR) and want[fd] & select.POLLOUT:
            writable.append(fd)
    return readable, writable


def _pending(sock: Any) -> int:
    """Bytes of ``sock`` read from the kernel and not yet by paho (BufferedSocket, TLS)."""
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0


__all__ = ["BufferedSocket", "IngestClient", "NetLoop"]
