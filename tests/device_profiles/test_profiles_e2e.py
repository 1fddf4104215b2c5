"""Every shipped serial profile runs end to end: emulator → pty → transport → codec.

For each serial profile of ``list_profiles()`` (a newly shipped one is tested without
touching this file) a :class:`SerialEmulator` plays a short script on a real pty; a
:class:`SerialFrameSource` opened with the profile's link settings (and, in request
mode, polling with REQUEST_WEIGHT at the profile's poll interval) reads it through the
profile's codec. What was read must state the loads the script placed:

* a display or indicator (continuous or polled): the sequence of distinct settled
  weights, a weight counting as settled when it is read unchanged ``SETTLED_RUN``
  times in a row and not flagged as in motion (the same test for protocols with and
  without a stability flag);
* a transaction protocol (every frame a committed sale, ``print_request``: trace
  records, weight-embedded EAN-13): the committed transactions, i.e. the first record
  of each run of records above zero, as the weighing state machine commits them.
"""

from __future__ import annotations

import time

import pytest

from device_profiles.codecs import REQUEST_WEIGHT, StatusReplyError, WeightFrame, make_codec
from device_profiles.schema import LinkKind, Profile, list_profiles, load_profile
from edge_agent.transport import SerialFrameSource
from simulators.emulator import SerialEmulator
from simulators.script import random_script

SERIAL_PROFILES = [
    pid for pid in list_profiles() if load_profile(pid).link.kind is LinkKind.SERIAL
]
SETTLED_RUN = 3  # readings in a row; motion phases of the fast script change every reading
LEAD_MS = 500


def read_all(profile: Profile, emu: SerialEmulator, *, timeout_s: float) -> list[WeightFrame]:
    """Read the emulator through the transport until its script is over."""
    link = profile.link
    request = REQUEST_WEIGHT if link.mode == "request" else None
    interval_s = link.poll_interval_ms / 1000 if request else 0.1
    src = SerialFrameSource(
        emu.path, make_codec(profile.protocol, profile.codec), baudrate=link.baudrate,
        bytesize=link.bytesize, parity=link.parity, stopbits=link.stopbits, request=request,
    )
    frames: list[WeightFrame] = []
    deadline = time.monotonic() + timeout_s
    with src:
        while not emu.done.is_set():
            assert time.monotonic() < deadline, "the emulator's script did not end"
            started = time.monotonic()
            polled = src.poll(interval_s)
            frames += polled.frames
            # bad bytes on a clean pty are a bug; status replies (8217 in motion) are not,
            # nor a first partial frame (the reader may join the line mid-frame)
            bad = [e for e in polled.errors
                   if not isinstance(e, StatusReplyError) and e.offset > 0]
            assert not bad, [e.reason for e in bad]
            if request:
                time.sleep(max(0.0, started + interval_s - time.monotonic()))
    return frames


def settled_weights(frames: list[WeightFrame]) -> list[int]:
    """Distinct non-zero weights read ``SETTLED_RUN`` times in a row, not in motion."""
    out: list[int] = []
    run_w, run_n = None, 0
    for f in frames:
        if f.stable is False or f.status == "tare":
            run_w, run_n = None, 0
            continue
        run_w, run_n = (run_w, run_n + 1) if f.weight_mg == run_w else (f.weight_mg, 1)
        if run_n == SETTLED_RUN and run_w and (not out or out[-1] != run_w):
            out.append(run_w)
    return out


def transactions(frames: list[WeightFrame]) -> list[int]:
    """The first record of each run of records above zero: one committed sale per load."""
    out: list[int] = []
    loaded = False
    for f in frames:
        if f.weight_mg > 0 and not loaded:
            out.append(f.weight_mg)
        loaded = f.weight_mg > 0
    return out


def test_every_serial_profile_is_covered() -> None:
    assert len(SERIAL_PROFILES) >= 9
    modes = {load_profile(p).link.mode for p in SERIAL_PROFILES}
    assert modes == {"continuous", "request"}


@pytest.mark.parametrize("profile_id", SERIAL_PROFILES)
def test_profile_end_to_end(profile_id: str) -> None:
    profile = load_profile(profile_id)
    loads = random_script(profile, 2, seed=7, fast=True)
    expected = [load.mass_mg for load in loads]
    assert all(m % profile.metrology.e_mg == 0 for m in expected)
    # a continuous output keeps its frames per phase at double speed; a polled scale
    # plays in real time so that its poll interval still catches every settled load
    speed = 2.0 if profile.link.mode == "continuous" else 1.0
    with SerialEmulator(profile, loads, lead_ms=LEAD_MS, speed=speed) as emu:
        frames = read_all(profile, emu, timeout_s=20)
    assert frames, "nothing decoded"
    sales = all(f.print_request for f in frames)  # a transaction protocol
    got = transactions(frames) if sales else settled_weights(frames)
    assert got == expected, f"{profile_id}: read {got}, script placed {expected}"
