// CandidateBars: the next-token candidates as horizontal bars. Kept tokens in colour
// (the probability they are drawn with), removed ones grey with the filter that removed
// them; a thin mark shows the model's own probability (temperature 1). A click on a bar
// sends its token id: that token becomes the next step.

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lmlab-bars";
  el.appendChild(root);
  let clicks = 0;

  function redraw() {
    root.replaceChildren();
    const rows = model.get("rows");
    const top = Math.max(1e-9, ...rows.map((r) => Math.max(r.prob, r.raw)));
    for (const row of rows) {
      const line = document.createElement("div");
      line.className = "lmlab-bar-row" + (row.removed_by ? " lmlab-removed" : "");
      line.dataset.id = String(row.id);
      line.title = `${row.text}: drawn with ${row.prob.toFixed(4)}; the model ${row.raw.toFixed(4)}` +
        (row.removed_by ? `; removed by ${row.removed_by}` : "") + "\nclick: take this token next";
      const label = document.createElement("code");
      label.textContent = row.text;
      const track = document.createElement("span");
      track.className = "lmlab-bar-track";
      const bar = document.createElement("span");
      bar.className = "lmlab-bar";
      bar.style.width = `${(100 * row.prob) / top}%`;
      const raw = document.createElement("span");
      raw.className = "lmlab-bar-raw";
      raw.style.left = `${(100 * row.raw) / top}%`;
      track.append(bar, raw);
      const value = document.createElement("span");
      value.className = "lmlab-bar-value";
      value.textContent = row.removed_by ? `${row.removed_by}` : row.prob.toFixed(3);
      line.append(label, track, value);
      line.addEventListener("click", () => {
        clicks += 1;
        model.set("picked", { id: row.id, n: clicks + Math.random() });
        model.save_changes();
      });
      root.appendChild(line);
    }
    root.dataset.rows = String(rows.length);
  }
  redraw();
  model.on("change:rows", redraw);
  return () => model.off("change:rows", redraw);
}

export default { render };
