"""``gateway-server``: serve (API + ingest in one process), init-db, import / export of a
market's scale register (登记造册), create-user."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gateway_server.settings import Settings
from weighing.errors import GatewayError

if TYPE_CHECKING:
    from sqlalchemy import Engine


def build_server(settings: Settings):  # type: ignore[no-untyped-def]
    """Store + ingest + app + uvicorn server, not yet running (used by the CLI and demo)."""
    import uvicorn

    from gateway_server.api import create_app
    from gateway_server.auth import bootstrap_admin
    from gateway_server.ingest import Ingestor
    from gateway_server.store import Store
    from gateway_server.tssink import TimeSeriesSink

    store = Store.from_url(settings.database_url)
    store.migrate()
    bootstrap_admin(store, settings)  # GATEWAY_FIRST_ADMIN_USERNAME / _PASSWORD, if set
    ingestor = Ingestor(settings, store)
    ingestor.sink = TimeSeriesSink.from_settings(settings)  # None: no time-series store
    app = create_app(store, ingestor, settings)
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port,
                            log_level="warning", access_log=False)
    return store, ingestor, uvicorn.Server(config)


def cmd_serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in {
        "database_url": args.database_url, "mqtt_url": args.mqtt_url,
        "http_host": args.host, "http_port": args.port, "mqtt_client_id": args.client_id,
        "markets": args.markets,
    }.items() if v is not None}
    settings = Settings(**overrides)
    _store, ingestor, server = build_server(settings)
    ingestor.start()
    logging.getLogger("gateway_server").info(
        "gateway: http://%s:%s  (MQTT %s, DB %s)", settings.http_host, settings.http_port,
        settings.mqtt_url, settings.database_url)
    try:
        server.run()
    finally:
        ingestor.stop()
        if ingestor.sink is not None:
            ingestor.sink.close(5)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """An ingest worker: takes its share of the markets (leases), no HTTP."""
    import signal
    import threading

    from gateway_server.sharding import Worker
    from gateway_server.store import Store

    overrides = {k: v for k, v in {"database_url": args.database_url,
                                   "mqtt_url": args.mqtt_url}.items() if v is not None}
    settings = Settings(**overrides)
    store = Store.from_url(settings.database_url)
    kw = {"worker_id": args.worker_id} if args.worker_id else {}
    worker = Worker(settings, store, lease_ms=int(args.lease_s * 1000), **kw)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.start()
    logging.getLogger("gateway_server").info("worker %s started (lease %.0f s)",
                                             worker.worker_id, args.lease_s)
    try:
        stop.wait()
    finally:
        worker.stop()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    """A stateless API process: HTTP only, no ingest (any number behind a balancer)."""
    import uvicorn

    from gateway_server.api import create_app
    from gateway_server.store import Store

    overrides = {k: v for k, v in {"database_url": args.database_url, "http_host": args.host,
                                   "http_port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    store = Store.from_url(settings.database_url)
    store.migrate()
    uvicorn.run(create_app(store, None, settings), host=settings.http_host,
                port=settings.http_port, log_level="warning", access_log=False)
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    from gateway_server.store import Store

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    Store.from_url(settings.database_url).migrate()
    print(f"initialised {settings.database_url} (schema at the newest migration)")
    return 0


@contextmanager
def _engine(args: argparse.Namespace) -> Iterator[Engine]:
    """The engine of ``--database-url`` (or the settings), tables created, disposed after."""
    from gateway_server.store import Store

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    store = Store.from_url(settings.database_url)
    try:
        store.migrate()
        yield store.engine
    finally:
        store.engine.dispose()


def cmd_import(args: argparse.Namespace) -> int:
    from gateway_server import registry
    from gateway_server.auth import now_ms
    from gateway_server.register_csv import import_register

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    with _engine(args) as engine, engine.begin() as conn:
        if args.market_name:
            try:
                registry.get_market(conn, args.market)
            except registry.NotFoundError:
                registry.create_market(conn, args.market, name=args.market_name, now_ms=now_ms())
        report = import_register(conn, args.market, data, now_ms=now_ms())
    for e in report.warnings:
        print(f"{args.file}: row {e.row}, column {e.column}: warning: {e.message}", file=sys.stderr)
    for e in report.errors:
        print(f"{args.file}: row {e.row}, column {e.column}: {e.message}", file=sys.stderr)
    print(f"imported {report.imported}, updated {report.updated}, unchanged {report.unchanged}, "
          f"errors {len(report.errors)}")
    return 1 if report.errors else 0


def cmd_export(args: argparse.Namespace) -> int:
    from gateway_server.auth import now_ms
    from gateway_server.register_csv import export_register

    with _engine(args) as engine, engine.connect() as conn:
        text = export_register(conn, args.market, now_ms=now_ms(), lang=args.lang,
                               include_keys=args.include_keys)
    if args.output and args.output != "-":
        Path(args.output).write_text("\ufeff" + text, encoding="utf-8", newline="")
    else:
        sys.stdout.write(text)
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    import getpass

    from gateway_server import auth

    password = args.password
    if password is None:
        if sys.stdin.isatty():
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                print("gateway-server: passwords differ", file=sys.stderr)
                return 2
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    with _engine(args) as engine, engine.begin() as conn:
        exists = auth.user_exists(conn, args.username)
        if exists and args.if_exists == "error":
            raise auth.AuthError(f"user {args.username} exists (use --if-exists update)")
        if exists and args.if_exists == "skip":
            print(f"user {args.username} exists; unchanged")
            return 0
        if exists:
            auth.update_user(conn, args.username, password=password, role=args.role,
                             disabled=False)
        else:
            auth.create_user(conn, args.username, password, args.role, now_ms=auth.now_ms(),
                             display_name=args.display_name)
    print(f"{'updated' if exists else 'created'} {args.role} {args.username}")
    return 0


def cmd_export_mosquitto(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway_server.mosquitto_export import export

    password = args.gateway_password or sys.stdin.readline().strip()
    if len(password) < 10:
        raise GatewayError("the gateway's MQTT password needs at least 10 characters")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with _engine(args) as engine, engine.connect() as conn:
        exp = export(conn, gateway_user=args.gateway_user, gateway_password=password,
                     market=args.market)
    (out / "passwd").write_text(exp.passwd, encoding="utf-8")
    (out / "passwd").chmod(0o600)
    (out / "acl").write_text(exp.acl, encoding="utf-8")
    print(f"wrote {out / 'passwd'} and {out / 'acl'} for {exp.devices} device(s); in "
          f"mosquitto.conf: allow_anonymous false, password_file, acl_file")
    return 0


def openapi_document() -> dict[str, object]:
    """The OpenAPI document of the HTTP API (no database touched)."""
    from gateway_server.api import create_app
    from gateway_server.store import Store

    return create_app(Store.from_url("sqlite://"), None, Settings()).openapi()


def cmd_openapi(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway-server", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the HTTP API and the MQTT ingest")
    s.add_argument("--database-url")
    s.add_argument("--mqtt-url")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--client-id")
    s.add_argument("--markets", help="comma-separated market ids (default: all)")
    s.set_defaults(func=cmd_serve)
    w = sub.add_parser("worker", help="run an ingest worker sharded by market (no HTTP)")
    w.add_argument("--database-url")
    w.add_argument("--mqtt-url")
    w.add_argument("--worker-id", help="default: host-pid")
    w.add_argument("--lease-s", type=float, default=10.0,
                   help="market lease; a dead worker's markets move after this long")
    w.set_defaults(func=cmd_worker)
    a = sub.add_parser("api", help="run a stateless HTTP API process (no ingest)")
    a.add_argument("--database-url")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.set_defaults(func=cmd_api)
    i = sub.add_parser("init-db", help="create the database tables")
    i.add_argument("--database-url")
    i.set_defaults(func=cmd_init_db)
    im = sub.add_parser("import", help="import a market's scale register (登记造册) CSV")
    im.add_argument("--market", required=True, help="market id")
    im.add_argument("--market-name", help="create the market with this name if it is new")
    im.add_argument("--database-url")
    im.add_argument("file", help="CSV file (UTF-8 with or without BOM, or GB18030); - for stdin")
    im.set_defaults(func=cmd_import)
    ex = sub.add_parser("export", help="export a market's scale register as CSV")
    ex.add_argument("--market", required=True, help="market id")
    ex.add_argument("--lang", choices=["zh", "en"], default="zh", help="header language")
    ex.add_argument("--include-keys", action="store_true", help="include device HMAC keys")
    ex.add_argument("--output", "-o", help="file (written with a BOM for Excel); default stdout")
    ex.add_argument("--database-url")
    ex.set_defaults(func=cmd_export)
    cu = sub.add_parser("create-user", help="create an account (admin or inspector)")
    cu.add_argument("--username", required=True)
    cu.add_argument("--role", required=True, choices=["admin", "inspector"])
    cu.add_argument("--password", help="default: prompt, or the first line of stdin")
    cu.add_argument("--display-name")
    cu.add_argument("--if-exists", choices=["error", "update", "skip"], default="error",
                    help="when the user exists: fail (default), set password and role, or skip")
    cu.add_argument("--database-url")
    cu.set_defaults(func=cmd_create_user)
    em = sub.add_parser("export-mosquitto",
                        help="write a Mosquitto password file and ACL from the register")
    em.add_argument("--out", required=True, help="folder for passwd and acl")
    em.add_argument("--gateway-user", default="gateway")
    em.add_argument("--gateway-password", help="default: the first line of stdin")
    em.add_argument("--market", help="only this market's devices")
    em.add_argument("--database-url")
    em.set_defaults(func=cmd_export_mosquitto)
    oa = sub.add_parser("openapi", help="write the OpenAPI document of the HTTP API")
    oa.add_argument("--output", "-o", help="file (default stdout), e.g. docs/openapi.json")
    oa.set_defaults(func=cmd_openapi)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except GatewayError as err:
        print(f"gateway-server: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
