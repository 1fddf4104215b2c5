"""Several Modbus slaves on one shared line, polled round-robin (the line's scheduler).

* :class:`ModbusBus` shares one :class:`~edge_agent.modbus_line.ModbusLine` among several
  slaves, polled round-robin in one thread. Each slave has its own timeout and, after a
  failure, a jittered exponential backoff, so a silent slave costs the others at most its
  timeout once per backoff period. Per-slave state is inspectable
  (:meth:`ModbusBus.states`). The bus's clock is injectable (``clock=``, ``time.monotonic``
  by default), so a test can check the schedule without racing it.
* Each result goes to its slave's :class:`~edge_agent.modbus_source.ModbusFrameSource`
  queue under the bus's condition, which the source's ``poll`` waits on (the hand-over
  described there).

Callers import these names from :mod:`edge_agent.modbus`.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from device_profiles.modbus_map import ModbusMap
from edge_agent.modbus_line import ModbusLine
from edge_agent.modbus_source import ModbusFrameSource, SlaveHealth, SlaveState
from edge_agent.transport import Polled, TransportError


class ModbusBus:
    """Several slaves on one shared line, polled round-robin with per-slave backoff."""

    def __init__(
        self,
        *,
        rtu: str | None = None,
        tcp: tuple[str, int] | str | None = None,
        poll_interval_s: float = 0.1,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        **line_settings: Any,
    ) -> None:
        self.line = ModbusLine(rtu=rtu, tcp=tcp, **line_settings)
        self.clock = clock  # schedules polls and backoffs; request timeouts are real time
        self.poll_interval_s = poll_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._sources: list[ModbusFrameSource] = []
        self._next: dict[int, float] = {}
        self._rr = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_slave(
        self, map_: ModbusMap, *, slave: int | None = None, timeout_s: float = 0.3,
        name: str | None = None,
    ) -> ModbusFrameSource:
        """Attach a slave; the returned source is what that scale's worker polls."""
        src = ModbusFrameSource(map_, line=self.line, slave=slave, timeout_s=timeout_s,
                                poll_interval_s=self.poll_interval_s, name=name)
        if any(s.slave == src.slave for s in self._sources):
            raise ValueError(f"slave {src.slave} is already on this bus")
        src._bus = self
        self._sources.append(src)
        self._next[src.slave] = 0.0
        return src

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> None:
        with contextlib.suppress(TransportError):  # a dead line is retried per request
            self.line.open()

    def close(self) -> None:
        self.stop()
        self.line.close()

    def __enter__(self) -> ModbusBus:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def states(self) -> dict[int, SlaveState]:
        """Per-slave health: ok / backing off, next try time, consecutive failures."""
        with self._cond:
            return {s.slave: s.state for s in self._sources}

    def _backoff_s(self, failures: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (failures - 1))
        return delay * (0.5 + 0.5 * self._rng.random())  # "equal jitter"

    def poll_round(self) -> dict[int, Polled | TransportError]:
        """Poll every slave that is due, once, starting one further each round."""
        results: dict[int, Polled | TransportError] = {}
        n = len(self._sources)
        order = [self._sources[(self._rr + i) % n] for i in range(n)] if n else []
        self._rr = (self._rr + 1) % max(n, 1)
        for src in order:
            if self.clock() < self._next[src.slave]:
                continue
            results[src.slave] = self._poll_slave(src)
        return results

    def _poll_slave(self, src: ModbusFrameSource) -> Polled | TransportError:
        t0 = self.clock()
        result: Polled | TransportError
        try:
            result = src.read_once()
        except TransportError as err:
            result = err
        t1 = self.clock()
        st = src.state
        with self._cond:
            if isinstance(result, TransportError):
                fails = st.consecutive_failures + 1
                self._next[src.slave] = t1 + self._backoff_s(fails)
                src.state = replace(st, health=SlaveHealth.BACKING_OFF, consecutive_failures=fails,
                                    next_try_s=self._next[src.slave], last_error=str(result),
                                    reads_failed=st.reads_failed + 1, last_latency_s=t1 - t0)
            else:
                self._next[src.slave] = t0 + self.poll_interval_s
                src.state = replace(st, health=SlaveHealth.OK, consecutive_failures=0,
                                    next_try_s=self._next[src.slave], reads_ok=st.reads_ok + 1,
                                    last_latency_s=t1 - t0)
            if len(src._queue) == src._queue.maxlen:
                src.dropped += 1
            src._queue.append(result)
            self._cond.notify_all()
        return result

    def start(self) -> None:
        """Poll in a background thread until :meth:`stop`."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"modbus-bus {self.line.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_round()
            due = min(self._next.values(), default=self.clock() + self.poll_interval_s)
            self._stop.wait(max(0.0, min(due - self.clock(), self.poll_interval_s)))
