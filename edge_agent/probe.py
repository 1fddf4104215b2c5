"""``edge-agent probe PORT``: which serial settings and protocol does this scale speak?

For installers facing an unlabelled scale. The probe tries, in turn, every serial
setting the candidate profiles declare (by default the shipped serial profiles) and
reports which protocol(s), and which shipped profiles, fit what the port says.

Procedure, for each distinct (baudrate, bytesize, parity, stopbits), most common first:

1. Open the port with those settings and listen ``seconds``. Every byte is fed to one
   fresh codec per protocol (all of ``CODECS``), with the codec options of a candidate
   profile of that protocol, preferably one that declares these settings.
2. If the line stayed silent it is no continuous output: send each request/response
   protocol's REQUEST_WEIGHT command (only weight requests: the probe never sends tare,
   zero or anything that changes the scale) and listen for the reply, at most that
   protocol's reply time (the longest ``timeout_ms`` of its profiles, and at most
   ``seconds / 2``), stopping as soon as its codec decodes a reply. A line-oriented
   command (MT-SICS) is preceded by a bare line end, so that the bytes sent before it
   for other protocols end as one rejected line on the scale instead of corrupting it.
3. Score each protocol: ``frames`` decoded, ``replies`` (status-only replies such as an
   8217 "in motion": good bytes, no weight), ``errors`` (rejected stretches) and
   ``quality``, the share of decided bytes that were not rejected. The first stretch,
   when it starts at byte 0, is not counted: the probe joins a talking line mid-frame.

Ranking (best first). Every (settings, protocol) with at least one frame or reply is
reported, ordered by:

* **consistency**: quality ≥ 0.95 (clean), ≥ 0.5 (mixed), below (mostly garbage). On a
  real line a wrong baud rate or parity turns the bytes into garbage, so the right
  settings stand out here;
* **declared settings**: whether a candidate profile of that protocol declares these
  settings. A pseudo-terminal ignores the baud rate and parity (stack-notes.md: "ptys
  ignore the baud rate"), so an emulator's bytes decode equally cleanly at every
  setting; the tie is broken by preferring the settings the profiles declare for the
  protocol. On a real line the same rule picks the declared one of two settings that
  both decode (rare: e.g. 7E1 vs 7O1 on a device that does not check parity);
* then more frames and replies, fewer errors, and the order the settings were tried.

A transaction scale (trace records, label printers) only talks when a sale is made:
make one during the probe, or give it more ``seconds``.

Output: the CLI prints the matches as JSON lines on stdout (for scripts) and
:func:`verdict` on stderr: the best match in words and the ``profile`` / ``port`` lines
for edge.toml, or "no data on this port" and what to check.

Time is bounded: every read waits in ``select`` up to a deadline, so the whole probe
takes at most ``len(settings) × (seconds + Σ reply times)`` plus opening and closing
the port: about 14 s with the shipped profiles and the default 1.5 s on a silent
line, 6 s on a talking one. A port that cannot be opened (or fails while probing)
raises :class:`TransportError`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from device_profiles.codecs import (
    CODECS,
    REQUEST_WEIGHT,
    Codec,
    EncodeError,
    FrameError,
    StatusReplyError,
    WeightFrame,
    make_codec,
)
from device_profiles.codecs.base import Parsed
from device_profiles.schema import Link, LinkKind, Profile, list_profiles, load_profile
from edge_agent.transport import SerialFrameSource

#: (baudrate, bytesize, parity, stopbits)
Settings = tuple[int, int, str, int]

CLEAN, MIXED = 0.95, 0.5  # quality thresholds of the consistency tiers
MIN_SECONDS = 0.1


def settings_of(profile: Profile) -> Settings:
    link = profile.link
    return (link.baudrate, link.bytesize, link.parity, link.stopbits)


def serial_profiles() -> list[Profile]:
    """The shipped profiles on a serial link."""
    profiles = (load_profile(pid) for pid in list_profiles())
    return [p for p in profiles if p.link.kind is LinkKind.SERIAL]


def settings_to_try(profiles: Sequence[Profile]) -> list[Settings]:
    """Distinct link settings of ``profiles``, most common first (ties: first seen)."""
    counts = Counter(settings_of(p) for p in profiles)
    return sorted(counts, key=lambda s: -counts[s])  # sorted() is stable


@dataclass
class _Score:
    """What one protocol's codec made of the bytes heard at one setting."""

    protocol: str
    codec: Codec
    frames: int = 0
    replies: int = 0
    errors: int = 0
    rejected: int = 0  # bytes in counted error stretches
    skipped: int = 0  # bytes of the uncounted first stretch (joined mid-frame)
    fed: int = 0
    sample: WeightFrame | None = None

    def feed(self, data: bytes) -> None:
        frames, errors = self.codec.feed(data)
        self.fed += len(data)
        self.frames += len(frames)
        if frames and self.sample is None:
            self.sample = frames[0]
        for err in errors:
            self._count(err)

    def _count(self, err: FrameError) -> None:
        if isinstance(err, StatusReplyError):
            self.replies += 1
        elif err.offset == 0:
            self.skipped += err.length
        else:
            self.errors += 1
            self.rejected += err.length

    @property
    def good(self) -> int:
        return self.frames + self.replies

    @property
    def quality(self) -> float:
        decided = self.fed - self.codec.buffered - self.skipped
        return (decided - self.rejected) / decided if decided > 0 else 0.0


class _EveryCodec(Codec):
    """Hands every byte the transport reads to each protocol's score (decodes nothing)."""

    protocol_id: ClassVar[str] = "probe"

    def __init__(self, scores: Sequence[_Score]) -> None:
        super().__init__()
        self.scores = scores

    def feed(self, data: bytes) -> tuple[list[WeightFrame], list[FrameError]]:
        for score in self.scores:
            score.feed(data)
        return [], []

    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        return None

    def encode(self, frame: WeightFrame) -> bytes:
        raise EncodeError("the probe sends no frames")


def _codec_options(protocol: str, settings: Settings,
                   profiles: Sequence[Profile]) -> dict[str, Any]:
    same = [p for p in profiles if p.protocol == protocol]
    best = next((p for p in same if settings_of(p) == settings), same[0] if same else None)
    return dict(best.codec) if best else {}


def _reply_s(protocol: str, profiles: Sequence[Profile], seconds: float) -> float:
    timeouts = [p.link.timeout_ms for p in profiles if p.protocol == protocol]
    default_ms: int = Link.model_fields["timeout_ms"].default
    return min(seconds / 2, max(timeouts or [default_ms]) / 1000)


def _listen(src: SerialFrameSource, seconds: float,
            done: Callable[[], bool] | None = None) -> int:
    """Read for ``seconds`` (or until ``done()``); return how many bytes arrived."""
    deadline = time.monotonic() + seconds
    heard = 0
    while (left := deadline - time.monotonic()) > 0:
        heard += src.poll(left).nbytes
        if done is not None and done():
            break
    return heard


def _replied(score: _Score, before: int) -> Callable[[], bool]:
    return lambda: score.good > before


def _try_settings(port: str, settings: Settings, *, seconds: float,
                  profiles: Sequence[Profile]) -> list[_Score]:
    scores = [_Score(p, make_codec(p, _codec_options(p, settings, profiles))) for p in CODECS]
    baudrate, bytesize, parity, stopbits = settings
    src = SerialFrameSource(port, _EveryCodec(scores), baudrate=baudrate, bytesize=bytesize,
                            parity=parity, stopbits=stopbits)
    with src:
        if _listen(src, seconds):
            return scores  # the line talks unasked: a continuous output
        for score in scores:
            if REQUEST_WEIGHT.name not in score.codec.commands:
                continue
            command = score.codec.encode_command(REQUEST_WEIGHT)
            if command.endswith(b"\n"):
                command = b"\r\n" + command
            before = score.good
            src.write(command)
            _listen(src, _reply_s(score.protocol, profiles, seconds), _replied(score, before))
    return scores


def _sample_json(frame: WeightFrame | None) -> dict[str, Any] | None:
    if frame is None:
        return None
    return {k: v for k, v in asdict(frame).items() if v is not None}


def _tier(quality: float) -> int:
    return 2 if quality >= CLEAN else 1 if quality >= MIXED else 0


def probe(port: str, *, seconds: float = 1.5,
          candidates: Sequence[Profile] | None = None) -> list[dict[str, Any]]:
    """Try the candidates' serial settings and protocols on ``port``; matches, best first.

    ``candidates`` are the profiles whose link settings are tried and whose codec
    options and ids are used (default: the shipped serial profiles; others are
    ignored). ``seconds`` is the listening time per setting (at least 0.1 s). Each
    match is a JSON-able dict: protocol, baudrate, bytesize, parity, stopbits, frames,
    replies, errors, quality, profiles (ids of candidates with that protocol and those
    settings) and sample (the first frame decoded, or ``None`` if only replies were).
    Raises :class:`TransportError` if the port cannot be opened or fails.
    """
    seconds = max(seconds, MIN_SECONDS)
    profiles = [p for p in (serial_profiles() if candidates is None else candidates)
                if p.link.kind is LinkKind.SERIAL]
    ranked: list[tuple[tuple[int, int, int, int, int], dict[str, Any]]] = []
    for order, settings in enumerate(settings_to_try(profiles)):
        for score in _try_settings(port, settings, seconds=seconds, profiles=profiles):
            if not score.good:
                continue
            ids = [p.id for p in profiles
                   if p.protocol == score.protocol and settings_of(p) == settings]
            quality = score.quality
            key = (-_tier(quality), -bool(ids), -score.good, score.errors, order)
            baudrate, bytesize, parity, stopbits = settings
            ranked.append((key, {
                "protocol": score.protocol, "baudrate": baudrate, "bytesize": bytesize,
                "parity": parity, "stopbits": stopbits, "frames": score.frames,
                "replies": score.replies, "errors": score.errors,
                "quality": round(quality, 3), "profiles": ids,
                "sample": _sample_json(score.sample),
            }))
    ranked.sort(key=lambda kv: kv[0])
    return [result for _, result in ranked]


_TIERS = ("mostly garbage", "mixed", "clean")
_PARITY = {"N": "no parity", "E": "even parity", "O": "odd parity", "M": "mark parity",
           "S": "space parity"}


def verdict(results: Sequence[dict[str, Any]], port: str, *, seconds: float = 1.5) -> str:
    """What :func:`probe` found on ``port``, in words, and what to write in edge.toml."""
    if not results:
        return (
            f"no data on this port: {port} sent nothing at any setting and answered no weight "
            "request. Check that the scale is on and set to send (continuous output, or "
            "answering requests), the cable (TX/RX crossed, RS-485 A/B swapped, the right "
            "port); a scale that sends only when a sale is made: make one during the probe, "
            f"or give it more time (--seconds, now {seconds:g} per setting).")
    top = results[0]
    parity = _PARITY.get(top["parity"], f"parity {top['parity']}")
    line = (f"{top['baudrate']} baud, {top['bytesize']} data bits, {parity}, "
            f"{top['stopbits']} stop bit{'s' if top['stopbits'] != 1 else ''}")
    tier = _TIERS[_tier(top["quality"])]
    heard = f"{top['frames']} frames"
    if top["replies"]:
        heard += f", {top['replies']} status replies"
    heard += f", {top['errors']} rejected stretches"
    out = [f"verdict: {port} speaks {top['protocol']} at {line} ({tier}: {heard})."]
    if tier != "clean":
        out.append("Only part of the bytes decode: a setting, the wiring or noise is still "
                   "wrong; fix that before trusting this.")
    if top["profiles"]:
        first, *others = top["profiles"]
        out += ["In edge.toml, under [[scale]]:",
                f'  profile = "{first}"   # {load_profile(first).name}',
                f'  port = "{port}"']
        if others:
            out.append(f"(or profile {', '.join(others)}: the one whose Max and e match the "
                       "scale's nameplate)")
    else:
        out.append(f"No shipped profile declares {top['protocol']} at these settings: copy a "
                   f"{top['protocol']} profile (scale-sim profiles), set its [link] to "
                   f"baudrate = {top['baudrate']}, bytesize = {top['bytesize']}, parity = "
                   f"\"{top['parity']}\", stopbits = {top['stopbits']}, and give its path as "
                   "profile in edge.toml.")
    if len(results) > 1:
        out.append(f"{len(results) - 1} other setting(s) or protocol(s) also decoded, ranked "
                   "lower (the JSON lines on stdout list all, best first).")
    return "\n".join(out)
