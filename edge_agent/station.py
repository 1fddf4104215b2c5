"""The fair-scale station (公平秤): scanned codes paired with re-weighed goods.

Pure (sans-I/O: bytes and times in, values out; no serial port, clock or logging). The
agent feeds it the bytes of the station's code scanner and the events of the scale's
weighing state machine (``edge_agent.agent.ScaleWorker``).

Rules:

* **Scanner lines.** A USB barcode / QR scanner in serial (CDC) mode sends each code as
  one line ending in CR, LF or CR LF. :class:`ScanReader` splits the byte stream on any
  run of CR / LF (so CR LF is one line end, never an empty scan), decodes UTF-8 and
  classifies each line. A line longer than :data:`MAX_LINE_BYTES` is discarded up to its
  line end (one error, bounded buffer), so a scanner that never sends a line end cannot
  grow memory.
* **Classification** (:func:`classify`), after stripping spaces and tabs at both ends:

  ===================================================  ==========================
  text                                                  names the purchase by
  ===================================================  ==========================
  ``http(s)://…/m/{token}`` (a merchant's trust QR,     ``merchant_token``
  ``gateway_server.qr.trust_url``), token
  percent-decoded, 8–64 of ``[A-Za-z0-9_-]``
  ``http(s)://…?code=…`` or ``?trace=…`` (a receipt's   ``trace_code``
  QR pointing at a traceability page)
  ``STALL:…`` / ``摊位:…`` (stall card, station          ``stall_no`` (1–64)
  keypad), the rest 1–64 printable characters
  anything else: 1–256 of ASCII letters, digits,        ``trace_code``
  ``-``, ``_``, ``.``, ``/`` (the receipt's code)
  ===================================================  ==========================

  Trace codes: docs/protocols.md (trace-record) allows letters, digits and ``-``, up to
  32; this accepts a superset (the wire's 256-character text) because receipt codes of
  other traceability systems carry ``_ . /``. Codes are kept exactly as scanned (the
  gateway matches them byte for byte). Anything else — empty, over-long, control or
  other non-printable characters, a URL of neither kind — raises :class:`ScanError`,
  never anything else (tested with arbitrary text).
* **Pairing** (:class:`Station`). A good scan becomes the *pending* code. The next
  ``SaleEvent`` committed at most ``pair_window_ms`` after the scan becomes a
  ``ReweighEvent`` (same ``seq`` / ``ts_ms``, ``reference_mg`` = the settled weight,
  ``claimed_mg`` none) and consumes the scan. A sale is emitted when the goods are
  lifted, so goods already on the pan when the code is scanned pair too. A sale without
  a pending scan passes unchanged: an unpaired weighing is never lost. A newer scan
  replaces a pending one (counted ``replaced``); a scan older than the window is dropped
  (counted ``expired``). A scan timed after the commit stays pending for the next load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from weighing import wire
from weighing.errors import GatewayError

#: longest scan classified at all, characters (a receipt URL with a 256-character code)
MAX_SCAN_CHARS: Final = 512
#: longest scanner line kept in the buffer, bytes (UTF-8: up to 4 per character)
MAX_LINE_BYTES: Final = 4 * MAX_SCAN_CHARS
MAX_TRACE_CODE: Final = 256
MAX_STALL_NO: Final = 64
_SHOWN_CHARS: Final = 40  # how much of a rejected scan an error message shows

_TRACE_RE: Final = re.compile(r"[A-Za-z0-9._/\-]+")  # length checked first
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_\-]{8,64}")
_TRUST_PATH_RE: Final = re.compile(r"/m/([^/]+)/?\Z")  # the path *ends* in /m/{token}
_STALL_PREFIXES: Final = ("STALL:", "摊位:", "摊位：")  # ASCII or full-width colon
_RECEIPT_PARAMS: Final = ("code", "trace")


class ScanError(GatewayError, ValueError):
    """A scanned line names no purchase. ``reason`` is a short stable key for counting
    (``empty``, ``too-long``, ``bad-character``, ``not-utf8``, ``bad-url``,
    ``bad-token``, ``bad-trace-code``, ``bad-stall-no``); ``text`` is the scan,
    truncated, as shown in the message."""

    def __init__(self, reason: str, detail: str, text: str) -> None:
        self.reason = reason
        self.text = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
        super().__init__(f"{detail}: {self.text!r}")


@dataclass(frozen=True, slots=True)
class ScannedCode:
    """What a scan names: exactly one of the three fields is set."""

    trace_code: str | None = None
    merchant_token: str | None = None
    stall_no: str | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.trace_code, self.merchant_token,
                                        self.stall_no)) != 1:
            raise ValueError("a scanned code names exactly one of trace_code, "
                             "merchant_token, stall_no")

    @property
    def kind(self) -> str:
        """``trace_code``, ``merchant_token`` or ``stall_no``."""
        if self.trace_code is not None:
            return "trace_code"
        return "merchant_token" if self.merchant_token is not None else "stall_no"


def classify(text: str) -> ScannedCode:
    """What a scanned line names (module rules), or raise :class:`ScanError`."""
    s = text.strip(" \t")
    if not s:
        raise ScanError("empty", "empty scan", text)
    if len(s) > MAX_SCAN_CHARS:
        raise ScanError("too-long", f"scan of {len(s)} characters, more than {MAX_SCAN_CHARS}",
                        text)
    bad = next((i for i, ch in enumerate(s) if not ch.isprintable()), None)
    if bad is not None:
        raise ScanError("bad-character",
                        f"non-printable character U+{ord(s[bad]):04X} at {bad}", text)
    if s[:8].lower().startswith(("http://", "https://")):
        return _classify_url(s, text)
    for prefix in _STALL_PREFIXES:
        if s[:len(prefix)].upper() == prefix:
            stall = s[len(prefix):].strip(" ")
            if not 1 <= len(stall) <= MAX_STALL_NO:
                raise ScanError("bad-stall-no",
                                f"stall number must have 1–{MAX_STALL_NO} characters", text)
            return ScannedCode(stall_no=stall)
    return ScannedCode(trace_code=_trace_code(s, text, "trace code"))


def _classify_url(s: str, text: str) -> ScannedCode:
    try:
        url = urlsplit(s)
    except ValueError as err:
        raise ScanError("bad-url", f"not a valid URL ({err})", text) from err
    m = _TRUST_PATH_RE.search(url.path)
    if m is not None:
        try:
            token = unquote(m.group(1), errors="strict")
        except UnicodeDecodeError:
            token = ""
        if not _TOKEN_RE.fullmatch(token):
            raise ScanError("bad-token", "trust code token is not 8–64 of [A-Za-z0-9_-]",
                            text)
        return ScannedCode(merchant_token=token)
    try:
        params = dict(reversed(parse_qsl(url.query, keep_blank_values=True,
                                         errors="strict", max_num_fields=32)))
    except ValueError as err:  # also UnicodeDecodeError (bad percent escapes)
        raise ScanError("bad-url", f"not a valid URL query ({err})", text) from err
    for name in _RECEIPT_PARAMS:
        if name in params:
            return ScannedCode(trace_code=_trace_code(params[name], text, f"URL {name}="))
    raise ScanError("bad-url", "URL is neither a trust code (…/m/{token}) nor a receipt "
                    "(?code= or ?trace=)", text)


def _trace_code(code: str, text: str, what: str) -> str:
    if len(code) > MAX_TRACE_CODE:
        raise ScanError("too-long", f"{what} of {len(code)} characters, more than "
                        f"{MAX_TRACE_CODE}", text)
    if not _TRACE_RE.fullmatch(code):
        raise ScanError("bad-trace-code", f"{what} is not 1–{MAX_TRACE_CODE} of letters, "
                        "digits, '-', '_', '.', '/'", text)
    return code


class ScanReader:
    """Scanner bytes in, :class:`ScannedCode`s and :class:`ScanError`s out, in order.

    Feeding a stream in one call or byte by byte gives the same results.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False  # discarding an over-long line up to its end

    def feed(self, data: bytes) -> list[ScannedCode | ScanError]:
        out: list[ScannedCode | ScanError] = []
        buf = self._buf
        buf += data
        start = 0
        for i, byte in enumerate(buf):
            if byte not in (0x0A, 0x0D):
                continue
            if self._overflow:  # the tail of an over-long line, already reported
                self._overflow = False
            elif i > start:
                self._line(bytes(buf[start:i]), out)
            start = i + 1
        del buf[:start]
        if len(buf) > MAX_LINE_BYTES:
            if not self._overflow:
                out.append(_too_long(bytes(buf)))
            self._overflow = True
            buf.clear()
        return out

    @staticmethod
    def _line(raw: bytes, out: list[ScannedCode | ScanError]) -> None:
        if len(raw) > MAX_LINE_BYTES:
            out.append(_too_long(raw))
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append(ScanError("not-utf8", "scan is not UTF-8",
                                 raw.decode("utf-8", "backslashreplace")))
            return
        try:
            out.append(classify(text))
        except ScanError as err:
            out.append(err)


def _too_long(raw: bytes) -> ScanError:
    # the same error whether the line end came in time or not (fed at once or in pieces)
    return ScanError("too-long", f"line longer than {MAX_LINE_BYTES} bytes",
                     raw[:_SHOWN_CHARS].decode("utf-8", "backslashreplace"))


@dataclass
class StationStats:
    scans: int = 0  #: good scans accepted
    reweighs: int = 0  #: sales turned into re-weighs
    unpaired: int = 0  #: sales without a pending scan (passed on as sales)
    replaced: int = 0  #: pending scans replaced by a newer one
    expired: int = 0  #: pending scans dropped, older than the pairing window


@dataclass
class Station:
    """Pairs the pending scan with the next committed weighing (module rules)."""

    pair_window_ms: int
    stats: StationStats = field(default_factory=StationStats)
    _pending: tuple[int, ScannedCode] | None = None

    @property
    def pending(self) -> ScannedCode | None:
        return self._pending[1] if self._pending else None

    def scan(self, t_ms: int, code: ScannedCode) -> None:
        """A good scan at ``t_ms``: it becomes the pending code."""
        self.expire(t_ms)
        if self._pending is not None:
            self.stats.replaced += 1
        self._pending = (t_ms, code)
        self.stats.scans += 1

    def expire(self, t_ms: int) -> None:
        """Drop the pending scan if it is further than the window from ``t_ms``.

        Both directions: a scan "from the future" (the clock was stepped back) must not
        stay pending for ever.
        """
        if self._pending is not None and abs(t_ms - self._pending[0]) > self.pair_window_ms:
            self._pending = None
            self.stats.expired += 1

    def commit(self, event: wire.Event) -> wire.Event:
        """A sale paired with the pending scan becomes a re-weigh; anything else passes."""
        if not isinstance(event, wire.SaleEvent):
            return event
        self.expire(event.ts_ms)
        if self._pending is None or self._pending[0] > event.ts_ms:
            self.stats.unpaired += 1
            return event
        code = self._pending[1]
        self._pending = None
        self.stats.reweighs += 1
        return wire.ReweighEvent(
            seq=event.seq, ts_ms=event.ts_ms, reference_mg=event.settled_mg,
            trace_code=code.trace_code, merchant_token=code.merchant_token,
            stall_no=code.stall_no,
        )
