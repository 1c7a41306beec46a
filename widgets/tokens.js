// TokenChips: a text as one chip per token. Prompt chips plain; generated chips tinted
// by the probability the model gave them; hover shows probability, rank and the top
// alternatives; a click sends the chip's index (the stepper rewinds to just before it).

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
    model.get("chips").forEach((chip, i) => {
      const span = document.createElement("span");
      span.className = "lmlab-chip" + (chip.prob === null ? " lmlab-chip-prompt" : "");
      span.textContent = chip.text;
      span.dataset.index = String(i);
      if (chip.prob !== null) {
        span.style.background = tint(chip.prob);
        const alts = (chip.alternatives || []).map(([t, p]) => `  ${t}  ${p.toFixed(3)}`).join("\n");
        span.title = `probability ${chip.prob.toFixed(3)}, rank ${chip.rank}` +
          (chip.sampled ? "" : " (chosen)") + (alts ? `\nthe model's top tokens here:\n${alts}` : "") +
          "\nclick: go back to just before this token";
        span.addEventListener("click", () => {
          clicks += 1;
          model.set("clicked", { index: i, n: clicks + Math.random() });
          model.save_changes();
        });
      }
      root.appendChild(span);
    });
    root.dataset.chips = String(model.get("chips").length);
  }
  redraw();
  model.on("change:chips", redraw);
  return () => model.off("change:chips", redraw);
}

export default { render };
