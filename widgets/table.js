// HeadTable: one row per attention head, sortable by clicking a column's header;
// clicking a row selects that head; the "knock out" box switches a head off.
// Rows come from the widget's synced state, so a reload draws the same table.

function cellText(value) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value);
}

function render({ model, el }) {
  const wrap = document.createElement("div");
  wrap.className = "lmlab-table-wrap";
  const table = document.createElement("table");
  table.className = "lmlab-table";
  wrap.appendChild(table);
  el.appendChild(wrap);
  let sortBy = null, descending = true;

  function redraw() {
    const columns = model.get("columns");
    const rows = model.get("rows").slice();
    const [sl, sh] = model.get("selected") || [];
    const off = new Set((model.get("knocked_out") || []).map((p) => p.join(",")));
    if (sortBy !== null) {
      rows.sort((a, b) => (descending ? -1 : 1) * ((a[sortBy] > b[sortBy]) - (a[sortBy] < b[sortBy])));
    }
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    for (const [key, label] of columns) {
      const th = document.createElement("th");
      th.textContent = label + (sortBy === key ? (descending ? " ▼" : " ▲") : "");
      th.title = "sort by " + label;
      th.dataset.key = key;
      th.addEventListener("click", () => {
        descending = sortBy === key ? !descending : true;
        sortBy = key;
        redraw();
      });
      head.appendChild(th);
    }
    const knock = document.createElement("th");
    knock.textContent = "knock out";
    knock.title = "switch the head off and see the loss change";
    head.appendChild(knock);
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      tr.dataset.head = `${row.layer},${row.head}`;
      if (row.layer === sl && row.head === sh) tr.className = "lmlab-selected";
      for (const [key] of columns) tr.insertCell().textContent = cellText(row[key]);
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = off.has(`${row.layer},${row.head}`);
      box.addEventListener("click", (event) => {
        event.stopPropagation();
        const now = (model.get("knocked_out") || []).filter((p) => !(p[0] === row.layer && p[1] === row.head));
        if (box.checked) now.push([row.layer, row.head]);
        model.set("knocked_out", now);
        model.save_changes();
      });
      tr.insertCell().appendChild(box);
      // on press, not on click: a redraw between press and release cannot swallow it
      tr.addEventListener("pointerdown", (event) => {
        if (event.target === box) return;
        model.set("selected", [row.layer, row.head]);
        model.save_changes();
        markSelected();
      });
    }
  }
  // a new selection only moves the highlight: the rows stay the same elements
  function markSelected() {
    const [sl, sh] = model.get("selected") || [];
    for (const tr of table.tBodies[0].rows) {
      tr.classList.toggle("lmlab-selected", tr.dataset.head === `${sl},${sh}`);
    }
  }
  // heads knocked out or back on only tick their boxes
  function markKnocked() {
    const off = new Set((model.get("knocked_out") || []).map((p) => p.join(",")));
    for (const tr of table.tBodies[0].rows) tr.querySelector("input").checked = off.has(tr.dataset.head);
  }
  redraw();
  const names = ["rows", "columns"];
  for (const name of names) model.on(`change:${name}`, redraw);
  model.on("change:selected", markSelected);
  model.on("change:knocked_out", markKnocked);
  return () => {
    for (const name of names) model.off(`change:${name}`, redraw);
    model.off("change:selected", markSelected);
    model.off("change:knocked_out", markKnocked);
  };
}

export default { render };
