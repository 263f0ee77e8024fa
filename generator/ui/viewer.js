// R2GenKG report viewer: one study (upload → streamed report → evidence) or a batch (a JSONL of results).
// Talks to this server only (/v1/chat/completions, /v1/r2genkg/label), with the API key kept in sessionStorage.
"use strict";

const OBSERVATIONS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity",
  "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
  "Fracture", "Support Devices"];
const COLORS = ["#7f8c8d", "#8e44ad", "#c0392b", "#d35400", "#2980b9", "#16a085", "#27ae60", "#2c3e50",
  "#f39c12", "#e84393", "#0984e3", "#6c5ce7", "#b33939", "#218c74"];
const LEVEL_COLORS = ["#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#d35400", "#7f8c8d"];
const WARNING_KINDS = ["contradiction", "laterality", "unsupported_relation", "disagrees_with_image", "repetition"];
const PAGE = 25;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};
const svgEl = (tag, attrs = {}) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};
const colorOf = (name) => COLORS[Math.max(0, OBSERVATIONS.indexOf(name))];

// ---- the key ------------------------------------------------------------------------------
function key() { return sessionStorage.getItem("r2genkg-key") || ""; }
function showKey() { $("key-status").textContent = key() ? "key set for this session" : "no key yet"; }
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("r2genkg-key", $("key").value.trim());
  $("key").value = "";
  showKey();
});

async function apiError(resp) {
  let detail = "";
  try { detail = (await resp.json()).error.message; } catch { detail = resp.statusText; }
  if (resp.status === 401) return `The server refused the API key (401): ${detail}. Enter a valid key above.`;
  return `The server answered ${resp.status}: ${detail}`;
}

// ---- tabs ---------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.setAttribute("aria-selected", String(t === tab));
    $("study").hidden = tab.dataset.tab !== "study";
    $("batch").hidden = tab.dataset.tab !== "batch";
  });
}

// ---- one study ----------------------------------------------------------------------------
let previews = [];   // {url, displayable} per uploaded view, in order
$("views").addEventListener("change", () => { $("generate").disabled = !$("views").files.length; });

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function generate() {
  $("message").textContent = "";
  $("stream").textContent = "";
  $("study-panel").replaceChildren();
  if (!key()) { $("message").textContent = "Enter the API key first."; return; }
  const files = Array.from($("views").files);
  const urls = [];
  previews = [];
  for (const f of files) {
    let url = await readAsDataURL(f);
    const dicom = !/^image\/(png|jpeg)$/.test(f.type);
    if (dicom) url = url.replace(/^data:[^;]*;/, "data:application/dicom;");
    urls.push(url);
    previews.push({ url, displayable: !dicom, name: f.name });
  }
  const body = {
    model: "r2genkg", stream: true,
    messages: [{ role: "user", content: [{ type: "text", text: "Write the findings." },
      ...urls.map((u) => ({ type: "image_url", image_url: { url: u } }))] }],
  };
  $("generate").disabled = true;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${key()}` },
      body: JSON.stringify(body),
    });
    if (!resp.ok) { $("message").textContent = await apiError(resp); return; }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", text = "", extension = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          if (chunk.error) { $("message").textContent = `The server failed: ${chunk.error.message}`; continue; }
          text += chunk.choices?.[0]?.delta?.content || "";
          $("stream").textContent = text;
          if (chunk.r2genkg) extension = chunk.r2genkg;
        }
      }
    }
    if (extension) render($("study-panel"), { report: text, ...extension }, previews);
  } catch (err) {
    $("message").textContent = `The request failed: ${err}`;
  } finally {
    $("generate").disabled = false;
  }
}
$("generate").addEventListener("click", generate);

// ---- the per-study panel (one study and batch) --------------------------------------------
function render(container, row, images = []) {
  const graph = row.evidence?.graph || row.kg?.graph || null;
  const sentences = row.sentences || [];
  const warnings = row.warnings || [];
  const panel = el("div", { class: "panel" });
  const left = el("div"), right = el("div");
  panel.append(left, right);

  // report: sentences coloured by the observation they state, with their warnings
  const report = el("div", { class: "card report-card" }, el("h2", { text: "Report" }));
  const triplesBox = el("ul", { class: "triples" });
  const examplesBox = el("ul", { class: "examples" });
  sentences.forEach((s, i) => {
    const stated = s.observations.filter((o) => o.certainty !== "negative");
    const main = stated[0] || s.observations[0];
    const span = el("span", { class: "sentence", "data-index": String(i) }, s.text);
    if (main) {
      span.style.borderLeftColor = colorOf(main.observation);
      span.append(el("span", { class: "tag", text: s.observations.map((o) => `${o.observation}: ${o.certainty}`).join(", ") }));
    }
    report.append(span);
    for (const w of warnings.filter((w) => w.sentence === s.text)) {
      report.append(el("div", { class: `warning kind-${w.kind}`, text: `⚠ ${w.kind.replaceAll("_", " ")}: ${w.detail}` }));
    }
    const show = () => {
      for (const other of report.querySelectorAll(".sentence")) other.classList.toggle("active", other === span);
      triplesBox.replaceChildren(...(s.triples.length ? s.triples.map((t) => el("li", { text: t.text }))
        : [el("li", { text: "no triple of the study's subgraph joins this sentence's entities" })]));
      examplesBox.replaceChildren(...(s.examples.length ? s.examples.map((x) => el("li", {
        text: `${x.observation} — ${x.study}: ${x.sentence ?? "(its report is not in the bank)"}` }))
        : [el("li", { text: "no retrieved training example for this sentence" })]));
      highlight(svg, s.triples);
    };
    span.addEventListener("mouseenter", show);
    span.addEventListener("click", show);
  });
  if (!sentences.length) report.append(el("p", { text: row.report || "(no report)" }));
  const unplaced = warnings.filter((w) => !sentences.some((s) => s.text === w.sentence));
  for (const w of unplaced) report.append(el("div", { class: "warning", text: `⚠ ${w.kind}: ${w.detail}` }));
  left.append(report);
  left.append(el("div", { class: "card" }, el("h2", { text: "Knowledge-graph triples of the sentence" }), triplesBox));
  left.append(el("div", { class: "card" }, el("h2", { text: "Retrieved training examples" }), examplesBox));

  // probabilities with the decision thresholds
  const bars = el("div", { class: "bars" });
  for (const name of OBSERVATIONS) {
    const p = row.observations?.[name];
    if (p === undefined) continue;
    const cut = row.thresholds?.[name];
    const state = row.states?.[name] || "";
    const bar = el("div", { class: "bar", title: `${name}: ${p.toFixed(3)}${cut != null ? ` (threshold ${cut.toFixed(3)})` : ""}` });
    const fill = el("div", { class: `fill ${state}` });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    bar.append(fill);
    if (cut != null) { const mark = el("div", { class: "cut" }); mark.style.left = `${(100 * cut).toFixed(1)}%`; bar.append(mark); }
    bars.append(el("span", { text: name }), bar, el("span", { text: p.toFixed(2) }));
  }
  right.append(el("div", { class: "card" }, el("h2", { text: "Classifier (bar) and decision threshold (mark)" }), bars));

  // attention heat map per observation over the uploaded views
  if (row.attention && images.length) {
    const select = el("select", { "aria-label": "observation for the heat map" });
    for (const name of OBSERVATIONS) select.append(el("option", { value: name, text: name }));
    const best = (row.positive || []).find((n) => n !== "No Finding") ||
      OBSERVATIONS.slice(1).reduce((a, b) => ((row.observations?.[a] ?? 0) >= (row.observations?.[b] ?? 0) ? a : b));
    select.value = best;
    const views = el("div", { class: "views" });
    const draw = () => drawHeat(views, images, row.attention, select.value);
    select.addEventListener("change", draw);
    right.append(el("div", { class: "card" }, el("h2", { text: "Where the disease query looks" }), select, views));
    draw();
  }

  // the study's subgraph
  const svg = svgEl("svg", { class: "graph", viewBox: "-300 -300 600 600", role: "img", "aria-label": "the study's knowledge subgraph" });
  if (graph) drawGraph(svg, graph);
  right.append(el("div", { class: "card" }, el("h2", { text: "The study's knowledge subgraph" }),
    el("div", { class: "legend" }, ...[0, 1, 2, 3].map((l) => { const s = el("span"); const i = el("i"); i.style.background = LEVEL_COLORS[l]; s.append(i, `level ${l}`); return s; })),
    graph ? svg : el("p", { text: "no subgraph (a model without the per-study KG)" })));
  container.replaceChildren(panel);
}

function drawHeat(container, images, attention, name) {
  container.replaceChildren();
  const maps = attention.maps[name] || [];
  const g = attention.grid;
  images.forEach((image, v) => {
    const box = el("div", { class: "view" });
    if (image.displayable) box.append(el("img", { src: image.url, alt: image.name || `view ${v + 1}` }));
    else box.append(el("div", { class: "note", text: `${image.name || "DICOM view"}: the browser cannot show DICOM; heat map only` }));
    const map = maps[Math.min(v, maps.length - 1)] || [];
    const canvas = el("canvas", { width: String(g), height: String(g), "aria-label": `attention of ${name}` });
    const ctx = canvas.getContext("2d");
    const top = Math.max(...map, 1e-9);
    map.forEach((a, i) => {
      ctx.fillStyle = `rgba(255, 40, 0, ${(0.65 * a / top).toFixed(3)})`;
      ctx.fillRect(i % g, Math.floor(i / g), 1, 1);
    });
    canvas.style.imageRendering = "pixelated";
    box.append(canvas);
    container.append(box);
  });
}

function drawGraph(svg, graph) {
  const byLevel = new Map();
  for (const n of graph.nodes) { if (!byLevel.has(n.level)) byLevel.set(n.level, []); byLevel.get(n.level).push(n); }
  // one ring per level, each wide enough for its nodes' labels (about 14 units of arc per node)
  const pos = new Map();
  let r = 0;
  for (const level of [...byLevel.keys()].sort((a, b) => a - b)) {
    const nodes = byLevel.get(level);
    r = level === 0 && nodes.length === 1 ? 0 : Math.max(r + 70, (14 * nodes.length) / (2 * Math.PI));
    nodes.forEach((n, i) => {
      const a = (2 * Math.PI * i) / nodes.length + level * 0.4;
      pos.set(n.id, [r * Math.cos(a), r * Math.sin(a)]);
    });
  }
  const half = r + 60;
  svg.setAttribute("viewBox", `${-half} ${-half} ${2 * half} ${2 * half}`);
  const edgeLayer = svgEl("g"), nodeLayer = svgEl("g");
  svg.append(edgeLayer, nodeLayer);
  for (const e of graph.edges) {
    const [a, b] = [pos.get(e.head), pos.get(e.tail)];
    if (!a || !b) continue;
    const line = svgEl("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], "data-head": e.head, "data-tail": e.tail });
    line.append(svgEl("title")); line.lastChild.textContent = `${e.relation} (${e.count})`;
    edgeLayer.append(line);
  }
  for (const n of graph.nodes) {
    const [x, y] = pos.get(n.id);
    const c = svgEl("circle", { cx: x, cy: y, r: n.level === 0 ? 7 : 4.5, fill: LEVEL_COLORS[Math.min(n.level, LEVEL_COLORS.length - 1)], "data-name": n.name, "data-id": n.id });
    c.append(svgEl("title")); c.lastChild.textContent = `${n.name} (${n.type}, level ${n.level})`;
    const t = svgEl("text", { x: x + 6, y: y + 3, "data-name": n.name });
    t.textContent = n.name;
    nodeLayer.append(c, t);
  }
}

function highlight(svg, triples) {
  const names = new Set(triples.flatMap((t) => [t.head, t.tail]));
  const ids = new Set();
  for (const c of svg.querySelectorAll("circle")) {
    const hot = names.has(c.dataset.name);
    c.classList.toggle("hot", hot);
    if (hot) ids.add(c.dataset.id);
  }
  for (const t of svg.querySelectorAll("text")) t.classList.toggle("hot", names.has(t.dataset.name));
  for (const l of svg.querySelectorAll("line")) l.classList.toggle("hot", ids.has(l.dataset.head) && ids.has(l.dataset.tail));
}

// ---- a batch ------------------------------------------------------------------------------
let rows = [], shown = [], page = 0, selected = null;
const referenceFindings = new Map();   // study id → positive findings of its reference (labeler)
const reportFindings = new Map();      // study id → positive findings of its report (labeler)

for (const name of OBSERVATIONS) $("filter-observation").append(el("option", { value: name, text: name }));
for (const kind of WARNING_KINDS) $("filter-warning").append(el("option", { value: kind, text: kind.replaceAll("_", " ") }));

async function label(texts) {
  const resp = await fetch("/v1/r2genkg/label", {
    method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${key()}` },
    body: JSON.stringify({ reports: texts }),
  });
  if (!resp.ok) throw new Error(await apiError(resp));
  return (await resp.json()).positive;
}

function parseJSONL(text, name) {
  const out = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let row;
    try { row = JSON.parse(line); } catch { throw new Error(`${name}: line ${i + 1} is not JSON`); }
    if (typeof row.id !== "string" || typeof row.report !== "string") throw new Error(`${name}: line ${i + 1} has no id and report`);
    out.push(row);
  });
  return out;
}

async function listServerRuns() {
  if (!key()) return;
  const resp = await fetch("/v1/r2genkg/runs", { headers: { Authorization: `Bearer ${key()}` } });
  if (!resp.ok) { $("batch-count").textContent = await apiError(resp); return; }
  const { runs_dir: dir, files } = await resp.json();
  const select = $("server-runs");
  select.replaceChildren(el("option", { value: "", text: dir ? `${files.length} under ${dir}` : "(the server lists none: --runs-dir)" }),
    ...files.map((f) => el("option", { value: f, text: f })));
}

async function openServerRun(path) {
  const resp = await fetch(`/v1/r2genkg/runs/file?path=${encodeURIComponent(path)}`, { headers: { Authorization: `Bearer ${key()}` } });
  if (!resp.ok) throw new Error(await apiError(resp));
  return parseJSONL(await resp.text(), path);
}

async function loadReferences() {
  referenceFindings.clear(); reportFindings.clear();
  const file = $("references").files[0];
  if (!file || !rows.length) return;
  const data = JSON.parse(await file.text());
  const refs = new Map();
  for (const split of Object.values(data)) for (const item of split) if (item.id && item.report) refs.set(item.id, item.report);
  const withRef = rows.filter((r) => refs.has(r.id));
  const [ref, rep] = await Promise.all([label(withRef.map((r) => refs.get(r.id))), label(withRef.map((r) => r.report))]);
  withRef.forEach((r, i) => { referenceFindings.set(r.id, ref[i]); reportFindings.set(r.id, rep[i]); });
}

function disagrees(row) {
  if (!referenceFindings.has(row.id)) return null;
  const a = new Set(referenceFindings.get(row.id)), b = new Set(reportFindings.get(row.id));
  return a.size !== b.size || [...a].some((x) => !b.has(x));
}

function applyFilters() {
  const obs = $("filter-observation").value, kind = $("filter-warning").value, ref = $("filter-reference").value;
  shown = rows.filter((r) => (!obs || (r.positive || []).includes(obs))
    && (!kind || (r.warnings || []).some((w) => w.kind === kind))
    && (!ref || disagrees(r) === (ref === "disagrees")));
  page = 0;
  $("batch-count").textContent = `${shown.length} of ${rows.length} studies`;
  showPage();
}

function showPage() {
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  page = Math.min(Math.max(page, 0), pages - 1);
  $("page").textContent = `page ${page + 1} of ${pages}`;
  $("batch-list").replaceChildren(...shown.slice(page * PAGE, (page + 1) * PAGE).map((r) => {
    const item = el("li", { "data-id": r.id }, r.id,
      el("span", { class: "meta", text: `${(r.positive || []).filter((n) => n !== "No Finding").join(", ") || "no finding"}${(r.warnings || []).length ? ` · ⚠ ${r.warnings.length}` : ""}` }));
    item.classList.toggle("selected", r.id === selected);
    item.addEventListener("click", () => { selected = r.id; showPage(); render($("batch-panel"), r); });
    return item;
  }));
  $("batch-list").start = page * PAGE + 1;
}

async function openRows(load) {
  try {
    rows = await load();
    selected = null;
    $("batch-panel").replaceChildren();
    await loadReferences();
    applyFilters();
  } catch (err) { $("batch-count").textContent = String(err.message || err); }
}
$("jsonl").addEventListener("change", () => {
  const file = $("jsonl").files[0];
  if (file) openRows(async () => parseJSONL(await file.text(), file.name));
});
$("server-runs").addEventListener("change", () => {
  const path = $("server-runs").value;
  if (path) openRows(() => openServerRun(path));
});
for (const tab of document.querySelectorAll(".tab[data-tab=batch]")) tab.addEventListener("click", listServerRuns);
$("references").addEventListener("change", async () => {
  try { await loadReferences(); applyFilters(); } catch (err) { $("batch-count").textContent = String(err.message || err); }
});
for (const id of ["filter-observation", "filter-warning", "filter-reference"]) $(id).addEventListener("change", applyFilters);
$("prev").addEventListener("click", () => { page -= 1; showPage(); });
$("next").addEventListener("click", () => { page += 1; showPage(); });

showKey();
