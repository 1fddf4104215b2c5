"""Births, states and sample batches leave the agent signed with the device key, and the
sample batches are numbered by a seq that is never reused across restarts (issue 15)."""

from __future__ import annotations

from pathlib import Path

from edge_helpers import KEY_HEX
from test_plausibility import _config

from edge_agent.agent import ScaleWorker
from edge_agent.outbox import Outbox
from weighing import wire
from weighing.signing import check_message

KEY = bytes.fromhex(KEY_HEX)


def _samples(ob: Outbox) -> list[wire.SampleBatch]:
    out = []
    for r in ob.peek("s-pl", "samples", limit=10_000):
        sb = wire.decode("scales/v1/m-test/s-pl/samples", r.payload)[1]
        assert isinstance(sb, wire.SampleBatch)
        out.append(sb)
    return out


def test_birth_state_and_samples_are_signed_and_samples_numbered(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ob = Outbox(tmp_path / "o.db")
    w = ScaleWorker(cfg.scale[0], market="m-test", outbox=ob, agent=cfg)
    assert check_message(KEY, "s-pl", w.birth()) is None
    state = wire.decode("scales/v1/m-test/s-pl/state",
                        w.publisher._state(wire.DeviceState.ONLINE, 1))[1]
    assert isinstance(state, wire.State) and check_message(KEY, "s-pl", state) is None
    assert check_message(b"another key", "s-pl", w.birth()) == "invalid signature"
    for i in range(3):
        w._samples = ([i * 10], [0], [1])
        w._flush_samples(force=True)
    # a restart (a new worker on the same outbox) continues above every seq handed out
    w2 = ScaleWorker(cfg.scale[0], market="m-test", outbox=ob, agent=cfg)
    w2._samples = ([99], [0], [1])
    w2._flush_samples(force=True)
    got = _samples(ob)
    assert [sb.seq for sb in got] == [1, 2, 3, 1001]
    assert all(check_message(KEY, "s-pl", sb) is None for sb in got)
    ob.close()
