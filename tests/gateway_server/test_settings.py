"""Gateway configuration: TOML file (GATEWAY_CONFIG) < environment < arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_server.settings import Settings


def test_toml_file_then_environment_then_arguments(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('database_url = "sqlite:////srv/gw.db"\nmqtt_url = "mqtt://10.0.0.1:1883"\n'
                   'http_port = 9000\nmarkets = "m1,m2"\nidle_scale_rule = true\n',
                   encoding="utf-8")
    for var in ("DATABASE_URL", "MQTT_URL", "GATEWAY_HTTP_PORT", "GATEWAY_MARKETS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    s = Settings()
    assert (s.database_url, s.mqtt_url, s.http_port) == ("sqlite:////srv/gw.db",
                                                         "mqtt://10.0.0.1:1883", 9000)
    assert s.market_list == ["m1", "m2"] and s.idle_scale_rule
    monkeypatch.setenv("GATEWAY_HTTP_PORT", "9100")
    monkeypatch.setenv("DATABASE_URL", "postgresql://gw@db/gw")
    s = Settings()
    assert s.http_port == 9100 and s.database_url == "postgresql://gw@db/gw"
    assert Settings(http_port=9200).http_port == 9200


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", "/nonexistent/gateway.toml")
    with pytest.raises(ValueError, match="no such file"):
        Settings()


def test_invalid_value_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('unknown_devices = "drop"\n', encoding="utf-8")
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    with pytest.raises(ValueError, match="unknown_devices"):
        Settings()


def test_committed_openapi_document_is_current() -> None:
    import json

    from gateway_server.cli import openapi_document

    committed = (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text(
        encoding="utf-8")
    # byte for byte, in the format `gateway-server openapi` writes
    generated = json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True)
    assert committed == generated + "\n", "run: gateway-server openapi -o docs/openapi.json"
