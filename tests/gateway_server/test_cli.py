"""``gateway-server`` as an operator runs it (subprocesses): the keys an import generates
are shown once and match the register; no migration chatter on every command."""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from pathlib import Path

from support import BIN

REGISTER = (
    "市场编号,商户名称,摊位号,设备编号,设备配置\n"
    "m001,张三,A-01,s-0001,toledo-15kg-5g\n"
    "m001,李四,A-02,s-0002,\n"
)


def gw(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MQTT_URL")}
    return subprocess.run([str(BIN / "gateway-server"), *args], cwd=cwd, env=env, text=True,
                          input=stdin if stdin is not None else "", capture_output=True,
                          timeout=120)


def exported_keys(cwd: Path) -> dict[str, str]:
    proc = gw("export", "--market", "m001", "--lang", "en", "--include-keys", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    header, *rows = [line.split(",") for line in proc.stdout.splitlines()]
    return {row[header.index("device")]: row[header.index("key")] for row in rows}


def test_import_prints_each_generated_key_once(tmp_path: Path) -> None:
    (tmp_path / "register.csv").write_text(REGISTER, encoding="utf-8")
    proc = gw("import", "--market", "m001", "--market-name", "东门", "register.csv",
              cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    keys = exported_keys(tmp_path)
    assert set(keys) == {"s-0001", "s-0002"} and all(len(k) == 64 for k in keys.values())
    for device, key in keys.items():
        assert f'{device}: key = "{key}"' in proc.stdout
    assert "--include-keys" in proc.stdout  # how to see them again
    again = gw("import", "--market", "m001", "register.csv", cwd=tmp_path)
    assert again.returncode == 0 and "unchanged 2" in again.stdout
    assert not any(key in again.stdout for key in keys.values())  # shown once only


def test_import_given_keys_are_not_printed(tmp_path: Path) -> None:
    key = "00112233445566778899aabbccddeeff"
    (tmp_path / "register.csv").write_text(
        "市场编号,商户名称,设备编号,设备密钥\nm001,张三,s-0001," + key + "\n", encoding="utf-8")
    proc = gw("import", "--market", "m001", "--market-name", "东门", "register.csv",
              cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert key not in proc.stdout and "key" not in proc.stdout
    assert exported_keys(tmp_path) == {"s-0001": key}


def test_import_keys_out_writes_owner_only_edge_toml_sections(tmp_path: Path) -> None:
    (tmp_path / "register.csv").write_text(REGISTER, encoding="utf-8")
    proc = gw("import", "--market", "m001", "--market-name", "东门", "--keys-out",
              "keys.toml", "register.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    keys = exported_keys(tmp_path)
    assert not any(key in proc.stdout + proc.stderr for key in keys.values())
    path = tmp_path / "keys.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sections = tomllib.loads(path.read_text(encoding="utf-8"))["scale"]
    assert sections == [
        {"device": "s-0001", "profile": "toledo-15kg-5g", "key": keys["s-0001"]},
        {"device": "s-0002", "key": keys["s-0002"]},
    ]
    # an existing file is never overwritten, and nothing is imported then
    (tmp_path / "more.csv").write_text(REGISTER.replace("s-0002", "s-0003"), encoding="utf-8")
    proc = gw("import", "--market", "m001", "--keys-out", "keys.toml", "more.csv",
              cwd=tmp_path)
    assert proc.returncode == 2 and "keys.toml exists" in proc.stderr
    assert "s-0003" not in exported_keys(tmp_path)


def test_commands_do_not_log_the_migration_steps(tmp_path: Path) -> None:
    for args in (["init-db"], ["init-db"], ["export", "--market", "nowhere"]):
        proc = gw(*args, cwd=tmp_path)
        assert "alembic" not in proc.stderr, proc.stderr
        assert "INFO" not in proc.stderr, proc.stderr
    proc = gw("-v", "init-db", "--database-url", f"sqlite:///{tmp_path}/other.db", cwd=tmp_path)
    assert proc.returncode == 0 and "Running upgrade" in proc.stderr  # shown when asked
