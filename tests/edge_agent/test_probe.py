"""``edge-agent probe``: the real CLI, run as a subprocess against emulated scales on ptys.

For every shipped serial profile (continuous and request mode) an emulator keeps
talking (``loop=True``) while the probe tries every setting; the top result must name
the profile's protocol and baud rate. A pty ignores baud rate and parity, so this
checks the tie-break the probe documents (declared settings first) as much as the
decoding. Plus the failure modes: a port that cannot be opened (exit 2), a silent
line (exit 1).

The emulated scales hold their loads steady: an 8217 asked while the goods move
answers "in motion", a reply without a weight, and which reply the probe gets would
depend on when it asks. The probe listens a fixed time per setting (its design); that
time is long enough here for ten frames, not asserted.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from support import BIN

from device_profiles.schema import Profile, load_profile
from edge_agent.probe import serial_profiles, settings_to_try
from simulators.emulator import SerialEmulator
from simulators.script import Load, random_script

SECONDS = 1.0  # listening time per setting
SERIAL_PROFILES = [p.id for p in serial_profiles()]
MIN_RATE_HZ = 10.0


def run_probe(port: str, seconds: float = SECONDS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "edge-agent"), "probe", port, "--seconds", str(seconds)],
                          capture_output=True, text=True, timeout=300)


def talkative(profile: Profile) -> Profile:
    """The profile with an emulator that talks at least ``MIN_RATE_HZ``.

    A transaction scale emulated at 1 frame/s may stay silent through a whole 0.6 s
    window at the declared setting; the frame rate is no part of what the probe
    identifies, so the test raises it rather than lengthening every window.
    """
    if profile.emulator.frame_rate_hz >= MIN_RATE_HZ:
        return profile
    emulator = profile.emulator.model_copy(update={"frame_rate_hz": MIN_RATE_HZ})
    return profile.model_copy(update={"emulator": emulator})


def test_shipped_serial_profiles_cover_both_modes() -> None:
    assert {load_profile(p).link.mode for p in SERIAL_PROFILES} == {"continuous", "request"}
    assert len(settings_to_try(serial_profiles())) >= 2


@pytest.mark.parametrize("profile_id", SERIAL_PROFILES)
def test_probe_identifies_protocol_and_baud(profile_id: str) -> None:
    profile = talkative(load_profile(profile_id))
    # goods put on and lifted without motion: every reading is a settled one
    loads = [Load(ld.mass_mg, idle_ms=500, settle_ms=0, hold_ms=1500, remove_ms=0)
             for ld in random_script(profile, 3, seed=5, fast=True)]
    with SerialEmulator(profile, loads, loop=True, lead_ms=200) as emu:
        proc = run_probe(emu.path)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    top = results[0]
    assert (top["protocol"], top["baudrate"]) == (profile.protocol, profile.link.baudrate), results
    link = profile.link
    assert (top["bytesize"], top["parity"], top["stopbits"]) == (
        link.bytesize, link.parity, link.stopbits)
    assert profile_id in top["profiles"]
    assert top["errors"] == 0 and top["quality"] == 1.0
    assert top["sample"] is not None and isinstance(top["sample"]["weight_mg"], int)


def test_port_that_cannot_be_opened_exits_2() -> None:
    proc = run_probe("/nonexistent/ttyUSB9", seconds=0.1)
    assert proc.returncode == 2
    assert "cannot open /nonexistent/ttyUSB9" in proc.stderr
    assert proc.stdout == ""


def test_silent_line_reports_nothing_within_the_time_bound() -> None:
    profile = load_profile(SERIAL_PROFILES[0])
    emu = SerialEmulator(profile, [])  # a pty nobody talks on: never started
    try:
        # every read waits up to a deadline (the probe's design): it ends; how fast it
        # ends on a loaded machine is no part of the contract (run_probe's timeout is
        # only against a hang)
        proc = run_probe(emu.path, seconds=0.2)
    finally:
        emu.stop()
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
