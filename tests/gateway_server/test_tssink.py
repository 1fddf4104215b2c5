"""TimeSeriesSink against a real VictoriaMetrics on a free loopback port.

The Debian ``victoria-metrics`` here (1.79.5) answers 204 to every InfluxDB write: it
skips a malformed line (logged, ``vm_rows_invalid_total``) and its
``-maxInsertRequestSize`` applies to Prometheus remote_write only, not to
``/api/v2/write`` (both checked by hand). So the 400 and 413 paths run through
:class:`StrictFront`: a real HTTP server in front of the real VictoriaMetrics that
answers as InfluxDB 2 does (413 above a body size; 400 for a request holding a line
that does not parse, the whole request rejected) and forwards everything else. Nothing
stands in for the store: every assertion reads back from VictoriaMetrics.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from support import free_port, require_binary, wait_until

from gateway_server.settings import Settings
from gateway_server.telemetry.tssink import TimeSeriesSink, sale_line, sample_lines

T0 = 1_700_000_000_000  # Nov 2023: kept because the store runs with -retentionPeriod=100y
FAST = {"backoff_min_s": 0.05, "backoff_max_s": 0.3, "flush_ms": 50}


@dataclass
class VictoriaMetrics:
    binary: str
    port: int
    data: Path
    log: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, f"-httpListenAddr=127.0.0.1:{self.port}",
                 f"-storageDataPath={self.data}", "-retentionPeriod=100y", *self.args],
                stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._healthy, 60, 0.05, what=f"victoria-metrics /health on {self.port}")

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def export(self, match: str) -> dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[int, int]]]:
        """{(metric name, labels): [(ts_ms, value), ...]} after a force flush."""
        httpx.get(self.url + "/internal/force_flush", timeout=10).raise_for_status()
        r = httpx.get(self.url + "/api/v1/export", params={"match[]": match}, timeout=30)
        r.raise_for_status()
        out: dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[int, int]]] = {}
        for line in r.text.splitlines():
            if not line:
                continue
            s = json.loads(line)
            labels = dict(s["metric"])
            name = labels.pop("__name__")
            pts = out.setdefault((name, frozenset(labels.items())), [])
            for t, v in zip(s["timestamps"], s["values"], strict=True):
                assert float(v).is_integer(), (name, labels, v)
                pts.append((t, int(v)))
        for pts in out.values():
            pts.sort()
        return out


def make_vm(tmp: Path, name: str, *, port: int | None = None) -> VictoriaMetrics:
    binary = require_binary("victoria-metrics")
    data = tmp / name
    data.mkdir()
    return VictoriaMetrics(binary, port or free_port(), data, tmp / f"{name}.log")


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    v = make_vm(tmp_path, "vm")
    v.start()
    yield v
    v.stop()


# -- a front that answers as InfluxDB 2 does ------------------------------------------------

_TOKEN = r"(?:[^\\, =]|\\.)+"
_LINE_RE = re.compile(
    rf"^{_TOKEN}(?:,{_TOKEN}={_TOKEN})* {_TOKEN}=-?\d+i(?:,{_TOKEN}=-?\d+i)* -?\d+$")


@dataclass
class StrictFront:
    upstream: str
    max_body: int = 1 << 30
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # canned replies first
    seen: list[tuple[int, int]] = field(default_factory=list)  # (status, body bytes)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, body: bytes, path: str) -> tuple[int, dict[str, str], bytes]:
        if self.script:
            status, headers = self.script.pop(0)
            return status, headers, b'{"code":"unavailable","message":"scripted"}'
        if len(body) > self.max_body:
            return 413, {}, b'{"code":"request too large","message":"payload too large"}'
        for line in body.decode().split("\n"):
            if line and not _LINE_RE.match(line):
                msg = json.dumps({"code": "invalid", "message": f"unable to parse '{line}'"})
                return 400, {}, msg.encode()
        req = urllib.request.Request(self.upstream + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, {}, r.read()
        except urllib.error.HTTPError as err:  # relay the store's own refusal
            with err:
                return err.code, {}, err.read()

    def start(self) -> None:
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers, reply = front.answer(body, self.path)
                front.seen.append((status, len(body)))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front(vm: VictoriaMetrics) -> Iterator[StrictFront]:
    f = StrictFront(vm.url)
    f.start()
    yield f
    f.stop()


def balanced(st: dict[str, object]) -> bool:
    """Every line handed to the sink is written, counted as dropped, or still pending."""
    out = sum(int(v) for k, v in st.items() if k.startswith("dropped_"))  # type: ignore[call-overload]
    return st["queued"] == st["written"] + out + st["pending"]  # type: ignore[operator]


@pytest.fixture
def sinks() -> Iterator[list[TimeSeriesSink]]:
    made: list[TimeSeriesSink] = []
    yield made
    for s in made:
        s.close(1)
        assert balanced(s.stats()), s.stats()


def samples(n: int, *, start: int = T0, step: int = 7) -> tuple[list[int], list[int], list[int]]:
    t = [start + i * step for i in range(n)]
    net = [(i * 7919) % 3_000_001 - 1000 for i in range(n)]
    flags = [i % 32 for i in range(n)]
    return t, net, flags


def sale(seq: int, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "device": "d1", "market": "m1", "merchant_id": 42, "seq": seq, "ts_ms": T0 + seq,
        "received_ms": T0 + seq + 5, "net_mg": 1_234_567 + seq, "settled_mg": 1_234_000,
        "peak_mg": 1_300_000, "tare_mg": 0, "unit_price_fen_per_kg": 2_400,
        "amount_fen": 2_963, "unsettled_commit": seq % 2 == 1, "plu": "apple"}
    row.update(kw)
    return row


# -- line format (pure) -----------------------------------------------------------------


def test_line_format_is_integer_line_protocol() -> None:
    assert sample_lines("m 1", "d,=\\", [T0], [-5], [3]) == [
        f"weight,device=d\\,\\=\\\\,market=m\\ 1 net_mg=-5i,flags=3i {T0}"]
    assert sale_line(sale(1, merchant_id=None, amount_fen=None)) == (
        f"sale,device=d1,market=m1 net_mg=1234568i,settled_mg=1234000i,peak_mg=1300000i,"
        f"unit_price_fen_per_kg=2400i,unsettled=1i,seq=1i {T0 + 1}")
    with pytest.raises(ValueError):
        sample_lines("m", "d", [T0], [1.5], [0])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        sample_lines("m", "d", [T0, T0 + 1], [1], [0])


def test_from_settings_is_none_without_url() -> None:
    assert TimeSeriesSink.from_settings(Settings(tsdb_url="")) is None


# -- against VictoriaMetrics ----------------------------------------------------------------


def test_samples_and_sales_arrive_exactly(vm: VictoriaMetrics) -> None:
    sink = TimeSeriesSink.from_settings(Settings(tsdb_url=vm.url, tsdb_flush_ms=50))
    assert sink is not None
    t, net, flags = samples(3000)
    net[0], net[1] = 999_999_999_999, -999_999_999_999  # wire.Mg bounds, exact in float64
    sink.write_samples("m1", "d1", t, net, flags)
    sink.write_samples("m1", "d2", t[:10], net[:10], flags[:10])
    rows = [sale(1), sale(2, merchant_id=None, unit_price_fen_per_kg=None, amount_fen=None)]
    sink.write_sales(rows)
    assert sink.close(120)
    st = sink.stats()
    assert (st["queued"], st["written"], st["pending"]) == (3012, 3012, 0)
    assert st["dropped_bad"] == st["dropped_overflow"] == st["retries"] == 0
    assert st["last_write_ms"] and not st["last_error"]

    got = vm.export('{__name__=~"weight_.*"}')
    d1 = frozenset({("market", "m1"), ("device", "d1")})
    assert got[("weight_net_mg", d1)] == list(zip(t, net, strict=True))
    assert got[("weight_flags", d1)] == list(zip(t, flags, strict=True))
    assert len(got[("weight_net_mg", frozenset({("market", "m1"), ("device", "d2")}))]) == 10

    got = vm.export('{__name__=~"sale_.*"}')
    with_m = frozenset({("market", "m1"), ("device", "d1"), ("merchant", "42")})
    without = frozenset({("market", "m1"), ("device", "d1")})
    assert got[("sale_net_mg", with_m)] == [(T0 + 1, 1_234_568)]
    assert got[("sale_amount_fen", with_m)] == [(T0 + 1, 2_963)]
    assert got[("sale_unit_price_fen_per_kg", with_m)] == [(T0 + 1, 2_400)]
    assert got[("sale_unsettled", with_m)] == [(T0 + 1, 1)]
    assert got[("sale_unsettled", without)] == [(T0 + 2, 0)]
    assert got[("sale_settled_mg", without)] == [(T0 + 2, 1_234_000)]
    assert ("sale_amount_fen", without) not in got  # a None field is left out, not zero


def test_ids_that_need_escaping_round_trip(vm: VictoriaMetrics, sinks: list[TimeSeriesSink]) -> None:
    sink = TimeSeriesSink(vm.url, **FAST)
    sinks.append(sink)
    market, device, merchant = "market 1,a=b", "scale=7, back\\slash\\", "商户 9,=x"
    sink.write_samples(market, device, [T0], [123], [1])
    sink.write_sales([sale(1, market=market, device=device, merchant_id=merchant)])
    assert sink.flush(120)
    got = vm.export('{__name__=~"weight_net_mg|sale_net_mg"}')
    assert got[("weight_net_mg", frozenset({("market", market), ("device", device)}))] == [(T0, 123)]
    labels = frozenset({("market", market), ("device", device), ("merchant", merchant)})
    assert got[("sale_net_mg", labels)] == [(T0 + 1, 1_234_568)]


def test_413_splits_the_batch_and_everything_arrives(
        vm: VictoriaMetrics, front: StrictFront, sinks: list[TimeSeriesSink]) -> None:
    front.max_body = 64 * 1024
    sink = TimeSeriesSink(front.url, batch_size=5000, **FAST)  # ~55 bytes a line: ~270 KiB
    sinks.append(sink)
    t, net, flags = samples(20_000, step=1)
    sink.write_samples("m1", "big", t, net, flags)
    assert sink.flush(120)
    st = sink.stats()
    assert st["written"] == 20_000 and st["dropped_bad"] == 0
    assert st["splits"] >= 4 and any(s == 413 for s, _ in front.seen)
    assert max(n for s, n in front.seen if s == 204) <= 64 * 1024
    got = vm.export('weight_net_mg{device="big"}')
    assert got[("weight_net_mg", frozenset({("market", "m1"), ("device", "big")}))] == list(
        zip(t, net, strict=True))


def test_400_drops_only_the_bad_line(
        vm: VictoriaMetrics, front: StrictFront, sinks: list[TimeSeriesSink]) -> None:
    sink = TimeSeriesSink(front.url, batch_size=5000, start=False, **FAST)
    sinks.append(sink)
    t, net, flags = samples(1000)
    sink.write_samples("m1", "d1", t[:500], net[:500], flags[:500])
    sink._enqueue(["weight,market=m1,device=d1 net_mg=oops 1700000000000"], sale=False)
    sink.write_samples("m1", "d1", t[500:], net[500:], flags[500:])
    sink.start()
    assert sink.flush(120)
    st = sink.stats()
    assert (st["written"], st["dropped_bad"], st["batches"]) == (1000, 1, 1)
    assert "unable to parse" in st["last_error"] and "oops" in st["last_error"]
    assert sum(1 for s, _ in front.seen if s == 400) <= 2 * 10 + 1  # bisection, not line by line
    got = vm.export('weight_net_mg{device="d1"}')
    assert got[("weight_net_mg", frozenset({("market", "m1"), ("device", "d1")}))] == list(
        zip(t, net, strict=True))


def test_429_and_503_are_retried_and_retry_after_honoured(
        vm: VictoriaMetrics, front: StrictFront, sinks: list[TimeSeriesSink]) -> None:
    front.script = [(429, {"Retry-After": "1"}), (503, {})]
    sink = TimeSeriesSink(front.url, **FAST)
    sinks.append(sink)
    t0 = time.monotonic()
    sink.write_sales([sale(1)])
    assert sink.flush(120)
    assert time.monotonic() - t0 >= 1.0
    st = sink.stats()
    assert (st["retries"], st["written"], st["dropped_rejected"]) == (2, 1, 0)
    assert [s for s, _ in front.seen] == [429, 503, 204]
    assert vm.export("sale_net_mg")


def test_other_4xx_is_dropped_with_a_count(front: StrictFront, sinks: list[TimeSeriesSink]) -> None:
    front.script = [(401, {})]
    sink = TimeSeriesSink(front.url, **FAST)
    sinks.append(sink)
    sink.write_samples("m1", "d1", *samples(10))
    assert sink.flush(120)
    st = sink.stats()
    assert (st["dropped_rejected"], st["written"], st["retries"]) == (10, 0, 0)
    assert st["last_error"].startswith("HTTP 401")


def test_store_down_then_up_everything_arrives(tmp_path: Path, sinks: list[TimeSeriesSink]) -> None:
    late = make_vm(tmp_path, "late")  # nothing listens on its port yet
    sink = TimeSeriesSink(late.url, batch_size=500, **FAST)
    sinks.append(sink)
    t, net, flags = samples(2000)
    sink.write_samples("m1", "d1", t, net, flags)
    sink.write_sales([sale(1)])
    wait_until(lambda: sink.stats()["retries"] >= 3, 60, what="retries against a closed port")
    assert sink.stats()["written"] == 0 and "Connection refused" in sink.stats()["last_error"]
    late.start()
    try:
        assert sink.flush(120)
        assert sink.stats()["written"] == 2001
        got = late.export('{__name__=~"weight_net_mg|sale_net_mg"}')
        assert got[("weight_net_mg", frozenset({("market", "m1"), ("device", "d1")}))] == list(
            zip(t, net, strict=True))
        assert len(got) == 2
    finally:
        late.stop()


def test_overflow_drops_oldest_samples_and_keeps_sales(
        vm: VictoriaMetrics, sinks: list[TimeSeriesSink]) -> None:
    sink = TimeSeriesSink(vm.url, max_queue=10, batch_size=100, start=False, **FAST)
    sinks.append(sink)
    sink.write_sales([sale(1), sale(2), sale(3)])
    t, net, flags = samples(10)
    sink.write_samples("m1", "d1", t[:6], net[:6], flags[:6])
    sink.write_samples("m1", "d1", t[6:], net[6:], flags[6:])  # 13 > 10: t[0:3] go
    sink.write_sales([sale(4), sale(5)])  # samples go before sales: t[3:5]
    st = sink.stats()
    assert (st["dropped_overflow"], st["dropped_overflow_sales"], st["pending"]) == (5, 0, 10)
    sink.start()
    assert sink.flush(120)
    got = vm.export('{__name__=~"weight_net_mg|sale_net_mg"}')
    assert got[("weight_net_mg", frozenset({("market", "m1"), ("device", "d1")}))] == list(
        zip(t[5:], net[5:], strict=True))
    merchant = frozenset({("market", "m1"), ("device", "d1"), ("merchant", "42")})
    assert [ts for ts, _ in got[("sale_net_mg", merchant)]] == [T0 + i for i in range(1, 6)]


def test_overflow_of_sales_only_drops_oldest_sales() -> None:
    sink = TimeSeriesSink("http://127.0.0.1:9", max_queue=3, start=False)
    sink.write_sales([sale(i) for i in range(1, 6)])
    sink.write_samples("m1", "d1", *samples(2))  # no room beside sales: the new samples go
    assert list(sink._sales) == [sale_line(sale(i)) for i in (3, 4, 5)]
    st = sink.stats()
    assert (st["dropped_overflow_sales"], st["dropped_overflow"], st["pending"]) == (2, 2, 3)
    assert not sink.close(0.1)
    assert sink.stats()["dropped_at_close"] == 3
    assert balanced(sink.stats())


def test_close_gives_up_at_its_deadline(sinks: list[TimeSeriesSink]) -> None:
    sink = TimeSeriesSink(f"http://127.0.0.1:{free_port()}", **FAST)
    sink.write_samples("m1", "d1", *samples(100))
    wait_until(lambda: sink.stats()["retries"] >= 1, 60, what="a failed write")
    # the store never comes back: close gives up (False) instead of retrying for ever;
    # how long past its 0.5 s a loaded machine takes is no part of the contract
    closed: list[bool] = []
    closer = threading.Thread(target=lambda: closed.append(sink.close(0.5)), daemon=True)
    closer.start()
    closer.join(120)
    assert closed == [False], "close did not give up"
    st = sink.stats()
    assert (st["dropped_at_close"], st["written"], st["alive"]) == (100, 0, False)
    sink.write_samples("m1", "d1", *samples(5))  # after close: counted, not queued
    assert sink.stats()["dropped_at_close"] == 105
    assert balanced(sink.stats())


def test_front_is_strict_about_bad_lines() -> None:
    """The front's check accepts what the sink builds and refuses malformed lines."""
    good = [*sample_lines("m 1", "d,=x", [T0], [1], [2]), sale_line(sale(1, merchant_id="a b"))]
    assert all(_LINE_RE.match(line) for line in good)
    assert not _LINE_RE.match("weight,market=m1 net_mg=oops 1")
    assert not _LINE_RE.match("weight,market=m1 net_mg=1.5 1")

