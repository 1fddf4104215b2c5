"""``edge-agent``: run the agent, decode captured bytes, probe a serial port."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from device_profiles.codecs import CODECS, WeightFrame, make_codec
from edge_agent import __version__
from weighing.errors import GatewayError


def _frame_json(frame: WeightFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"weight_mg": frame.weight_mg, "stable": frame.stable, "net": frame.net}
    for name in ("tare_mg", "unit_price_fen_per_kg", "amount_fen", "plu", "trace_code",
                 "ts_text", "zero", "decimals", "status"):
        value = getattr(frame, name)
        if value is not None:
            out[name] = value
    out["unit"] = frame.unit
    for flag in ("overload", "underload", "print_request"):
        if getattr(frame, flag):
            out[flag] = True
    return out


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode stdin with one codec: frames as JSON lines on stdout, rejects on stderr."""
    codec = make_codec(args.protocol)
    stdin = sys.stdin.buffer
    out, err = sys.stdout, sys.stderr
    pending_hex = ""

    def emit(data: bytes) -> None:
        frames, errors = codec.feed(data)
        for e in errors:
            err.write(f"offset {e.offset} length {e.length}: {e.reason}\n")
        for f in frames:
            out.write(json.dumps(_frame_json(f), ensure_ascii=False) + "\n")

    while True:
        chunk = stdin.read1(65536) if hasattr(stdin, "read1") else stdin.read(65536)
        if not chunk:
            break
        if args.hex:
            text = pending_hex + "".join(chunk.decode("ascii", "replace").split())
            keep = len(text) % 2
            body, pending_hex = text[: len(text) - keep], text[len(text) - keep:]
            try:
                data = bytes.fromhex(body)
            except ValueError:
                # keep what is valid hex; report the rest as a rejected stretch of input
                good = bytearray()
                for i in range(0, len(body), 2):
                    pair = body[i:i + 2]
                    try:
                        good += bytes.fromhex(pair)
                    except ValueError:
                        err.write(f"hex text: {pair!r} is not a hex byte; skipped\n")
                data = bytes(good)
            emit(data)
        else:
            emit(chunk)
    if pending_hex:
        err.write(f"hex text: odd trailing digit {pending_hex!r}; skipped\n")
    left = codec.flush()
    if left is not None:
        reason = reason_at_end(args.protocol, left.data) or left.reason
        err.write(f"offset {left.offset} length {left.length}: {reason}\n")
    out.flush()
    return 0


#: bytes that follow the input's last bytes in the trial decodings of :func:`reason_at_end`
#: (NUL, LF, CR, ETX, space, a digit, 0xFF: line ends, frame ends and field bytes)
_FOLLOWERS = (0x00, 0x0A, 0x0D, 0x03, 0x20, 0x30, 0xFF)
_GOOD = WeightFrame(weight_mg=0, stable=True, net=False, unit="kg")


def _first_reason(protocol: str, data: bytes, after: bytes) -> str | None:
    """The reason a fresh codec gives for a stretch from the first byte of ``data`` that
    covers all of ``data`` when ``after`` follows it, else ``None``."""
    _, errors = make_codec(protocol).feed(data + after)
    first = errors[0] if errors else None
    if first is None or first.offset != 0 or first.length < len(data):
        return None
    return first.reason


def reason_at_end(protocol: str, data: bytes) -> str | None:
    """Why ``protocol`` rejects ``data``, the bytes left undecided at the end of input, or
    ``None`` when that depends on bytes that never came (the input ended mid-frame).

    A codec decides a bad stretch only once it sees where the next frame may start (its
    resynchronisation window), so a bad frame at the very end of a capture is still
    waiting when the input ends: its real reason (a checksum mismatch, say) is known, but
    only as "incomplete". Fresh codecs are fed ``data`` followed by different bytes: when
    a follower completes a frame, or the reason changes with the follower, the input was
    cut off inside a frame. Otherwise the reason is the one given when a good frame
    follows right away (so a count of garbage bytes is that of ``data``).
    """
    codec = make_codec(protocol)
    try:
        good = codec.encode(_GOOD)
    except GatewayError:
        return None
    pad = 4 * codec.max_frame
    reasons = {_first_reason(protocol, data, bytes([b]) * pad) for b in _FOLLOWERS}
    if None in reasons or len(reasons) != 1:
        return None
    return _first_reason(protocol, data, good)


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    cfg = load_config(args.config)
    agent = Agent(cfg, config_path=args.config)
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def on_hup(*_: object) -> None:  # the conventional "re-read your config"
        reload.set()
        stop.set()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    agent.start()
    # a worker that cannot go on (damaged outbox, ...) ends the process non-zero: systemd
    # (Restart=always) restarts it, instead of a process that stays up doing nothing
    def stop_when_fatal() -> None:
        agent.fatal_event.wait()
        stop.set()

    threading.Thread(target=stop_when_fatal, name="agent-fatal", daemon=True).start()
    logging.getLogger("edge_agent").info(
        "edge agent %s: %d scale(s) in market %s", __version__, len(agent.workers), cfg.agent.market
    )
    metrics = None
    if args.metrics_port is not None:
        from edge_agent.metrics import MetricsServer

        metrics = MetricsServer(agent.status, host=args.metrics_host,
                                port=args.metrics_port).start()
        logging.getLogger("edge_agent").info(
            "metrics: http://%s:%d/metrics", args.metrics_host, metrics.port)
    interval = args.status_interval or 3600
    try:
        while True:
            woke = stop.wait(interval)
            if reload.is_set():
                reload.clear()
                stop.clear()
                try:
                    agent.reload()
                except GatewayError:
                    pass  # logged; the running configuration stays
                continue
            if woke:
                break
            if args.status_interval:
                print(json.dumps(agent.status()), flush=True)
    finally:
        if metrics is not None:
            metrics.stop()
        agent.stop()
    if agent.fatal is not None:
        logging.getLogger("edge_agent").critical("exiting: %s", agent.fatal)
        return 3
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Matches as JSON lines on stdout (for scripts); the verdict in words on stderr."""
    from edge_agent.probe import probe, verdict

    results = probe(args.port, seconds=args.seconds)
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    sys.stdout.flush()
    print(verdict(results, args.port, seconds=args.seconds), file=sys.stderr)
    return 0 if results else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the agent for the scales of a config file")
    r.add_argument("--config", required=True,
                   help="the agent's TOML file (docs/edge-agent.md), e.g. edge.toml")
    r.add_argument("--status-interval", type=float, default=0,
                   help="print a JSON status line every N seconds")
    r.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this port (0: a free one)")
    r.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the /metrics server (default 127.0.0.1)")
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("decode", help="decode bytes from stdin with one protocol: frames as "
                       "JSON lines on stdout, rejected bytes and why on stderr")
    d.add_argument("--protocol", required=True, choices=sorted(CODECS),
                   help="the protocol to decode (a profile's protocol: scale-sim profiles)")
    d.add_argument("--hex", action="store_true", help="stdin is hex text (any whitespace)")
    d.set_defaults(func=cmd_decode)
    pr = sub.add_parser("probe", help="find the protocol and serial settings of a port and "
                        "the profile for edge.toml (the agent must not hold the port)")
    pr.add_argument("port", help="serial port: /dev/ttyUSB0, /dev/pts/7, any pyserial URL")
    pr.add_argument("--seconds", type=float, default=1.5, help="listening time per setting")
    pr.set_defaults(func=cmd_probe)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except GatewayError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
