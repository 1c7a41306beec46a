// AttentionMatrix: one attention head as a matrix on a canvas, query rows down, key columns
// across, token labels on both axes and a colour bar. The matrix arrives as one buffer
// of uint16 (65535 = attention 1; for a causal head only the lower triangle, row by row)
// and is painted once into an offscreen image; a focus
// change or a hover only recomposes that image with the outline, no data re-read. No
// library, nothing fetched.

const LEFT = 96;    // room for the query labels
const TOP = 6;
const BOTTOM = 78;  // room for the key labels, turned
const RIGHT = 58;   // the colour bar
const MASKED = [226, 226, 226];
const LABEL_CHARS = 12;

function values(model) {
  const bytes = bytesOf(model);
  // a copy: a Uint16Array needs an even offset, and the widget's buffer may not have one
  return new Uint16Array(bytes.slice().buffer, 0, bytes.length >> 1);
}

// where cell (q, k) is in the buffer: a causal head sends keys 0..q of each row q
function cellIndex(model, q, k) {
  return model.get("causal") ? q * (q + 1) / 2 + k : q * model.get("size") + k;
}

// attention 0 -> white, 1 -> dark blue (the overview's colours)
function colour(t) {
  return [Math.round(255 - 227 * t), Math.round(255 - 196 * t), Math.round(255 - 120 * t)];
}
// RGBA of the 256 steps a pixel shows (a value's top byte): no array made per cell
const RAMP = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  const [r, g, b] = colour(i / 255);
  RAMP[i] = (255 << 24 | b << 16 | g << 8 | r) >>> 0;  // ImageData's bytes, little-endian
}
const GREY = (255 << 24 | MASKED[2] << 16 | MASKED[1] << 8 | MASKED[0]) >>> 0;

function label(tokens, i) {
  const t = tokens[i] === undefined ? "" : tokens[i];
  return `${i}:${t.length > LABEL_CHARS ? t.slice(0, LABEL_CHARS - 1) + "…" : t}`;
}

// the matrix, one pixel a cell, into `image` (a canvas of T x T); true when there was one
function paint(model, image, data) {
  const T = model.get("size"), causal = model.get("causal");
  image.width = Math.max(1, T);
  image.height = Math.max(1, T);
  if (!T || data.length < (causal ? T * (T + 1) / 2 : T * T)) return false;
  const ctx = image.getContext("2d");
  const out = ctx.createImageData(T, T);
  const px = new Uint32Array(out.data.buffer);
  for (let q = 0, at = 0, from = 0; q < T; q++) {
    const keys = causal ? q + 1 : T;
    for (let k = 0; k < keys; k++) px[at++] = RAMP[data[from++] >> 8];
    for (let k = keys; k < T; k++) px[at++] = GREY;
  }
  ctx.putImageData(out, 0, 0);
  return true;
}

function geometry(model) {
  const T = model.get("size");
  const cell = Math.max(1, Math.round(model.get("side") / Math.max(1, T)));
  const every = Math.max(Math.ceil(T / 32), Math.ceil(13 / cell));
  return { T, cell, side: T * cell, every };
}

function draw(model, canvas, image, painted) {
  const { T, cell, side, every } = geometry(model);
  const width = LEFT + side + RIGHT, height = TOP + side + BOTTOM;
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  if (!painted) return;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(image, LEFT, TOP, side, side);
  const tokens = model.get("tokens");
  ctx.fillStyle = "#333";
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (let i = 0; i < T; i += every) ctx.fillText(label(tokens, i), LEFT - 4, TOP + (i + 0.5) * cell);
  for (let i = 0; i < T; i += every) {
    ctx.save();
    ctx.translate(LEFT + (i + 0.5) * cell, TOP + side + 4);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(label(tokens, i), 0, 0);
    ctx.restore();
  }
  ctx.textAlign = "center";
  ctx.font = "11px sans-serif";
  ctx.fillText("key (attended to)", LEFT + side / 2, height - 8);
  ctx.save();
  ctx.translate(10, TOP + side / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText("query (attending)", 0, 0);
  ctx.restore();
  // the colour bar: 1 at the top, 0 at the bottom
  const x = LEFT + side + 12, bar = ctx.createLinearGradient(0, TOP, 0, TOP + side);
  bar.addColorStop(0, `rgb(${colour(1).join(",")})`);
  bar.addColorStop(1, `rgb(${colour(0).join(",")})`);
  ctx.fillStyle = bar;
  ctx.fillRect(x, TOP, 10, side);
  ctx.strokeStyle = "#999";
  ctx.lineWidth = 1;
  ctx.strokeRect(x + 0.5, TOP + 0.5, 10, side);
  ctx.fillStyle = "#333";
  ctx.textAlign = "left";
  ctx.fillText("1", x + 14, TOP + 6);
  ctx.fillText("0", x + 14, TOP + side - 6);
  ctx.save();
  ctx.translate(x + 30, TOP + side / 2);
  ctx.rotate(Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText("attention", 0, 0);
  ctx.restore();
  const p = model.get("focus");
  if (p >= 0 && p < T) {  // its row (what it attends to) and its column (what attends to it)
    ctx.strokeStyle = "#e4572e";
    ctx.lineWidth = 2;
    ctx.strokeRect(LEFT, TOP + p * cell, (p + 1) * cell, cell);
    ctx.strokeRect(LEFT + p * cell, TOP + p * cell, cell, (T - p) * cell);
  }
}

// the [query, key] under a pointer event, or null off the matrix
function cellAt(model, canvas, event) {
  const { T, cell } = geometry(model);
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * (canvas.width / box.width) - LEFT;
  const y = (event.clientY - box.top) * (canvas.height / box.height) - TOP;
  const q = Math.floor(y / cell), k = Math.floor(x / cell);
  if (x < 0 || y < 0 || q >= T || k >= T) return null;
  return [q, k];
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lmlab-matrix";
  const bar = document.createElement("div");
  bar.className = "lmlab-matrix-bar";
  const title = document.createElement("span");
  const canvas = document.createElement("canvas");
  canvas.className = "lmlab-matrix-canvas";
  bar.append(title, saveButton(canvas, "attention-head.png", "this head, with its labels,"));
  const tip = document.createElement("div");
  tip.className = "lmlab-matrix-tip";
  tip.hidden = true;
  root.append(bar, canvas, tip);
  el.appendChild(root);
  const image = document.createElement("canvas");
  let matrix = new Uint16Array(0), painted = false, pending = null;

  function redraw(repaint) {
    const t0 = performance.now();
    if (repaint) {
      matrix = values(model);
      painted = paint(model, image, matrix);
    }
    draw(model, canvas, image, painted);
    title.textContent = model.get("title");
    canvas.dataset.drawMs = (performance.now() - t0).toFixed(1);
    canvas.dataset.focus = String(model.get("focus"));
    canvas.dataset.size = String(model.get("size"));
    canvas.dataset.title = model.get("title");
    canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
  }
  // one message changes several traits, one event each: draw once, after the last
  function later(repaint) {
    if (pending === null) queueMicrotask(() => { const again = pending; pending = null; redraw(again); });
    pending = pending || repaint;
  }
  const repaint = () => later(true), recompose = () => later(false);
  redraw(true);

  canvas.addEventListener("click", (event) => {
    const at = cellAt(model, canvas, event);
    if (!at) return;
    model.set("focus", at[0]);
    model.save_changes();
    redraw(false);
  });
  canvas.addEventListener("mousemove", (event) => {
    const at = cellAt(model, canvas, event);
    if (!at || !painted || (model.get("causal") && at[1] > at[0])) { tip.hidden = true; return; }
    const [q, k] = at, tokens = model.get("tokens");
    const weight = matrix[cellIndex(model, q, k)] / 65535;
    tip.textContent = `${label(tokens, q)} → ${label(tokens, k)}\nattention ${weight.toFixed(3)}`;
    const box = root.getBoundingClientRect();
    tip.style.left = `${event.clientX - box.left + 12}px`;
    tip.style.top = `${event.clientY - box.top + 12}px`;
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  const data = ["data", "data_b64", "encoding", "size", "causal"], layout = ["tokens", "focus", "title", "side"];
  for (const name of data) model.on(`change:${name}`, repaint);
  for (const name of layout) model.on(`change:${name}`, recompose);
  return () => {
    for (const name of data) model.off(`change:${name}`, repaint);
    for (const name of layout) model.off(`change:${name}`, recompose);
  };
}

export default { render };
