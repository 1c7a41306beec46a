// PatchGrid: activation patching's restored fraction as heatmaps, one canvas per kind of
// activation (layers down; positions or heads across), and the clicked cell's top-k
// predictions. Every cell's predictions arrive with the grid (one buffer, see patching.py),
// so a click draws them here, with no kernel round trip. No library, nothing fetched.

const LEFT = 34;     // room for the layer labels
const TOP = 14;      // the metric's position and the changed tokens, marked above their columns
const LABEL_CHARS = 10;
const TITLES = {resid_pre: "residual stream, entering each block", heads: "attention heads (output)",
                mlps: "MLP outputs"};
const POSITIVE = [28, 93, 153], NEGATIVE = [198, 40, 40], ZERO = [247, 247, 247], NOT_RUN = [200, 200, 200];
const CHANGED = "#d35400";

// white at 0, blue towards 1 (the clean run), red towards -1, clamped; grey: not run
function colour(v) {
  if (Number.isNaN(v)) return NOT_RUN;
  const t = Math.max(-1, Math.min(1, v)), end = t >= 0 ? POSITIVE : NEGATIVE, a = Math.abs(t);
  return ZERO.map((z, i) => Math.round(z + (end[i] - z) * a));
}

// the buffer as {kind: {values [L*W], probs [L*W*k], tokens [L*W*k], width}}; {} if short
function sections(model) {
  const bytes = bytesOf(model), L = model.get("n_layer"), k = model.get("k");
  const kinds = model.get("kinds"), widths = model.get("widths");
  const out = {};
  let at = 0;
  // copies: a Float32Array needs an offset that is a multiple of 4, the widget's may not be
  const take = (count, Type) => {
    const array = new Type(bytes.slice(at, at + 4 * count).buffer);
    at += 4 * count;
    return array;
  };
  for (let i = 0; i < kinds.length; i++) {
    const n = L * widths[i];
    if (bytes.length < at + 4 * n * (1 + 2 * k)) return {};
    out[kinds[i]] = {width: widths[i], values: take(n, Float32Array), probs: take(n * k, Float32Array),
                     tokens: take(n * k, Uint32Array)};
  }
  return out;
}

function short(t) {
  return t.length > LABEL_CHARS ? t.slice(0, LABEL_CHARS - 1) + "…" : t;
}

function geometry(model, kind, width) {
  const L = model.get("n_layer"), positional = kind !== "heads";
  const cw = Math.max(10, Math.min(36, Math.floor(480 / Math.max(1, width))));
  const ch = Math.max(10, Math.min(22, Math.floor(264 / Math.max(1, L))));
  const bottom = positional ? 84 : 22;
  return {L, width, cw, ch, positional, w: LEFT + width * cw + 6, h: TOP + L * ch + bottom};
}

function changed(model) {
  const clean = model.get("tokens"), corrupted = model.get("corrupted");
  return clean.map((t, i) => corrupted[i] !== undefined && corrupted[i] !== t);
}

function drawGrid(model, canvas, kind, section, selected) {
  const g = geometry(model, kind, section.width);
  if (canvas.width !== g.w) canvas.width = g.w;
  if (canvas.height !== g.h) canvas.height = g.h;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, g.w, g.h);
  for (let l = 0; l < g.L; l++) {
    for (let i = 0; i < g.width; i++) {
      ctx.fillStyle = `rgb(${colour(section.values[l * g.width + i]).join(",")})`;
      ctx.fillRect(LEFT + i * g.cw, TOP + l * g.ch, g.cw - 1, g.ch - 1);
    }
  }
  ctx.fillStyle = "#333";
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  const everyLayer = Math.ceil(11 / g.ch);
  for (let l = 0; l < g.L; l += everyLayer) ctx.fillText(`L${l}`, LEFT - 4, TOP + (l + 0.5) * g.ch);
  const every = Math.ceil((g.positional ? 11 : 22) / g.cw);
  if (!g.positional) {
    ctx.textAlign = "center";
    for (let h = 0; h < g.width; h += every) ctx.fillText(`H${h}`, LEFT + (h + 0.5) * g.cw, TOP + g.L * g.ch + 9);
  } else {
    const tokens = model.get("tokens"), corrupted = model.get("corrupted"), differ = changed(model);
    const p = model.get("position");
    for (let i = 0; i < g.width; i++) {
      const x = LEFT + i * g.cw;
      if (differ[i]) {  // the changed token: a strip above its column, its label in orange
        ctx.fillStyle = CHANGED;
        ctx.fillRect(x, 8, g.cw - 1, 4);
      }
      if (i === p) {  // where the metric is read: a dark triangle
        ctx.fillStyle = "#222";
        ctx.beginPath();
        ctx.moveTo(x + g.cw / 2 - 4, 0);
        ctx.lineTo(x + g.cw / 2 + 4, 0);
        ctx.lineTo(x + g.cw / 2, 6);
        ctx.fill();
      }
      if (i % every && !differ[i]) continue;
      const text = differ[i] ? `${i}:${short(tokens[i])}→${short(corrupted[i])}` : `${i}:${short(tokens[i] || "")}`;
      ctx.save();
      ctx.translate(x + g.cw / 2, TOP + g.L * g.ch + 3);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "right";
      ctx.fillStyle = differ[i] ? CHANGED : "#333";
      ctx.font = differ[i] || i === p ? "bold 10px sans-serif" : "10px sans-serif";
      ctx.fillText(text, 0, 0);
      ctx.restore();
    }
  }
  if (selected && selected[0] === kind && selected[1] < g.L && selected[2] < g.width) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.strokeRect(LEFT + selected[2] * g.cw - 1, TOP + selected[1] * g.ch - 1, g.cw + 1, g.ch + 1);
  }
  Object.assign(canvas.dataset, {kind, left: LEFT, top: TOP, cw: g.cw, ch: g.ch, layers: g.L,
                                 width: g.width});
}

// [layer, index] under a pointer event, or null off the cells
function cellAt(model, canvas, kind, width, event) {
  const g = geometry(model, kind, width), box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * (canvas.width / box.width) - LEFT;
  const y = (event.clientY - box.top) * (canvas.height / box.height) - TOP;
  const i = Math.floor(x / g.cw), l = Math.floor(y / g.ch);
  if (x < 0 || y < 0 || i >= g.width || l >= g.L) return null;
  return [l, i];
}

function cellName(model, kind, l, i) {
  if (kind === "heads") return `head ${i} of layer ${l}`;
  const t = model.get("tokens")[i] || "", c = model.get("corrupted")[i] || "";
  return `layer ${l}, position ${i} (${t}${c !== t ? ` → ${c}` : ""})`;
}

// a probability: three decimals, or two significant digits below 0.001 (a 50,257-token softmax)
function probText(p) {
  return p >= 0.001 ? p.toFixed(3) : p.toExponential(1);
}

function valueText(v) {
  if (Number.isNaN(v)) return "not run";
  const clamped = v > 1 ? " (colour clamps at 1)" : v < -1 ? " (colour clamps at -1)" : "";
  return `restored ${v.toFixed(3)}${clamped}`;
}

// the clicked cell's predictions, as a table of bars
function drawDetail(model, detail, data) {
  const selected = model.get("selected") || [];
  const [kind, l, i] = selected, section = data[kind];
  detail.replaceChildren();
  if (!section || l >= model.get("n_layer") || i >= section.width) {
    detail.dataset.cell = "";
    if (Object.keys(data).length) detail.textContent = "Click a cell: what the patched run predicts there.";
    return;
  }
  const k = model.get("k"), vocab = model.get("vocab"), at = l * section.width + i;
  const v = section.values[at];
  const head = document.createElement("div");
  head.className = "lmlab-patching-detail-head";
  head.textContent = `${TITLES[kind]}, ${cellName(model, kind, l, i)}: ${valueText(v)}`;
  detail.append(head);
  if (!Number.isNaN(v)) {
    const table = document.createElement("table");
    const answer = model.get("answer"), wrong = model.get("wrong");
    for (let r = 0; r < k; r++) {
      const token = vocab[section.tokens[at * k + r]], p = section.probs[at * k + r];
      const row = table.insertRow();
      if (token === answer) row.className = "lmlab-answer";
      else if (token === wrong) row.className = "lmlab-wrong";
      const code = document.createElement("code");
      code.textContent = token;
      row.insertCell().append(code);
      row.insertCell().textContent = probText(p);
      const bar = document.createElement("span");
      bar.className = "lmlab-patching-bar";
      bar.style.width = `${Math.round(p * 160)}px`;
      row.insertCell().append(bar);
    }
    const note = document.createElement("div");
    note.className = "lmlab-patching-note";
    note.textContent = `the patched run's top ${k} next tokens (blue row: the answer ${answer}, red: ${wrong})`;
    detail.append(note, table);
  }
  detail.dataset.cell = `${kind},${l},${i}`;
  detail.dataset.value = String(v);
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lmlab-patchgrid";
  const grids = document.createElement("div");
  grids.className = "lmlab-patching-grids";
  const legend = document.createElement("div");
  legend.className = "lmlab-patching-legend";
  legend.innerHTML = '<span class="lmlab-patching-scale"></span><span>-1 · 0 (corrupted) · 1 (clean)</span>'
    + '<span class="lmlab-patching-swatch"></span><span>not run</span>'
    + `<span style="color:${CHANGED}">▬ changed token</span><span>▼ where the metric is read</span>`;
  const detail = document.createElement("div");
  detail.className = "lmlab-patching-detail";
  const tip = document.createElement("div");
  tip.className = "lmlab-patching-tip";
  tip.hidden = true;
  root.append(legend, grids, detail, tip);
  el.appendChild(root);
  let data = {}, canvases = {}, pending = null;

  function build() {  // one figure per kind, made again only when the kinds change
    const kinds = model.get("kinds");
    if (Object.keys(canvases).join() === kinds.join()) return;
    grids.replaceChildren();
    canvases = {};
    for (const kind of kinds) {
      const figure = document.createElement("figure");
      const caption = document.createElement("figcaption");
      caption.textContent = TITLES[kind] || kind;
      const canvas = document.createElement("canvas");
      canvas.className = `lmlab-patching-canvas lmlab-patching-${kind}`;
      const bar = document.createElement("div");
      bar.className = "lmlab-patching-bar-row";
      bar.append(caption, saveButton(canvas, `patching-${kind}.png`, "this grid"));
      figure.append(bar, canvas);
      grids.append(figure);
      canvases[kind] = canvas;
      canvas.addEventListener("click", (event) => {
        const at = data[kind] && cellAt(model, canvas, kind, data[kind].width, event);
        if (!at) return;
        model.set("selected", [kind, at[0], at[1]]);
        model.save_changes();
        redraw(false);
      });
      canvas.addEventListener("mousemove", (event) => {
        const at = data[kind] && cellAt(model, canvas, kind, data[kind].width, event);
        if (!at) { tip.hidden = true; return; }
        const v = data[kind].values[at[0] * data[kind].width + at[1]];
        tip.textContent = `${cellName(model, kind, at[0], at[1])}\n${valueText(v)}`;
        const box = root.getBoundingClientRect();
        tip.style.left = `${event.clientX - box.left + 12}px`;
        tip.style.top = `${event.clientY - box.top + 12}px`;
        tip.hidden = false;
      });
      canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    }
  }

  function redraw(decode) {
    const t0 = performance.now();
    if (decode) {
      build();
      data = sections(model);
    }
    const selected = model.get("selected") || [];
    for (const [kind, canvas] of Object.entries(canvases)) {
      if (data[kind]) drawGrid(model, canvas, kind, data[kind], selected);
    }
    drawDetail(model, detail, data);
    root.dataset.drawMs = (performance.now() - t0).toFixed(1);
    root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
    root.dataset.selected = selected.join(",");
  }
  // one message changes several traits, one event each: draw once, after the last
  function later(decode) {
    if (pending === null) queueMicrotask(() => { const again = pending; pending = null; redraw(again); });
    pending = pending || decode;
  }
  const decode = () => later(true), recompose = () => later(false);
  redraw(true);
  const dataTraits = ["data", "data_b64", "encoding", "kinds", "widths", "n_layer", "k", "vocab"];
  const layout = ["tokens", "corrupted", "position", "answer", "wrong", "selected"];
  for (const name of dataTraits) model.on(`change:${name}`, decode);
  for (const name of layout) model.on(`change:${name}`, recompose);
  return () => {
    for (const name of dataTraits) model.off(`change:${name}`, decode);
    for (const name of layout) model.off(`change:${name}`, recompose);
  };
}

export default { render };
