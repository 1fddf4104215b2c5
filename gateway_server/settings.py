"""Typed settings of the gateway, from the environment (prefix ``GATEWAY_``) or arguments.

Nothing is built at import time: ``Settings()`` is created by the CLI or a test and
passed down (style.md: settings and engines are never module globals).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        "sqlite:///var/gateway.db",
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://...",
    )
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", validation_alias="MQTT_URL")
    mqtt_client_id: str = "gateway-ingest-1"
    markets: str = Field("+", description="comma-separated market ids this worker ingests")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ingest_batch: int = Field(2000, ge=1, description="messages per store transaction")
    ingest_max_delay_ms: int = Field(50, ge=1)

    @property
    def market_list(self) -> list[str]:
        return [m.strip() for m in self.markets.split(",") if m.strip()] or ["+"]
