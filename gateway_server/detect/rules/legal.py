"""Legal grounds of every finding kind and verdict: the one place they are written.

Rules of this module:

* Each ground names the article that actually applies, in Chinese (the citation a case file
  carries) and in English (a gloss for the English UI). docs/metrology.md "Legal grounds"
  mirrors :data:`KIND_GROUNDS` and :data:`VERDICT_GROUNDS` row for row, with the sources
  and how far each article number was verified; ``tests/gateway_server/test_legal.py``
  fails when the two differ.
* An article number is written only where a source confirmed it. Where the content of a
  rule is confirmed but its number is not (集贸市场计量监督管理办法 2024, the 2022 price-fraud
  rule's list, the 计量法 article on damaging accuracy), the ground names the rule without a
  number and says so ("条号未核实").
* Technical findings (a bad signature, a sequence gap, an identity mismatch, a scale offline)
  cite no law: :data:`LEGAL_TECHNICAL`. Observations that are not a breach say so too.
* The detectors import the ``LEGAL_*`` strings from here, so a stored finding carries the
  same text; the API shows the ground of the finding's *kind* from :func:`ground_for`, so
  findings stored under older texts read the reviewed ground as well.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ground:
    """A legal ground: the citation (zh), its English gloss, and whether it is law."""

    zh: str
    en: str
    technical: bool = False


# -- the citations (sources and verification: docs/metrology.md "Legal grounds") ---------------

RETAIL = "零售商品称重计量监督管理办法"  # 总局令第66号 (2004), 第31号修订 (2020)
RULES = "计量法实施细则"
MARKETS = "集贸市场计量监督管理办法（2024 修订）"  # in force 2025-03-01
PRICE_RULE = "明码标价和禁止价格欺诈规定（总局令第56号）"

LEGAL_TECHNICAL = "技术性发现（无法律依据）/ technical"
TECHNICAL = Ground("技术性发现（无法律依据）", "technical finding (no legal basis)", technical=True)

#: short weight by the scale's own readings: settled at more than the goods weighed
LEGAL_CHEATING = (f"{RETAIL} 第四条（按实际示值结算）、第五条（负偏差）；"
                  f"{RULES} 第四十六条（破坏计量器具准确度、伪造数据）；"
                  f"{MARKETS}：不得使用具有作弊功能的计量器具（条号未核实）")
CHEATING = Ground(LEGAL_CHEATING,
                  "Retail weighing rules Art. 4 (settle at the actual indication), Art. 5 "
                  "(negative deviation); Metrology Law Implementing Rules Art. 46 (damaging "
                  "an instrument's accuracy, falsifying data); Market metrology rules 2024: "
                  "no instrument with a cheating function (article no. not verified)")
LEGAL_TARE = f"{RETAIL} 第四条（按实际示值结算，结算重量为商品净重）、第五条（负偏差）"
TARE = Ground(LEGAL_TARE, "Retail weighing rules Art. 4 (settle the net weight at the actual "
              "indication), Art. 5 (negative deviation)")
LEGAL_IMPACT = f"{RETAIL} 第四条（按实际示值结算）"
IMPACT = Ground(LEGAL_IMPACT, "Retail weighing rules Art. 4 (settle at the actual indication)")
LEGAL_ZERO = "JJG 539 / OIML R76-1 置零准确度 ±0.25 e（技术要求）"
ZERO = Ground(LEGAL_ZERO, "JJG 539 / OIML R76-1 zero-setting accuracy ±0.25 e (technical "
              "requirement)")
LEGAL_PRICE = f"价格法 第十三条（明码标价）；{PRICE_RULE}"
PRICE = Ground(LEGAL_PRICE, "Price Law Art. 13 (marked prices); Rules on marked prices and "
               "price fraud (SAMR Order 56)")
LEGAL_PRICE_FRAUD = (f"价格法 第十四条第（四）项（价格欺诈）；{PRICE_RULE} 价格欺诈条款"
                     "（以低价诱骗、以高价结算；条号未核实）")
PRICE_FRAUD = Ground(LEGAL_PRICE_FRAUD,
                     "Price Law Art. 14 (4) (price fraud); SAMR Order 56, price-fraud clause "
                     "(lure with a low price, settle at a high one; article no. not verified)")
LEGAL_AMOUNT = f"{RETAIL} 第四条（按实际示值结算）；价格法 第十四条第（四）项（价格欺诈）"
AMOUNT = Ground(LEGAL_AMOUNT, "Retail weighing rules Art. 4 (settle at the actual indication); "
                "Price Law Art. 14 (4) (price fraud)")
LEGAL_ART3 = f"{RETAIL} 第三条（使用合格计量器具，最大允许误差优于或等于商品负偏差）"
ART3 = Ground(LEGAL_ART3, "Retail weighing rules Art. 3 (a verified instrument whose MPE is no "
              "larger than the goods' negative deviation)")
LEGAL_SEAL = (f"{MARKETS}：不得使用铅（签）封已损坏的计量器具、"
              "不得破坏计量器具准确度（条号未核实）；"
              f"{RULES} 第四十六条；JJG 539 / OIML G 18 事件计数器（计数变化等同破坏封印）")
SEAL = Ground(LEGAL_SEAL,
              "Market metrology rules 2024: no instrument with a broken seal, no damaging of "
              "accuracy (article no. not verified); Implementing Rules Art. 46; JJG 539 / "
              "OIML G 18 event counter (a change equals a broken seal)")
LEGAL_KFACTOR = f"{RULES} 第四十六条（破坏计量器具准确度）；JJG 539 使用中检查最大允许误差"
KFACTOR = Ground(LEGAL_KFACTOR, "Implementing Rules Art. 46 (damaging an instrument's "
                 "accuracy); JJG 539 in-service MPE")
LEGAL_RESIDUAL = (f"JJG 539 / OIML R76-1 使用中检查最大允许误差；{RETAIL} 第三条（合格计量器具）、"
                  "第五条（负偏差）")
RESIDUAL = Ground(LEGAL_RESIDUAL, "JJG 539 / OIML R76-1 in-service MPE; Retail weighing rules "
                  "Art. 3 (a conforming instrument), Art. 5 (negative deviation)")
LEGAL_REWEIGH = f"{RETAIL} 第五条（负偏差）、第六条（核称方法：同等准确度 2 倍）"
REWEIGH = Ground(LEGAL_REWEIGH, "Retail weighing rules Art. 5 (negative deviation), Art. 6 "
                 "(re-weigh methods: twice on a scale of equal accuracy)")
LEGAL_TRACE = (f"入场经营协议（{MARKETS} 要求集市主办者与经营者签订；条号未核实）；"
               "观察，非违法认定")
TRACE = Ground(LEGAL_TRACE, "market entry agreement (required by the 2024 market metrology "
               "rules; article no. not verified); an observation, not a breach")
LEGAL_UNTRACKED = (f"{MARKETS}：经营者应当使用计量器具进行测量而未使用（条号未核实）；"
                   f"{RETAIL} 第五条；另用的秤未经强制检定的：计量法 第九条；入场经营协议")
UNTRACKED = Ground(LEGAL_UNTRACKED,
                   "Market metrology rules 2024: goods to be measured sold without the "
                   "instrument (article no. not verified); Retail weighing rules Art. 5; if the "
                   "other scale is unverified: Metrology Law Art. 9; the market entry agreement")
LEGAL_OVERDUE = (f"计量法 第九条（贸易结算计量器具强制检定，未按规定申请检定不得使用）；"
                 f"{RULES} 第二十五条、第四十三条")
OVERDUE = Ground(LEGAL_OVERDUE, "Metrology Law Art. 9 (compulsory verification of trade "
                 "instruments; not to be used unverified); Implementing Rules Art. 25, Art. 43")
LEGAL_NOT_JUDGED = "观察记录（无法律依据）/ observation"
NOT_JUDGED = Ground("观察记录（无法律依据）", "observation (no legal basis)", technical=True)

# a merchant's complaint left unanswered past the trust programme's deadline (issue 19,
# gateway_server/casework/complaints.py): a commitment of the programme, no statute
PROGRAMME = Ground("放心消费承诺：限时答复投诉（项目规则，非法定条款）",
                   "trust-programme commitment: answer complaints in time (a programme rule, "
                   "not a statutory article)")

#: every finding kind → its ground (the API shows these; docs/metrology.md mirrors them)
KIND_GROUNDS: dict[str, Ground] = {
    "impact": IMPACT,
    "impact-repeated": CHEATING,
    "zero-offset": ZERO,
    "zero-offset-persistent": CHEATING,
    "tare-omission": TARE,
    "untared-tray-goods": TARE,
    "amount-mismatch": AMOUNT,
    "price-decimal-trick": PRICE_FRAUD,
    "price-mismatch": PRICE,
    "scale-too-coarse": ART3,
    "calibration-change": SEAL,
    "k-factor-drift": KFACTOR,
    "residual-gain": RESIDUAL,
    "residual-additive": RESIDUAL,
    "residual-both": RESIDUAL,
    "residual-excess": RESIDUAL,
    "reweigh-short": REWEIGH,
    "untracked-sales": UNTRACKED,
    "idle-while-peers-trade": TRACE,
    "verification-overdue": OVERDUE,
    "not-judged": NOT_JUDGED,
    "offline-trading-hours": TECHNICAL,
    "bad-signature": TECHNICAL,
    "sequence-gap": TECHNICAL,
    "identity-mismatch": TECHNICAL,
    "complaint-overdue": PROGRAMME,
}

#: verdicts of an inspection, a re-weigh and their consequences
VERDICT_GROUNDS: dict[str, Ground] = {
    "inspection-pass": Ground("JJG 539 / OIML R76-1 使用中检查最大允许误差（检定 MPE 的 2 倍）",
                              "JJG 539 / OIML R76-1 in-service MPE (twice the verification MPE)"),
    "inspection-fail": Ground(f"JJG 539 使用中检查最大允许误差；{RULES} 第四十三条"
                              "（不合格继续使用：责令停止使用，可并处罚款）",
                              "JJG 539 in-service MPE; Implementing Rules Art. 43 (use after "
                              "failing: stop using it, a fine)"),
    "fraud": Ground(f"{RULES} 第四十六条；{MARKETS}：使用作弊功能计量器具构成欺诈的适用消费者权益"
                    "保护法 第五十五条（退一赔三，至少 500 元）",
                    "Implementing Rules Art. 46; Market metrology rules 2024: cheating that is "
                    "fraud falls under Consumer Protection Law Art. 55 (refund + 3 × the price, "
                    "at least 500 yuan)"),
    "reweigh-violation": Ground(f"{RETAIL} 第五条、第六条；商品量计量违法行为处罚规定 第五条",
                                "Retail weighing rules Art. 5, Art. 6; Rules on penalties for "
                                "quantity violations Art. 5"),
    "cards": Ground(f"{MARKETS}：集市主办者红黄牌警示制度（鼓励性规定，条号未核实）",
                    "Market metrology rules 2024: the market operator's red / yellow card "
                    "warnings (encouraged, article no. not verified)"),
}


def ground_for(kind: str, stored: str = "") -> Ground:
    """The reviewed ground of a finding ``kind``; an unknown kind keeps its stored text."""
    g = KIND_GROUNDS.get(kind)
    if g is not None:
        return g
    return Ground(stored, stored) if stored else TECHNICAL
