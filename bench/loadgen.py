"""Load generation for the benchmarks: many scales' traffic from few processes, cheaply.

In the field every scale's agent runs on its own hardware; a benchmark on one machine
has to produce thousands of agents' messages from a couple of processes, on the cores the
gateway is measured on. With paho, each QoS 1 message cost a load process ~160 µs of CPU
(the publish call, the wake-up of its network thread, the PUBACK handling): 5,000 scales
took 1.1 of this machine's 2 cores, more than the gateway it was loading. The load is
not the thing measured, so it should take as little as it can:

* :class:`RawPublisher` speaks just the MQTT 3.1.1 a QoS 1 publisher needs (CONNECT,
  PUBLISH, PUBACK, DISCONNECT; OASIS MQTT 3.1.1 §3.1, §3.3, §3.4) over one socket,
  writing packets in bulk and counting the broker's PUBACKs in a reader thread; at most
  ``window`` messages are unacknowledged. The broker is a real Mosquitto; only the
  client is lean. Every message is still built and signed one by one, as an agent would.
* :func:`sample_load` is Load A of bench_scaleout.py and bench_province.py: one signed
  1 s sample batch per scale per second, spread over the second.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event as MpEvent

from weighing import wire
from weighing.signing import sign_message

READINGS = 20  # a 1 s sample batch: 20 readings 50 ms apart


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length (§2.2.3)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class RawPublisher:
    """A QoS 1 MQTT publisher in a few lines of Python: see the module docstring."""

    def __init__(self, port: int, client_id: str, *, host: str = "127.0.0.1",
                 window: int = 20_000, nodelay: bool = False) -> None:
        self.window = window
        self.sent = 0
        self.acked = 0
        self._mid = 0
        self._out: list[bytes] = []
        self._cv = threading.Condition()
        self.sock = socket.create_connection((host, port), timeout=30)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # CONNECT: protocol "MQTT" level 4, clean session, keep-alive 0 (none)
        var = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)
        body = var + _utf8(client_id)
        self.sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: CONNACK {connack.hex()}")
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name=f"puback-{client_id}",
                                        daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def _read(self) -> None:
        """Count PUBACKs (the only packets a publisher that never subscribes gets)."""
        rest = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._cv.notify_all()
                return
            data = rest + chunk
            whole = len(data) // 4 * 4  # a PUBACK is 4 bytes: 0x40 0x02 and the packet id
            n = whole // 4
            if data[0:whole:4].count(0x40) != n:
                raise ConnectionError(f"not a PUBACK from the broker: {data[:16].hex()}")
            rest = data[whole:]
            with self._cv:
                self.acked += n
                self._cv.notify_all()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue one QoS 1 PUBLISH; written on :meth:`flush` (or when 256 are queued)."""
        if self.sent - self.acked >= self.window:
            self.flush()
            with self._cv:
                while self.sent - self.acked >= self.window:
                    if not self._cv.wait(30):
                        raise TimeoutError(f"no PUBACK for 30 s ({self.sent - self.acked} "
                                           "messages unacknowledged)")
        self._mid = self._mid % 65535 + 1
        body = _utf8(topic) + struct.pack("!H", self._mid) + payload
        self._out.append(bytes([0x32 | int(retain)]) + _remaining_length(len(body)) + body)
        self.sent += 1
        if len(self._out) >= 256:
            self.flush()

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def close(self, drain_s: float = 30.0) -> None:
        """Flush, wait (up to ``drain_s``) for every PUBACK, DISCONNECT."""
        self.flush()
        with self._cv:
            self._cv.wait_for(lambda: self.acked >= self.sent, drain_s)
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def sample_load(port: int, devs: list[tuple[str, str, bytes]], stop: MpEvent,
                counts: SynchronizedArray[int], k: int, client_id: str) -> None:
    """One signed sample batch per scale per second, spread over the second, until
    ``stop``. ``devs``: (topic, device, key) a scale; ``counts[k]``: messages published."""
    pub = RawPublisher(port, client_id)
    seq = 0
    n = len(devs)
    while not stop.is_set():
        t0 = time.time()
        seq += 1
        now = int(t0 * 1000)
        t_ms = [now - 1000 + 50 * r for r in range(READINGS)]
        done = 0
        for j, (topic, dev, key) in enumerate(devs):
            sb = wire.SampleBatch(device=dev, t_ms=t_ms, net_mg=[0] * READINGS,
                                  flags=[1] * READINGS, seq=seq)
            pub.publish(topic, wire.encode(sign_message(key, dev, sb)))
            if j % 100 == 99 or j == n - 1:
                pub.flush()
                counts[k] += j + 1 - done
                done = j + 1
                time.sleep(max(0.0, t0 + (j + 1) / n - time.time()))
        time.sleep(max(0.0, t0 + 1 - time.time()))
    pub.close()


__all__ = ["READINGS", "RawPublisher", "sample_load"]
