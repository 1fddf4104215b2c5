"""The tolerance calculator: the MPE of a scale at a load, and the allowed negative deviation
of a retail sale (pure :mod:`weighing.metrology`, no database).

Included into :mod:`gateway_server.api.routes.inspection`'s router, so the app adds them with
its authentication."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from weighing import metrology as mt

router = APIRouter()


@router.get("/metrology/mpe", tags=["metrology"],
            summary="Maximum permissible error at a load (JJG 539 / OIML R76), exact, in mg")
def metrology_mpe(
    load_mg: Annotated[int, Query(ge=0)], e_mg: Annotated[int, Query(gt=0)],
    max_mg: Annotated[int | None, Query(gt=0)] = None,
    accuracy_class: Literal["I", "II", "III", "IIII"] = "III",
    stage: Literal["initial_verification", "subsequent_verification", "in_service"] =
    "in_service",
) -> dict[str, Any]:
    try:
        if max_mg is not None:
            mt.check_scale(max_mg, e_mg, mt.AccuracyClass(accuracy_class))
        mpe = mt.mpe_mg(load_mg, e_mg=e_mg, accuracy_class=mt.AccuracyClass(accuracy_class),
                        stage=mt.Stage(stage))
    except mt.MetrologyError as err:
        raise HTTPException(422, str(err)) from err
    return {"load_mg": load_mg, "e_mg": e_mg, "accuracy_class": accuracy_class, "stage": stage,
            "mpe_mg": str(mpe), "mpe_mg_num": mpe.numerator, "mpe_mg_den": mpe.denominator,
            "source": "JJG 539 / OIML R76-1 Table 6; in service = 2 × verification"}


@router.get("/metrology/retail-deviation", tags=["metrology"],
            summary="Allowed negative deviation of a retail sale (总局令第66号 附表1/2), mg")
def metrology_retail_deviation(
    weight_mg: Annotated[int, Query(ge=0)],
    category: mt.GoodsCategory | None = None,
    unit_price_fen_per_kg: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    if category is None and unit_price_fen_per_kg is None:
        raise HTTPException(422, "give a category or a unit price")
    try:
        dev = mt.retail_negative_deviation_mg(weight_mg, category=category,
                                              unit_price_fen_per_kg=unit_price_fen_per_kg)
        limits = {m.value: mt.reweigh_limit_mg(weight_mg, method=m, category=category,
                                               unit_price_fen_per_kg=unit_price_fen_per_kg)
                  for m in mt.ReweighMethod}
    except mt.MetrologyError as err:
        raise HTTPException(422, str(err)) from err
    return {"weight_mg": weight_mg, "category": category,
            "unit_price_fen_per_kg": unit_price_fen_per_kg, "negative_deviation_mg": dev,
            "reweigh_limit_mg": limits,
            "source": "零售商品称重计量监督管理办法 (总局令第66号, 第31号修订) 附表1/2, 第六条"}
