// Pretrainer dashboard: datasets, training, live jobs and models, over the /v1 API only.
"use strict";

const TERMINAL = ["succeeded", "failed", "cancelled"];
const CURVES = [["loss", "#2f6fde"], ["val_loss", "#e8833a"], ["d_loss", "#1f8a4c"], ["g_loss", "#9b59b6"]];
const view = document.getElementById("view");
const keyInput = document.getElementById("api-key");
let following = null; // AbortController of the job event stream on screen

// ------------------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = localStorage.getItem("pretrainer.apiKey");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function problem(r) {
  let body = {};
  try { body = await r.json(); } catch (e) { body = { title: r.statusText }; }
  const fields = (body.errors || []).map((e) => `  ${e.field}: ${e.message}`).join("\n");
  const err = new Error(`${r.status} ${body.title || ""}: ${body.detail || ""}${fields ? "\n" + fields : ""}`);
  err.status = r.status;
  return err;
}

async function api(path, opts) {
  opts = opts || {};
  const init = { method: opts.method || "GET", headers: headers(opts.headers) };
  if (opts.json !== undefined) {
    init.body = JSON.stringify(opts.json);
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, init);
  if (!r.ok) throw await problem(r);
  return r.status === 204 ? null : r.json();
}

function notify(message, ok) {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = ok ? "ok" : "";
  box.hidden = !message;
}

function guard(fn) {
  return (...args) => Promise.resolve(fn(...args)).catch((e) => notify(e.message));
}

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  if (v === null || v === undefined) return "";
  if (typeof v === "object") { const s = JSON.stringify(v); return s.length > 80 ? s.slice(0, 77) + "..." : s; }
  return String(v);
}

function table(columns, rows, onRow) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((r) => el("tr", onRow ? { class: "link", onclick: () => onRow(r), "data-id": r.id } : {},
      r.cells.map((c) => el("td", {}, c instanceof Node ? c : fmt(c)))))));
}

function progressBar(p) {
  return el("div", { class: "bar", title: Math.round(p * 100) + "%" }, el("div", { style: `width:${Math.round(p * 100)}%` }));
}

function metricsTable(metrics) {
  const hidden = ["confusion_matrix", "per_class", "classes", "train_confusion_matrix", "train_per_class"];
  const rows = Object.entries(metrics || {}).filter(([k]) => !hidden.includes(k));
  return table(["metric", "value"], rows.map(([k, v]) => ({ cells: [k, v] })));
}

// --------------------------------------------------------------------------------- charts

function scale(lo, hi, a, b) {
  if (hi === lo) { hi = lo + 1; }
  return (v) => a + (v - lo) * (b - a) / (hi - lo);
}

// A line chart of per-epoch series; data-points says how many epochs it draws (tests read it).
function lossChart(history) {
  const W = 560, H = 280, L = 55, R = 110, T = 15, B = 35;
  const svg = svgEl("svg", { id: "loss-chart", class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  const series = CURVES.map(([k, colour]) => [k, colour, history.filter((h) => typeof h[k] === "number").map((h) => [h.epoch, h[k]])])
    .filter(([, , pts]) => pts.length);
  svg.dataset.points = String(series.length ? series[0][2].length : 0);
  const all = series.flatMap(([, , pts]) => pts);
  if (!all.length) {
    svg.append(Object.assign(svgEl("text", { x: L, y: H / 2 }), { textContent: "waiting for the first epoch…" }));
    return svg;
  }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  // A first epoch far above the rest would flatten the curve: such losses are drawn on a log scale.
  const log = Math.min(...ys) > 0 && Math.max(...ys) / Math.min(...ys) > 20;
  const ty = log ? Math.log10 : (v) => v;
  const x = scale(Math.min(...xs), Math.max(...xs), L, W - R);
  const yLinear = scale(ty(Math.min(...ys)), ty(Math.max(...ys)), H - B, T), y = (v) => yLinear(ty(v));
  svg.dataset.scale = log ? "log" : "linear";
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }),
    svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
  for (const v of [Math.min(...ys), Math.max(...ys)]) {
    svg.append(Object.assign(svgEl("text", { x: 4, y: y(v) + 4 }), { textContent: fmt(v) }));
  }
  for (const v of [Math.min(...xs), Math.max(...xs)]) {
    svg.append(Object.assign(svgEl("text", { x: x(v) - 4, y: H - B + 16 }), { textContent: v }));
  }
  svg.append(Object.assign(svgEl("text", { x: (W - R) / 2, y: H - 4 }), { textContent: log ? "epoch (loss on a log scale)" : "epoch" }));
  series.forEach(([name, colour, pts], i) => {
    svg.append(svgEl("polyline", { class: "curve", "data-series": name, fill: "none", stroke: colour, "stroke-width": 2,
      points: pts.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" ") }));
    svg.append(svgEl("rect", { x: W - R + 12, y: T + i * 18, width: 12, height: 3, fill: colour }));
    svg.append(Object.assign(svgEl("text", { x: W - R + 28, y: T + i * 18 + 5 }), { textContent: name }));
  });
  return svg;
}

function barChart(values, label) {
  const W = 420, H = 200, L = 40, B = 30, T = 10, bw = (W - L - 10) / values.length;
  const svg = svgEl("svg", { id: "variance-chart", class: "chart", width: W, height: H });
  const y = scale(0, Math.max(...values, 1e-9), H - B, T);
  values.forEach((v, i) => {
    svg.append(svgEl("rect", { x: L + i * bw + 2, y: y(v), width: Math.max(bw - 4, 1), height: H - B - y(v), fill: "#2f6fde" }));
    svg.append(Object.assign(svgEl("text", { x: L + i * bw + 2, y: H - B + 14 }), { textContent: i + 1 }));
  });
  svg.append(Object.assign(svgEl("text", { x: 2, y: T + 8 }), { textContent: fmt(Math.max(...values)) }));
  svg.append(Object.assign(svgEl("text", { x: L, y: H - 2 }), { textContent: label }));
  return svg;
}

function confusionTable(matrix, classes) {
  const max = Math.max(...matrix.flat(), 1);
  return el("table", { class: "heat", id: "confusion" },
    el("tr", {}, el("th", {}, "true \\ predicted"), classes.map((c) => el("th", {}, c))),
    matrix.map((row, i) => el("tr", {}, el("th", {}, classes[i]),
      row.map((v) => el("td", { style: `background: rgba(47,111,222,${(v / max).toFixed(2)}); color: ${v / max > 0.5 ? "#fff" : "inherit"}` }, v)))));
}

async function plotImage(path, alt) {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) return el("p", { class: "hint" }, (await problem(r)).message);
  return el("img", { class: "plot", alt, src: URL.createObjectURL(await r.blob()) });
}

// Download GET /v1/models/{id}/export?format=… (fetch, for the Authorization header) as a file;
// a model without that format answers 422 naming the ones it has, shown as a notice.
async function downloadExport(id, format) {
  const r = await fetch(`/v1/models/${id}/export?format=${format}`, { headers: headers() });
  if (!r.ok) throw await problem(r);
  const link = el("a", { href: URL.createObjectURL(await r.blob()), download: `${id}.${format}.zip` });
  document.body.append(link);
  link.click();
  link.remove();
}

// --------------------------------------------------------------------------------- events

// Read GET /v1/jobs/{id}/events with fetch (EventSource cannot send an Authorization header).
async function streamEvents(jobId, onEvent, signal) {
  const r = await fetch(`/v1/jobs/${jobId}/events`, { headers: headers(), signal });
  if (!r.ok) throw await problem(r);
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

// ---------------------------------------------------------------------------------- views

async function datasetsView() {
  const page = await api("/v1/datasets?limit=500");
  const file = el("input", { type: "file", id: "upload-file" });
  const name = el("input", { id: "upload-name", placeholder: "defaults to the file name" });
  const bar = el("progress", { id: "upload-progress", max: 1, value: 0, hidden: true });
  const upload = guard(async (ev) => {
    ev.preventDefault();
    if (!file.files.length) throw new Error("choose a file first");
    const ds = await uploadFile(file.files[0], name.value, bar);
    notify(`uploaded ${ds.name}: ${ds.n_rows} rows (${ds.id})`, true);
    render();
  });
  return [
    el("section", {}, el("h2", {}, "Upload a dataset"),
      el("form", { class: "grid", id: "upload-form", onsubmit: upload },
        el("label", { for: "upload-file" }, "file"), file,
        el("label", { for: "upload-name" }, "name"), name,
        el("span", {}), el("div", {}, el("button", { id: "upload-btn", type: "submit" }, "Upload"), " ", bar),
        el("span", {}), el("span", { class: "hint" }, "CSV with a header, Parquet, NPY, JSONL, or a ZIP of images (a folder per class)"))),
    el("section", {}, el("h2", {}, `Datasets (${page.total})`),
      table(["id", "name", "kind", "format", "rows", "columns", "created"],
        page.items.map((d) => ({ id: d.id, cells: [el("code", { "data-dataset-id": d.id }, d.id), d.name, d.kind, d.format, d.n_rows,
          d.columns.map((c) => c.name).join(", ") + (d.columns_truncated ? ` … (${d.n_columns} in all)` : ""), d.created_at] })),
        (d) => { location.hash = `train/${d.id}`; })),
  ];
}

// Files this large go over tus (/v1/uploads), in chunks that a dropped connection resumes
// from the server's offset; smaller ones in one multipart request. window.PRETRAINER_TUS_ABOVE
// and window.PRETRAINER_TUS_CHUNK (bytes) override both.
const TUS = { "Tus-Resumable": "1.0.0" };

function uploadFile(file, name, bar) {
  const above = window.PRETRAINER_TUS_ABOVE || 64 * 1024 * 1024;
  return file.size >= above ? tusUpload(file, name, bar) : multipartUpload(file, name, bar);
}

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

// One PATCH of blob at offset; resolves the server's new offset. XMLHttpRequest for progress.
function tusPatch(url, blob, offset, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", url);
    for (const [k, v] of Object.entries(headers(TUS))) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Upload-Offset", String(offset));
    xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
    xhr.upload.onprogress = (e) => onProgress(offset + e.loaded);
    xhr.onload = async () => {
      if (xhr.status === 204) resolve(Number(xhr.getResponseHeader("Upload-Offset")));
      else {
        const err = await problem(new Response(xhr.responseText, { status: xhr.status }));
        err.retry = [409, 423, 429, 500, 502, 503, 504].includes(xhr.status);
        reject(err);
      }
    };
    xhr.onerror = () => { const err = new Error("network error"); err.retry = true; reject(err); };
    xhr.send(blob);
  });
}

async function tusUpload(file, name, bar) {
  const meta = [["filename", file.name], ["name", name]].filter(([, v]) => v)
    .map(([k, v]) => `${k} ${b64(v)}`).join(",");
  const created = await fetch("/v1/uploads", { method: "POST", headers: headers(
    Object.assign({ "Upload-Length": String(file.size), "Upload-Metadata": meta }, TUS)) });
  if (created.status !== 201) throw await problem(created);
  const url = created.headers.get("Location");
  bar.hidden = false;
  const chunk = window.PRETRAINER_TUS_CHUNK || 8 * 1024 * 1024;
  let offset = 0, failures = 0, wait = 500;
  try {
    while (offset < file.size) {
      try {
        offset = await tusPatch(url, file.slice(offset, offset + chunk), offset,
          (at) => { bar.value = at / file.size; });
        failures = 0; wait = 500;
      } catch (e) {
        if (!e.retry || ++failures > 8) throw e;
        notify(`connection lost at ${Math.round(100 * offset / file.size)}%: resuming`, false);
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, 30000);
        const head = await fetch(url, { method: "HEAD", headers: headers(TUS) }).catch(() => null);
        if (head && head.ok) offset = Number(head.headers.get("Upload-Offset"));
      }
      bar.value = offset / file.size;
    }
    for (;;) {  // the server inspects the file like any upload: wait for its verdict
      const up = await api(url);
      if (up.status === "ready") return api(`/v1/datasets/${up.dataset_id}`);
      if (up.status !== "inspecting") {
        const p = up.problem || { status: 410, title: "Gone", detail: `upload ${up.status}` };
        throw await problem(new Response(JSON.stringify(p), { status: p.status }));
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    bar.hidden = true;
  }
}

function multipartUpload(file, name, bar) {
  // XMLHttpRequest rather than fetch: it reports upload progress.
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file);
    if (name) form.append("name", name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/datasets");
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    bar.hidden = false;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
    xhr.onload = async () => {
      bar.hidden = true;
      const r = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
      if (xhr.status >= 400) reject(await problem(r)); else resolve(JSON.parse(xhr.responseText));
    };
    xhr.onerror = () => { bar.hidden = true; reject(new Error("upload failed: network error")); };
    xhr.send(form);
  });
}

function paramInput(name, schema, defs) {
  const s = schema.$ref ? defs[schema.$ref.split("/").pop()] || {} : (schema.anyOf ? schema.anyOf.find((a) => a.type !== "null") || {} : schema);
  const attrs = { id: `param-${name}`, "data-param": name, title: schema.description || "" };
  const dflt = schema.default === undefined ? "" : schema.default;
  if (s.enum) return el("select", attrs, el("option", { value: "" }, `default (${fmt(dflt)})`), s.enum.map((v) => el("option", { value: JSON.stringify(v) }, v)));
  if (s.type === "boolean") return el("select", attrs, el("option", { value: "" }, `default (${dflt})`), el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
  const numeric = s.type === "integer" || s.type === "number";
  return el("input", Object.assign(attrs, { type: numeric ? "number" : "text", step: s.type === "integer" ? 1 : "any", placeholder: typeof dflt === "object" ? JSON.stringify(dflt) : String(dflt) }));
}

function readParams(form) {
  const params = {};
  for (const input of form.querySelectorAll("[data-param]")) {
    if (input.value === "") continue;
    try { params[input.dataset.param] = JSON.parse(input.value); } catch (e) { params[input.dataset.param] = input.value; }
  }
  return params;
}

async function trainView(datasetId) {
  const [datasets, algos] = await Promise.all([api("/v1/datasets?limit=500"), api("/v1/algorithms")]);
  const dsSelect = el("select", { id: "train-dataset" }, datasets.items.map((d) => el("option", { value: d.id, selected: d.id === datasetId }, `${d.name} (${d.kind}, ${d.n_rows} rows) ${d.id}`)));
  const algoSelect = el("select", { id: "train-algorithm" });
  const paramsBox = el("div", { id: "train-params", class: "grid" });
  const description = el("p", { class: "hint" });
  const features = el("input", { id: "train-features", placeholder: "all numeric columns" });
  const target = el("input", { id: "train-target", placeholder: "none", list: "train-target-columns" });
  // The dataset's columns to pick the target from; required when the algorithm learns from labels.
  const targetColumns = el("datalist", { id: "train-target-columns" });
  const fillTarget = () => {
    const ds = datasets.items.find((d) => d.id === dsSelect.value);
    targetColumns.replaceChildren(...((ds && ds.columns) || []).map((c) => el("option", { value: c.name })));
    const a = algos.items.find((x) => x.name === algoSelect.value);
    const needed = Boolean(a && a.needs_target && ds && ds.kind !== "image");
    target.required = needed;
    target.placeholder = needed ? "required: the label column" : "none";
  };
  const fillAlgos = () => {
    const ds = datasets.items.find((d) => d.id === dsSelect.value);
    const fits = algos.items.filter((a) => !ds || a.data_kinds.includes(ds.kind));
    algoSelect.replaceChildren(...fits.map((a) => el("option", { value: a.name }, `${a.name} (${a.family})`)));
    fillParams();
  };
  const fillParams = () => {
    const a = algos.items.find((x) => x.name === algoSelect.value);
    fillTarget();
    if (!a) { paramsBox.replaceChildren(); return; }
    description.textContent = `${a.description} Answers: ${a.capabilities.join(", ") || "nothing over HTTP"}.`;
    const props = a.params_schema.properties || {}, defs = a.params_schema.$defs || {};
    paramsBox.replaceChildren(...Object.entries(props).flatMap(([k, s]) =>
      [el("label", { for: `param-${k}`, title: s.description || "" }, k), paramInput(k, s, defs)]));
  };
  dsSelect.addEventListener("change", fillAlgos);
  algoSelect.addEventListener("change", fillParams);
  fillAlgos();
  const submit = guard(async (ev) => {
    ev.preventDefault();
    const body = { dataset_id: dsSelect.value, algorithm: algoSelect.value, params: readParams(paramsBox) };
    if (features.value.trim()) body.features = features.value.split(",").map((s) => s.trim());
    if (target.value.trim()) body.target = target.value.trim();
    const job = await api("/v1/jobs", { method: "POST", json: body });
    notify(`job ${job.id} queued`, true);
    location.hash = `jobs/${job.id}`;
  });
  if (!datasets.items.length) return el("section", {}, el("h2", {}, "Train"), el("p", {}, "Upload a dataset first (Datasets tab)."));
  return el("section", {}, el("h2", {}, "Train a model"),
    el("form", { id: "train-form", onsubmit: submit },
      el("div", { class: "grid" },
        el("label", { for: "train-dataset" }, "dataset"), dsSelect,
        el("label", { for: "train-algorithm" }, "algorithm"), algoSelect,
        el("label", { for: "train-features" }, "features"), features,
        el("label", { for: "train-target" }, "target (labels)"), target, targetColumns),
      description,
      el("h2", {}, "Params ", el("span", { class: "hint" }, "(empty: the default shown)")),
      paramsBox,
      el("p", {}, el("button", { id: "train-submit", type: "submit" }, "Start training"))));
}

async function jobsView() {
  const page = await api("/v1/jobs?limit=500");
  const active = page.items.some((j) => !TERMINAL.includes(j.status));
  if (active) setTimeout(() => { if (location.hash === "#jobs") render(); }, 2000);
  return el("section", {}, el("h2", {}, `Jobs (${page.total})`),
    table(["id", "algorithm", "status", "progress", "last epoch", "model", "created"],
      page.items.map((j) => ({ id: j.id, cells: [el("code", {}, j.id), j.algorithm, el("span", { class: `status-${j.status}` }, j.status),
        progressBar(j.progress), j.history.length ? `${j.history.length}: loss ${fmt(j.history[j.history.length - 1].loss)}` : "",
        j.model_id || "", j.created_at] })),
      (j) => { location.hash = `jobs/${j.id}`; }));
}

async function jobView(id) {
  let job = await api(`/v1/jobs/${id}`);
  const status = el("span", { id: "job-status" });
  const bar = el("div", { id: "job-progress" });
  const chartBox = el("div", { id: "chart-box" });
  const metricsBox = el("div", {});
  const modelBox = el("p", {});
  const cancel = el("button", { class: "secondary", id: "job-cancel", onclick: guard(async () => { await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); }) }, "Cancel");
  const paint = () => {
    status.textContent = job.status;
    status.className = `status-${job.status}`;
    bar.replaceChildren(progressBar(job.progress));
    chartBox.replaceChildren(job.kind === "batch" ? el("p", { class: "hint" }, `batch ${job.params.output} of ${job.dataset_id} with model ${job.source_model_id}`)
      : job.family === "unsupervised" ? el("p", { class: "hint" }, "scikit-learn jobs are not trained in epochs") : lossChart(job.history));
    metricsBox.replaceChildren(Object.keys(job.metrics || {}).length ? metricsTable(job.metrics) : "");
    modelBox.replaceChildren(job.model_id ? el("a", { href: `#models/${job.model_id}`, id: "job-model" }, `model ${job.model_id} →`) : "");
    if (job.kind === "batch" && job.status === "succeeded") modelBox.append(resultLink(job));
    if (job.error) modelBox.append(el("pre", {}, `${job.error.type}: ${job.error.message}`));
    cancel.hidden = TERMINAL.includes(job.status);
  };
  paint();
  if (!TERMINAL.includes(job.status)) {
    following = new AbortController();
    const history = job.history.slice();
    let seen = 0;
    streamEvents(id, (event, data) => {
      if (event === "status") job = Object.assign({}, job, data);
      else if (event === "progress") job.progress = data.progress;
      else if (event === "epoch") { seen += 1; if (seen > history.length) history.push(data); job.history = history; }
      else if (event === "end") job = data;
      paint();
    }, following.signal).catch((e) => { if (e.name !== "AbortError") notify(e.message); });
  }
  return [
    el("section", {}, el("h2", {}, `Job `, el("code", {}, id)),
      el("div", { class: "row" }, el("div", {}, el("p", {}, "status: ", status), bar,
        el("p", { class: "hint" }, `${job.algorithm} on ${job.dataset_id}`), el("pre", {}, JSON.stringify(job.params, null, 1)), cancel, modelBox),
        chartBox)),
    el("section", {}, el("h2", {}, "Metrics"), metricsBox),
  ];
}

async function modelsView() {
  const page = await api("/v1/models?limit=500");
  return el("section", {}, el("h2", {}, `Models (${page.total})`),
    table(["id", "algorithm", "family", "answers", "dataset", "created"],
      page.items.map((m) => ({ id: m.id, cells: [el("code", {}, m.id), m.algorithm, m.family, m.capabilities.join(", "), m.dataset_id, m.created_at] })),
      (m) => { location.hash = `models/${m.id}`; }));
}

function exampleInstances(model) {
  const feats = (model.input_schema.features || []).map((f) => f.name);
  return feats.length ? JSON.stringify({ instances: [feats.map(() => 0)] }) : '{"instances": [{"b64": "<base64 PNG>"}]}';
}

async function modelView(id) {
  const model = await api(`/v1/models/${id}`);
  const m = model.metrics || {};
  const pictures = el("div", { class: "row" });
  const confusion = m.confusion_matrix || m.train_confusion_matrix;  // train_: no held-out rows
  if (confusion && m.classes) pictures.append(el("div", {}, el("h2", {}, m.confusion_matrix ? "Confusion matrix" : "Confusion matrix (training rows)"), confusionTable(confusion, m.classes)));
  if (Array.isArray(m.explained_variance_ratio)) pictures.append(el("div", {}, el("h2", {}, "Explained variance ratio"), barChart(m.explained_variance_ratio, "component")));
  const scatter = el("div", { id: "embedding-plot" }, el("p", { class: "hint" }, "drawing the embedding…"));
  pictures.append(el("div", {}, el("h2", {}, "Training rows, embedded (PCA to 2-D)"), scatter));
  plotImage(`/v1/models/${id}/plots/embedding.png`, "embedding scatter").then((img) => scatter.replaceChildren(img));
  const input = el("textarea", { id: "serve-input" }, exampleInstances(model));
  const output = el("pre", { id: "serve-output" });
  const call = (op) => guard(async () => {
    const body = op === "generate" ? { n: 5, seed: 0 } : JSON.parse(input.value);
    output.textContent = JSON.stringify(await api(`/v1/models/${id}/${op}`, { method: "POST", json: body }), null, 1);
  });
  // Score the model on an uploaded test set (POST /v1/models/{id}/evaluate).
  const testSet = el("input", { id: "evaluate-dataset", placeholder: "test dataset id (ds_…)" });
  const target = el("input", { id: "evaluate-target", placeholder: "target column (optional)" });
  const scored = el("div", { id: "evaluate-output" });
  const evaluate = guard(async () => {
    const body = { dataset_id: testSet.value.trim() };
    if (target.value.trim()) body.target = target.value.trim();
    const out = await api(`/v1/models/${id}/evaluate`, { method: "POST", json: body });
    scored.replaceChildren(el("p", {}, `${out.n_rows} rows of ${out.dataset_id}, target ${out.target ?? "none"}`), metricsTable(out.metrics));
  });
  const del = guard(async () => {
    if (!confirm(`Delete model ${id}?`)) return;
    await api(`/v1/models/${id}`, { method: "DELETE" });
    location.hash = "models";
  });
  return [
    el("section", {}, el("h2", {}, `Model `, el("code", {}, id)),
      el("p", {}, `${model.algorithm} (${model.family}) from job `, el("a", { href: `#jobs/${model.job_id}` }, model.job_id),
        ` on ${model.dataset_id}; answers ${model.capabilities.join(", ") || "nothing over HTTP"}`),
      metricsTable(m), el("p", {}, el("button", { class: "secondary", onclick: del }, "Delete model"))),
    el("section", {}, pictures),
    el("section", {}, el("h2", {}, "Evaluate on a test set"), el("p", {}, testSet, " ", target, " ",
      el("button", { id: "evaluate", onclick: evaluate }, "evaluate")), scored),
    el("section", {}, el("h2", {}, "Export"),
      el("p", { class: "hint" }, "The model as files an outside runtime answers with (onnxruntime, torch.jit.load), with preprocess.json and a model card."),
      el("p", {}, ["onnx", "torchscript"].map((f) => [el("button", { id: `export-${f}`, class: "secondary", onclick: guard(() => downloadExport(id, f)) }, `download ${f}`), " "]))),
    el("section", {}, el("h2", {}, "Try it"), input,
      el("p", {}, model.capabilities.map((op) => [el("button", { id: `serve-${op}`, onclick: call(op) }, op), " "])), output),
    reproducibilitySection(model),
    registerSection(model),
    await batchSection(model),
    ...neighborsSection(id, model),
  ];
}

// ------------------------------------------------------------------------------ registry

// On a model's page: register it under a name as that name's next version.
function registerSection(model) {
  const name = el("input", { id: "register-name", placeholder: "name, e.g. churn" });
  const register = guard(async () => {
    const v = await api(`/v1/registry/${encodeURIComponent(name.value.trim())}/versions`, { method: "POST", json: { model_id: model.id } });
    notify(`registered as ${v.name} version ${v.version} (${v.name}@${v.version})`, true);
    location.hash = `registry/${v.name}`;
  });
  const known = (model.versions || []).map((v) => el("li", {}, el("a", { href: `#registry/${v.name}` }, `${v.name}@${v.version}`),
    v.aliases.length ? ` (${v.aliases.map((a) => `${v.name}@${a}`).join(", ")})` : ""));
  return el("section", {}, el("h2", {}, "Registry"), known.length ? el("ul", { id: "registered-as" }, known) : "",
    el("p", {}, name, " ", el("button", { id: "register", onclick: register }, "Register")),
    el("p", { class: "hint" }, "Then call it as NAME@VERSION or NAME@ALIAS wherever a model id goes: /v1/models/churn@production/predict."));
}

async function registryView() {
  const page = await api("/v1/registry?limit=500");
  return el("section", { id: "registry-names" }, el("h2", {}, `Registered names (${page.total})`),
    table(["name", "latest version", "aliases", "created"],
      page.items.map((r) => ({ id: r.name, cells: [el("code", {}, r.name), r.latest_version, Object.entries(r.aliases).map(([a, v]) => `${a} → ${v}`).join(", "), r.created_at] })),
      (r) => { location.hash = `registry/${r.id}`; }),
    el("p", { class: "hint" }, "Register a model from its page (Models → a model → Register)."));
}

async function registryNameView(name) {
  const path = `/v1/registry/${encodeURIComponent(name)}`;
  const entry = await api(path);
  const alias = el("input", { id: "alias-name", placeholder: "alias, e.g. production" });
  const version = el("select", { id: "alias-version" }, entry.versions.filter((v) => !v.model_deleted_at).reverse().map((v) => el("option", { value: v.version }, `version ${v.version}`)));
  const move = guard(async () => {
    await api(`${path}/aliases/${encodeURIComponent(alias.value.trim())}`, { method: "PUT", json: { version: Number(version.value) } });
    render();
  });
  const drop = (a) => guard(async () => {
    if (!confirm(`Remove alias ${name}@${a}?`)) return;
    await api(`${path}/aliases/${encodeURIComponent(a)}`, { method: "DELETE" });
    render();
  });
  const modelLink = (v) => v.model_deleted_at ? el("span", {}, el("code", {}, v.model_id), " (deleted)") : el("a", { href: `#models/${v.model_id}` }, el("code", {}, v.model_id));
  return [
    el("section", { id: "registry-versions" }, el("h2", {}, "Name ", el("code", {}, name)),
      table(["version", "model", "aliases", "registered", "by"],
        entry.versions.map((v) => ({ id: v.version, cells: [v.version, modelLink(v), v.aliases.join(", "), v.created_at, v.created_by] })))),
    el("section", { id: "registry-aliases" }, el("h2", {}, "Aliases"),
      table(["alias", "version", "call it as", ""],
        Object.entries(entry.aliases).map(([a, v]) => ({ id: a, cells: [a, v, el("code", {}, `${name}@${a}`), el("button", { class: "secondary", onclick: drop(a) }, "remove")] }))),
      el("p", {}, alias, " ", version, " ", el("button", { id: "alias-set", onclick: move }, "Point alias"))),
    el("section", { id: "registry-history" }, el("h2", {}, "Alias history"),
      table(["alias", "from", "to", "by", "at"],
        entry.history.slice().reverse().map((m) => ({ cells: [m.alias, m.from_version ?? "(new)", m.to_version ?? "(removed)", m.by, m.at] })))),
  ];
}

// The model's reproducibility record, and a button that retrains it from the record
// (POST /v1/models/{id}/reproduce): the job's metrics say whether the artifact is identical.
function reproducibilitySection(model) {
  const r = model.reproducibility || {};
  const section = el("section", { id: "reproducibility" }, el("h2", {}, "Reproducibility"));
  if (!r.dataset) {
    section.append(el("p", { class: "hint" }, "No record: this model was trained before records were kept."));
    return section;
  }
  const d = r.dataset;
  const facts = { seed: r.seed, dataset: `${d.id} (${d.n_rows} rows × ${d.n_features})`, "dataset sha256": d.sha256,
    features: (d.features || []).join(", "), target: d.target ?? "none", device: `${r.device} (${r.device_name}, ${r.threads} threads)`,
    ...Object.fromEntries(Object.entries(r.versions || {}).map(([k, v]) => [k, v ?? "unknown"])) };
  if (r.backbone) facts.backbone = `${r.backbone.spec}${r.backbone.sha256 ? " sha256 " + r.backbone.sha256 : ""}`;
  const again = guard(async () => {
    const job = await api(`/v1/models/${model.id}/reproduce`, { method: "POST" });
    location.hash = `jobs/${job.id}`;
  });
  section.append(
    table(["fact", "value"], Object.entries(facts).map(([k, v]) => ({ id: k, cells: [k, el("code", {}, String(v))] }))),
    el("h3", {}, "Params"), el("pre", {}, JSON.stringify(r.params, null, 1)),
    el("h3", {}, "Artifact files (sha256)"),
    table(["file", "sha256"], Object.entries(r.artifact_sha256 || {}).map(([k, v]) => ({ id: k, cells: [k, el("code", {}, v)] }))),
    el("p", {}, el("button", { id: "reproduce", onclick: again }, "Reproduce"), " ",
      el("span", { class: "hint" }, "retrain from this record; the job's metrics say whether every file is identical (max_abs_diff: how far the weights are apart)")));
  return section;
}

// ------------------------------------------------------------------------ batch prediction

// Score a whole dataset with the model (POST /v1/models/{id}/batch); the job page follows it.
async function batchSection(model) {
  const outputs = model.capabilities.filter((c) => c === "predict" || c === "embed");
  if (!outputs.length) return el("section", {});
  const page = await api("/v1/datasets?limit=500");
  const dataset = el("select", { id: "batch-dataset" }, page.items.map((d) => el("option", { value: d.id }, `${d.name} (${d.kind}, ${d.n_rows} rows) ${d.id}`)));
  const output = el("select", { id: "batch-output" }, outputs.map((o) => el("option", { value: o }, o)));
  const format = el("select", { id: "batch-format" }, ["parquet", "csv", "npy"].map((f) => el("option", { value: f }, f)));
  const started = el("p", { id: "batch-job" });
  const start = guard(async () => {
    const job = await api(`/v1/models/${model.id}/batch`, { method: "POST", json: { dataset_id: dataset.value, output: output.value, format: format.value } });
    started.replaceChildren("started ", el("a", { href: `#jobs/${job.id}`, id: "batch-job-link" }, `job ${job.id} →`));
  });
  return el("section", {}, el("h2", {}, "Batch score a dataset"),
    el("p", {}, dataset, " ", output, " ", format, " ", el("button", { id: "batch-start", onclick: start }, "start batch job")),
    el("p", { class: "hint" }, "Streams the whole dataset through the model as a job; its page links to the result file."), started);
}

// The result of a finished batch job, fetched with the API key and saved under its file name.
function resultLink(job) {
  const name = `${job.id}.${job.params.format}`;
  const save = guard(async (event) => {
    event.preventDefault();
    const r = await fetch(`/v1/jobs/${job.id}/result`, { headers: headers() });
    if (!r.ok) throw await problem(r);
    const a = el("a", { href: URL.createObjectURL(await r.blob()), download: name });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  return el("a", { href: `/v1/jobs/${job.id}/result`, id: "job-result", onclick: save }, ` download ${name} (${fmt(job.metrics.rows)} rows)`);
}

// Nearest neighbours (models that embed): the model's indexes, a build button, a query box.
function neighborsSection(id, model) {
  if (!model.capabilities.includes("embed")) return [];
  const list = el("div", { id: "indexes" });
  const refresh = guard(async () => {
    const page = await api(`/v1/models/${id}/indexes?limit=500`);
    list.replaceChildren(table(["index", "status", "", "metric", "rows", "dataset", "created"],
      page.items.map((ix) => ({ id: ix.id, cells: [el("code", {}, ix.id), ix.status, progressBar(ix.progress), ix.metric, ix.n_rows, ix.dataset_id, ix.created_at] }))));
    // A build still running: look again in a second (until the view changes).
    if (page.items.some((ix) => !TERMINAL.includes(ix.status)) && location.hash === `#models/${id}`) setTimeout(refresh, 1000);
  });
  const dataset = el("input", { id: "index-dataset", placeholder: "dataset id to index (ds_…)", value: model.dataset_id });
  const build = guard(async () => {
    const ix = await api(`/v1/models/${id}/indexes`, { method: "POST", json: { dataset_id: dataset.value.trim() } });
    notify(`building index ${ix.id} (job ${ix.job_id})`, true);
    refresh();
  });
  const input = el("textarea", { id: "neighbors-input" }, exampleInstances(model));
  const k = el("input", { id: "neighbors-k", type: "number", min: 1, max: 1000, value: 5 });
  const output = el("div", { id: "neighbors-output" });
  const find = guard(async () => {
    const body = Object.assign(JSON.parse(input.value), { k: Number(k.value) });
    const out = await api(`/v1/models/${id}/neighbors`, { method: "POST", json: body });
    output.replaceChildren(el("p", {}, "index ", el("code", {}, out.index_id)), table(["instance", "rank", "row", "distance", "id", "label"],
      out.neighbors.flatMap((hits, i) => hits.map((n, rank) => ({ id: `${i}-${rank}`, cells: [i, rank + 1, n.row, n.distance, n.id, n.label] })))));
  });
  refresh();
  return [el("section", {}, el("h2", {}, "Nearest neighbours"), list,
    el("p", {}, dataset, " ", el("button", { id: "build-index", onclick: build }, "build index")),
    el("p", { class: "hint" }, "Instances as for embed; answers the nearest rows of the model's newest ready index."),
    input, el("p", {}, "k ", k, " ", el("button", { id: "find-neighbors", onclick: find }, "find neighbours")), output)];
}

// The project's quotas: what it uses of each, as a bar against its limit.
async function usageView() {
  const me = await api("/v1/projects/me");
  const bytes = (n) => n >= 1024 ** 3 ? (n / 1024 ** 3).toFixed(1) + " GiB" : n >= 1024 ** 2 ? (n / 1024 ** 2).toFixed(1) + " MiB" : n + " B";
  const show = (name, n) => name === "stored_bytes" ? bytes(n) : n;
  return el("section", { id: "usage" }, el("h2", {}, `Usage of project ${me.project}`),
    table(["quota", "used", "limit", "", "set by", "what it counts"],
      Object.entries(me.quotas).map(([name, q]) => ({ id: name, cells: [name, show(name, q.used), show(name, q.limit),
        progressBar(q.limit ? Math.min(1, q.used / q.limit) : 1), q.source, q.description] }))),
    el("p", { class: "hint" }, "Past a quota a request is refused (429, or 413 for bytes). An operator sets a project's own quotas with `pretrainer quotas set`."));
}

// --------------------------------------------------------------------------------- sweeps

const SWEEP_COLOURS = { succeeded: "#2f6fde", pruned: "#d98b1c", failed: "#c33", cancelled: "#999" };

async function sweepsView() {
  const page = await api("/v1/sweeps?limit=500");
  if (page.items.some((s) => s.status === "running")) setTimeout(() => { if (location.hash === "#sweeps") render(); }, 2000);
  return el("section", {}, el("h2", {}, `Sweeps (${page.total})`),
    el("p", { class: "hint" }, "Start one with POST /v1/sweeps or `pretrainer sweeps start` (see the README)."),
    table(["id", "algorithm", "metric", "status", "trials", "best", "created"],
      page.items.map((s) => ({ id: s.id, cells: [el("code", {}, s.id), s.algorithm, `${s.metric} (${s.direction})`,
        el("span", { class: `status-${s.status}` }, s.status), `${s.trials.length}/${s.budget}`, s.best_value, s.created_at] })),
      (s) => { location.hash = `sweeps/${s.id}`; }));
}

// Each ended trial's value by trial number, coloured by state; the best one ringed.
function trialChart(sweep) {
  const W = 560, H = 240, L = 55, R = 20, T = 15, B = 35;
  const svg = svgEl("svg", { id: "sweep-chart", class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  const pts = sweep.trials.filter((t) => typeof t.value === "number");
  svg.dataset.points = String(pts.length);
  if (!pts.length) {
    svg.append(Object.assign(svgEl("text", { x: L, y: H / 2 }), { textContent: "waiting for the first trial…" }));
    return svg;
  }
  const ns = sweep.trials.map((t) => t.number), vs = pts.map((t) => t.value);
  const x = scale(Math.min(...ns), Math.max(...ns), L, W - R), y = scale(Math.min(...vs), Math.max(...vs), H - B, T);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }), svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
  for (const v of [Math.min(...vs), Math.max(...vs)]) svg.append(Object.assign(svgEl("text", { x: 4, y: y(v) + 4 }), { textContent: fmt(v) }));
  svg.append(Object.assign(svgEl("text", { x: (W - R) / 2 - 40, y: H - 4 }), { textContent: `trial → ${sweep.metric}` }));
  for (const t of pts) {
    svg.append(svgEl("circle", { class: "trial", "data-state": t.state, cx: x(t.number), cy: y(t.value), r: 5, fill: SWEEP_COLOURS[t.state] || "#666" }));
    if (t.job_id === sweep.best_job_id) svg.append(svgEl("circle", { cx: x(t.number), cy: y(t.value), r: 9, fill: "none", stroke: "#2a2", "stroke-width": 2 }));
  }
  return svg;
}

async function sweepView(id) {
  const sweep = await api(`/v1/sweeps/${id}`);
  if (sweep.status === "running") setTimeout(() => { if (location.hash === `#sweeps/${id}`) render(); }, 2000);
  const cancel = el("button", { class: "secondary", id: "sweep-cancel", onclick: guard(async () => { await api(`/v1/sweeps/${id}/cancel`, { method: "POST" }); render(); }) }, "Cancel");
  cancel.hidden = sweep.status !== "running";
  const best = sweep.best_model_id ? el("a", { href: `#models/${sweep.best_model_id}`, id: "sweep-best" }, `best model ${sweep.best_model_id} →`) : "";
  return [
    el("section", {}, el("h2", {}, "Sweep ", el("code", {}, id)),
      el("div", { class: "row" }, el("div", {},
        el("p", {}, "status: ", el("span", { id: "sweep-status", class: `status-${sweep.status}` }, sweep.status)), progressBar(sweep.progress),
        el("p", { class: "hint" }, `${sweep.algorithm} on ${sweep.dataset_id}: ${sweep.direction} ${sweep.metric}, ${sweep.budget} trials, ${sweep.parallelism} at once`),
        el("pre", {}, JSON.stringify(sweep.space, null, 1)), el("p", {}, best), cancel, sweep.error ? el("pre", {}, sweep.error) : ""),
        trialChart(sweep))),
    el("section", {}, el("h2", {}, "Leaderboard"),
      table(["#", "job", "params", "state", sweep.metric, "seconds"],
        sweep.trials.map((t) => ({ id: t.job_id, cells: [t.number, el("code", {}, t.job_id), t.params,
          el("span", { class: `status-${t.state}` }, t.job_id === sweep.best_job_id ? `${t.state} ★` : t.state), t.value, t.seconds] })),
        (t) => { location.hash = `jobs/${t.id}`; })),
  ];
}

// ------------------------------------------------------------ comparisons ("does pretraining pay?")

// Means per backbone, pretrained (blue) and scratch (orange), each with a whisker of ± one std,
// and below them the paired difference with its 95% interval against a zero line. The svg's
// data-backbones and each mark's data-* say what is drawn (tests read them).
function comparisonChart(c) {
  const W = 620, rowH = 34, L = 190, R = 30, T = 24, n = c.backbones.length;
  const H = T + n * rowH * 2 + 60;
  const svg = svgEl("svg", { id: "comparison-chart", class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  svg.dataset.backbones = String(n);
  const ends = c.rows.flatMap((r) => r.mean === null ? [] : [r.mean - (r.std || 0), r.mean + (r.std || 0)]);
  const dEnds = c.deltas.flatMap((d) => [d.delta, d.ci_low, d.ci_high].filter((v) => v !== null)).concat([0]);
  const text = (x, y, t, anchor) => Object.assign(svgEl("text", { x, y, "text-anchor": anchor || "start" }), { textContent: t });
  if (!ends.length) {
    svg.append(text(L, T + 20, "waiting for the first pair of jobs…"));
    return svg;
  }
  const x = scale(Math.min(...ends), Math.max(...ends), L, W - R);
  svg.append(text(L, 14, `${c.metric}: mean ± std over seeds`), text(W - R, 14, "● pretrained  ● scratch", "end"));
  c.rows.forEach((r, i) => {
    const y = T + 10 + i * rowH, colour = r.pretrained ? "#2f6fde" : "#e8833a";
    if (i % 2 === 0) svg.append(text(L - 8, y + 4 + rowH / 2, r.backbone.length > 26 ? r.backbone.slice(0, 25) + "…" : r.backbone, "end"));
    if (r.mean === null) return;
    const lo = r.mean - (r.std || 0), hi = r.mean + (r.std || 0);
    svg.append(svgEl("line", { x1: x(lo), x2: x(hi), y1: y, y2: y, stroke: colour, "stroke-width": 2 }),
      svgEl("circle", { class: "mean", cx: x(r.mean), cy: y, r: 5, fill: colour, "data-backbone": r.backbone, "data-pretrained": String(r.pretrained), "data-mean": String(r.mean) }),
      text(x(hi) + 6, y + 4, fmt(r.mean)));
  });
  const top = T + n * rowH * 2 + 10, dx = scale(Math.min(...dEnds), Math.max(...dEnds), L, W - R);
  svg.append(text(L, top, "pretrained − scratch, 95% CI (paired by seed)"),
    svgEl("line", { x1: dx(0), x2: dx(0), y1: top + 6, y2: H - 4, stroke: "#999", "stroke-dasharray": "3 3" }));
  c.deltas.forEach((d, i) => {
    const y = top + 18 + i * (40 / Math.max(n, 1));
    if (d.delta === null) return;
    if (d.ci_low !== null) svg.append(svgEl("line", { class: "ci", x1: dx(d.ci_low), x2: dx(d.ci_high), y1: y, y2: y, stroke: "#1f8a4c", "stroke-width": 3, "data-backbone": d.backbone, "data-ci-low": String(d.ci_low), "data-ci-high": String(d.ci_high) }));
    svg.append(svgEl("circle", { class: "delta", cx: dx(d.delta), cy: y, r: 5, fill: "#1f8a4c", "data-delta": String(d.delta) }),
      text(dx(d.ci_high ?? d.delta) + 6, y + 4, `${d.delta >= 0 ? "+" : ""}${fmt(d.delta)}`));
  });
  return svg;
}

async function comparisonsView() {
  const [page, datasets, backbones] = await Promise.all([api("/v1/comparisons?limit=500"), api("/v1/datasets?limit=500"), api("/v1/backbones")]);
  const labelled = datasets.items.filter((d) => d.labelled !== false);
  const dsSelect = el("select", { id: "compare-dataset" }, labelled.map((d) => el("option", { value: d.id }, `${d.name} (${d.kind}, ${d.n_rows} rows) ${d.id}`)));
  const known = backbones.models.map((m) => m.backbone).concat(backbones.architectures.map((a) => a.name));
  const backboneInput = el("input", { id: "compare-backbones", list: "compare-known", placeholder: "model:mdl_…, resnet18, minilm", size: 50 });
  const seeds = el("input", { id: "compare-seeds", value: "3", placeholder: "3 or 0,1,7" });
  const target = el("input", { id: "compare-target", placeholder: "class folders / the label column" });
  const params = el("textarea", { id: "compare-params", placeholder: '{"epochs": 30, "freeze": "none"}' });
  const submit = guard(async (ev) => {
    ev.preventDefault();
    const text = seeds.value.trim();
    const body = { dataset_id: dsSelect.value, backbones: backboneInput.value.split(",").map((s) => s.trim()).filter(Boolean),
      seeds: text.includes(",") ? text.split(",").map(Number) : Number(text), params: params.value.trim() ? JSON.parse(params.value) : {} };
    if (target.value.trim()) body.target = target.value.trim();
    const c = await api("/v1/comparisons", { method: "POST", json: body });
    notify(`comparison ${c.id} started: ${c.job_ids.length} jobs`, true);
    location.hash = `compare/${c.id}`;
  });
  return [
    el("section", {}, el("h2", {}, "Does pretraining pay?"),
      el("p", { class: "hint" }, "Trains transfer from each backbone, pretrained and from scratch, once per seed, and shows the held-out metric with the difference to scratch and its 95% interval."),
      el("form", { id: "compare-form", onsubmit: submit },
        el("div", { class: "grid" },
          el("label", { for: "compare-dataset" }, "labelled dataset"), dsSelect,
          el("label", { for: "compare-backbones" }, "backbones (comma-separated)"), backboneInput,
          el("label", { for: "compare-seeds" }, "seeds"), seeds,
          el("label", { for: "compare-target" }, "target"), target,
          el("label", { for: "compare-params" }, "transfer params (JSON)"), params),
        el("datalist", { id: "compare-known" }, known.map((k) => el("option", { value: k }))),
        el("p", {}, el("button", { id: "compare-submit", type: "submit" }, "Compare")))),
    el("section", {}, el("h2", {}, `Comparisons (${page.total})`),
      table(["id", "name", "status", "backbones", "seeds", "delta", "created"],
        page.items.map((c) => ({ id: c.id, cells: [el("code", {}, c.id), c.name || "", el("span", { class: `status-${c.status}` }, c.status),
          c.backbones.join(", "), c.seeds.length, c.deltas.map((d) => d.delta === null ? "–" : fmt(d.delta)).join(", "), c.created_at] })),
        (c) => { location.hash = `compare/${c.id}`; })),
  ];
}

async function comparisonView(id) {
  const c = await api(`/v1/comparisons/${id}`);
  if (!TERMINAL.includes(c.status)) setTimeout(() => { if (location.hash === `#compare/${id}`) render(); }, 2000);
  const cancel = el("button", { class: "secondary", id: "compare-cancel", hidden: TERMINAL.includes(c.status),
    onclick: guard(async () => { await api(`/v1/comparisons/${id}/cancel`, { method: "POST" }); render(); }) }, "Cancel");
  return [
    el("section", {}, el("h2", {}, "Comparison ", el("code", {}, id)),
      el("p", {}, "status: ", el("span", { id: "compare-status", class: `status-${c.status}` }, c.status), " ",
        el("span", { class: "hint" }, Object.entries(c.counts).filter(([, v]) => v).map(([k, v]) => `${v} ${k}`).join(", ")), " ", cancel),
      comparisonChart(c)),
    el("section", {}, el("h2", {}, `${c.metric} per seed (${c.seeds.join(", ")})`),
      table(["backbone", "pretrained", "values", "mean", "std"],
        c.rows.map((r) => ({ cells: [r.backbone, r.pretrained ? "pretrained" : "scratch", r.values.map((v) => v === null ? "–" : fmt(v)).join("  "), r.mean, r.std] }))),
      el("h2", {}, "Pretrained − scratch"),
      table(["backbone", "delta", "95% CI", "pairs", "note"],
        c.deltas.map((d) => ({ cells: [d.backbone, d.delta, d.ci_low === null ? "" : `[${fmt(d.ci_low)}, ${fmt(d.ci_high)}]`, d.n_pairs, d.note || ""] })))),
  ];
}

// ------------------------------------------------------------------------------ webhooks

async function webhooksView() {
  const page = await api("/v1/webhooks?limit=500");
  const url = el("input", { id: "webhook-url", placeholder: "https://example.com/pretrainer", size: 50 });
  const events = el("input", { id: "webhook-events", value: "job.*", placeholder: "job.*, batch.failed, comparison.*" });
  const add = guard(async (ev) => {
    ev.preventDefault();
    const hook = await api("/v1/webhooks", { method: "POST", json: { url: url.value.trim(), events: events.value.split(",").map((s) => s.trim()).filter(Boolean) } });
    notify(`webhook ${hook.id} added; its signing secret (shown once): ${hook.secret}`, true);
    view.replaceChildren(...[await webhooksView()].flat());
  });
  return [
    el("section", {}, el("h2", {}, "Add a webhook"),
      el("form", { id: "webhook-form", onsubmit: add },
        el("div", { class: "grid" }, el("label", { for: "webhook-url" }, "URL"), url, el("label", { for: "webhook-events" }, "events"), events),
        el("p", { class: "hint" }, "Each delivery is a POST signed with Pretrainer-Signature: t=<unix seconds>,v1=<HMAC-SHA256 of \"t.body\">."),
        el("p", {}, el("button", { id: "webhook-submit", type: "submit" }, "Add")))),
    el("section", {}, el("h2", {}, `Webhooks (${page.total})`),
      table(["id", "url", "events", "created"], page.items.map((w) => ({ id: w.id, cells: [el("code", {}, w.id), w.url, w.events.join(", "), w.created_at] })),
        (w) => { location.hash = `webhooks/${w.id}`; })),
  ];
}

async function webhookView(id) {
  const [hook, page] = await Promise.all([api(`/v1/webhooks/${id}`), api(`/v1/webhooks/${id}/deliveries?limit=200`)]);
  const test = guard(async () => { await api(`/v1/webhooks/${id}/test`, { method: "POST" }); notify("test delivery queued", true); render(); });
  const del = guard(async () => { await api(`/v1/webhooks/${id}`, { method: "DELETE" }); location.hash = "webhooks"; });
  return el("section", {}, el("h2", {}, "Webhook ", el("code", {}, id)),
    el("p", {}, hook.url, " ", el("span", { class: "hint" }, hook.events.join(", "))),
    el("p", {}, el("button", { id: "webhook-test", onclick: test }, "Send a test"), " ", el("button", { class: "secondary", onclick: del }, "Delete")),
    el("h2", {}, `Deliveries (${page.total})`),
    table(["id", "event", "status", "attempts", "last code", "last error", "created", "delivered"],
      page.items.map((d) => ({ id: d.id, cells: [el("code", {}, d.id), d.event, el("span", { class: `status-${d.status === "delivered" ? "succeeded" : d.status}` }, d.status),
        d.attempts, d.last_status_code, d.last_error, d.created_at, d.delivered_at] }))));
}

// --------------------------------------------------------------------------------- router

async function render() {
  if (following) { following.abort(); following = null; }
  const [tab, id] = (location.hash.slice(1) || "datasets").split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === tab);
  const views = { datasets: datasetsView, train: trainView, jobs: id ? () => jobView(id) : jobsView, models: id ? () => modelView(id) : modelsView, usage: usageView,
    registry: id ? () => registryNameView(decodeURIComponent(id)) : registryView };
  views.sweeps = id ? () => sweepView(id) : sweepsView;
  views.compare = id ? () => comparisonView(id) : comparisonsView;
  views.webhooks = id ? () => webhookView(id) : webhooksView;
  try {
    const content = await (views[tab] || datasetsView)(id);
    view.replaceChildren(...[content].flat());
    document.body.dataset.view = tab;
  } catch (e) {
    notify(e.message);
  }
}

keyInput.value = localStorage.getItem("pretrainer.apiKey") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("pretrainer.apiKey", keyInput.value); render(); });
window.addEventListener("hashchange", () => { notify(""); render(); });
render();
