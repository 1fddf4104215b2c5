"""``gateway-server``: serve (API + ingest in one process), init-db, import / export of a
market's scale register (登记造册), create-user.

One module (about 640 lines) on purpose: the argument parser and one short function per
subcommand, each a thin call into the packages that imports them lazily (so ``--help``
and a one-off command start fast); its help texts read as one page, and test_cli_help
checks them together.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gateway_server.settings import Settings
from weighing.errors import GatewayError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from gateway_server.registry.register_csv import GeneratedKey


def build_server(settings: Settings):  # type: ignore[no-untyped-def]
    """Store + ingest + app + uvicorn server, not yet running (used by the CLI and demo)."""
    import uvicorn

    from gateway_server.api.app import create_app
    from gateway_server.api.auth import bootstrap_admin
    from gateway_server.ingest.ingestor import Ingestor
    from gateway_server.store.database import Store
    from gateway_server.telemetry.tssink import TimeSeriesSink

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
    from gateway_server.casework.clock import TrustClock
    from gateway_server.store.retention import Purger

    store, ingestor, server = build_server(settings)
    ingestor.start()
    purger = Purger(store, settings).start()  # dead-letter retention
    clock = TrustClock(store, settings).start()  # complaint deadlines, lists, feed, webhooks
    logging.getLogger("gateway_server").info(
        "gateway: http://%s:%s  (MQTT %s, DB %s)", settings.http_host, settings.http_port,
        settings.mqtt_url, settings.database_url)
    try:
        server.run()
    finally:
        clock.stop()
        purger.stop()
        ingestor.stop()
        if ingestor.sink is not None:
            ingestor.sink.close(5)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """An ingest worker: takes its share of the markets (leases); /metrics over HTTP.

    With ``--processes N`` (N > 1) this process only supervises N worker processes on
    this machine, which share the market leases like workers on different machines.
    """
    import signal
    import threading

    if args.processes > 1:
        from gateway_server.ingest.workers import supervise

        return supervise(args)
    from gateway_server.ingest.sharding import Worker
    from gateway_server.store.database import Store
    from gateway_server.telemetry.metrics import MetricsServer, render_worker
    from gateway_server.telemetry.tssink import TimeSeriesSink

    overrides = {k: v for k, v in {"database_url": args.database_url,
                                   "mqtt_url": args.mqtt_url,
                                   "worker_metrics_listen": args.metrics_listen,
                                   }.items() if v is not None}
    settings = Settings(**overrides)
    store = Store.from_url(settings.database_url)
    kw = {"worker_id": args.worker_id} if args.worker_id else {}
    worker = Worker(settings, store, lease_ms=int(args.lease_s * 1000), **kw)
    worker.sink = TimeSeriesSink.from_settings(settings)  # None: no time-series store
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from gateway_server.store.retention import Purger

    metrics = None
    if settings.worker_metrics_listen:
        metrics = _metrics_server(settings.worker_metrics_listen,
                                  lambda: render_worker(worker, worker.sink), MetricsServer)
    worker.start()
    purger = Purger(store, settings).start()  # dead-letter retention
    logging.getLogger("gateway_server").info(
        "worker %s started (lease %.0f s, metrics %s)", worker.worker_id, args.lease_s,
        f"http://{metrics.host}:{metrics.port}/metrics" if metrics else "off")
    try:
        stop.wait()
    finally:
        purger.stop()
        worker.stop()
        if metrics is not None:
            metrics.stop()
        if worker.sink is not None:
            worker.sink.close(5)
    return 0


def _metrics_server(listen: str, render, cls):  # type: ignore[no-untyped-def]
    """Bind HOST:PORT, or the next free port above it (up to 64 on), and start serving."""
    host, port = _listen(listen)
    for p in [port] if port == 0 else range(port, min(port + 64, 65536)):
        try:
            return cls(host, p, render).start()
        except OSError as err:
            last = err
    raise GatewayError(f"cannot serve /metrics on {listen} (nor the next 63 ports): {last}")


def cmd_api(args: argparse.Namespace) -> int:
    """A stateless API process: HTTP only, no ingest (any number behind a balancer)."""
    import uvicorn

    from gateway_server.api.app import create_app
    from gateway_server.store.database import Store

    overrides = {k: v for k, v in {"database_url": args.database_url, "http_host": args.host,
                                   "http_port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    store = Store.from_url(settings.database_url)
    store.migrate()
    uvicorn.run(create_app(store, None, settings), host=settings.http_host,
                port=settings.http_port, log_level="warning", access_log=False)
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    from gateway_server.store.database import Store

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    Store.from_url(settings.database_url).migrate()
    print(f"initialised {settings.database_url} (schema at the newest migration)")
    return 0


@contextmanager
def _engine(args: argparse.Namespace) -> Iterator[Engine]:
    """The engine of ``--database-url`` (or the settings), tables created, disposed after."""
    from gateway_server.store.database import Store

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    store = Store.from_url(settings.database_url)
    try:
        store.migrate()
        yield store.engine
    finally:
        store.engine.dispose()


def cmd_import(args: argparse.Namespace) -> int:
    from gateway_server.api.auth import now_ms
    from gateway_server.registry import register as registry
    from gateway_server.registry.register_csv import import_register

    if args.keys_out and os.path.lexists(args.keys_out):
        raise GatewayError(f"--keys-out {args.keys_out} exists; give a new file")
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
    if report.generated_keys:
        _show_generated_keys(report.generated_keys, args.keys_out, market=args.market)
    return 1 if report.errors else 0


def _show_generated_keys(keys: list[GeneratedKey], keys_out: str | None, *, market: str) -> None:
    """The keys the import generated, once: on stdout, or as ``[[scale]]`` sections of an
    edge.toml in ``keys_out`` (created for the owner only, never overwritten)."""
    again = f"gateway-server export --market {market} --include-keys"
    if keys_out:
        text = "".join(
            f'[[scale]]\ndevice = "{k.device}"\n'
            + (f'profile = "{k.profile}"\n' if k.profile else "")
            + f'# port = "/dev/ttyUSB0"   the serial port this scale is on\nkey = "{k.key_hex}"\n\n'
            for k in keys)
        try:
            fd = os.open(keys_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise GatewayError(f"{keys_out} exists; the generated keys are not written "
                               f"(`{again}` shows them)") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote the generated key(s) of {len(keys)} new scale(s) to {keys_out} as "
              "edge.toml [[scale]] sections")
        return
    print(f"generated key(s) of {len(keys)} new scale(s), shown once (`{again}` shows them "
          "again); each goes into its scale's [[scale]] section of edge.toml:")
    for k in keys:
        print(f'  {k.device}: key = "{k.key_hex}"')


def cmd_status_feed(args: argparse.Namespace) -> int:
    """Import a business-register status CSV (docs/registry.md); exit 1 if a row failed."""
    from gateway_server.api.auth import now_ms
    from gateway_server.trust.statusfeed import import_feed

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    with _engine(args) as engine, engine.begin() as conn:
        report = import_feed(conn, data, now_ms=now_ms(), actor="cli", source=args.file)
    for e in report.warnings:
        print(f"{args.file}: row {e.row}, column {e.column}: warning: {e.message}", file=sys.stderr)
    for e in report.errors:
        print(f"{args.file}: row {e.row}, column {e.column}: {e.message}", file=sys.stderr)
    print(f"applied {report.applied}, unchanged {report.unchanged}, errors {len(report.errors)}")
    return 1 if report.errors else 0


def cmd_export(args: argparse.Namespace) -> int:
    from gateway_server.api.auth import now_ms
    from gateway_server.registry.register_csv import export_register

    with _engine(args) as engine, engine.connect() as conn:
        text = export_register(conn, args.market, now_ms=now_ms(), lang=args.lang,
                               include_keys=args.include_keys)
    if args.output and args.output != "-":
        Path(args.output).write_text("\ufeff" + text, encoding="utf-8", newline="")
    else:
        sys.stdout.write(text)
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    """Send a signed command to a scale's edge agent (``gateway_server.ingest.commands``)."""
    from gateway_server.api.auth import now_ms
    from gateway_server.ingest import commands

    settings = Settings(**{k: v for k, v in {"database_url": args.database_url,
                                             "mqtt_url": args.mqtt_url}.items() if v})
    with _engine(args) as engine, engine.connect() as conn:
        topic, payload = commands.build(conn, args.device, args.name, now_ms=now_ms(),
                                        from_seq=args.from_seq, to_seq=args.to_seq)
    commands.publish(settings.mqtt_url, topic, payload)
    print(f"sent {args.name} to {args.device} on {topic}")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    import getpass

    from gateway_server.api import auth

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
                             display_name=args.display_name, merchant_id=args.merchant_id)
    print(f"{'updated' if exists else 'created'} {args.role} {args.username}")
    return 0


def _gateway_password(args: argparse.Namespace) -> str:
    """``--gateway-password``, else a prompt on a terminal, else the first line of stdin."""
    import getpass

    if args.gateway_password is not None:
        password = args.gateway_password
    elif sys.stdin.isatty():
        password = getpass.getpass(f"MQTT password for the gateway account {args.gateway_user!r}: ")
        if getpass.getpass("again: ") != password:
            raise GatewayError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise GatewayError(
                "no gateway MQTT password: it is read from the first line of stdin, which "
                "is empty. Pipe it in (gateway-server export-mosquitto --out DIR < FILE), run "
                "the command in a terminal to be asked for it, or give --gateway-password")
    if len(password) < 10:
        raise GatewayError("the gateway's MQTT password needs at least 10 characters")
    return str(password)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise GatewayError(f"listener {text!r}: expected HOST:PORT, e.g. 0.0.0.0:8883")
    return host, int(port)


def cmd_export_mosquitto(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway_server.ingest.mosquitto_export import (
        DEFAULT_RESERVED_CLIENT_IDS,
        Listener,
        Tls,
        export,
        mosquitto_conf,
        write,
    )

    tls_parts = (args.tls_cafile, args.tls_certfile, args.tls_keyfile)
    if any(tls_parts) and not all(tls_parts):
        raise GatewayError("TLS needs all three: --tls-cafile, --tls-certfile, --tls-keyfile")
    devices, gateway = Listener(*_listen(args.device_listener)), Listener(
        *_listen(args.gateway_listener))
    password = _gateway_password(args)
    out = Path(args.out)
    with _engine(args) as engine, engine.connect() as conn:
        exp = export(conn, gateway_user=args.gateway_user, gateway_password=password,
                     market=args.market, reserved_client_ids=(
                         *DEFAULT_RESERVED_CLIENT_IDS, *(args.gateway_client_id or ())))
    conf = mosquitto_conf(out, devices=devices, gateway=gateway,
                          persistence_location=Path(args.persistence_location),
                          tls=Tls(*tls_parts) if all(tls_parts) else None)
    write(out, exp, conf)
    for device in exp.left_out:
        print(f"left out device {device}: its id could be a gateway client id (gw-market-*, "
              f"the gateway's account or --gateway-client-id); rename it in the register",
              file=sys.stderr)
    print(f"wrote {out / 'mosquitto.conf'}, passwd ({exp.devices} device(s)), passwd-gateway "
          f"and acl in {out}: devices connect to {devices.host}:{devices.port}, the gateway "
          f"(user {args.gateway_user}) to {gateway.host}:{gateway.port}. It is a whole "
          f"configuration: start mosquitto -c {out / 'mosquitto.conf'} (not from conf.d "
          f"beside Debian's default, which sets its own listener and persistence_location)")
    return 0


def cmd_release_quarantine(args: argparse.Namespace) -> int:
    """Ingest the quarantined messages of a device that is now in the register."""
    from gateway_server.api.auth import now_ms
    from gateway_server.ingest.pipeline import Limits
    from gateway_server.ingest.quarantine import release_device
    from gateway_server.store.database import Store

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    store = Store.from_url(settings.database_url)
    try:
        store.migrate()
        out = release_device(store, args.device, now_ms=now_ms(),
                             limits=Limits.from_settings(settings))
    finally:
        store.engine.dispose()
    print(f"released {out['released']} message(s) of {args.device}: {out['sales']} new "
          f"sale(s), {out['events']} other event(s), {out['samples']} sample(s), "
          f"{out['duplicates']} duplicate(s), {out['dead_letters']} dead letter(s) "
          f"({out['bad_signatures']} bad signature(s))")
    return 0


def cmd_purge_dead_letters(args: argparse.Namespace) -> int:
    """Apply the dead-letter retention once (serve and worker do it periodically)."""
    from gateway_server.store.database import Store
    from gateway_server.store.retention import purge_once

    overrides: dict[str, object] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.retention_days is not None:
        overrides["dead_letter_retention_days"] = args.retention_days
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if not settings.dead_letter_retention_days:
        print("dead-letter retention is off (dead_letter_retention_days = 0): nothing purged")
        return 0
    store = Store.from_url(settings.database_url)
    try:
        store.migrate()
        n = purge_once(store, settings)
    finally:
        store.engine.dispose()
    print(f"purged {n} dead letter(s) older than {settings.dead_letter_retention_days} days")
    return 0


def cmd_export_period(args: argparse.Namespace) -> int:
    """Export one CST month of a table (gzip JSON lines + .sha256), verified; drops nothing."""
    from gateway_server.store.database import Store
    from gateway_server.store.partitions import ExportMismatch, export_period

    overrides: dict[str, object] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    store = Store.from_url(settings.database_url)
    try:
        store.migrate()
        exp = export_period(store.engine, args.table, args.month, args.out)
    except ExportMismatch as err:
        print(f"export failed verification: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a month that is not YYYY-MM
        print(err, file=sys.stderr)
        return 2
    finally:
        store.engine.dispose()
    print(f"{exp.path}: {exp.rows} row(s), sha256 {exp.file_sha256} ({exp.checksum_path.name}), "
          "verified")
    return 0


def openapi_document() -> dict[str, object]:
    """The OpenAPI document of the HTTP API (no database touched)."""
    from gateway_server.api.app import create_app
    from gateway_server.store.database import Store

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


_DB_HELP = ("database URL (default: $DATABASE_URL, else sqlite:///var/gateway.db); "
            "postgresql://… for PostgreSQL")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway-server", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log at debug level (and the database migrations' steps)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the HTTP API and the MQTT ingest")
    s.add_argument("--database-url", help=_DB_HELP)
    s.add_argument("--mqtt-url", help="MQTT broker, mqtt://host:port or mqtts://host:port "
                   "(default: $MQTT_URL, else mqtt://127.0.0.1:1883)")
    s.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="HTTP port (default 8080)")
    s.add_argument("--client-id", help="MQTT client id of the ingest (default "
                   "gateway-ingest-1); one per gateway process on a broker")
    s.add_argument("--markets", help="comma-separated market ids (default: all)")
    s.set_defaults(func=cmd_serve)
    w = sub.add_parser("worker", help="run an ingest worker sharded by market (no HTTP)")
    w.add_argument("--database-url", help=_DB_HELP + " (workers need PostgreSQL)")
    w.add_argument("--mqtt-url", help="MQTT broker (default: $MQTT_URL, else "
                   "mqtt://127.0.0.1:1883)")
    w.add_argument("--worker-id", help="this worker's name in the leases (default: host-pid)")
    w.add_argument("--lease-s", type=float, default=10.0,
                   help="market lease in seconds; a dead worker's markets move after this long")
    w.add_argument("--metrics-listen", help="HOST:PORT of /metrics (default: "
                   "$GATEWAY_WORKER_METRICS_LISTEN, else 127.0.0.1:9480; a busy port moves to "
                   "the next free one; '' turns it off)")
    w.add_argument("--processes", type=int, default=1,
                   help="worker processes on this machine, sharing the market leases (default "
                   "1); process i serves /metrics on PORT + i")
    w.set_defaults(func=cmd_worker)
    a = sub.add_parser("api", help="run a stateless HTTP API process (no ingest)")
    a.add_argument("--database-url", help=_DB_HELP)
    a.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    a.add_argument("--port", type=int, help="HTTP port (default 8080)")
    a.set_defaults(func=cmd_api)
    i = sub.add_parser("init-db", help="create the database tables")
    i.add_argument("--database-url", help=_DB_HELP)
    i.set_defaults(func=cmd_init_db)
    im = sub.add_parser("import", help="import a market's scale register (登记造册) CSV; "
                        "prints the keys it generates for new scales")
    im.add_argument("--market", required=True, help="market id")
    im.add_argument("--market-name", help="create the market with this name if it is new")
    im.add_argument("--keys-out", metavar="FILE",
                    help="write the generated device keys to this new file (owner-only), as "
                    "edge.toml [[scale]] sections, instead of printing them")
    im.add_argument("--database-url", help=_DB_HELP)
    im.add_argument("file", help="CSV file (UTF-8 with or without BOM, or GB18030); - for stdin")
    im.set_defaults(func=cmd_import)
    ex = sub.add_parser("export", help="export a market's scale register as CSV")
    ex.add_argument("--market", required=True, help="market id")
    ex.add_argument("--lang", choices=["zh", "en"], default="zh", help="header language")
    ex.add_argument("--include-keys", action="store_true",
                    help="include the device HMAC keys (secrets: for edge.toml)")
    ex.add_argument("--output", "-o", help="file (written with a BOM for Excel); default stdout")
    ex.add_argument("--database-url", help=_DB_HELP)
    ex.set_defaults(func=cmd_export)
    co = sub.add_parser("command", help="send a signed command to a scale's edge agent "
                        "(time-sync, config-reload, resend)")
    co.add_argument("device", help="device id of the scale")
    co.add_argument("name", choices=["time-sync", "config-reload", "resend"],
                    help="time-sync: the agent records its clock offset; config-reload: it "
                    "re-reads its config file; resend: it publishes --from-seq..--to-seq again")
    co.add_argument("--from-seq", type=int, help="resend: first seq")
    co.add_argument("--to-seq", type=int, help="resend: last seq (inclusive)")
    co.add_argument("--database-url", help=_DB_HELP)
    co.add_argument("--mqtt-url", help="MQTT broker (default: $MQTT_URL, else "
                    "mqtt://127.0.0.1:1883)")
    co.set_defaults(func=cmd_command)
    cu = sub.add_parser("create-user", help="create an account (admin or inspector)")
    cu.add_argument("--username", required=True, help="login name")
    cu.add_argument("--role", required=True, choices=["admin", "inspector", "merchant"],
                    help="admin: writes the register; inspector: reads and inspects; "
                    "merchant: one merchant's own data (with --merchant-id)")
    cu.add_argument("--merchant-id", type=int, help="the merchant of a merchant account")
    cu.add_argument("--password", help="default: prompt on a terminal, else the first line of "
                    "stdin (a password here shows in the process list)")
    cu.add_argument("--display-name", help="name shown in the dashboard (default: username)")
    cu.add_argument("--if-exists", choices=["error", "update", "skip"], default="error",
                    help="when the user exists: fail (default), set password and role, or skip")
    cu.add_argument("--database-url", help=_DB_HELP)
    cu.set_defaults(func=cmd_create_user)
    sf = sub.add_parser("status-feed", help="import a business-register status CSV (credit "
                        "code, status, date): 注销/吊销 delist, 经营异常名录 suspends")
    sf.add_argument("file", help="the CSV file, or - for stdin")
    sf.add_argument("--database-url", help=_DB_HELP)
    sf.set_defaults(func=cmd_status_feed)
    em = sub.add_parser(
        "export-mosquitto", help="write a Mosquitto config, password files and ACL from the "
        "register",
        description="Write mosquitto.conf, passwd, passwd-gateway and acl for Mosquitto: one "
        "account per registered device (its password derived from its key; its client id "
        "forced to its username) and the gateway's account on a listener of its own. The "
        "gateway's password is asked for on a terminal, else read from the first line of stdin "
        "(gateway-server export-mosquitto --out DIR < FILE).")
    em.add_argument("--out", required=True,
                    help="folder for mosquitto.conf, passwd, passwd-gateway and acl")
    em.add_argument("--gateway-user", default="gateway",
                    help="MQTT username of the gateway's account (default gateway)")
    em.add_argument("--gateway-password",
                    help="the gateway account's MQTT password (≥ 10 characters); default: "
                    "asked for on a terminal, else the first line of stdin (a password here "
                    "shows in the process list)")
    em.add_argument("--market", help="only this market's devices")
    em.add_argument("--device-listener", default="0.0.0.0:8883", metavar="HOST:PORT",
                    help="where devices connect; the client id is forced to the username "
                    "(default 0.0.0.0:8883)")
    em.add_argument("--gateway-listener", default="127.0.0.1:1884", metavar="HOST:PORT",
                    help="where the gateway's processes connect, with the gateway account "
                    "only (default 127.0.0.1:1884; loopback or a private network)")
    em.add_argument("--persistence-location", default="/var/lib/mosquitto",
                    help="the broker's data folder (default /var/lib/mosquitto)")
    em.add_argument("--tls-cafile", help="TLS of the device listener: CA certificate file")
    em.add_argument("--tls-certfile", help="TLS of the device listener: server certificate")
    em.add_argument("--tls-keyfile", help="TLS of the device listener: server key")
    em.add_argument("--gateway-client-id", action="append", metavar="ID",
                    help="a gateway MQTT client id besides gw-market-* and gateway-ingest-1 "
                    "(serve --client-id); a device with this id is left out (repeatable)")
    em.add_argument("--database-url", help=_DB_HELP)
    em.set_defaults(func=cmd_export_mosquitto)
    rq = sub.add_parser(
        "release-quarantine", help="ingest the quarantined messages of a device now registered",
        description="Messages of a device that was not in the register are quarantined. Once "
        "the device is registered (API or import), this runs them through the whole ingest "
        "(signature with the registered key, plausibility, deduplication, detectors) and "
        "removes them from the quarantine. Also: POST /api/v1/quarantine/{device}/release.")
    rq.add_argument("--device", required=True, help="device id")
    rq.add_argument("--database-url", help=_DB_HELP)
    rq.set_defaults(func=cmd_release_quarantine)
    pd = sub.add_parser(
        "purge-dead-letters", help="delete dead letters older than the retention (once)",
        description="serve and worker purge every purge_interval_s; this does it once "
        "(e.g. from cron for an API-only deployment).")
    pd.add_argument("--retention-days", type=int, help="default: the setting "
                    "dead_letter_retention_days (GATEWAY_DEAD_LETTER_RETENTION_DAYS, 90)")
    pd.add_argument("--database-url", help=_DB_HELP)
    pd.set_defaults(func=cmd_purge_dead_letters)
    ep = sub.add_parser(
        "export-period", help="export one month of sales, events or rollups (checksummed)",
        description="Writes the table's rows of one CST calendar month to "
        "OUT/{table}-{month}.jsonl.gz with a sha256sum-format OUT/….jsonl.gz.sha256, reads the "
        "file back and verifies it. Drops nothing: the retention thread of serve / worker "
        "exports the same way before it drops a period past its retention. Check a copy with "
        "`sha256sum -c FILE.sha256`.")
    ep.add_argument("--table", required=True, choices=["sales", "events", "rollups"],
                    help="the table whose month to export")
    ep.add_argument("--month", required=True, help="YYYY-MM (China Standard Time)")
    ep.add_argument("--out", required=True, help="directory (created if missing)")
    ep.add_argument("--database-url", help=_DB_HELP)
    ep.set_defaults(func=cmd_export_period)
    oa = sub.add_parser("openapi", help="write the OpenAPI document of the HTTP API")
    oa.add_argument("--output", "-o", help="file (default stdout), e.g. docs/openapi.json")
    oa.set_defaults(func=cmd_openapi)
    return p


def configure_logging(verbose: bool) -> None:
    """Log lines on stderr. Alembic logs each migration step, and its plugins at import, at
    INFO: on every command that opens the database; shown only with ``--verbose``."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except GatewayError as err:
        print(f"gateway-server: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
