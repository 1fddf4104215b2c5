"""Commands to a scale's edge agent (``time-sync``, ``config-reload``, ``resend``).

Any account may send ``time-sync`` and ``resend`` (an inspector chasing a gap); a
``config-reload`` restarts scale workers and needs the admin role. The command is signed
with the scale's key and published through the broker (``gateway_server.ingest.commands``).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from gateway_server.api.auth import R401, R403, R404, CurrentUser, now_ms
from gateway_server.api.deps import IngestorDep, SettingsDep, StoreDep
from gateway_server.ingest import commands
from weighing import wire

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["commands"])

Seq = Annotated[int, Field(ge=1, le=2**63 - 1)]


class CommandIn(BaseModel):
    name: Annotated[str, Field(description="time-sync | config-reload | resend",
                               examples=["time-sync"])]
    from_seq: Seq | None = Field(None, description="resend: first seq")
    to_seq: Seq | None = Field(None, description="resend: last seq (inclusive)")


class CommandOut(BaseModel):
    device: str
    name: str
    topic: str
    ts_ms: int
    nonce: str


@router.post("/scales/{device}/commands", response_model=CommandOut,
             status_code=status.HTTP_202_ACCEPTED,
             responses={**R401, **R403, **R404,
                        409: {"description": "The scale has no key"},
                        422: {"description": "Unknown command or bad range"},
                        503: {"description": "The broker did not take it"}},
             summary="Send a signed command to the scale's edge agent")
def send_command(device: str, body: CommandIn, user: CurrentUser, store: StoreDep,
                 settings: SettingsDep, ingestor: IngestorDep) -> CommandOut:
    if body.name == wire.CommandName.CONFIG_RELOAD.value and not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    t = now_ms()
    try:
        with store.engine.connect() as conn:
            topic, payload = commands.build(conn, device, body.name, now_ms=t,
                                            from_seq=body.from_seq, to_seq=body.to_seq)
        client = getattr(ingestor, "client", None) if ingestor is not None else None
        commands.publish(settings.mqtt_url, topic, payload, client=client)
    except commands.CommandError as err:
        raise HTTPException(err.status, str(err)) from err
    cmd = wire.decode_command(topic, payload)[1]
    log.info("command %s sent to %s by %s", body.name, device, user.username)
    return CommandOut(device=device, name=body.name, topic=topic, ts_ms=cmd.ts_ms,
                      nonce=cmd.nonce)
