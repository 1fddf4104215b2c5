"""The legal grounds: docs/metrology.md's tables mirror gateway_server/detect/rules/legal.py,
the detectors store the module's texts, and technical findings cite no law."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway_server.api.routes.inspection import _finding
from gateway_server.detect.rules import kfactor, legal, offline, stream, untraced

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrology.md"


def _table(name: str) -> dict[str, tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- legal-grounds:{name} -->\n(.*?)<!-- /legal-grounds:{name} -->",
                  text, re.S)
    assert m, f"docs/metrology.md has no legal-grounds:{name} table"
    rows = {}
    for line in m.group(1).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = cells[0].strip("`")
        assert key not in rows, f"{key} twice in the doc table"
        rows[key] = (cells[1], cells[2])
    return rows


@pytest.mark.parametrize(("name", "grounds"), [("kinds", legal.KIND_GROUNDS),
                                               ("verdicts", legal.VERDICT_GROUNDS)])
def test_doc_table_mirrors_the_module(name: str, grounds: dict[str, legal.Ground]) -> None:
    doc = _table(name)
    assert set(doc) == set(grounds), "rows differ: " + str(set(doc) ^ set(grounds))
    for key, g in grounds.items():
        assert doc[key] == (g.zh, g.en), key


def test_every_kind_the_ui_names_has_a_ground() -> None:
    i18n = (Path(__file__).resolve().parents[2] / "gateway_server" / "static" / "js"
            / "i18n.js").read_text(encoding="utf-8")
    block = i18n[i18n.index("const KIND = {"):]
    kinds = set(re.findall(r'^\s+"([a-z0-9-]+)": \[', block[:block.index("};")], re.M))
    assert kinds and kinds <= set(legal.KIND_GROUNDS), kinds - set(legal.KIND_GROUNDS)


def test_technical_findings_cite_no_law() -> None:
    for kind in ("bad-signature", "sequence-gap", "identity-mismatch", "offline-trading-hours"):
        g = legal.KIND_GROUNDS[kind]
        assert g.technical and g.zh == "技术性发现（无法律依据）"
        assert legal.LEGAL_TECHNICAL == "技术性发现（无法律依据）/ technical"  # stored
        assert "法" not in g.zh.replace("无法律依据", "")


def test_cheating_no_longer_cites_compulsory_verification() -> None:
    # 计量法 第九条 is compulsory verification: the ground of an overdue scale only (and of
    # a second scale if it turns out unverified)
    for kind, g in legal.KIND_GROUNDS.items():
        if "计量法 第九条" in g.zh:
            assert kind in {"verification-overdue", "untracked-sales"}, kind
    assert "architecture.md" not in repr(legal.KIND_GROUNDS)


def test_detectors_store_the_modules_texts() -> None:
    assert stream.LEGAL_CHEATING is legal.LEGAL_CHEATING
    assert stream.LEGAL_PRICE is legal.LEGAL_PRICE
    assert untraced.LEGAL_UNTRACKED is legal.LEGAL_UNTRACKED
    assert kfactor.LEGAL_KFACTOR is legal.LEGAL_KFACTOR
    assert offline.LEGAL_TECHNICAL is legal.LEGAL_TECHNICAL
    sc = stream.ScaleCtx("s-1", "m1", e_mg=5_000, max_mg=15_000_000)
    (f,) = stream.check_sale({"ts_ms": 1, "seq": 1, "net_mg": 198_000, "settled_mg": 155_000,
                              "peak_mg": 198_000, "unsettled_commit": True}, sc)
    assert f.kind == "impact" and f.legal_basis == legal.LEGAL_CHEATING


def test_api_shows_the_kinds_reviewed_ground_over_a_stored_old_text() -> None:
    row = {"id": 1, "kind": "bad-signature", "legal_basis": "数据完整性 (architecture.md §4)",
           "evidence": "{}", "dedup_key": "x"}
    out = _finding(row)
    assert out["legal_basis"] == "技术性发现（无法律依据）" and out["legal_technical"] is True
    out = _finding(row | {"kind": "impact-repeated", "legal_basis": "计量法 第九条"})
    assert "第四十六条" in out["legal_basis"] and "Art. 46" in out["legal_basis_en"]
    assert not out["legal_technical"]
    # a kind the module does not know keeps what the detector stored
    assert _finding(row | {"kind": "new-kind", "legal_basis": "X"})["legal_basis"] == "X"
