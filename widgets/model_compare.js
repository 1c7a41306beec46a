// TokenPicker: a text as one chip per token; a click selects a position. The selected
// token is outlined, the one after it (what the models should predict) underlined, the
// later ones faded (the models have not read them at that position).

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lmlab-picker";
  el.appendChild(root);

  function redraw() {
    root.replaceChildren();
    const selected = model.get("selected");
    const tokens = model.get("tokens");
    tokens.forEach((text, i) => {
      const span = document.createElement("span");
      span.className = "lmlab-pick" + (i === selected ? " lmlab-picked" : "") +
        (i === selected + 1 ? " lmlab-pick-next" : "") + (i > selected + 1 ? " lmlab-pick-later" : "");
      span.textContent = text;
      span.dataset.index = String(i);
      span.title = `position ${i}: ${text}\nclick: compare the models' next token after it`;
      span.addEventListener("click", () => {
        model.set("selected", i);
        model.save_changes();
      });
      root.appendChild(span);
    });
    root.dataset.selected = String(selected);
    root.dataset.tokens = String(tokens.length);
  }
  redraw();
  model.on("change:tokens", redraw);
  model.on("change:selected", redraw);
  return () => { model.off("change:tokens", redraw); model.off("change:selected", redraw); };
}

export default { render };
