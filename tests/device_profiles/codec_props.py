"""Properties every codec must have (base.py rules), shared by the test_codec_* files.

Plain functions and strategies, imported by the test modules (``tests/`` has no
packages; pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from device_profiles.codecs import Codec, Command, FrameError, WeightFrame

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Span = tuple[int, int, str, str]
Outcome = tuple[list[WeightFrame], list[Span], Span | None]


def span(err: FrameError) -> Span:
    return (err.offset, err.length, err.reason, type(err).__name__)


def run_chunks(codec: Codec, chunks: Sequence[bytes]) -> Outcome:
    """Feed ``chunks`` one by one, then flush; what came out."""
    frames: list[WeightFrame] = []
    spans: list[Span] = []
    for chunk in chunks:
        f, e = codec.feed(chunk)
        frames += f
        spans += [span(x) for x in e]
    end = codec.flush()
    return frames, spans, None if end is None else span(end)


def run_next_frame(codec: Codec, chunks: Sequence[bytes]) -> Outcome:
    """The same through receive()/next_frame(), the other public decode path."""
    frames: list[WeightFrame] = []
    spans: list[Span] = []
    for chunk in chunks:
        codec.receive(chunk)
        while True:
            try:
                frame = codec.next_frame()
            except FrameError as err:
                spans.append(span(err))
                continue
            if frame is None:
                break
            frames.append(frame)
    end = codec.flush()
    return frames, spans, None if end is None else span(end)


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def streams(frames: st.SearchStrategy[WeightFrame], encode: Callable[[WeightFrame], bytes],
            garbage: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[bytes]:
    """Byte streams of encoded frames with garbage mixed in."""
    junk = garbage if garbage is not None else st.binary(min_size=1, max_size=24)
    part = st.one_of(frames.map(encode), frames.map(encode), junk)
    return st.lists(part, max_size=12).map(b"".join)


def check_chunking(make: Callable[[], Codec], data: bytes, cuts: Sequence[int]) -> Outcome:
    """All at once == one byte at a time == arbitrary chunks == via next_frame()."""
    whole = run_chunks(make(), [data])
    bytewise = run_chunks(make(), [data[i : i + 1] for i in range(len(data))])
    chunked = run_chunks(make(), split(data, cuts))
    stepped = run_next_frame(make(), split(data, cuts))
    assert bytewise == whole
    assert chunked == whole
    assert stepped == whole
    return whole


def check_round_trip(make: Callable[[], Codec], frame: WeightFrame, tail: bytes = b"") -> None:
    """decode(encode(frame)) == frame, with no error and nothing left over."""
    codec = make()
    data = codec.encode(frame)
    frames, errors = codec.feed(data + tail)
    assert errors == []
    assert frames == [frame]
    if tail:
        assert codec.buffered == len(tail)
    else:
        assert codec.flush() is None  # nothing left but, at most, line-end padding


def check_fuzz(make: Callable[[], Codec], junk: bytes, cuts: Sequence[int], good: bytes,
               expected: WeightFrame, tail: bytes = b"") -> None:
    """Random bytes raise only FrameError; the codec then recovers on good frames."""
    codec = make()
    for chunk in split(junk, cuts):
        codec.receive(chunk)
        while True:
            try:  # anything but FrameError propagates and fails the test
                if codec.next_frame() is None:
                    break
            except FrameError as err:
                assert err.length >= 1
        assert codec.buffered <= codec.max_buffer
    frames, _ = codec.feed(good * 3 + tail)
    assert frames and frames[-1] == expected


def check_commands(codec: Codec, commands: Sequence[Command]) -> None:
    """decode_command(encode_command(c)) == (len, c) for each command, also run together."""
    assert {c.name for c in commands} <= codec.commands
    stream = b""
    for command in commands:
        data = codec.encode_command(command)
        assert codec.decode_command(data) == (len(data), command)
        stream += data
    got: list[Any] = []
    while stream:
        n, cmd = codec.decode_command(stream)
        assert n > 0
        got.append(cmd)
        stream = stream[n:]
    assert got == list(commands)


cuts_st = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


def codec_properties(make: Callable[[], Codec], frames: st.SearchStrategy[WeightFrame], *,
                     tail: bytes = b"",
                     expected: Callable[[WeightFrame], WeightFrame] | None = None,
                     ) -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    """The three property tests of a codec module — round trip, chunking independence,
    fuzz then recovery — for the codec ``make`` builds, over ``frames``.

    ``tail``: bytes a frame needs after it to be complete; ``expected``: the frame decoding
    gives back for a generated one (default: itself). Assign the result to
    ``test_round_trip, test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery`` in the module so pytest collects them.
    """
    def encode(frame: WeightFrame) -> bytes:
        return make().encode(frame)

    def want(frame: WeightFrame) -> WeightFrame:
        return expected(frame) if expected is not None else frame

    @PROPS
    @given(frame=frames)
    def round_trip(frame: WeightFrame) -> None:
        check_round_trip(make, want(frame), tail=tail)

    @PROPS
    @given(data=streams(frames, encode), cuts=cuts_st)
    def chunking(data: bytes, cuts: list[int]) -> None:
        check_chunking(make, data, cuts)

    @FUZZ
    @given(junk=st.binary(max_size=300), cuts=cuts_st, frame=frames)
    def fuzz(junk: bytes, cuts: list[int], frame: WeightFrame) -> None:
        check_fuzz(make, junk, cuts, encode(frame), want(frame), tail=tail)

    return round_trip, chunking, fuzz
