"""Edge plausibility (issue 15): a reading beyond Max + 9 e, below −Max, or one the scale's
display cannot show is a fault event, never a sale, a peak, a sample or a raw-AD point.

The bytes go through the shipped profile's real codec (A&D text, 60 kg / e = 20 g) into
the state machine with the parameters the agent builds (``make_params``), and once
through a whole ``ScaleWorker`` into its outbox.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edge_helpers import KEY_HEX
from support import wait_until

from device_profiles.codecs import WeightFrame, make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import ScaleWorker, make_params
from edge_agent.config import AgentConfig
from edge_agent.outbox import Outbox
from edge_agent.statemachine import Params, WeighingStateMachine
from edge_agent.transport import FrameSource, Polled
from weighing import wire
from weighing.metrology import indication_limit_mg

PROFILE = "ad-text-60kg-20g"  # Max 60 kg, e = 20 g: Max + 9 e = 60.180 kg
GARBLED = b"ST,GS,+1250250kg\r\n"  # the issue's frame: 1,250,250 kg


def _line(weight_mg: int, stable: bool = True) -> bytes:
    profile = load_profile(PROFILE)
    return bytes(make_codec(profile.protocol, profile.codec).encode(
        WeightFrame(weight_mg=weight_mg, stable=stable)))


def _load_bytes(garbage: bytes, *, at: int = 20) -> bytes:
    """An idle pan, a 12.5 kg load that settles (with ``garbage`` inside the plateau), off."""
    lines = [_line(0)] * 30 + [_line(6_000_000, False), _line(13_000_000, False)]
    plateau = [_line(12_500_000)] * 40
    plateau.insert(at, garbage)
    return b"".join(lines + plateau + [_line(3_000_000, False)] + [_line(0)] * 30)


def _run_codec(data: bytes) -> tuple[list[wire.Event], WeighingStateMachine]:
    profile = load_profile(PROFILE)
    codec = make_codec(profile.protocol, profile.codec)
    frames, errors = codec.feed(data)
    assert not errors  # the garbled line is well-formed: only Max says it is absurd
    sm = WeighingStateMachine(make_params(profile, _config(Path("/nonexistent")).scale[0]))
    out: list[wire.Event] = []
    for i, f in enumerate(frames):
        out += sm.feed(i * 100, f)
    return out + sm.flush(len(frames) * 100), sm


def _config(tmp: Path) -> AgentConfig:
    return AgentConfig.model_validate({
        "agent": {"market": "m-test", "outbox": str(tmp / "outbox.db"), "heartbeat_s": 3600,
                  "samples_interval_s": 0.05},
        "mqtt": {"url": "mqtt://127.0.0.1:9", "max_delay_ms": 50, "reconnect_max_s": 1},
        "scale": [{"profile": PROFILE, "key": KEY_HEX, "device": "s-pl", "port": "x",
                   "samples": True}],
    })


def test_the_issue_frame_inside_a_load_is_a_fault_not_a_peak() -> None:
    events, sm = _run_codec(_load_bytes(GARBLED))
    sales = [e for e in events if isinstance(e, wire.SaleEvent)]
    faults = [e for e in events if isinstance(e, wire.FaultEvent)]
    assert [(s.net_mg, s.settled_mg) for s in sales] == [(12_500_000, 12_500_000)]
    assert sales[0].peak_mg == 13_000_000  # the real overshoot, not 1.25e12
    assert [f.code for f in faults] == ["implausible-reading"]
    assert "above Max + 9 e = 60180000 mg" in faults[0].detail
    assert sm.frames_rejected == 1


def test_without_the_check_the_same_bytes_poison_the_peak() -> None:
    """The test above can fail: the same frames without Max in the parameters."""
    profile = load_profile(PROFILE)
    frames, _ = make_codec(profile.protocol, profile.codec).feed(_load_bytes(GARBLED))
    sm = WeighingStateMachine(Params(e_mg=20_000))
    out: list[wire.Event] = []
    for i, f in enumerate(frames):
        out += sm.feed(i * 100, f)
    assert max(e.peak_mg for e in out if isinstance(e, wire.SaleEvent)) == 1_250_250_000_000


def test_below_minus_max_and_off_the_display_interval_are_faults() -> None:
    for garbage, why in ((b"ST,GS,-0070.00kg\r\n", "below −Max"),
                         (b"ST,GS,+0012.51kg\r\n", "not a whole number of the display")):
        events, _ = _run_codec(_load_bytes(garbage))
        sales = [e for e in events if isinstance(e, wire.SaleEvent)]
        faults = [e for e in events if isinstance(e, wire.FaultEvent)]
        assert [s.net_mg for s in sales] == [12_500_000], garbage
        assert len(faults) == 1 and why in faults[0].detail, (garbage, faults)


def test_the_limit_itself_is_a_reading_and_one_e_more_is_not() -> None:
    p = make_params(load_profile(PROFILE), _config(Path("/nonexistent")).scale[0])
    limit = indication_limit_mg(60_000_000, 20_000)
    assert limit == 60_180_000
    assert p.implausible(limit) is None and p.implausible(-60_000_000) is None
    assert p.implausible(limit + 20_000) is not None
    assert p.implausible(-60_020_000) is not None


def test_a_stream_of_garbage_is_one_fault_per_episode_and_minute() -> None:
    sm = WeighingStateMachine(Params(e_mg=20_000, max_mg=60_000_000))
    bad = WeightFrame(weight_mg=10**12, stable=True)
    good = WeightFrame(weight_mg=0, stable=True)
    out: list[wire.Event] = []
    for i in range(600):  # 60 s of frames at 10/s, garbage and good frames alternating
        out += sm.feed(i * 100, bad if i % 2 else good)
    faults = [e for e in out if isinstance(e, wire.FaultEvent)]
    assert len(faults) == 1 and sm.frames_rejected == 300
    sm.feed(70_000, good)
    out = sm.feed(70_100, bad)  # a new episode after the minute: reported with the count
    assert len(out) == 1 and "(300 dropped since the last report)" in out[0].detail  # type: ignore[union-attr]


class BytesSource(FrameSource):
    """The scale's bytes through the profile's real codec, a few lines per poll."""

    def __init__(self, data: bytes) -> None:
        profile = load_profile(PROFILE)
        self.codec = make_codec(profile.protocol, profile.codec)
        self.lines = data.splitlines(keepends=True)
        self.lock = threading.Lock()

    def open(self) -> None: ...

    def close(self) -> None: ...

    def poll(self, timeout_s: float) -> Polled:
        time.sleep(0.01)
        with self.lock:
            chunk, self.lines = b"".join(self.lines[:4]), self.lines[4:]
        frames, errors = self.codec.feed(chunk)
        return Polled(frames=frames, errors=errors, nbytes=len(chunk))


def test_the_worker_stores_the_sale_and_the_fault_and_no_garbage_sample(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ob = Outbox(tmp_path / "o.db")
    src = BytesSource(_load_bytes(GARBLED) + _line(0) * 10)
    n_lines = len(src.lines)
    w = ScaleWorker(cfg.scale[0], market="m-test", outbox=ob, agent=cfg, source=src)
    t = threading.Thread(target=w._supervise, daemon=True)
    t.start()
    try:
        wait_until(lambda: not src.lines, 60, what="all bytes read")
        wait_until(lambda: w.stats.frames >= n_lines, 60, what="frames taken")
    finally:
        w._stop.set()
        t.join(60)
    w._flush_samples(force=True)
    rows = ob.peek("s-pl", "events", limit=1000)
    _, batch = wire.decode("scales/v1/m-test/s-pl/events",
                           wire.event_batch_payload("s-pl", [r.payload for r in rows]))
    assert isinstance(batch, wire.EventBatch)
    sales = [e for e in batch.events if isinstance(e, wire.SaleEvent)]
    assert [(s.net_mg, s.peak_mg) for s in sales] == [(12_500_000, 13_000_000)]
    assert [e.code for e in batch.events if isinstance(e, wire.FaultEvent)] == [
        "implausible-reading"]
    weights = []
    for r in ob.peek("s-pl", "samples", limit=1000):
        sb = wire.decode("scales/v1/m-test/s-pl/samples", r.payload)[1]
        assert isinstance(sb, wire.SampleBatch)
        weights += sb.net_mg
    assert 12_500_000 in weights and max(weights) == 13_000_000
    ob.close()
