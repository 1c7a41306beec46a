// TokenRow: one tokenizer's reading of a text. A head (the tokenizer's name and its
// counts), then the text as one chip per token, colours cycling so that each boundary
// shows; hover gives the token's id. A tokenizer that cannot read the text shows why.

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lmlab-token-row";
  const head = document.createElement("div");
  head.className = "lmlab-row-head";
  const name = document.createElement("b");
  const stats = document.createElement("span");
  stats.className = "lmlab-row-stats";
  head.append(name, stats);
  const chips = document.createElement("div");
  chips.className = "lmlab-chips";
  const error = document.createElement("div");
  error.className = "lmlab-row-error";
  root.append(head, chips, error);
  el.appendChild(root);

  function redraw() {
    name.textContent = model.get("name");
    stats.textContent = model.get("stats");
    error.textContent = model.get("error");
    error.style.display = model.get("error") ? "" : "none";
    chips.replaceChildren(...model.get("chips").map((chip, i) => {
      const span = document.createElement("span");
      span.className = `lmlab-chip lmlab-chip-static lmlab-tok-${i % 4}`;
      span.textContent = chip.text;
      span.title = chip.title;
      return span;
    }));
    chips.dataset.chips = String(model.get("chips").length);
  }
  redraw();
  const events = ["name", "stats", "error", "chips"].map((k) => `change:${k}`);
  events.forEach((e) => model.on(e, redraw));
  return () => events.forEach((e) => model.off(e, redraw));
}

export default { render };
