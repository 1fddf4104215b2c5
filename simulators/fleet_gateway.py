"""What a fleet asks of a gateway: its environment, the register and prices, a private one.

* :data:`FLEET_GATEWAY_ENV` — the settings any gateway a fleet feeds needs.
* :func:`register_csv` / :class:`GatewayClient.register` — one register CSV (登记造册)
  per market, imported with ``POST /api/v1/markets/{id}/register.csv`` (markets,
  merchants with 统一社会信用代码, scales with keys), then the PLU price list with
  ``POST /api/v1/merchants/{id}/prices`` (the CSV import has no price columns). Honest
  behaviours add: the afternoon merchants of shared scales (``POST /api/v1/merchants``:
  they own no scale, so the register has no row for them), the price changes as price
  versions valid from their simulated time, and the registered shifts as bindings
  (``POST /api/v1/registry/scales/{device}/bindings``).
* :class:`LocalStack` — a private Mosquitto and ``gateway-server serve`` on free loopback
  ports.

``simulators.fleet_io`` re-exports every public name.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from gateway_server.ingest.broker import free_port, wait_port
from simulators import fleet_honest_world as honest_world, goods as gd
from simulators.fleet_config import World

#: What a gateway needs to ingest a fleet: the simulated days lie in the future (2031), so
#: its "device clock too far ahead" check is off (give this to any gateway a fleet feeds).
FLEET_GATEWAY_ENV = {"GATEWAY_EVENT_MAX_AHEAD_S": "0"}
HEADERS = ("market", "merchant_name", "credit_code", "stall_no", "categories", "device",
           "model", "serial", "max", "e", "accuracy_class", "role", "profile", "cert_no",
           "verified_on", "due_on", "key")


def _mass(mg: int) -> str:
    return f"{mg // 1_000_000} kg" if mg % 1_000_000 == 0 else f"{mg // 1000} g"


def register_csv(world: World, market: str) -> str:
    """The register of one market as CSV text (English headers, UTF-8)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADERS)
    start = datetime.fromtimestamp(world.cfg.start_ms / 1000, tz=UTC)
    verified = (start - timedelta(days=120)).date().isoformat()
    due = (start + timedelta(days=240)).date().isoformat()
    for dev, s in world.scales.items():
        if s.market != market:
            continue
        m = world.merchants[s.merchant] if s.merchant else None
        cats = _categories(m.prices) if m else ""
        model = s.m
        w.writerow([market, m.name if m else "", m.code if m else "", m.stall_no if m else "",
                    cats, dev, model.profile, s.serial, _mass(model.max_mg), _mass(model.e_mg),
                    model.accuracy_class, s.role, model.profile, f"JD{s.serial}", verified, due,
                    s.key_hex])
    return buf.getvalue()


def _categories(prices: dict[str, int]) -> str:
    return "、".join(sorted({gd.BY_PLU[p].category.value for p in prices}))


def scaleless_merchants(world: World) -> list[str]:
    """Merchants the register CSV cannot carry (no scale of their own: the afternoon
    merchant of a shared scale), in a stable order."""
    owned = {s.merchant for s in world.scales.values()}
    return sorted(c for c in world.merchants if c not in owned)


def price_versions(world: World) -> list[tuple[str, str, int, int | None]]:
    """(credit code, PLU, fen/kg, valid from ms or None: from the registration) of every
    registered price: the day's first price, then each honest price change."""
    out: list[tuple[str, str, int, int | None]] = [
        (code, plu, price, None) for code, m in world.merchants.items()
        for plu, price in m.prices.items()]
    for code in sorted(world.honest.merchants):
        for c in world.honest.merchants[code].get("price-change", ()):
            out.append((code, c["plu"], c["new"], c["registered_ms"]))
    return out


def trading_hours(world: World) -> str:
    """The simulated trading day as the market's hours (``HH:MM-HH:MM``, China Standard
    Time), so the gateway's offline rule knows when the fleet trades."""
    cst = timezone(timedelta(hours=8))
    start = datetime.fromtimestamp(world.cfg.start_ms / 1000, tz=UTC).astimezone(cst)
    open_min = start.hour * 60 + start.minute
    close_min = min(24 * 60, open_min + round(world.cfg.trading.hours * 60))
    return f"{open_min // 60:02d}:{open_min % 60:02d}-{close_min // 60:02d}:{close_min % 60:02d}"


class GatewayClient:
    """The few gateway API calls the fleet and the evaluation need."""

    def __init__(self, url: str, *, token: str | None = None, username: str | None = None,
                 password: str | None = None, timeout_s: float = 60.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        if token is None and username is not None:
            r = self.http.post("/api/v1/auth/token",
                               json={"username": username, "password": password or ""})
            r.raise_for_status()
            token = r.json()["access_token"]
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def received(self) -> int:
        """Messages the gateway's ingest has processed (stored or not)."""
        r = self.http.get("/healthz")
        return int(r.json().get("ingest", {}).get("received", 0))

    def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            r = self.http.get(path, params={**params, "limit": 1000, "offset": offset})
            r.raise_for_status()
            body = r.json()
            items = body["items"] if isinstance(body, dict) else body
            out += items
            if len(items) < 1000:
                return out
            offset += 1000

    def register(self, world: World, out_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> dict[str, int]:
        """Markets, the register CSV of each, then the PLU prices; returns merchant ids."""
        ids: dict[str, int] = {}
        now = int(time.time() * 1000)
        hours = trading_hours(world)
        for market in world.markets:
            r = self.http.post("/api/v1/markets", json={"id": market, "trading_hours": hours,
                                                         "name": f"模拟市场 {market}"})
            if r.status_code not in (201, 409):
                r.raise_for_status()
            text = register_csv(world, market)
            if out_dir is not None:
                (out_dir / f"register-{market}.csv").write_text(text, encoding="utf-8")
            r = self.http.post(f"/api/v1/markets/{market}/register.csv",
                               content=text.encode(), headers={"Content-Type": "text/csv"})
            r.raise_for_status()
            rep = r.json()
            if rep["errors"]:
                raise RuntimeError(f"register import of {market}: {rep['errors'][:5]}")
            for m in self.pages("/api/v1/merchants", market=market):
                if m.get("credit_code"):
                    ids[m["credit_code"]] = int(m["id"])
        for code in scaleless_merchants(world):
            who = world.merchants[code]
            r = self.http.post("/api/v1/merchants", json={
                "market_id": who.market, "name": who.name, "credit_code": code,
                "stall_no": who.stall_no, "categories": _categories(who.prices).split("、")})
            r.raise_for_status()
            ids[code] = int(r.json()["id"])
        versions = price_versions(world)
        jobs = [(ids[code], plu, price, now if at is None else at)
                for code, plu, price, at in versions]

        def post(job: tuple[int, str, int, int]) -> None:
            mid, plu, price, valid_from = job
            g = gd.BY_PLU[plu]
            r = self.http.post(f"/api/v1/merchants/{mid}/prices", json={
                "plu": plu, "name": g.name, "category": g.category.value,
                "unit_price_fen_per_kg": price, "valid_from_ms": valid_from})
            r.raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, jobs))
        for dev, code, at in honest_world.bindings(world, world.honest):  # registered shifts
            r = self.http.post(f"/api/v1/registry/scales/{dev}/bindings",
                               json={"merchant_id": ids[code], "at_ms": at})
            r.raise_for_status()
        if out_dir is not None:
            with (out_dir / "prices.csv").open("w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(["credit_code", "plu", "name", "category", "unit_price_fen_per_kg",
                            "valid_from_ms"])
                for code, plu, price, since in versions:
                    g = gd.BY_PLU[plu]
                    w.writerow([code, plu, g.name, g.category.value, price,
                                "" if since is None else since])
        log(f"registered {len(world.markets)} markets, {len(world.scales)} scales, "
            f"{len(ids)} merchants, {len(jobs)} PLU prices")
        return ids


# -- a private stack: Mosquitto + gateway-server on free loopback ports ------------------


@dataclass
class LocalStack:
    """A private Mosquitto and a ``gateway-server serve`` subprocess (SQLite by default)."""

    work: Path
    mqtt_url: str = ""
    gateway_url: str = ""
    admin: tuple[str, str] = ("fleet-admin", "")
    inspector: tuple[str, str] = ("fleet-eval", "")
    procs: list[Any] = field(default_factory=list)

    def start(self, *, database_url: str | None = None, mosquitto: str = "mosquitto",
              env_extra: dict[str, str] | None = None, ingest_batch: int = 300) -> LocalStack:
        import os
        import secrets
        import shutil
        import subprocess
        import sys

        self.work.mkdir(parents=True, exist_ok=True)
        binary = shutil.which(mosquitto) or "/usr/sbin/mosquitto"
        mport = free_port()
        conf = self.work / "mosquitto.conf"
        # bounded queues (stack-notes.md): the fleet's backpressure keeps them short
        conf.write_text(f"listener {mport} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nmax_queued_messages 1000000\n"
                        "max_queued_bytes 1073741824\nmax_inflight_messages 1000\n")
        self.procs.append(subprocess.Popen([binary, "-c", str(conf)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(mport)
        self.mqtt_url = f"mqtt://127.0.0.1:{mport}"
        hport = free_port()
        env = dict(os.environ)
        env.update({"DATABASE_URL": database_url or f"sqlite:///{self.work}/gateway.db",
                    "MQTT_URL": self.mqtt_url, "GATEWAY_HTTP_PORT": str(hport),
                    "GATEWAY_MQTT_CLIENT_ID": "fleet-gateway",
                    # ≤ 300 messages per store transaction: detection._prices ORs every
                    # (merchant, PLU) pair of a batch into one query, and SQLite refuses more
                    # than ~1,000 terms ("Expression tree is too large"), after which the
                    # ingest retries the same batch for ever (a gateway gap, reported)
                    "GATEWAY_INGEST_BATCH": str(ingest_batch),
                    **FLEET_GATEWAY_ENV, **(env_extra or {})})
        bindir = Path(sys.executable).parent
        self.admin = ("fleet-admin", secrets.token_urlsafe(16))
        self.inspector = ("fleet-eval", secrets.token_urlsafe(16))
        for (user, pw), role in ((self.admin, "admin"), (self.inspector, "inspector")):
            subprocess.run([str(bindir / "gateway-server"), "create-user", "--username", user,
                            "--role", role, "--if-exists", "update"], env=env, check=True,
                           input=pw + "\n", text=True, capture_output=True, timeout=120)
        log = (self.work / "gateway.log").open("ab")
        self.procs.append(subprocess.Popen([str(bindir / "gateway-server"), "serve"], env=env,
                                           stdout=log, stderr=subprocess.STDOUT))
        wait_port(hport, 60)
        self.gateway_url = f"http://127.0.0.1:{hport}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.gateway_url + "/healthz", timeout=5).json().get(
                        "mqtt_connected"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except Exception:
                    p.kill()
        self.procs.clear()
