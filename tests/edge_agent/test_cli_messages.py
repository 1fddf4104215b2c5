"""What ``edge-agent`` tells the person at the scale: the real reason of a rejected frame
(decode), the probe's verdict and the setting for edge.toml, and frame warnings that do
not flood the log. Real CLI subprocesses, emulated scales on ptys, a real Mosquitto."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from support import BIN, start_mosquitto, wait_until

from device_profiles.codecs import WeightFrame, make_codec
from device_profiles.schema import load_profile
from edge_agent.lograte import WarningGate
from edge_agent.probe import verdict
from simulators.emulator import SerialEmulator
from simulators.script import random_script

FRAME = WeightFrame(weight_mg=1_250_000, stable=True, net=False, unit="kg")


def decode(protocol: str, data: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "edge-agent"), "decode", "--protocol", protocol, "--hex"],
                          input=data.hex(" "), capture_output=True, text=True, timeout=60)


def corrupt_last_byte(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


# -- decode ----------------------------------------------------------------------------------


def test_decode_names_the_checksum_of_a_bad_last_frame() -> None:
    good = make_codec("toledo-continuous").encode(FRAME)
    proc = decode("toledo-continuous", good + corrupt_last_byte(good))
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 1  # the good frame
    assert proc.stderr == "offset 18 length 18: checksum mismatch (sum & 0x7F = 0x01)\n"


def test_decode_names_the_xor_check_of_a_yaohua_frame() -> None:
    good = make_codec("yaohua-a9").encode(
        WeightFrame(weight_mg=1_250_000, stable=True, net=False, unit="kg", decimals=3))
    bad = bytearray(good)
    bad[5] ^= 0x01  # a weight digit: the XOR check no longer fits
    proc = decode("yaohua-a9", bytes(bad))
    assert proc.stdout == ""
    assert "XOR check" in proc.stderr and "incomplete" not in proc.stderr


def test_decode_still_says_incomplete_for_a_cut_off_frame() -> None:
    good = make_codec("toledo-continuous").encode(FRAME)
    for cut in (1, 10, 16, 17):
        proc = decode("toledo-continuous", good + good[:cut])
        assert proc.stderr == f"offset 18 length {cut}: incomplete frame at end of input\n"


def test_decode_counts_trailing_garbage_as_it_is() -> None:
    good = make_codec("toledo-continuous").encode(FRAME)
    proc = decode("toledo-continuous", good + b"garbage")
    assert proc.stderr == "offset 18 length 7: 7 bytes of garbage before STX\n"


# -- probe -------------------------------------------------------------------------------------


def probe(port: str, seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "edge-agent"), "probe", port, "--seconds", str(seconds)],
                          capture_output=True, text=True, timeout=120)


def test_probe_says_which_profile_to_put_in_edge_toml() -> None:
    profile = load_profile("toledo-15kg-5g")
    with SerialEmulator(profile, random_script(profile, 3, seed=5, fast=True), loop=True,
                        lead_ms=200) as emu:
        proc = probe(emu.path, 0.6)
    assert proc.returncode == 0, proc.stderr
    assert f"verdict: {emu.path} speaks toledo-continuous at 9600 baud, 8 data bits, " \
           "no parity, 1 stop bit (clean:" in proc.stderr
    assert '  profile = "toledo-15kg-5g"' in proc.stderr
    assert f'  port = "{emu.path}"' in proc.stderr
    assert proc.stdout.startswith('{"protocol": "toledo-continuous"')  # JSON stays on stdout


def test_probe_of_a_silent_port_says_no_data() -> None:
    emu = SerialEmulator(load_profile("toledo-15kg-5g"), [])  # a pty nobody talks on
    try:
        proc = probe(emu.path, 0.2)
    finally:
        emu.stop()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"no data on this port: {emu.path} sent nothing")
    assert "--seconds" in proc.stderr


def test_verdict_without_a_declaring_profile_says_how_to_make_one() -> None:
    match = {"protocol": "toledo-continuous", "baudrate": 4800, "bytesize": 7, "parity": "E",
             "stopbits": 2, "frames": 3, "replies": 0, "errors": 2, "quality": 0.8,
             "profiles": [], "sample": None}
    text = verdict([match], "/dev/ttyUSB0")
    assert "4800 baud, 7 data bits, even parity, 2 stop bits (mixed: 3 frames, " \
           "2 rejected stretches)" in text
    assert "Only part of the bytes decode" in text
    assert 'baudrate = 4800, bytesize = 7, parity = "E", stopbits = 2' in text


# -- frame warnings ------------------------------------------------------------------------------


def test_warning_gate_passes_one_per_interval_and_counts_the_rest() -> None:
    gate = WarningGate(interval_s=10)
    assert gate.allow(100.0) == 0
    assert [gate.allow(100.0 + 0.05 * i) for i in range(1, 100)] == [None] * 99
    assert gate.allow(110.0) == 99
    assert gate.allow(110.5) is None
    assert gate.allow(125.0) == 1


def test_agent_on_the_wrong_profile_warns_once_with_the_probe_hint(tmp_path: Path) -> None:
    """The scale speaks Yaohua A9 (20 frames/s), the config says Toledo: every frame is
    rejected, the log gets one warning per 10 s, naming ``edge-agent probe PORT``."""
    broker = start_mosquitto(tmp_path)
    a9 = load_profile("yaohua-a9-150kg-50g")
    emu = SerialEmulator(a9, random_script(a9, 3, seed=2, fast=True), loop=True, lead_ms=200)
    log = tmp_path / "agent.log"
    agent = None
    try:
        emu.start()
        (tmp_path / "edge.toml").write_text(
            f'[agent]\nmarket = "m1"\noutbox = "outbox.db"\n\n[mqtt]\nurl = "{broker.url}"\n\n'
            f'[[scale]]\ndevice = "s-1"\nprofile = "toledo-15kg-5g"\nport = "{emu.path}"\n',
            encoding="utf-8")
        with log.open("wb") as out:
            agent = subprocess.Popen([str(BIN / "edge-agent"), "run", "--config",
                                      str(tmp_path / "edge.toml"), "--status-interval", "1"],
                                     stdout=subprocess.PIPE, stderr=out)
        wait_until(lambda: "rejected" in log.read_text(), 30, what="a frame warning")
        time.sleep(4)  # ~80 more bad frames
        warnings = [line for line in log.read_text().splitlines() if "rejected" in line]
        assert len(warnings) == 1, warnings
        assert f"run `edge-agent probe {emu.path}`" in warnings[0]
    finally:
        if agent is not None:
            agent.terminate()
            agent.communicate(timeout=30)
        emu.stop()
        broker.stop()
