"""Goods catalogue for fleet simulation: what market stalls sell, at what price and weight.

Pure data. Categories are :class:`weighing.metrology.GoodsCategory` (附表1 of
零售商品称重计量监督管理办法), so the gateway judges each sale and re-weigh against the
right negative-deviation table. Prices are integer fen per kg, chosen as retail prices
of a Chinese wet market (2025–2026 order of magnitude; a simulation default, not
market data): every registered price is a multiple of 10 fen, so the ×0.1 unit-price
trick is exact; whole-yuan prices also make the ×0.01 trick exact (domain.md §4).

Stall types group the goods a merchant sells and the scale models that may sell them
without breaking Art. 3 (the scale's in-service MPE must not exceed the goods'
negative deviation): 1 g scales for dried goods (table C: 2 g to 1 kg), 5 g scales for
meat, eggs and aquatic products (table B: 5 g to 2.5 kg), 5 g or 10 g scales for
vegetables, fruit and grain (table A: 20 g to 1 kg).

Loss after the sale (``loss_pct_per_h``, the honest ``drip-dry`` variation) is a
simulation assumption [L], order of magnitude only: cleaned fish and live shrimp shed the
water on them within minutes (1–8 %/h); leafy vegetables sprayed to keep fresh drain and
wilt (spinach 1–5 %/h, cabbage less); cut meat purges 1–5 % over the 24 h of the Honikel
drip-loss test, faster at first (0.1–0.5 %/h), poultry a little more; fruit vegetables
and fruit transpire 0.5–5 % a day (0.01–0.2 %/h); grain, eggs, pastry and dried goods
nothing that matters within the 2–20 minutes before a re-weigh.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from weighing.metrology import GoodsCategory as C


@dataclass(frozen=True, slots=True)
class Goods:
    plu: str
    name: str  # zh-CN, as on the price board
    category: C
    price_fen_per_kg: tuple[int, int]  # range of registered prices, fen/kg
    weight_g: tuple[int, int]  # range of one purchase, grams
    tray: bool = False  # sold in a tray that must be tared (连盘出售 if not)
    #: mass lost to dripping or drying after the sale, % per hour (range; honest
    #: ``drip-dry`` variation, fleet_honest.py): a simulation assumption [L], see LOSS note
    loss_pct_per_h: tuple[float, float] = (0.0, 0.0)


CATALOGUE: tuple[Goods, ...] = (
    Goods("1001", "西红柿", C.VEGETABLES, (500, 900), (300, 1500), loss_pct_per_h=(0.02, 0.1)),
    Goods("1002", "黄瓜", C.VEGETABLES, (400, 800), (250, 1200), loss_pct_per_h=(0.1, 0.2)),
    Goods("1003", "土豆", C.VEGETABLES, (250, 500), (500, 2500), loss_pct_per_h=(0.01, 0.03)),
    Goods("1004", "青椒", C.VEGETABLES, (600, 1200), (200, 800), loss_pct_per_h=(0.05, 0.15)),
    Goods("1005", "大白菜", C.VEGETABLES, (150, 400), (1000, 3000), loss_pct_per_h=(0.3, 2.0)),
    Goods("1006", "菠菜", C.VEGETABLES, (600, 1400), (250, 800), loss_pct_per_h=(1.0, 5.0)),
    Goods("2001", "苹果", C.FRUIT, (800, 1600), (500, 2500), loss_pct_per_h=(0.01, 0.03)),
    Goods("2002", "香蕉", C.FRUIT, (500, 1000), (500, 2000), loss_pct_per_h=(0.02, 0.05)),
    Goods("2003", "橙子", C.FRUIT, (600, 1400), (500, 2500), loss_pct_per_h=(0.01, 0.03)),
    Goods("2004", "葡萄", C.FRUIT, (1200, 3000), (300, 1500), loss_pct_per_h=(0.05, 0.2)),
    Goods("3001", "大米", C.GRAIN, (500, 900), (1000, 5000)),
    Goods("3002", "面粉", C.GRAIN, (400, 700), (1000, 5000)),
    Goods("3003", "鸡蛋", C.EGGS, (900, 1400), (500, 2000)),
    Goods("4001", "猪肉", C.MEAT, (2400, 3600), (300, 1500), tray=True, loss_pct_per_h=(0.1, 0.5)),
    Goods("4002", "牛肉", C.MEAT, (7000, 9000), (300, 1000), tray=True, loss_pct_per_h=(0.1, 0.5)),
    Goods("4003", "羊肉", C.MEAT, (7000, 9500), (300, 1000), tray=True, loss_pct_per_h=(0.1, 0.5)),
    Goods("4004", "排骨", C.MEAT, (3600, 5000), (300, 1500), tray=True, loss_pct_per_h=(0.1, 0.5)),
    Goods("5001", "鸡肉", C.POULTRY, (1800, 3000), (400, 1500), tray=True,
          loss_pct_per_h=(0.2, 1.0)),
    Goods("5002", "草鱼", C.AQUATIC_PRODUCTS, (1600, 2600), (500, 2000), tray=True,
          loss_pct_per_h=(1.0, 4.0)),
    Goods("5003", "基围虾", C.AQUATIC_PRODUCTS, (6000, 12000), (200, 800), tray=True,
          loss_pct_per_h=(2.0, 8.0)),
    Goods("6001", "糕点", C.PASTRY, (2000, 6000), (200, 800)),
    Goods("7001", "黑木耳", C.DRIED_VEGETABLES, (8000, 16000), (50, 300)),
    Goods("7002", "干香菇", C.DRIED_VEGETABLES, (6000, 14000), (50, 300)),
    Goods("7003", "红枣", C.DRIED_VEGETABLES, (3000, 6000), (200, 1000)),
)
BY_PLU = {g.plu: g for g in CATALOGUE}
TRAY_WEIGHT_G = (15, 45)  # a foam or plastic tray


@dataclass(frozen=True, slots=True)
class StallType:
    """A kind of stall: the goods it sells and the zh name of its category column."""

    name: str
    label_zh: str
    plus: tuple[str, ...]
    weight: float  # share of stalls in a market


STALL_TYPES: tuple[StallType, ...] = (
    StallType("vegetables", "蔬菜", ("1001", "1002", "1003", "1004", "1005", "1006"), 0.35),
    StallType("fruit", "水果", ("2001", "2002", "2003", "2004"), 0.15),
    StallType("grain", "粮油", ("3001", "3002"), 0.08),
    StallType("meat", "肉类", ("4001", "4002", "4003", "4004"), 0.20),
    StallType("poultry_aquatic", "禽、水产", ("5001", "5002", "5003"), 0.12),
    StallType("pastry", "糕点", ("6001", "3003"), 0.03),
    StallType("dried", "干货", ("7001", "7002", "7003"), 0.07),
)
STALLS = {s.name: s for s in STALL_TYPES}


def registered_price(goods: Goods, rng: random.Random) -> int:
    """A registered price in the goods' range: a multiple of 10 fen, whole yuan half the time."""
    lo, hi = goods.price_fen_per_kg
    step = 100 if rng.random() < 0.5 else 10
    price = rng.randrange(lo, hi + 1)
    return max(step, price // step * step)


def purchase_mg(goods: Goods, rng: random.Random) -> int:
    """The true mass of one purchase, mg (log-uniform: many small, few large purchases)."""
    lo, hi = goods.weight_g
    return int(lo * 1000 * (hi / lo) ** rng.random())
