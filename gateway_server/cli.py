"""``gateway-server``: serve (API + ingest in one process), init-db."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway_server.settings import Settings
from weighing.errors import GatewayError


def build_server(settings: Settings):  # type: ignore[no-untyped-def]
    """Store + ingest + app + uvicorn server, not yet running (used by the CLI and demo)."""
    import uvicorn

    from gateway_server.api import create_app
    from gateway_server.ingest import Ingestor
    from gateway_server.store import Store

    store = Store.from_url(settings.database_url)
    store.create_all()
    ingestor = Ingestor(settings, store)
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
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    from gateway_server.store import Store

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    Store.from_url(settings.database_url).create_all()
    print(f"initialised {settings.database_url}")
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
    i = sub.add_parser("init-db", help="create the database tables")
    i.add_argument("--database-url")
    i.set_defaults(func=cmd_init_db)
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
