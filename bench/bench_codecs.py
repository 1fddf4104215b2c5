"""Decode throughput of every codec on chunked input.

For each codec: 100 000 frames are encoded once, joined, and fed to a fresh codec in
4 KiB chunks (how the serial transport reads). Two streams per codec:

* ``scale``: what a scale sends: cycles of an empty pan (stable zero), goods placed
  (readings in motion), settled (the same reading repeated), goods removed; about one
  frame in five differs from the one before.
* ``distinct``: every frame a different weight (the worst case, no repetition).

The same-run ceiling: the scale stream in the same chunks, cut at the codec's frame
delimiter with ``bytes.split`` and one dict lookup per frame, nothing else: the least a
Python decoder pays that hands out one memoised object per frame (a codec's scale-stream
path is that plus finding the frame and checking it).

Prints frames/s and writes the table under "## Codec decode throughput" in
docs/benchmarks.md (replacing only that section).
Run: ``python bench/bench_codecs.py [--no-write] [--check-goal]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable

import benchlib

from device_profiles.codecs import Codec, WeightFrame
from device_profiles.codecs.ad_text import AdTextCodec
from device_profiles.codecs.dialog04 import Dialog04Codec
from device_profiles.codecs.ean13_weight import Ean13WeightCodec
from device_profiles.codecs.mt_sics import MtSicsCodec
from device_profiles.codecs.reversed_display import ReversedDisplayCodec
from device_profiles.codecs.toledo_8217 import Toledo8217Codec
from device_profiles.codecs.toledo_continuous import ToledoContinuousCodec
from device_profiles.codecs.trace_record import TraceRecordCodec
from device_profiles.codecs.yaohua_a9 import YaohuaA9Codec
from device_profiles.codecs.yaohua_a12 import YaohuaA12Codec

N_FRAMES = 100_000
CHUNK = 4096
REPEAT = 3
GOAL = 500_000  # frames/s, continuous-output codecs
CONTINUOUS = {"toledo-continuous", "yaohua-a9", "reversed-display", "ad-text", "yaohua-a12"}
DOC = benchlib.ROOT / "docs" / "benchmarks.md"
HEADING = "## Codec decode throughput"

FrameFor = Callable[[int, bool, int], WeightFrame]  # (weight_mg, stable, index) -> frame


def _plain(w: int, s: bool, i: int) -> WeightFrame:
    return WeightFrame(weight_mg=w, stable=s, decimals=3)


def _priced(w: int, s: bool, i: int) -> WeightFrame:
    return WeightFrame(weight_mg=w, stable=True, decimals=3, unit_price_fen_per_kg=1200,
                       amount_fen=w * 1200 // 1_000_000)


def _trace(w: int, s: bool, i: int) -> WeightFrame:
    return WeightFrame(weight_mg=w, stable=True, decimals=3, tare_mg=0, plu="00123",
                       unit_price_fen_per_kg=1200, amount_fen=w * 1200 // 1_000_000,
                       trace_code="3301020240501000042", ts_text="2024-05-01T08:30:15",
                       status=f"seq={w // 5000}")


# (name, codec factory, frame builder, the byte that delimits its frames: the ceiling's cut)
CASES: list[tuple[str, Callable[[], Codec], FrameFor, bytes]] = [
    ("toledo-continuous", lambda: ToledoContinuousCodec(increment=5), _plain, b"\x02"),
    ("yaohua-a9", lambda: YaohuaA9Codec(decimals=3), _plain, b"\x03"),
    ("yaohua-a12", lambda: YaohuaA12Codec(decimals=3, width=8), _plain, b"\n"),
    ("reversed-display", lambda: ReversedDisplayCodec(decimals=3), _plain, b"="),
    ("ad-text", AdTextCodec, _plain, b"\n"),
    ("mt-sics", MtSicsCodec, _plain, b"\n"),
    ("toledo-8217", Toledo8217Codec, lambda w, s, i: _plain(w, True, i), b"\r"),
    ("dialog04", Dialog04Codec, _priced, b"\x03"),
    ("ean13-weight", Ean13WeightCodec, lambda w, s, i: WeightFrame(weight_mg=w, plu="00123"),
     b"\n"),
    ("trace-record", TraceRecordCodec, _trace, b"\n"),
]


def scale_readings(n: int, rng: random.Random) -> list[tuple[int, bool]]:
    """(weight_mg, stable) as a 20 frames/s scale shows loads; multiples of 5 g."""
    out: list[tuple[int, bool]] = []
    while len(out) < n:
        load = rng.randrange(20, 2_000) * 5_000
        out += [(0, True)] * 20
        out += [(load * k // 10 // 5_000 * 5_000 + 5_000 * rng.randrange(3), False)
                for k in range(1, 11)]
        out += [(load, True)] * 40
        out += [(load * k // 6 // 5_000 * 5_000, False) for k in range(5, -1, -1)]
    return out[:n]


def distinct_readings(n: int) -> list[tuple[int, bool]]:
    return [((i % 90_000 + 1) * 1_000, i % 7 != 0) for i in range(n)]


def encode_stream(make: Callable[[], Codec], frame_for: FrameFor,
                  readings: list[tuple[int, bool]]) -> bytes:
    codec = make()
    cache: dict[tuple[int, bool], bytes] = {}
    parts = []
    for i, (w, s) in enumerate(readings):
        key = (w, s)
        data = cache.get(key)
        if data is None:
            data = cache[key] = codec.encode(frame_for(w, s, i))
        parts.append(data)
    if isinstance(codec, ReversedDisplayCodec):
        parts.append(b"=")  # completes the last frame
    return b"".join(parts)


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def measure(make: Callable[[], Codec], data: bytes) -> tuple[float, int]:
    """Best frames/s over ``REPEAT`` runs, and the frame count."""
    best, count = 0.0, 0
    chunks = _chunks(data)
    for _ in range(REPEAT):
        codec = make()
        n_frames = n_errors = 0
        t0 = time.perf_counter()
        for chunk in chunks:
            frames, errors = codec.feed(chunk)
            n_frames += len(frames)
            n_errors += len(errors)
        dt = time.perf_counter() - t0
        if n_errors:
            raise SystemExit(f"{make}: {n_errors} errors in a clean stream")
        best, count = max(best, n_frames / dt), n_frames
    return best, count


def measure_ceiling(data: bytes, sep: bytes) -> float:
    """Best frames/s over ``REPEAT`` runs of: cut the chunks at ``sep`` (``bytes.split``,
    carrying the incomplete tail into the next chunk) and look every frame up in a memo."""
    best = 0.0
    chunks = _chunks(data)
    for _ in range(REPEAT):
        memo: dict[bytes, bytes] = {}
        n_frames = 0
        carry = b""
        t0 = time.perf_counter()
        for chunk in chunks:
            parts = (carry + chunk).split(sep)
            carry = parts.pop()
            for part in parts:
                if memo.get(part) is None:
                    memo[part] = part
            n_frames += len(parts)
        best = max(best, n_frames / (time.perf_counter() - t0))
    return best


def weight_frame_us(n: int = 100_000) -> float:
    """µs to build one ``WeightFrame`` (best of ``REPEAT``): the floor of the distinct case."""
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        for i in range(n):
            WeightFrame(weight_mg=i, stable=True, decimals=3)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def section(rows: list[str], frame_us: float) -> str:
    return "\n".join([
        f"`python bench/bench_codecs.py` — {benchlib.today()}, {benchlib.machine()}. "
        f"{N_FRAMES:,} frames per codec, encoded once, fed in {CHUNK // 1024} KiB chunks; "
        f"best of {REPEAT}. *scale*: a scale's stream (empty pan, motion, a settled reading "
        "repeated; ~1 frame in 5 differs from the previous one); *distinct*: every frame "
        "different (worst case). *Ceiling*: the same scale stream in the same chunks, cut at "
        "the codec's frame delimiter with `bytes.split` plus one dict lookup per frame and "
        "nothing else, measured in the same run: the least a Python decoder pays that hands "
        f"out one memoised object per frame. Goal: ≥ {GOAL:,} frames/s on the scale stream "
        "for the continuous-output codecs.",
        "",
        "| protocol | bytes/frame | ceiling (frames/s) | scale (frames/s) | scale / ceiling "
        "| distinct (frames/s) | goal |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        "Why the scale stream is fast: `Codec` keeps a read position (no per-frame buffer "
        "copy or delete) and each codec memoises the decoding of a frame's bytes (a frozen "
        "`WeightFrame` is shared), so a repeated frame costs a slice and a dict lookup, and "
        "what separates a codec from the ceiling is finding the frame boundary in Python and "
        "checking the frame. The distinct case is bound by building a `WeightFrame` (a frozen "
        f"slotted dataclass: {frame_us:.1f} µs each in this run) plus the field parsing. For "
        "reference (an earlier measurement, not this run), before the read position and memo "
        "the toledo-continuous codec decoded ~150,000 frames/s on either stream.",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--check-goal", action="store_true",
                    help="exit 1 when a continuous-output codec misses the goal")
    args = ap.parse_args()
    rng = random.Random(1)
    scale = scale_readings(N_FRAMES, rng)
    distinct = distinct_readings(N_FRAMES)
    rows = []
    short = False
    for name, make, frame_for, sep in CASES:
        data_s = encode_stream(make, frame_for, scale)
        data_d = encode_stream(make, frame_for, distinct)
        ceil = measure_ceiling(data_s, sep)
        fps_s, n_s = measure(make, data_s)
        fps_d, _ = measure(make, data_d)
        goal = ""
        if name in CONTINUOUS:
            goal = "met" if fps_s >= GOAL else "**below**"
            short |= fps_s < GOAL
        print(f"{name:18} ceiling {ceil:12,.0f}  scale {fps_s:12,.0f} frames/s  "
              f"distinct {fps_d:12,.0f} frames/s  ({len(data_s) / n_s:.0f} B/frame) {goal}",
              flush=True)
        rows.append(f"| {name} | {len(data_s) / n_s:.0f} | {ceil:,.0f} | {fps_s:,.0f} | "
                    f"{fps_s / ceil:.0%} | {fps_d:,.0f} | {goal} |")
    frame_us = weight_frame_us()
    if not args.no_write:
        benchlib.replace_section(DOC, HEADING, section(rows, frame_us))
        print(f"table written to {DOC} under {HEADING!r}")
    return 1 if short and args.check_goal else 0


if __name__ == "__main__":
    sys.exit(main())
