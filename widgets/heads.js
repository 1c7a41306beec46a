// HeadGrid: every attention head of a model as small multiples on one canvas,
// layers down, heads across. Each head is a uint8 image [size x size] (query down,
// key across, 255 = attention 1) sent as one binary buffer (or base64 text where a
// host's widget manager cannot carry bytes). Clicking a head selects it. No library,
// nothing fetched.

const GAP = 3;
const LEFT = 34;  // room for the layer labels
const TOP = 18;   // room for the head labels

// attention 0 -> white, 1 -> dark blue; the masked upper triangle -> grey
function colour(v) {
  const t = v / 255;
  return [Math.round(255 - 227 * t), Math.round(255 - 196 * t), Math.round(255 - 120 * t)];
}
const MASKED = [226, 226, 226];

function draw(model, canvas) {
  const L = model.get("n_layer"), H = model.get("n_head"), S = model.get("size");
  const cell = model.get("cell");
  const data = bytesOf(model);
  canvas.width = LEFT + H * (cell + GAP);
  canvas.height = TOP + L * (cell + GAP);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (data.length < L * H * S * S || !S) return;
  const image = ctx.createImageData(H * (cell + GAP), L * (cell + GAP));
  const px = image.data;
  const rowBytes = image.width * 4;
  const scale = S / cell;
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      const base = (l * H + h) * S * S;
      const x0 = h * (cell + GAP), y0 = l * (cell + GAP);
      for (let y = 0; y < cell; y++) {
        const q = Math.min(S - 1, Math.floor(y * scale));
        let at = (y0 + y) * rowBytes + x0 * 4;
        for (let x = 0; x < cell; x++, at += 4) {
          const k = Math.min(S - 1, Math.floor(x * scale));
          const c = k > q ? MASKED : colour(data[base + q * S + k]);
          px[at] = c[0]; px[at + 1] = c[1]; px[at + 2] = c[2]; px[at + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, LEFT, TOP);
  ctx.fillStyle = "#333";
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  for (let l = 0; l < L; l++) ctx.fillText(`L${l}`, 4, TOP + l * (cell + GAP) + cell / 2);
  ctx.textAlign = "center";
  for (let h = 0; h < H; h++) ctx.fillText(`H${h}`, LEFT + h * (cell + GAP) + cell / 2, 9);
  const [sl, sh] = model.get("selected") || [];
  if (sl !== undefined && sl < L && sh < H) {
    ctx.strokeStyle = "#e4572e";
    ctx.lineWidth = 2;
    ctx.strokeRect(LEFT + sh * (cell + GAP) - 1, TOP + sl * (cell + GAP) - 1, cell + 2, cell + 2);
  }
}

function headAt(model, canvas, event) {
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * (canvas.width / box.width) - LEFT;
  const y = (event.clientY - box.top) * (canvas.height / box.height) - TOP;
  const cell = model.get("cell");
  const h = Math.floor(x / (cell + GAP)), l = Math.floor(y / (cell + GAP));
  if (x < 0 || y < 0 || h >= model.get("n_head") || l >= model.get("n_layer")) return null;
  return [l, h];
}

function render({ model, el }) {
  const start = performance.now();
  const root = document.createElement("div");
  root.className = "lmlab-heads";
  const bar = document.createElement("div");
  bar.className = "lmlab-heads-bar";
  const title = document.createElement("span");
  const canvas = document.createElement("canvas");
  canvas.className = "lmlab-heads-canvas";
  bar.append(title, saveButton(canvas, "attention-heads.png", "this grid"));
  root.append(bar, canvas);
  el.appendChild(root);

  function redraw() {
    const t0 = performance.now();
    title.textContent = model.get("title");
    draw(model, canvas);
    const ms = performance.now() - t0;
    canvas.dataset.drawMs = ms.toFixed(1);
    canvas.dataset.selected = (model.get("selected") || []).join(",");
    canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
  }
  redraw();
  canvas.dataset.renderMs = (performance.now() - start).toFixed(1);

  canvas.addEventListener("click", (event) => {
    const head = headAt(model, canvas, event);
    if (!head) return;
    model.set("selected", head);
    model.save_changes();
    redraw();
  });
  const names = ["data", "data_b64", "encoding", "n_layer", "n_head", "size", "cell", "selected", "title"];
  for (const name of names) model.on(`change:${name}`, redraw);
  return () => { for (const name of names) model.off(`change:${name}`, redraw); };
}

export default { render };
