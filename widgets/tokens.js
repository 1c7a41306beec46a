// TokenChips: a text as one chip per token. Prompt chips plain; the others tinted by the
// probability the model gave them; hover shows probability, rank, a note and the top
// alternatives; when clickable, a click sends the chip's index (the stepper rewinds to
// just before it).

function tint(p) {
  // 0 -> pale red, 1 -> pale green
  const r = Math.round(250 - 120 * p), g = Math.round(200 + 40 * p), b = Math.round(200 - 40 * p);
  return `rgb(${r},${g},${b})`;
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lmlab-chips";
  el.appendChild(root);
  let clicks = 0;

  function redraw() {
    root.replaceChildren();
    const clickable = model.get("clickable");
    model.get("chips").forEach((chip, i) => {
      const span = document.createElement("span");
      span.className = "lmlab-chip" + (chip.prob === null ? " lmlab-chip-prompt" : "") +
        (clickable ? "" : " lmlab-chip-static");
      span.textContent = chip.text;
      span.dataset.index = String(i);
      if (chip.prob !== null) {
        span.style.background = tint(chip.prob);
        const alts = (chip.alternatives || []).map(([t, p]) => `  ${t}  ${p.toFixed(3)}`).join("\n");
        span.title = `probability ${chip.prob.toFixed(3)}, rank ${chip.rank}` +
          (chip.sampled === false ? " (chosen)" : "") + (chip.note ? `\n${chip.note}` : "") +
          (alts ? `\nthe model's top tokens here:\n${alts}` : "") +
          (clickable ? "\nclick: go back to just before this token" : "");
        if (clickable) {
          span.addEventListener("click", () => {
            clicks += 1;
            model.set("clicked", { index: i, n: clicks + Math.random() });
            model.save_changes();
          });
        }
      }
      root.appendChild(span);
    });
    root.dataset.chips = String(model.get("chips").length);
  }
  redraw();
  model.on("change:chips", redraw);
  model.on("change:clickable", redraw);
  return () => { model.off("change:chips", redraw); model.off("change:clickable", redraw); };
}

export default { render };
