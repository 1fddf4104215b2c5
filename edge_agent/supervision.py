"""Supervision: a task that fails is reported and restarted after a jittered backoff.

Rules (domain.md §5: an uncaught driver exception must never silently kill polling):

* :class:`Backoff` is the one jittered exponential backoff of the agent: the delay
  doubles from ``first_s`` after every failure, up to ``max_s``, and each wait is drawn
  from [0.5, 1.5) × the delay, so that tasks that failed together (every worker of a
  lost line, every publisher of a lost broker) do not retry in lockstep. A success
  resets it. The scale workers (:func:`supervise`), the publisher's pump and the
  station's scanner port use it. (A Modbus bus schedules its silent slaves by its own
  seeded, clock-injected rule instead: ``ModbusBus._backoff_s``, deterministic in tests.)
* :func:`supervise` runs a task's body until ``stop`` is set: an exception of one of
  the ``fatal`` types ends the loop (the task cannot go on, restarting would not help);
  any other exception is handed to ``on_failure`` with the delay about to be waited,
  and the body is run again after the wait.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable


class Backoff:
    """A jittered, doubling delay between retries."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s  # the next delay, before jitter

    def reset(self) -> None:
        """After a success: the next failure waits ``first_s`` again."""
        self.delay_s = self.first_s

    def next_s(self) -> float:
        """The jittered delay to wait now; the one after it doubles."""
        jittered = self.delay_s * random.uniform(0.5, 1.5)
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return jittered

    def wait(self, stop: threading.Event) -> bool:
        """Wait the next delay, or until ``stop`` is set; True if it was."""
        return stop.wait(self.next_s())


def supervise(
    body: Callable[[Backoff], None], *, stop: threading.Event, backoff: Backoff,
    on_failure: Callable[[Exception, float], None],
    fatal: tuple[type[Exception], ...] = (),
    on_fatal: Callable[[Exception], None] | None = None,
) -> None:
    """Run ``body(backoff)`` again and again until ``stop`` is set.

    ``body`` returns once ``stop`` is set and resets ``backoff`` itself once it is
    running (opening a port that then fails at once is not a success).
    """
    while not stop.is_set():
        try:
            body(backoff)
        except fatal as err:
            if on_fatal is not None:
                on_fatal(err)
            return
        except Exception as err:  # supervised: report, back off, restart
            on_failure(err, backoff.delay_s)
        backoff.wait(stop)
