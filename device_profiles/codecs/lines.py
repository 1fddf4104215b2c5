"""Line framing shared by the text protocols (A12, A&D text, MT-SICS, EAN-13, trace records).

Not a protocol of its own: :class:`LineCodec` cuts the byte stream into lines and hands
each line's content to ``_decode_line``.

Framing rules:

* A line ends at LF (and, with ``cr_ends_line``, also at CR); one CR before the LF is
  part of the terminator.
* CR and LF bytes *before* a line's content (blank lines, the LF of a CR LF pair when CR
  already ended the line) are absorbed into the next line: they are padding, not errors.
  :meth:`LineCodec.flush` ignores a tail that is only padding.
* Resynchronisation: a line that does not decode is discarded whole, with the reason;
  the next line is decoded afresh. A run of ``max_frame`` bytes without a line end is
  discarded as one error (the rest of that over-long line becomes the next bad line).
  Decisions depend only on the ``max_frame`` bytes from the read position, so any
  chunking gives the same frames and errors. Buffer: at most ``max_frame`` bytes wait.
* Successful decodings and reasons are memoised per line content (frames repeat).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import ClassVar

from device_profiles.codecs.base import Codec, FrameError, Parsed, WeightFrame

CR, LF = 0x0D, 0x0A
_EOL_CR_OR_LF = re.compile(rb"[\r\n]")


class LineCodec(Codec):
    """A codec whose frames are text lines."""

    max_frame: ClassVar[int] = 64
    #: a lone CR ends a line too (barcode readers are configured for CR, LF or CR LF)
    cr_ends_line: ClassVar[bool] = False
    #: memoise decoded lines (only frames and reasons are memoised, so status replies
    #: and silently consumed lines always reach ``_decode_line``)
    memoise: ClassVar[bool] = True

    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        end = len(buf)
        if pos >= end:
            return None
        limit = pos + self.max_frame
        start = pos
        b = buf[pos]
        if b in (LF, CR):
            stop = min(end, limit)
            while start < stop and buf[start] in (CR, LF):
                start += 1
            if start == limit:
                return self.max_frame, f"{self.max_frame} bytes of blank lines"
            if start == end:
                return None
        if self.cr_ends_line:
            m = _EOL_CR_OR_LF.search(buf, start, limit)
            i = -1 if m is None else m.start()
        else:
            i = buf.find(b"\n", start, limit)
        if i < 0:
            if end >= limit:
                return self.max_frame, f"no line end within {self.max_frame} bytes"
            return None
        j = i - 1 if i > start and buf[i - 1] == CR else i
        line = bytes(buf[start:j])
        n = i + 1 - pos
        if self.memoise:
            known = self._memo.get(line)
            if known is not None:
                return n, known
            result = self._decode_line(line)
            if isinstance(result, WeightFrame | str):
                self._remember(line, result)
            return n, result
        return n, self._decode_line(line)

    @abstractmethod
    def _decode_line(self, line: bytes) -> Parsed:
        """Decode one line's content (without terminator): a frame, a reason, ..."""

    def flush(self) -> FrameError | None:
        """Like :meth:`Codec.flush`, but a tail of CR/LF padding is no error."""
        tail = self._buf[self._pos :]
        if tail and not tail.strip(b"\r\n"):
            self._offset += len(self._buf)
            self._buf.clear()
            self._pos = 0
            return None
        return super().flush()


def ascii_text(line: bytes) -> str | None:
    """The line as text, or ``None`` if it holds bytes outside printable ASCII (and tab)."""
    if not line.isascii():
        return None
    text = line.decode("ascii")
    return text if text.replace("\t", " ").isprintable() else None
