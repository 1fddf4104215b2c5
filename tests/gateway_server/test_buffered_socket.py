"""The ingest's buffered socket (``netloop.BufferedSocket``, ``IngestClient``).

paho reads a packet a byte at a time; the wrapper serves those reads from one read of the
kernel's. Checked on real sockets: a stream cut anywhere comes back byte for byte, the end
of the stream and "nothing yet" are reported as the socket reports them, and a burst of
messages that arrives in one read is delivered in full by both of the ingest's loops
(paho's own ``loop_start`` and the worker's ``NetLoop``), which learn from ``pending()``
that packets are already in hand (otherwise they would wait for the next byte from the
broker to read them).
"""

from __future__ import annotations

import random
import socket
import threading
from typing import Any

import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import Mosquitto, publish_qos1, wait_until

from gateway_server.ingest.netloop import BufferedSocket, IngestClient, NetLoop


def test_reads_come_back_byte_for_byte_whatever_the_sizes_asked() -> None:
    a, b = socket.socketpair()
    rnd = random.Random(7)
    data = bytes(rnd.randrange(256) for _ in range(300_000))
    sender = threading.Thread(target=a.sendall, args=(data,))
    sender.start()
    buf = BufferedSocket(b)
    got = bytearray()
    while len(got) < len(data):
        chunk = buf.recv(rnd.choice([1, 1, 2, 4, 100, 2048, 70_000]))
        assert chunk, "the stream ended early"
        got += chunk
    sender.join()
    assert bytes(got) == data
    assert buf.pending() == 0
    a.close()
    assert buf.recv(1) == b""  # the end of the stream, as the socket says it
    b.close()


def test_pending_counts_what_is_buffered_and_nothing_waiting_raises() -> None:
    a, b = socket.socketpair()
    b.setblocking(False)
    buf = BufferedSocket(b)
    with pytest.raises(BlockingIOError):
        buf.recv(1)
    a.sendall(b"\x30\x05hello")
    wait_until(lambda: _readable(b), 10, what="the bytes to arrive")
    assert buf.recv(1) == b"\x30"
    assert buf.pending() == 6  # the rest came with the first byte
    assert buf.recv(1) == b"\x05" and buf.recv(5) == b"hello"
    assert buf.pending() == 0
    with pytest.raises(BlockingIOError):
        buf.recv(1)
    assert buf.fileno() == b.fileno()  # the rest is the socket's
    a.close()
    b.close()


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


@pytest.mark.parametrize("loop", ["paho", "netloop"])
def test_a_burst_in_one_read_is_delivered_in_full(mosquitto: Mosquitto, loop: str) -> None:
    n = 2000
    got: list[bytes] = []
    c = IngestClient(callback_api_version=CallbackAPIVersion.VERSION2,
                     client_id=f"burst-{loop}", clean_session=True)
    subscribed = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe("burst/#", qos=1)
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    net = None
    if loop == "paho":
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
    else:
        net = NetLoop()
        net.add(c, "127.0.0.1", mosquitto.port, 60)
    try:
        assert subscribed.wait(30)
        # small messages, published as fast as the broker takes them: many reach the
        # subscriber in one TCP segment
        publish_qos1(mosquitto.port, [(f"burst/{i % 7}", i.to_bytes(4, "big"))
                                      for i in range(n)])
        wait_until(lambda: len(got) >= n, 60, what=f"{n} messages ({len(got)} so far)")
        assert sorted(int.from_bytes(p, "big") for p in got) == list(range(n))
        assert isinstance(c.socket(), BufferedSocket)
    finally:
        if net is not None:
            net.remove(c)
            net.stop()
        else:
            c.disconnect()
            c.loop_stop()


def test_packets_in_hand_when_the_writer_backs_up_are_read_after_it(
        mosquitto: Mosquitto) -> None:
    """The worker's loop stops reading while the writer is backlogged. Packets it had
    already taken from the kernel must be read once that ends, although the socket is not
    readable: the broker (default settings: 20 messages in flight) sends nothing more
    until those are acknowledged, so waiting for the socket would stall the session."""
    n = 300
    got: list[Any] = []
    acked = 0
    pause = threading.Event()
    c = IngestClient(callback_api_version=CallbackAPIVersion.VERSION2, client_id="backlog",
                     clean_session=True, manual_ack=True)
    subscribed = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe("backlog/#", qos=1)
    c.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        got.append(m)
        if len(got) % 50 == 5:  # the writer backs up now and then, mid-burst
            pause.set()
            threading.Timer(0.2, pause.clear).start()

    c.on_message = on_message
    net = NetLoop(paused=pause.is_set)
    net.add(c, "127.0.0.1", mosquitto.port, 60)
    stop = threading.Event()

    def acker() -> None:  # the writer: acknowledges what it has stored
        nonlocal acked
        while not stop.wait(0.01):
            for m in got[acked:]:
                c.ack(m.mid, m.qos)
                acked += 1

    t = threading.Thread(target=acker, daemon=True)
    t.start()
    try:
        assert subscribed.wait(30)
        publish_qos1(mosquitto.port, [(f"backlog/{i % 5}", i.to_bytes(4, "big"))
                                      for i in range(n)])
        wait_until(lambda: len(got) >= n, 30, what=f"{n} messages ({len(got)} so far)")
        assert sorted(int.from_bytes(m.payload, "big") for m in got) == list(range(n))
    finally:
        stop.set()
        t.join(5)
        net.remove(c)
        net.stop()


def test_a_socket_numbered_above_1024_is_read(mosquitto: Mosquitto) -> None:
    """``select`` refuses a descriptor numbered 1024 (FD_SETSIZE) or above; a worker holds
    two sockets a market besides its database connections, so the loop waits with
    ``poll``. The client's socket is made to land above 1024 by holding that many
    descriptors first."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1100
    if soft < need:
        assert hard == resource.RLIM_INFINITY or hard >= need, (
            f"this test needs {need} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    r, w = os.pipe()
    held = [r, w]
    while held[-1] < 1030:
        held.append(os.dup(r))
    n = 200
    got: list[bytes] = []
    c = IngestClient(callback_api_version=CallbackAPIVersion.VERSION2,
                     client_id="high-fd", clean_session=True)
    subscribed = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe("high/#", qos=1)
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    net = NetLoop()
    try:
        net.add(c, "127.0.0.1", mosquitto.port, 60)
        assert subscribed.wait(30), "never subscribed: the loop cannot wait on the socket"
        assert c.socket().fileno() >= 1024  # type: ignore[union-attr]
        for fd in held:  # the publisher below (paho's own loop: select) needs a low one
            os.close(fd)
        held.clear()
        publish_qos1(mosquitto.port, [(f"high/{i % 3}", i.to_bytes(4, "big"))
                                      for i in range(n)])
        wait_until(lambda: len(got) >= n, 60, what=f"{n} messages ({len(got)} so far)")
        assert sorted(int.from_bytes(p, "big") for p in got) == list(range(n))
    finally:
        net.remove(c)
        net.stop()
        for fd in held:
            os.close(fd)
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
