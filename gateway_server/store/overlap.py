"""A statement on the database server while the caller's thread goes on with Python work.

Why (issue 17, profiled on PostgreSQL): storing a batch of 50,000 sales, the writer thread
waited on the server's exactly-once insert 54 % of its time, while the checks and row
building of the rest of the batch waited for it. PostgreSQL does the insert in its own
process, so the two can run at once: the batch's sales go to the server in chunks, each
chunk's insert running in a helper thread while the writer checks and builds the next.

Rules: one statement at a time on the connection (a connection is not shared by two
threads at once): :meth:`Overlap.submit` first waits for the one in flight, and the caller
calls :meth:`Overlap.wait` before it uses the connection itself. :meth:`Overlap.close`
always waits for the statement in flight, so the transaction is never committed or rolled
back under it; an error of the helper is raised in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Overlap:
    """At most one job in a helper thread; results collected in submission order."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._job: Future[Any] | None = None
        self.results: list[Any] = []

    def submit(self, fn: Callable[..., T], *args: Any) -> None:
        """Run ``fn(*args)`` in the helper thread once the job in flight has finished."""
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-insert")
        self._job = self._pool.submit(fn, *args)

    def wait(self) -> None:
        """Wait for the job in flight, if any; its result goes to :attr:`results`, its
        error is raised here."""
        job, self._job = self._job, None
        if job is not None:
            self.results.append(job.result())

    def close(self) -> None:
        """Wait for the job in flight (whatever happens to it) and stop the helper."""
        try:
            if self._job is not None:
                self._job.exception()  # waits; the error, if any, is raised by wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


__all__ = ["Overlap"]
