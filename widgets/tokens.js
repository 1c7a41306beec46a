// TokenChips: a text as one chip per token. Prompt chips plain; the others tinted by the
// probability the model gave them; hover shows probability, rank, a note and the top
// alternatives; when clickable, a click sends the chip's index: with `action` "rewind" a
// tinted chip's (the stepper rewinds to just before it), with "explain" any chip's (the
// stepper explains it, or says why it cannot). `explained` is the outlined chip.

function tint(p) {
  // 0 -> pale red, 1 -> pale green
  const r = Math.round(250 - 120 * p), g = Math.round(200 + 40 * p), b = Math.round(200 - 40 * p);
  return `rgb(${r},${g},${b})`;
}

function hint(chip, action) {
  if (action === "explain") {
    if (chip.prob === null) return "part of the prompt: the model did not choose it";
    const other = chip.runner_up ? ` and not ${chip.runner_up[0]}` : "";
    return `click: why ${chip.text}${other}?`;
  }
  return chip.prob === null ? "" : "click: go back to just before this token";
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lmlab-chips";
  el.appendChild(root);
  let clicks = 0;

  function outline() {
    const at = model.get("explained");
    for (const old of root.querySelectorAll(".lmlab-chip-explained")) {
      if (Number(old.dataset.index) !== at) old.classList.remove("lmlab-chip-explained");
    }
    const chip = root.children[at];
    if (chip) chip.classList.add("lmlab-chip-explained");
    root.dataset.explained = String(at);
  }

  function redraw() {
    root.replaceChildren();
    const clickable = model.get("clickable"), action = model.get("action");
    model.get("chips").forEach((chip, i) => {
      const span = document.createElement("span");
      const live = clickable && (chip.prob !== null || action === "explain");
      span.className = "lmlab-chip" + (chip.prob === null ? " lmlab-chip-prompt" : "") +
        (clickable ? "" : " lmlab-chip-static") + (live && action === "explain" ? " lmlab-chip-explain" : "");
      span.textContent = chip.text;
      span.dataset.index = String(i);
      const how = clickable ? hint(chip, action) : "";
      if (chip.prob !== null) {
        span.style.background = tint(chip.prob);
        const alts = (chip.alternatives || []).map(([t, p]) => `  ${t}  ${p.toFixed(3)}`).join("\n");
        span.title = `probability ${chip.prob.toFixed(3)}, rank ${chip.rank}` +
          (chip.sampled === false ? " (chosen)" : "") + (chip.note ? `\n${chip.note}` : "") +
          (alts ? `\nthe model's top tokens here:\n${alts}` : "") + (how ? `\n${how}` : "");
      } else if (how) {
        span.title = how;
      }
      if (live) {
        span.addEventListener("click", () => {
          clicks += 1;
          model.set("clicked", { index: i, n: clicks + Math.random() });
          model.save_changes();
        });
      }
      root.appendChild(span);
    });
    root.dataset.chips = String(model.get("chips").length);
    outline();
  }
  redraw();
  model.on("change:chips", redraw);
  model.on("change:clickable", redraw);
  model.on("change:action", redraw);
  model.on("change:explained", outline);
  return () => {
    model.off("change:chips", redraw); model.off("change:clickable", redraw);
    model.off("change:action", redraw); model.off("change:explained", outline);
  };
}

export default { render };
