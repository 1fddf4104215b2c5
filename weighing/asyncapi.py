"""AsyncAPI 3.0 document of wire contract v1, generated from the models in ``wire``.

``python -m weighing.asyncapi`` writes ``docs/asyncapi.json``; a test keeps the committed
file equal to what this module generates, so the document cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from weighing import wire

_PARAMS: dict[str, dict[str, Any]] = {
    "market": {"description": "market id ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"},
    "device": {"description": "device id, also the MQTT client id of its agent"},
}


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dict."""
    _, components = wire.schema_components("#/components/schemas/{name}")
    base = f"{wire.TOPIC_ROOT}/{{market}}/{{device}}"
    channel_defs = {
        "birth": (f"{base}/birth", "Birth", "Retained: who the device is and what it can do."),
        "state": (f"{base}/state", "State",
                  "Retained: online on connect; offline as the last will."),
        "events": (f"{base}/events", "EventBatch",
                   "QoS 1: events of one device in seq order; HMAC-SHA256 per event."),
        "samples": (f"{base}/samples", "SampleBatch", "QoS 1: raw readings, columnar."),
        "command": (f"{base}/cmd/{{name}}", "Command",
                    "Server → edge, QoS 1: authenticated commands (time-sync, config-reload)."),
    }
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for key, (address, model, desc) in channel_defs.items():
        params: dict[str, dict[str, Any]] = dict(_PARAMS)
        if key == "command":
            params["name"] = {"enum": [c.value for c in wire.CommandName],
                              "description": "command name"}
        channels[key] = {"address": address, "description": desc, "parameters": params,
                         "messages": {model: {"$ref": f"#/components/messages/{model}"}}}
        messages[model] = {"name": model, "contentType": "application/json",
                           "payload": {"$ref": f"#/components/schemas/{model}"}}
        send = key != "command"
        operations[f"{'publish' if send else 'send'}{key.capitalize()}"] = {
            "action": "send" if send else "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": ("edge agent publishes" if send else "edge agent receives") + f" {key}",
            "bindings": {"mqtt": {"qos": 1, "retain": key in ("birth", "state")}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Smart-scale gateway wire contract",
            "version": str(wire.WIRE_VERSION),
            "description": (
                "MQTT topics and payloads between edge agents and the gateway "
                "(weighing/wire.py). Mass in integer milligrams (*_mg), money in integer "
                "fen (*_fen), time in UTC milliseconds (*_ms): never a float."),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }


def text() -> str:
    """The committed file's exact text: a test compares it byte for byte."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("docs/asyncapi.json")
    out.write_text(text(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
