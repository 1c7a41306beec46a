"""A notebook as a static slide deck: one self-contained HTML file that works offline.

    python -m lmlab.widgets.slides notebooks/02_attention.ipynb [--out deck.html] [--execute]
    lmlab export-slides notebooks/02_attention.ipynb      (the same)

Cells are grouped into slides by their slide metadata (Jupyter's View > Cell Toolbar >
Slideshow, the same that RISE reads): "slide" and "subslide" start a slide, "fragment"
and "-" continue it, "skip" and "notes" are left out. Each output is drawn from its
static form: lmlab's views carry a snapshot beside the live widget (see `_view.py`), a
plotly figure is drawn by plotly.js, inlined once. Nothing is fetched from the network:
no reveal.js, no CDN; arrow keys, space, Page Up/Down, Home/End and the buttons move
between slides, `#5` in the address opens slide 5, and printing prints every slide.
A notebook without outputs is executed first (with nbclient, widget state left out).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from pathlib import Path

import nbformat
from nbconvert.filters.markdown import markdown2html
from nbconvert.filters.ansi import strip_ansi
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from lmlab.errors import ConfigError
from lmlab.files import atomic_write

from ._view import WIDGET_VIEW

PLOTLY = "application/vnd.plotly.v1+json"
NEW_SLIDE = {"slide", "subslide"}
LEFT_OUT = {"skip", "notes"}
LIVE_ONLY = ('<p class="deck-live-only">(a live view: open the notebook in JupyterLab to use '
             'it)</p>')


def slides(nb) -> list[list]:
    """The notebook's cells grouped into slides (lists of cells), by slide metadata."""
    groups: list[list] = []
    for cell in nb.cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        if kind in LEFT_OUT:
            continue
        if kind in NEW_SLIDE or not groups:
            groups.append([])
        groups[-1].append(cell)
    return groups


def _output_html(output) -> tuple[str, bool]:
    """(HTML of one output, whether it needs plotly.js)."""
    kind = output.get("output_type")
    if kind == "stream":
        return f'<pre class="deck-stream">{html.escape(strip_ansi(output.text))}</pre>', False
    if kind == "error":
        text = strip_ansi("\n".join(output.get("traceback", [])) or output.get("evalue", ""))
        return f'<pre class="deck-error">{html.escape(text)}</pre>', False
    data = output.get("data", {})
    if PLOTLY in data:
        figure = data[PLOTLY] if isinstance(data[PLOTLY], dict) else json.loads(data[PLOTLY])
        return _plotly_div(figure), True
    if "text/html" in data:
        return f'<div class="deck-html">{_text(data["text/html"])}</div>', False
    if "image/svg+xml" in data:
        return f'<div class="deck-image">{_text(data["image/svg+xml"])}</div>', False
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            payload = _text(data[mime]).replace("\n", "")
            return f'<img class="deck-image" src="data:{mime};base64,{payload}">', False
    if "text/markdown" in data:
        return markdown2html(_text(data["text/markdown"])), False
    if WIDGET_VIEW in data:
        return LIVE_ONLY, False
    if "text/plain" in data:
        return f'<pre class="deck-result">{html.escape(_text(data["text/plain"]))}</pre>', False
    return "", False


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


_figures = iter(range(10**9))


def _plotly_div(figure: dict) -> str:
    """A plotly figure drawn by the inlined plotly.js when its slide is first shown."""
    div = f"deck-plot-{next(_figures)}"
    spec = json.dumps({"data": figure.get("data", []), "layout": figure.get("layout", {}),
                       "config": {"displaylogo": False, "responsive": True}})
    encoded = base64.b64encode(spec.encode()).decode()
    return f'<div class="deck-plot" id="{div}" data-figure="{encoded}"></div>'


def _cell_html(cell) -> tuple[str, bool]:
    if cell.cell_type == "markdown":
        return f'<div class="deck-md">{markdown2html(cell.source)}</div>', False
    if cell.cell_type != "code":
        return "", False
    parts = [f'<div class="deck-code">{highlight(cell.source, PythonLexer(), HtmlFormatter())}</div>']
    needs = False
    for output in cell.get("outputs", []):
        part, plot = _output_html(output)
        parts.append(part)
        needs |= plot
    return "\n".join(p for p in parts if p), needs


def deck_html(nb, title: str) -> str:
    """The whole deck of notebook `nb` as one HTML page."""
    sections, needs_plotly = [], False
    for i, group in enumerate(slides(nb)):
        cells = []
        for cell in group:
            part, plot = _cell_html(cell)
            cells.append(part)
            needs_plotly |= plot
        sections.append(f'<section class="deck-slide" id="slide-{i + 1}">\n' + "\n".join(cells)
                        + "\n</section>")
    if not sections:
        raise ConfigError("the notebook has no cells to show: every cell is marked skip or notes")
    plotly_js = ""
    if needs_plotly:
        from plotly.offline import get_plotlyjs

        plotly_js = f"<script>{get_plotlyjs()}</script>"
    return TEMPLATE.format(title=html.escape(title), css=CSS + HtmlFormatter().get_style_defs(".highlight"),
                           plotly=plotly_js, slides="\n".join(sections), script=SCRIPT)


def export_slides(notebook, out=None, execute: bool | None = None, timeout: int = 900) -> Path:
    """Write the deck of `notebook` to `out` (default: beside it, `.slides.html`).
    execute: run the notebook first (default: only when no code cell has an output)."""
    path = Path(notebook)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; give the path of a .ipynb notebook")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:
        raise ConfigError(f"{path} is not a notebook that nbformat can read: {e}") from None
    code = [c for c in nb.cells if c.cell_type == "code"]
    if execute or (execute is None and code and not any(c.get("outputs") for c in code)):
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                       resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    out = Path(out) if out else path.with_suffix(".slides.html")
    page = deck_html(nb, title=_title(nb) or path.stem)
    with atomic_write(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _title(nb) -> str | None:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return None


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
{plotly}
</head><body>
<main class="deck">
{slides}
</main>
<nav class="deck-nav"><button class="deck-prev" title="previous (←)">◀</button>
<span class="deck-counter"></span><button class="deck-next" title="next (→, space)">▶</button></nav>
<script>{script}</script>
</body></html>
"""

CSS = """
body { margin: 0; font: 20px/1.45 system-ui, sans-serif; color: #222; background: #fff; }
.deck-slide { display: none; box-sizing: border-box; min-height: 100vh; padding: 4vh 6vw 10vh;
              max-width: 1400px; margin: 0 auto; }
.deck-slide.present { display: block; }
.deck-md h1 { font-size: 2.2em; margin: 0.2em 0 0.5em; }
.deck-md h2 { font-size: 1.6em; margin: 0.2em 0 0.5em; }
.anchor-link { display: none; }
.deck-code .highlight { background: #f6f8fa; border-radius: 6px; padding: 0.4em 0.8em; font-size: 0.75em; }
.deck-code pre, pre { margin: 0.3em 0; white-space: pre-wrap; }
.deck-stream, .deck-result { font-size: 0.75em; color: #333; }
.deck-error { font-size: 0.7em; color: #b00; background: #fff0f0; padding: 0.4em; }
.deck-html, .deck-image { margin: 0.5em 0; overflow-x: auto; }
img.deck-image { max-width: 100%; }
.deck-plot { width: 100%; height: 60vh; }
.deck-live-only { color: #777; font-style: italic; }
.deck-nav { position: fixed; right: 1.2em; bottom: 1em; display: flex; gap: 0.6em; align-items: center;
            font-size: 0.8em; color: #555; }
.deck-nav button { font-size: 1em; border: 1px solid #ccc; background: #fafafa; border-radius: 4px;
                   cursor: pointer; padding: 0.2em 0.6em; }
@media print { .deck-slide { display: block; page-break-after: always; min-height: 0; }
               .deck-nav { display: none; } }
"""

SCRIPT = """
(function () {
  const slides = [...document.querySelectorAll(".deck-slide")];
  const counter = document.querySelector(".deck-counter");
  let current = 0;
  function draw(slide) {  // plotly figures are drawn once their slide is visible
    slide.querySelectorAll(".deck-plot:not([data-drawn])").forEach((div) => {
      if (!window.Plotly) return;
      const spec = JSON.parse(atob(div.dataset.figure));
      Plotly.newPlot(div, spec.data, spec.layout, spec.config);
      div.dataset.drawn = "1";
    });
  }
  function show(i) {
    current = Math.max(0, Math.min(slides.length - 1, i));
    slides.forEach((s, k) => s.classList.toggle("present", k === current));
    counter.textContent = (current + 1) + " / " + slides.length;
    draw(slides[current]);
    history.replaceState(null, "", "#" + (current + 1));
    window.scrollTo(0, 0);
  }
  document.addEventListener("keydown", (e) => {
    if (["ArrowRight", "PageDown", " "].includes(e.key)) { show(current + 1); e.preventDefault(); }
    else if (["ArrowLeft", "PageUp"].includes(e.key)) { show(current - 1); e.preventDefault(); }
    else if (e.key === "Home") show(0);
    else if (e.key === "End") show(slides.length - 1);
  });
  document.querySelector(".deck-next").onclick = () => show(current + 1);
  document.querySelector(".deck-prev").onclick = () => show(current - 1);
  window.addEventListener("beforeprint", () => slides.forEach(draw));
  show((parseInt(location.hash.slice(1), 10) || 1) - 1);
})();
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="lmlab export-slides", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook")
    parser.add_argument("--out", default=None, help="the deck's path (default: NOTEBOOK.slides.html)")
    parser.add_argument("--execute", action="store_true", help="run the notebook first, even with outputs")
    args = parser.parse_args(argv)
    try:
        out = export_slides(args.notebook, args.out, execute=True if args.execute else None)
    except ConfigError as e:
        raise SystemExit(f"lmlab export-slides: {e}") from None
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): open it in a browser, no network needed")


if __name__ == "__main__":
    main()
