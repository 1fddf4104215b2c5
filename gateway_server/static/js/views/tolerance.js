// The tolerance calculator: MPE at a load (JJG 539 / OIML R76) and the retail negative
// deviation with the re-weigh limits (总局令第66号). The API computes, exactly.
import { api } from "../api.js";
import { card, h, kv } from "../dom.js";
import { fracKg, kg, parseKg, parseYuan } from "../format.js";
import { CATEGORIES, L, categoryText, methodText } from "../i18n.js";

export async function render(root) {
  root.appendChild(h("h1", {}, L("允差计算", "Tolerance calculator")));
  const load = h("input", { id: "mpe-load", value: "2.5", inputmode: "decimal" });
  const e = h("input", { id: "mpe-e", value: "0.005", inputmode: "decimal" });
  const max = h("input", { id: "mpe-max", value: "15", inputmode: "decimal" });
  const cls = h("select", { id: "mpe-class" }, ["III", "IIII", "II", "I"].map((c) => h("option", { value: c }, c)));
  const stage = h("select", { id: "mpe-stage" },
    h("option", { value: "in_service" }, L("使用中检查（2 倍）", "In service (2×)")),
    h("option", { value: "subsequent_verification" }, L("后续检定", "Subsequent verification")),
    h("option", { value: "initial_verification" }, L("首次检定", "Initial verification")));
  const out1 = h("div", { id: "mpe-out", class: "calc-out" });
  const f1 = h("form", { class: "card calc" }, h("h2", {}, L("最大允许误差 MPE", "Maximum permissible error")),
    h("div", { class: "form-grid" },
      h("label", {}, L("载荷 (kg)", "Load (kg)"), load), h("label", {}, L("分度值 e (kg)", "e (kg)"), e),
      h("label", {}, L("最大秤量 Max (kg)", "Max (kg)"), max), h("label", {}, L("准确度等级", "Class"), cls),
      h("label", {}, L("阶段", "Stage"), stage)),
    h("button", { type: "submit" }, L("计算", "Compute")), out1);
  f1.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out1.replaceChildren();
    const p = { load_mg: parseKg(load.value), e_mg: parseKg(e.value), max_mg: parseKg(max.value), accuracy_class: cls.value, stage: stage.value };
    if (p.load_mg === null || p.e_mg === null) { out1.appendChild(h("p", { class: "error" }, L("请以 kg 填写", "Enter kg"))); return; }
    try {
      const r = await api("/metrology/mpe", { params: p });
      out1.append(h("p", { class: "big" }, "± " + fracKg(r.mpe_mg) + " kg"),
        kv([[L("载荷", "Load"), kg(r.load_mg) + " kg"], ["e", kg(r.e_mg) + " kg"], [L("以 e 计", "in e"), fracE(r.mpe_mg_num, r.mpe_mg_den, r.e_mg)],
          [L("依据", "Source"), L("JJG 539 / OIML R76-1 表 6；使用中检查为检定的 2 倍", "JJG 539 / OIML R76-1 Table 6; in service = 2 × verification")]]));
    } catch (err) { out1.appendChild(h("p", { class: "error" }, String(err.message || err))); }
  });

  const weight = h("input", { id: "rd-weight", value: "0.5", inputmode: "decimal" });
  const cat = h("select", { id: "rd-category" }, h("option", { value: "" }, L("（按单价）", "(by unit price)")),
    CATEGORIES.map((c) => h("option", { value: c, selected: c === "vegetables" }, categoryText(c))));
  const price = h("input", { id: "rd-price", placeholder: L("例如 12.50", "e.g. 12.50"), inputmode: "decimal" });
  const out2 = h("div", { id: "rd-out", class: "calc-out" });
  const f2 = h("form", { class: "card calc" }, h("h2", {}, L("零售商品称重允许负偏差", "Retail negative deviation")),
    h("div", { class: "form-grid" },
      h("label", {}, L("称重 (kg)", "Weight (kg)"), weight), h("label", {}, L("商品类别", "Category"), cat),
      h("label", {}, L("或单价 (元/kg)", "or unit price (yuan/kg)"), price)),
    h("button", { type: "submit" }, L("计算", "Compute")), out2);
  f2.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out2.replaceChildren();
    const p = { weight_mg: parseKg(weight.value), category: cat.value || null,
      unit_price_fen_per_kg: cat.value ? null : parseYuan(price.value) };
    try {
      const r = await api("/metrology/retail-deviation", { params: p });
      out2.append(h("p", { class: "big" }, "− " + kg(r.negative_deviation_mg) + " kg"),
        kv([...Object.entries(r.reweigh_limit_mg).map(([m, v]) => [L("复秤限值 · ", "Re-weigh limit · ") + methodText(m), v === null ? "—" : kg(v) + " kg"]),
          [L("依据", "Source"), L("零售商品称重计量监督管理办法 附表1/2、第六条", "Retail weighing rules, tables 1 and 2, Art. 6")]]));
    } catch (err) { out2.appendChild(h("p", { class: "error" }, String(err.message || err))); }
  });
  root.appendChild(h("div", { class: "grid2" }, f1, f2));
  f1.requestSubmit();
  f2.requestSubmit();
}

function fracE(num, den, eMg) {
  // MPE / e as a short decimal (0.5, 1, 1.5 …): exact since e divides into halves/quarters
  const x = num / den / eMg;
  return String(Math.round(x * 100) / 100) + " e";
}
