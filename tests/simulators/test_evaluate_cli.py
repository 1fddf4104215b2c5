"""``scale-sim evaluate`` refuses what it cannot score, in one line: a missing option or
file, a file that is not a truth, a gateway that holds none of the truth's devices (a
real gateway and Mosquitto)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import BIN, start_gateway, start_mosquitto

T0 = 1_930_255_200_000


def truth(devices: list[str]) -> dict:
    scales = {d: {"market": "m1", "merchant": "H1", "model": "toledo-15kg-5g", "role": "trade",
                  "clock_skew_ms": 0, "sales": 0, "events": 0, "scenarios": [], "reweighs": []}
              for d in devices}
    return {"version": 1,
            "fleet": {"name": "cli", "seed": 1, "start_ms": T0, "days": 1, "trading_hours": 4,
                      "markets": 1, "merchants": 1, "scales": len(devices), "events": 0},
            "markets": {"m1": {"fair": None}},
            "merchants": {"H1": {"name": "H1", "market": "m1", "stall": "veg", "stall_no": "A-1",
                                 "devices": devices, "prices": {}, "honest": True}},
            "scales": scales}


def evaluate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "scale-sim"), "evaluate", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scale-sim: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["--truth", "truth.json"], "--gateway URL"),
    (["--truth", "truth.json", "--gateway", "http://127.0.0.1:9", "--findings", "f.json"],
     "one of the two"),
    (["--truth", "missing.json", "--findings", "findings.json"],
     "truth file missing.json does not exist"),
    (["--truth", "truth.json", "--findings", "missing.json"],
     "findings file missing.json does not exist"),
    (["--truth", "findings.json", "--findings", "findings.json"],
     "truth file findings.json has no fleet, markets, merchants, scales"),
    (["--truth", "garbage.json", "--findings", "findings.json"], "garbage.json is not JSON"),
])
def test_missing_or_wrong_input_is_a_one_line_error(tmp_path: Path, args: list[str],
                                                    says: str) -> None:
    (tmp_path / "truth.json").write_text(json.dumps(truth(["s-1"])))
    (tmp_path / "findings.json").write_text(json.dumps({"findings": [], "merchant_ids": {}}))
    (tmp_path / "garbage.json").write_text("{not json")
    assert says in one_line_error(evaluate(*args, cwd=tmp_path))


def test_saved_findings_are_scored(tmp_path: Path) -> None:
    (tmp_path / "truth.json").write_text(json.dumps(truth(["s-1"])))
    (tmp_path / "findings.json").write_text(json.dumps({"findings": [], "merchant_ids": {}}))
    proc = evaluate("--truth", "truth.json", "--findings", "findings.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Fleet `cli`" in proc.stdout


def test_a_gateway_without_the_truths_devices_is_refused(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    gw = start_gateway(tmp_path, broker.url)
    try:
        (tmp_path / "register.csv").write_text("商户名称,设备编号\n张三,s-1\n", encoding="utf-8")
        subprocess.run([str(BIN / "gateway-server"), "import", "--market", "m1",
                        "--market-name", "东门", "--keys-out", "keys.toml", "register.csv"],
                       cwd=tmp_path, env=gw.env, check=True, capture_output=True, timeout=120)
        (tmp_path / "other.json").write_text(json.dumps(truth(["x-1", "x-2"])))
        (tmp_path / "truth.json").write_text(json.dumps(truth(["s-1", "s-2"])))
        login = ("--gateway", gw.url, "--token", str(gw.token))
        line = one_line_error(evaluate("--truth", "other.json", *login, cwd=tmp_path))
        assert f"the gateway at {gw.url} holds none of the truth's 2 devices" in line
        proc = evaluate("--truth", "truth.json", *login, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr  # holds one of the two: scored
        assert "Fleet `cli`" in proc.stdout
        line = one_line_error(evaluate("--truth", "truth.json", "--gateway", gw.url,
                                       cwd=tmp_path))
        assert "answered 401" in line and "--username/--password or --token" in line
    finally:
        gw.stop()
        broker.stop()
