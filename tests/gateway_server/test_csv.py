"""Register CSV (登记造册): zh/en headers, BOM and GB18030, row errors, idempotence, round trip,
the HTTP endpoints and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest import CODE_A, CODE_B, CODE_C
from gateway_server import cli
from gateway_server.registry import register as reg
from gateway_server.registry.register_csv import CsvFormatError, export_register, import_register
from gateway_server.store.database import Store
from gateway_server.store.tables import bindings, merchants, scales

T0 = 1_750_000_000_000
H = 3_600_000

ZH = (
    "市场编号,商户名称,统一社会信用代码,摊位号,经营类别,设备编号,型号,出厂编号,最大秤量,分度值,"
    "准确度等级,用途,检定证书编号,检定日期,有效期至\n"
    f"m1,张三蔬菜,{CODE_A},A-01,蔬菜、水果,s-1,ACS-15,SN001,15 kg,5 g,III,交易,JD-001,2025-03-01,2026-02-28\n"
    f"m1,李四水产,{CODE_B},B-02,水产,s-2,ACS-30,SN002,30 kg,10 g,III,trade,JD-002,2025-03-01,2026-02-28\n"
    f"m1,张三蔬菜,{CODE_A},A-01,蔬菜、水果,s-3,ACS-15,SN003,15 kg,5 g,III,交易,JD-003,2025-03-01,2026-02-28\n"
    ",,,,,fair-1,TCS-60,SN100,60 kg,20 g,III,公平秤,JD-100,2025-03-01,2026-02-28\n"
)
EN = (
    "Market,Merchant Name,credit_code,stall_no,categories,device,model,serial,max,e,"
    "accuracy_class,role,cert_no,verified_on,due_on\n"
    f"m1,Wang Wu,{CODE_C},C-03,meat,s-10,X1,SN010,15000000,5000,III,trade,JD-010,2025/3/1,2026/2/28\n"
)


@pytest.fixture
def market(store: Store) -> Store:
    with store.engine.begin() as conn:
        reg.create_market(conn, "m1", name="东门农贸市场", now_ms=T0)
    return store


def run(store: Store, data: bytes | str, at: int = T0, market: str = "m1"):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        return import_register(conn, market, data, now_ms=at)


def test_zh_headers_with_bom_import_scales_merchants_and_bindings(market: Store) -> None:
    rep = run(market, "\ufeff".encode() + ZH.encode("utf-8"))
    assert (rep.imported, rep.updated, rep.unchanged, rep.errors) == (4, 0, 0, [])
    with market.engine.connect() as conn:
        s1 = reg.get_scale_row(conn, "s-1")
        assert (s1["max_mg"], s1["e_mg"], s1["accuracy_class"], s1["role"]) == (
            15_000_000, 5_000, "III", "trade")
        assert s1["due_on_ms"] == reg.parse_date_ms("2026-02-28") and s1["cert_no"] == "JD-001"
        assert reg.get_scale_row(conn, "fair-1")["role"] == "fair"
        assert len(s1["key_hex"]) == 64  # generated
        zhang = reg.binding_at(conn, "s-1", T0)
        assert zhang == reg.binding_at(conn, "s-3", T0) is not None  # one merchant, two scales
        assert reg.get_merchant(conn, zhang)["categories"] == ["蔬菜", "水果"]
        assert reg.binding_at(conn, "s-1", T0 - 1) is None  # bound from the import time
        assert reg.binding_at(conn, "fair-1", T0) is None
        assert conn.execute(select(func.count()).select_from(merchants)).scalar_one() == 2


def test_en_headers_and_integers_in_mg(market: Store) -> None:
    rep = run(market, EN)
    assert (rep.imported, rep.errors) == (1, [])
    with market.engine.connect() as conn:
        row = reg.get_scale_row(conn, "s-10")
        assert (row["max_mg"], row["e_mg"]) == (15_000_000, 5_000)
        assert reg.get_merchant(conn, reg.binding_at(conn, "s-10", T0))["credit_code"] == CODE_C


def test_gb18030_file(market: Store) -> None:
    rep = run(market, ZH.encode("gb18030"))
    assert (rep.imported, rep.errors) == (4, [])
    with market.engine.connect() as conn:
        assert reg.list_merchants(conn, q="张三")[1] == 1


def test_row_errors_name_row_and_column_and_good_rows_land(market: Store) -> None:
    bad = ZH.splitlines()[0] + "\n" + "\n".join([
        f"m1,张三蔬菜,{CODE_A},A-01,蔬菜,s-1,ACS-15,SN001,15 kg,5 g,III,交易,JD-001,2025-03-01,2026-02-28",  # 2 ok
        "m1,坏代码,91350100M000100Y44,A-02,蔬菜,s-2,,,15 kg,5 g,III,交易,,,",  # 3 credit code
        "m1,单位错,,A-03,蔬菜,s-3,,,15 斤,5 g,III,交易,,,",  # 4 unit
        "m1,日期错,,A-04,蔬菜,s-4,,,15 kg,5 g,III,交易,,2025-02-30,",  # 5 date
        "m1,等级不符,,A-05,蔬菜,s-5,,,30 kg,1 g,III,交易,,,",  # 6 n = 30000 > 10000
        "m1,用途错,,A-06,蔬菜,s-6,,,15 kg,5 g,III,称重,,,",  # 7 role
        "m1,无设备,,A-07,蔬菜,,,,15 kg,5 g,III,交易,,,",  # 8 device
        "m1,重复,,A-08,蔬菜,s-1,,,15 kg,5 g,III,交易,,,",  # 9 device again
        "m2,别的市场,,A-09,蔬菜,s-9,,,15 kg,5 g,III,交易,,,",  # 10 market
        "m1,好的,,A-10,蔬菜,s-10,,,6 kg,2 g,III,交易,,,",  # 11 ok
    ]) + "\n"
    rep = run(market, bad)
    assert rep.imported == 2
    got = {(e.row, e.column) for e in rep.errors}
    assert got == {(3, "统一社会信用代码"), (4, "最大秤量"), (5, "检定日期"), (6, "最大秤量"),
                   (7, "用途"), (8, "设备编号"), (9, "设备编号"), (10, "市场编号")}
    msgs = {e.row: e.message for e in rep.errors}
    assert "check character" in msgs[3] and "斤" in msgs[4] and "row 2" in msgs[9]
    assert "10000" in msgs[6] and "m2" in msgs[10]
    with market.engine.connect() as conn:
        got_devices = conn.execute(select(scales.c.device).order_by(scales.c.device)).scalars()
        assert list(got_devices) == ["s-1", "s-10"]


def test_class_ii_scales_are_checked_against_their_own_rows(market: Store) -> None:
    """A 15 kg / 1 g fair scale is class II (n = 15,000, OIML R76-1 Table 3); a class II
    scale with e ≥ 0.1 g needs n ≥ 5,000, so 15 kg / 5 g is not one (was imported unchecked)."""
    rows = ZH.splitlines()[0] + "\n" + "\n".join([
        ",,,,,fair-2,TCS-15,SN200,15 kg,1 g,II,公平秤,JD-200,2025-03-01,2026-02-28",  # 2 ok
        ",,,,,fair-3,TCS-15,SN201,15 kg,5 g,II,公平秤,JD-201,2025-03-01,2026-02-28",  # 3
    ]) + "\n"
    rep = run(market, rows)
    assert rep.imported == 1
    assert [(e.row, e.column) for e in rep.errors] == [(3, "最大秤量")]
    assert "5000" in rep.errors[0].message


def test_missing_required_column_is_a_file_error(market: Store) -> None:
    rep = run(market, "设备编号,型号\ns-1,X\n")
    assert [(e.row, e.column) for e in rep.errors] == [(1, "商户名称")]
    assert rep.imported == 0
    with pytest.raises(CsvFormatError):
        run(market, b"")


def test_unknown_columns_are_warned_and_ignored(market: Store) -> None:
    rep = run(market, "设备编号,商户名称,备注\ns-1,张三,随便\n")
    assert rep.imported == 1 and rep.errors == []
    assert [(w.row, w.column) for w in rep.warnings] == [(1, "备注")]


def test_reimport_is_idempotent(market: Store) -> None:
    run(market, ZH)
    with market.engine.connect() as conn:
        before = [conn.execute(select(t)).all() for t in (scales, merchants, bindings)]
    rep = run(market, ZH, at=T0 + H)
    assert (rep.imported, rep.updated, rep.unchanged, rep.errors) == (0, 0, 4, [])
    with market.engine.connect() as conn:
        assert [conn.execute(select(t)).all() for t in (scales, merchants, bindings)] == before


def test_changed_merchant_rebinds_from_the_import_time(market: Store) -> None:
    run(market, ZH)
    t2 = T0 + 24 * H
    changed = ZH.replace(f"m1,张三蔬菜,{CODE_A},A-01,蔬菜、水果,s-3",
                         f"m1,李四水产,{CODE_B},B-02,水产,s-3")
    rep = run(market, changed, at=t2)
    assert (rep.imported, rep.updated, rep.unchanged) == (0, 1, 3)
    with market.engine.connect() as conn:
        zhang = reg.binding_at(conn, "s-1", t2)
        li = reg.binding_at(conn, "s-2", t2)
        assert reg.binding_at(conn, "s-3", t2 - 1) == zhang
        assert reg.binding_at(conn, "s-3", t2) == li
    assert run(market, changed, at=t2 + H).unchanged == 4


def test_changed_scale_fields_are_updated(market: Store) -> None:
    run(market, ZH)
    rep = run(market, ZH.replace("JD-002,2025-03-01,2026-02-28", "JD-202,2026-03-01,2027-02-28"))
    assert (rep.updated, rep.unchanged) == (1, 3)
    with market.engine.connect() as conn:
        assert reg.get_scale_row(conn, "s-2")["cert_no"] == "JD-202"


def test_same_merchant_with_different_details_in_one_file_is_an_error(market: Store) -> None:
    data = ZH.replace(f"{CODE_A},A-01,蔬菜、水果,s-3", f"{CODE_A},A-99,蔬菜、水果,s-3")
    rep = run(market, data)
    assert [(e.row, e.column) for e in rep.errors] == [(4, "商户名称")]
    assert rep.imported == 3


def test_device_of_another_market_is_refused(market: Store) -> None:
    run(market, ZH)
    with market.engine.begin() as conn:
        reg.create_market(conn, "m2", name="西门市场", now_ms=T0)
    rep = run(market, ZH.replace("m1,", "m2,").replace(CODE_A, CODE_C), market="m2")
    assert {e.row for e in rep.errors if e.column == "设备编号"} == {2, 3, 4, 5}


def test_export_import_round_trip(market: Store, tmp_path: Path) -> None:
    run(market, ZH)
    with market.engine.connect() as conn:
        text = export_register(conn, "m1", now_ms=T0 + H)
        with_keys = export_register(conn, "m1", now_ms=T0 + H, include_keys=True, lang="en")
    assert text.splitlines()[0].startswith("市场编号,商户名称") and "设备密钥" not in text
    assert "15 kg,5 g,III,trade" in text and "2026-02-28" in text and "蔬菜、水果" in text
    with market.engine.connect() as conn:
        keys = {r["device"]: r["key_hex"] for r in reg.list_register(conn, market_id="m1")[0]}
    assert all(k in with_keys for k in keys.values())
    # the export re-imports into the same register without a change
    rep = run(market, "\ufeff" + text, at=T0 + 2 * H)
    assert (rep.unchanged, rep.errors) == (4, [])
    # and into an empty register it rebuilds the same register, keys included
    other = Store.from_url(f"sqlite:///{tmp_path}/other.db")
    other.create_all()
    with other.engine.begin() as conn:
        reg.create_market(conn, "m1", name="东门", now_ms=T0)
    assert run(other, with_keys.encode("utf-8")).imported == 4
    with other.engine.connect() as conn:
        again = export_register(conn, "m1", now_ms=T0 + H, include_keys=True, lang="en")
    other.engine.dispose()
    assert again == with_keys


def test_tab_separated_file(market: Store) -> None:
    rep = run(market, ZH.replace(",", "\t"))
    assert (rep.imported, rep.errors) == (4, [])


# -- HTTP ------------------------------------------------------------------------------------

def test_http_import_text_csv_and_multipart_and_export(client, admin, inspector) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/v1/markets", json={"id": "m1", "name": "东门"},
                       headers=admin).status_code == 201
    r = client.post("/api/v1/markets/m1/register.csv", content=ZH.encode("utf-8-sig"),
                    headers={**admin, "Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json() == {
        "imported": 4, "updated": 0, "unchanged": 0, "errors": [], "warnings": []}
    r = client.post("/api/v1/markets/m1/register.csv", headers=admin,
                    files={"file": ("register.csv", ZH.encode("gb18030"), "text/csv")})
    assert r.status_code == 200 and r.json()["unchanged"] == 4
    bad = ZH.replace("15 kg,5 g,III,交易,JD-001", "15 kg,5 g,V,交易,JD-001")
    r = client.post("/api/v1/markets/m1/register.csv", content=bad.encode(), headers=admin)
    assert r.json()["errors"] == [{"row": 2, "column": "准确度等级",
                                   "message": "'V' is not I, II, III or IIII"}]
    r = client.get("/api/v1/markets/m1/register.csv", headers=inspector)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf") and "设备密钥" not in r.text
    assert client.get("/api/v1/markets/m1/register.csv?include_keys=true",
                      headers=inspector).status_code == 403
    r = client.get("/api/v1/markets/m1/register.csv?include_keys=true&lang=en", headers=admin)
    assert r.status_code == 200 and r.text.lstrip("\ufeff").startswith("market,merchant_name")
    assert ",key" in r.text.splitlines()[0]
    assert client.post("/api/v1/markets/m1/register.csv", content=ZH.encode(),
                       headers=inspector).status_code == 403
    assert client.get("/api/v1/markets/m9/register.csv", headers=admin).status_code == 404
    assert client.post("/api/v1/markets/m9/register.csv", content=ZH.encode(),
                       headers=admin).status_code == 404


# -- CLI -------------------------------------------------------------------------------------

def test_cli_import_and_export(store: Store, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    url = store.engine.url.render_as_string(hide_password=False)
    f = tmp_path / "register.csv"
    f.write_bytes(ZH.encode("utf-8-sig"))
    assert cli.main(["import", "--market", "m1", "--database-url", url, str(f)]) == 2  # no market
    assert cli.main(["import", "--market", "m1", "--market-name", "东门", "--database-url", url,
                     str(f)]) == 0
    assert "imported 4" in capsys.readouterr().out
    f.write_bytes((ZH + "m1,x,,,,s-9,,,15 斤,5 g,III,,,,\n").encode())
    assert cli.main(["import", "--market", "m1", "--database-url", url, str(f)]) == 1
    out = capsys.readouterr()
    assert "unchanged 4" in out.out and "row 6, column 最大秤量" in out.err
    out_file = tmp_path / "out.csv"
    assert cli.main(["export", "--market", "m1", "--database-url", url, "-o", str(out_file)]) == 0
    assert out_file.read_bytes().startswith(b"\xef\xbb\xbf")
    assert "s-1" in out_file.read_text(encoding="utf-8-sig")
