// LineChart: live line charts drawn as SVG from the widget's synced state.
// Everything drawn comes from the model's traits, so a reloaded page or a second tab
// draws the whole curve again from the kernel's state. No library, nothing fetched.

const NS = "http://www.w3.org/2000/svg";
const MARGIN = { left: 56, right: 12, top: 30, bottom: 38 };

function svg(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const unit = [1, 2, 2.5, 5, 10].find((m) => m * power >= raw) || 10;
  return unit * power;
}

function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const step = niceStep(hi - lo, count);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

// Ticks of a log10 axis (lo, hi in log10 units): 1, 2, 5 times powers of ten.
function logTicks(lo, hi, count) {
  const out = [];
  for (let p = Math.floor(lo); p <= Math.ceil(hi); p++) {
    for (const m of [1, 2, 5]) {
      const v = Math.log10(m) + p;
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  if (out.length > count * 2) return out.filter((v) => Number.isInteger(Math.round(v * 1e9) / 1e9));
  if (out.length >= 2) return out;
  return ticks(Math.pow(10, lo), Math.pow(10, hi), count).filter((v) => v > 0).map(Math.log10);
}

function label(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1).replace("e+", "e");
  return String(+v.toPrecision(4));
}

function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  return [lo, hi];
}

// The lines: the style of each from `series`, its points from the float32 buffer `data`.
function readLines(model) {
  const raw = model.get("data");
  let values = new Float32Array(0);
  if (raw && raw.byteLength) {
    const bytes = raw instanceof ArrayBuffer ? new Uint8Array(raw)
      : new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    values = new Float32Array(bytes.slice().buffer);  // a copy: aligned for Float32Array
  }
  let at = 0;
  return (model.get("series") || []).map((s) => {
    const x = values.subarray(at, at + s.n), y = values.subarray(at + s.n, at + 2 * s.n);
    at += 2 * s.n;
    return { ...s, x, y };
  });
}

function draw(model, el) {
  const width = Math.max(240, el.clientWidth || 600);
  const height = model.get("height");
  const logY = model.get("log_y"), logX = model.get("log_x");
  const series = readLines(model);
  el.replaceChildren();
  const root = svg("svg", { width, height, class: "lmlab-chart-svg", role: "img" }, el);
  root.dataset.points = series.length ? String((series[0].x || []).length) : "0";
  root.dataset.series = String(series.length);
  svg("text", { x: MARGIN.left, y: 18, class: "lmlab-chart-title" }, root).textContent =
    model.get("title");

  const ty = (v) => (logY ? (v > 0 ? Math.log10(v) : NaN) : v);
  const tx = (v) => (logX ? (v > 0 ? Math.log10(v) : NaN) : v);
  const xs = series.flatMap((s) => Array.from(s.x, tx));
  const ys = series.flatMap((s) => Array.from(s.y, ty));
  let [x0, x1] = extent(xs);
  const range = model.get("x_range") || [];
  if (range.length === 2 && Number.isFinite(tx(range[0])) && Number.isFinite(tx(range[1]))) {
    [x0, x1] = [tx(range[0]), tx(range[1])];
  }
  let [y0, y1] = extent(ys);
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  if (!Number.isFinite(x0)) { x0 = 0; x1 = 1; }
  if (!Number.isFinite(y0)) { y0 = 0; y1 = 1; }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const px = (v) => MARGIN.left + ((v - x0) / (x1 - x0)) * plotW;
  const py = (v) => MARGIN.top + (1 - (v - y0) / (y1 - y0)) * plotH;

  const axes = svg("g", { class: "lmlab-chart-axes" }, root);
  const yCount = Math.max(3, Math.floor(plotH / 40));
  for (const v of logY ? logTicks(y0, y1, yCount) : ticks(y0, y1, yCount)) {
    svg("line", { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: py(v), y2: py(v), class: "grid" }, axes);
    svg("text", { x: MARGIN.left - 6, y: py(v) + 4, "text-anchor": "end" }, axes).textContent =
      logY ? label(Math.pow(10, v)) : label(v);
  }
  const xCount = Math.max(2, Math.floor(plotW / 90));
  for (const v of logX ? logTicks(x0, x1, xCount) : ticks(x0, x1, xCount)) {
    svg("line", { x1: px(v), x2: px(v), y1: MARGIN.top, y2: MARGIN.top + plotH, class: "grid" }, axes);
    svg("text", { x: px(v), y: MARGIN.top + plotH + 16, "text-anchor": "middle" }, axes).textContent =
      logX ? label(Math.pow(10, v)) : label(v);
  }
  svg("text", { x: MARGIN.left + plotW / 2, y: height - 4, "text-anchor": "middle", class: "axis-title" },
    axes).textContent = model.get("x_label");
  const yTitle = svg("text", { x: 12, y: MARGIN.top + plotH / 2, "text-anchor": "middle",
    class: "axis-title", transform: `rotate(-90 12 ${MARGIN.top + plotH / 2})` }, axes);
  yTitle.textContent = model.get("y_label");

  const lines = svg("g", { class: "lmlab-chart-lines" }, root);
  drawMarks(model.get("marks") || [], tx, (v) => (v === Infinity ? MARGIN.left + plotW : px(v)), plotH, root);
  let legendX = width - MARGIN.right;
  for (const s of [...series].reverse()) {
    if (!s.name) continue;
    const text = svg("text", { x: legendX, y: 18, "text-anchor": "end", class: "legend",
      fill: s.color }, root);
    text.textContent = s.name;
    legendX -= text.getComputedTextLength ? text.getComputedTextLength() + 28 : 100;
    svg("line", { x1: legendX + 6, x2: legendX + 20, y1: 14, y2: 14, stroke: s.color,
      "stroke-width": Math.max(1.5, s.width || 2), "stroke-opacity": Math.max(0.4, s.opacity ?? 1),
      "stroke-dasharray": s.dash ? "4 3" : "none" }, root);
  }
  for (const s of series) {
    const x = s.x || [], y = s.y || [];
    let d = "", pen = false;
    for (let i = 0; i < x.length; i++) {
      const v = ty(y[i]);
      const u = tx(x[i]);
      if (!Number.isFinite(v) || !Number.isFinite(u)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${px(u).toFixed(1)},${py(v).toFixed(1)}`;
      pen = true;
    }
    svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2,
      "stroke-opacity": s.opacity ?? 1, "stroke-dasharray": s.dash ? "4 3" : "none",
      class: "series" }, lines);
    if (s.markers) {
      for (let i = 0; i < x.length; i++) {
        const v = ty(y[i]);
        const u = tx(x[i]);
        if (!Number.isFinite(v) || !Number.isFinite(u)) continue;
        const dot = svg("circle", { cx: px(u), cy: py(v), r: 3, fill: s.color }, lines);
        svg("title", {}, dot).textContent = `${s.name}: ${label(y[i])} at ${label(x[i])}`;
      }
    }
  }
}

// Vertical marks (a step chosen, a head crossing a threshold), each labelled at the top.
function drawMarks(marks, tx, px, plotH, root) {
  const g = svg("g", { class: "lmlab-chart-marks" }, root);
  for (const m of marks) {
    const u = tx(m.x);
    if (!Number.isFinite(u)) continue;
    const x = px(u);
    if (x < MARGIN.left - 0.5 || x > px(Infinity)) continue;
    const line = svg("line", { x1: x, x2: x, y1: MARGIN.top, y2: MARGIN.top + plotH, stroke: m.color,
      "stroke-width": m.width || 1.5, "stroke-dasharray": m.dash ? "3 3" : "none", class: "mark" }, g);
    line.dataset.x = String(m.x);
    if (m.label) {
      const text = svg("text", { x: x + 3, y: MARGIN.top + 10 + 11 * (m.row || 0), fill: m.color,
        class: "mark-label" }, g);
      text.textContent = m.label;
    }
  }
  root.dataset.marks = String(marks.length);
}

function render({ model, el }) {
  el.classList.add("lmlab-chart");
  let frame = null;
  const redraw = () => {
    if (frame !== null) return;
    frame = requestAnimationFrame(() => { frame = null; draw(model, el); });
  };
  const names = ["series", "data", "title", "x_label", "y_label", "log_y", "log_x", "height",
    "marks", "x_range"];
  for (const name of names) model.on(`change:${name}`, redraw);
  const resize = new ResizeObserver(redraw);
  resize.observe(el);
  draw(model, el);
  return () => {  // everything this view added: handlers, the observer, a pending frame
    for (const name of names) model.off(`change:${name}`, redraw);
    resize.disconnect();
    if (frame !== null) cancelAnimationFrame(frame);
  };
}

export default { render };
