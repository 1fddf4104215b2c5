"""Public, read-only endpoints for consumers (no account): the trust-code page's data.

What a consumer sees after scanning a merchant's 放心消费诚信码. No device keys, no
phone, the credit code only masked. Rate limited per client IP (``ratelimit``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from gateway_server.api.auth import R404, ConnDep, now_ms
from gateway_server.api.ratelimit import R429, public_rate_limit
from gateway_server.registry import register as reg

router = APIRouter(prefix="/api/v1/public", tags=["public"],
                   dependencies=[Depends(public_rate_limit)], responses=R429)


class TrustLicence(BaseModel):
    kind: str
    number: str
    valid_until_ms: int | None = None


class TrustScale(BaseModel):
    device: str
    model: str | None
    role: str
    max_mg: int | None
    e_mg: int | None
    accuracy_class: str | None
    cert_no: str | None = Field(description="检定证书编号")
    verified_on_ms: int | None
    due_on_ms: int | None = Field(description="有效期至 (valid through this date, CST)")
    overdue: bool
    verification: Literal["valid", "overdue", "unknown"]


class TrustPublic(BaseModel):
    name: str
    stall_no: str | None
    market_id: str
    market_name: str
    market_name_en: str | None
    credit_code_masked: str | None = Field(description="first 6 + **** + last 2")
    licences: list[TrustLicence]
    categories: list[str]
    status: reg.MerchantStatus
    list_status: reg.ListStatus
    scales: list[TrustScale] = Field(description="scales bound to the merchant now")
    sales_30d: int = Field(description="sales recorded in the last 30 days")
    as_of_ms: int


@router.get("/merchants/{trust_token}", response_model=TrustPublic,
            summary="Trust-code page data (放心消费诚信码)",
            description="Read-only data for the consumer page a merchant's QR leads to. "
            "Unknown tokens answer 404.", responses=R404)
def trust_page(trust_token: str, conn: ConnDep, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=60"
    return reg.trust_view(conn, trust_token, now_ms=now_ms())
