"""Time-series sink: raw readings and sales to InfluxDB 2/3 or VictoriaMetrics, never blocking.

One module (about 440 lines) on purpose: the line format, the bounded queue and the one
thread that drains it share a lock and counters that only make sense together.

Rules (architecture.md §6: the time-series store is optional, dashboards read our rollups):

* The ingest writer thread calls :meth:`TimeSeriesSink.write_samples` and
  :meth:`TimeSeriesSink.write_sales`. They only format InfluxDB line protocol and append
  to a bounded in-memory queue; they never touch the network and never wait for it.
* Lines are built here, not with ``influxdb_client.Point`` (~7 µs per point); prebuilt
  strings are what makes ~1.9M points/s possible (stack-notes.md). Every field is an
  integer (``i`` suffix): a float never carries a legal quantity. Timestamps are UTC
  milliseconds (``precision=ms``).
* One background thread posts batches of up to ``batch_size`` lines through the client's
  *synchronous* write API; the batching and the failure policy are ours, so every
  outcome is counted in :meth:`TimeSeriesSink.stats`:

  ======================================  ==================================================
  429, 5xx, connection error, timeout     back off with jitter (``Retry-After`` honoured),
                                          retry the same lines; ``retries``
  413 payload too large                   split in halves, retry each; a single line that
                                          is still too large is dropped (``dropped_bad``)
  400 bad data                            bisect down to single lines so that only the bad
                                          line(s) are dropped (``dropped_bad``, server's
                                          message logged); at most ``_SPLIT_BUDGET`` extra
                                          requests per batch, then the failing halves are
                                          dropped whole
  other 4xx (401, 403, 404 ...)           drop the lines, ``dropped_rejected``
  ======================================  ==================================================

* Bounded queue of ``max_queue`` lines. When full, the OLDEST sample lines go first
  (``dropped_overflow``); sale lines are kept preferentially and are only dropped, oldest
  first (``dropped_overflow_sales``), when the queue holds nothing but sales. Sales are
  also posted before samples. Why: the sales are few, and each is a legal record an
  inspector may look up; raw readings are many and a gap in them is tolerable.
* Delivery is at least once: a request that timed out after the server stored it is sent
  again. InfluxDB overwrites an identical point; VictoriaMetrics keeps both unless it
  runs with ``-dedup.minScrapeInterval=1ms`` (docs/timeseries.md).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

if TYPE_CHECKING:
    from gateway_server.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_MEASUREMENT: Final = "weight"
SALE_MEASUREMENT: Final = "sale"
_SPLIT_BUDGET: Final = 256  # extra requests per batch spent isolating 400s (~2·k·log2(n/k))
_RETRY_AFTER_MAX_S: Final = 300.0  # a server asking for more is capped, not obeyed blindly
_ERROR_TEXT_MAX: Final = 500

# Line protocol escaping (docs.influxdata.com, "line protocol", "special characters"):
# measurement: comma, space; tag keys/values and field keys: comma, equals, space. A
# backslash is doubled so that a value ending in one cannot escape the next separator.
# Newline, CR and tab cannot appear inside a line; they become \n, \r, \t (as
# influxdb_client.Point does) — ids never contain them (weighing.wire.check_id).
_CONTROL: Final = {"\n": r"\n", "\r": r"\r", "\t": r"\t"}
_ESC_MEASUREMENT: Final = str.maketrans({"\\": "\\\\", ",": r"\,", " ": r"\ ", **_CONTROL})
_ESC_KEY: Final = str.maketrans({"\\": "\\\\", ",": r"\,", "=": r"\=", " ": r"\ ", **_CONTROL})

# sale fields: line-protocol field name -> key of the sale row
_SALE_FIELDS: Final = (
    ("net_mg", "net_mg"), ("settled_mg", "settled_mg"), ("peak_mg", "peak_mg"),
    ("amount_fen", "amount_fen"), ("unit_price_fen_per_kg", "unit_price_fen_per_kg"),
    ("unsettled", "unsettled_commit"), ("seq", "seq"),
)


def escape_tag(value: str) -> str:
    """Escape a tag key, tag value or field key for line protocol."""
    return value.translate(_ESC_KEY)


def escape_measurement(value: str) -> str:
    """Escape a measurement name for line protocol."""
    return value.translate(_ESC_MEASUREMENT)


def _tags(pairs: Iterable[tuple[str, Any]]) -> str:
    # sorted by key (InfluxDB's preferred order); an empty/None tag is left out, because
    # line protocol has no empty tag value
    return "".join(f",{escape_tag(k)}={escape_tag(str(v))}"
                   for k, v in sorted(pairs) if v is not None and str(v) != "")


def sample_lines(market: str, device: str, t_ms: Sequence[int], net_mg: Sequence[int],
                 flags: Sequence[int]) -> list[str]:
    """Line protocol for one device's columnar samples: ``weight`` with net_mg and flags.

    ``:d`` formatting refuses a float (ValueError), so no float reaches the store.
    """
    prefix = escape_measurement(SAMPLE_MEASUREMENT) + _tags(
        (("device", device), ("market", market))) + " net_mg="
    return [f"{prefix}{n:d}i,flags={f:d}i {t:d}"
            for t, n, f in zip(t_ms, net_mg, flags, strict=True)]


def sale_line(row: Mapping[str, Any]) -> str:
    """Line protocol for one sale row as the ingest builds it (see module docstring)."""
    tags = _tags((("device", row["device"]), ("market", row["market"]),
                  ("merchant", row.get("merchant_id"))))
    fields = ",".join(f"{name}={int(row[key]) if isinstance(row[key], bool) else row[key]:d}i"
                      for name, key in _SALE_FIELDS if row.get(key) is not None)
    return f"{escape_measurement(SALE_MEASUREMENT)}{tags} {fields} {row['ts_ms']:d}"


def _retry_after_s(err: ApiException) -> float | None:
    value = getattr(err, "retry_after", None)
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_MAX_S)
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(when - time.time(), 0.0), _RETRY_AFTER_MAX_S)


def _error_text(err: BaseException) -> str:
    if isinstance(err, ApiException):
        msg = getattr(err, "message", None) or err.reason or ""
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        return f"HTTP {err.status}: {msg}"[:_ERROR_TEXT_MAX]
    return f"{type(err).__name__}: {err}"[:_ERROR_TEXT_MAX]


class _Closed(Exception):
    """The close deadline passed while a batch was still failing."""


class TimeSeriesSink:
    """Queue line protocol for a time-series store and post it from one background thread.

    Thread safety: ``write_*``, ``flush``, ``stats`` and ``close`` may be called from
    any thread. ``start=False`` builds the sink without its thread (tests; call
    :meth:`start`).
    """

    def __init__(self, url: str, *, token: str = "", org: str = "", bucket: str = "",
                 batch_size: int = 5000, flush_ms: int = 1000, max_queue: int = 500_000,
                 timeout_ms: int = 10_000, backoff_min_s: float = 0.5,
                 backoff_max_s: float = 30.0, start: bool = True) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        self.url, self.org, self.bucket = url, org, bucket
        self.batch_size, self.max_queue = batch_size, max_queue
        self._flush_s = flush_ms / 1000
        self._backoff = (backoff_min_s, backoff_max_s)
        self._client = InfluxDBClient(url=url, token=token or "-", org=org or "-",
                                      timeout=timeout_ms)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._sales: deque[str] = deque()
        self._samples: deque[str] = deque()
        self._cond = threading.Condition()
        self._oldest: float | None = None  # monotonic time the queue became non-empty
        self._busy = 0  # lines taken from the queue and not yet settled
        self._flushing = 0
        self._closing = False
        self._deadline = float("inf")
        self._counts = dict.fromkeys(
            ("queued", "written", "dropped_bad", "dropped_rejected", "dropped_overflow",
             "dropped_overflow_sales", "dropped_at_close", "retries", "batches", "requests",
             "splits"), 0)
        self._last_error = ""
        self._last_write_ms: int | None = None
        self._thread = threading.Thread(target=self._run, name="tssink-writer", daemon=True)
        if start:
            self.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> TimeSeriesSink | None:
        """The sink configured by ``GATEWAY_TSDB_*``, or None when no URL is set."""
        if not settings.tsdb_url:
            return None
        return cls(settings.tsdb_url, token=settings.tsdb_token.get_secret_value(),
                   org=settings.tsdb_org, bucket=settings.tsdb_bucket,
                   batch_size=settings.tsdb_batch_size, flush_ms=settings.tsdb_flush_ms,
                   max_queue=settings.tsdb_max_queue, timeout_ms=settings.tsdb_timeout_ms)

    def start(self) -> None:
        """Start the writer thread (done by the constructor unless ``start=False``)."""
        self._thread.start()

    # -- producer side: called by the ingest writer thread; no I/O ---------------------

    def write_samples(self, market: str, device: str, t_ms: Sequence[int],
                      net_mg: Sequence[int], flags: Sequence[int]) -> None:
        """Queue one device's columnar readings (``weighing.wire.SampleBatch`` arrays)."""
        if t_ms:
            self._enqueue(sample_lines(market, device, t_ms, net_mg, flags), sale=False)

    def write_sales(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Queue stored sale rows (keys: device, market, merchant_id, ts_ms, net_mg, ...)."""
        lines = [sale_line(r) for r in rows]
        if lines:
            self._enqueue(lines, sale=True)

    def _enqueue(self, lines: list[str], *, sale: bool) -> None:
        with self._cond:
            self._counts["queued"] += len(lines)  # each ends in written, dropped_* or pending
            if self._closing:
                self._counts["dropped_at_close"] += len(lines)
                return
            over = len(self._sales) + len(self._samples) + len(lines) - self.max_queue
            if over > 0:
                lines = self._make_room(over, lines, sale=sale)
            (self._sales if sale else self._samples).extend(lines)
            # wake the writer when its wait changes: the first line starts the flush_ms
            # clock, a full batch ends it
            if self._oldest is None:
                self._oldest = time.monotonic()
                self._cond.notify_all()
            elif len(self._sales) + len(self._samples) >= self.batch_size:
                self._cond.notify_all()

    def _make_room(self, over: int, lines: list[str], *, sale: bool) -> list[str]:
        """Drop ``over`` lines: queued samples first, then the oldest of the new lines."""
        n = min(over, len(self._samples))
        for _ in range(n):
            self._samples.popleft()
        self._counts["dropped_overflow"] += n
        over -= n
        if over > 0 and sale:  # nothing but sales left: the oldest sales go
            n = min(over, len(self._sales))
            for _ in range(n):
                self._sales.popleft()
            self._counts["dropped_overflow_sales"] += n
            over -= n
        if over > 0:  # the new lines alone exceed the queue: keep their newest
            self._counts["dropped_overflow_sales" if sale else "dropped_overflow"] += over
            lines = lines[over:]
        return lines

    # -- observers and shutdown -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for /healthz and /metrics (lines unless named otherwise).

        ``queued`` (lines handed to ``write_*``) == ``written`` + every ``dropped_*`` +
        ``pending`` (queued or in flight).
        """
        with self._cond:
            d: dict[str, Any] = dict(self._counts)
            d["pending"] = len(self._sales) + len(self._samples) + self._busy
            d["last_error"] = self._last_error
            d["last_write_ms"] = self._last_write_ms
            d["alive"] = self._thread.is_alive()
            return d

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Post everything queued now; True once nothing is pending, False on timeout."""
        end = time.monotonic() + timeout_s
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._sales or self._samples or self._busy:
                    left = end - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.5))
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush what can be written within ``timeout_s``, then stop; True if all was.

        Lines still unwritten at the deadline are counted in ``dropped_at_close``.
        """
        with self._cond:
            lost_before = self._counts["dropped_at_close"]
            self._closing = True
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s + 0.5)
        with self._cond:
            left = len(self._sales) + len(self._samples)
            self._sales.clear()
            self._samples.clear()
            self._counts["dropped_at_close"] += left
            clean = self._counts["dropped_at_close"] == lost_before and self._busy == 0
        if not self._thread.is_alive():
            self._write_api.close()  # type: ignore[no-untyped-call]  # unannotated in influxdb_client
            self._client.close()  # type: ignore[no-untyped-call]
        return clean

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            lines = self._take()
            if lines is None:
                return
            try:
                self._deliver(lines)
            except _Closed:
                with self._cond:
                    self._counts["dropped_at_close"] += self._busy
            except Exception as err:  # a bug must not kill the thread: count, log, go on
                log.exception("time-series sink: unexpected error; %d lines dropped",
                              self._busy)
                with self._cond:
                    self._counts["dropped_rejected"] += self._busy
                    self._last_error = _error_text(err)
            with self._cond:
                self._busy = 0
                self._cond.notify_all()

    def _take(self) -> list[str] | None:
        """Wait for a full batch, ``flush_ms`` of age, a flush or close; sales go first."""
        with self._cond:
            while True:
                if self._closing and time.monotonic() >= self._deadline:
                    return None  # close() counts what is left
                n = len(self._sales) + len(self._samples)
                if not n:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                age = time.monotonic() - (self._oldest or 0.0)
                if (n >= self.batch_size or self._closing or self._flushing
                        or age >= self._flush_s):
                    break
                self._cond.wait(self._flush_s - age)
            k = min(self.batch_size, len(self._sales))
            lines = [self._sales.popleft() for _ in range(k)]
            k = min(self.batch_size - k, len(self._samples))
            lines.extend(self._samples.popleft() for _ in range(k))
            if not (self._sales or self._samples):
                self._oldest = None
            self._busy = len(lines)
            self._counts["batches"] += 1
            return lines

    def _deliver(self, batch: list[str]) -> None:
        """Post ``batch`` under the failure policy in the module docstring."""
        todo = [batch]  # a stack: halves are pushed second-first to keep time order
        budget = _SPLIT_BUDGET
        while todo:
            part = todo.pop()
            status, err = self._post_until_answered(part)
            if status is None:
                self._settle(part, "written")
                continue
            text = _error_text(err) if err else ""
            if status in (400, 413) and len(part) > 1 and budget >= 2:
                budget -= 2
                half = len(part) // 2
                todo += [part[half:], part[:half]]
                with self._cond:
                    self._counts["splits"] += 1
                continue
            if status in (400, 413):
                log.warning("time-series store refused %d line(s) as bad (%s); first: %.200s",
                            len(part), text, part[0])
                self._settle(part, "dropped_bad", text)
            else:
                log.error("time-series store rejected %d line(s): %s", len(part), text)
                self._settle(part, "dropped_rejected", text)

    def _settle(self, part: list[str], counter: str, error: str | None = None) -> None:
        with self._cond:
            self._counts[counter] += len(part)
            self._busy -= len(part)
            if counter == "written":
                self._last_write_ms = time.time_ns() // 1_000_000
            else:
                self._last_error = error or ""
            self._cond.notify_all()

    def _post_until_answered(self, part: list[str]) -> tuple[int | None, Exception | None]:
        """Post until the server answers with success (None) or a final 4xx status.

        Transient failures (429, 5xx, no connection, timeout) are retried here with
        exponential backoff and full jitter, or after ``Retry-After``; raises
        :class:`_Closed` when ``close``'s deadline would pass first.
        """
        body = ("\n".join(part)).encode()
        attempt = 0
        while True:
            with self._cond:
                self._counts["requests"] += 1
            try:
                self._write_api.write(bucket=self.bucket, org=self.org or "-", record=body,
                                      write_precision="ms")  # type: ignore[arg-type]  # = WritePrecision.MS, typed as str there
                if attempt:
                    log.info("time-series store reachable again after %d retries", attempt)
                return None, None
            except ApiException as err:
                if err.status and 400 <= err.status < 500 and err.status != 429:
                    return err.status, err
                wait = _retry_after_s(err)
                failure: Exception = err
            except (urllib3.exceptions.HTTPError, OSError) as err:
                wait, failure = None, err
            lo, hi = self._backoff
            if wait is None:
                wait = random.uniform(0, min(hi, lo * 2 ** min(attempt, 30)))  # full jitter
            attempt += 1
            with self._cond:
                self._counts["retries"] += 1
                self._last_error = _error_text(failure)
                if time.monotonic() + wait > self._deadline:
                    raise _Closed
            if attempt == 1 or attempt % 20 == 0:
                log.warning("time-series store write failed (%s); retry %d in %.2f s",
                            self._last_error, attempt, wait)
            end = time.monotonic() + wait
            with self._cond:  # close() notifies: the new deadline is checked at once
                while (left := end - time.monotonic()) > 0:
                    if end > self._deadline:
                        raise _Closed
                    self._cond.wait(left)


__all__ = ["SALE_MEASUREMENT", "SAMPLE_MEASUREMENT", "TimeSeriesSink", "escape_measurement",
           "escape_tag", "sale_line", "sample_lines"]
