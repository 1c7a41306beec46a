"""`lmlab export-slides`: a notebook as one offline HTML deck, grouped by slide metadata,
lmlab's views by their static snapshots, plotly figures drawn by plotly.js inlined once."""

import re
import subprocess
import sys

import nbformat
import pytest
from _needs import need

need("ipywidgets", "pip install -e .")
need("nbclient", "pip install -e '.[lab]'")

from lmlab.errors import ConfigError  # noqa: E402
from lmlab.widgets.slides import export_slides, slides  # noqa: E402

CELLS = [
    ("markdown", "# The deck's title", "slide"),
    ("code", "hidden_setup = 1", "skip"),
    ("markdown", "## A figure", "slide"),
    ("code", "import plotly.graph_objects as go\nimport plotly.io as pio\n"
             "pio.renderers.default = 'plotly_mimetype'\n"
             "go.Figure(go.Scatter(y=[1, 3, 2], name='rising')).show()", "-"),
    ("markdown", "## A view", "slide"),
    ("code", "import torch, lmlab\nfrom lmlab.widgets import TokenSurprise\n"
             "data = lmlab.TokenDataset('abcabcabd ' * 300, block_size=16)\ntorch.manual_seed(0)\n"
             "model = lmlab.GPT(lmlab.GPTConfig(vocab_size=data.vocab_size, block_size=16, n_layer=1,"
             " n_head=1, n_embd=8))\nTokenSurprise(model, data.tokenizer, 'abcabd')", "-"),
    ("code", "print('hello deck')", "fragment"),
    ("markdown", "speaker notes only", "notes"),
]


def notebook(path, cells=CELLS):
    nb = nbformat.v4.new_notebook()
    for kind, source, slide_type in cells:
        new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = new(source)
        cell.metadata["slideshow"] = {"slide_type": slide_type}
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_cells_are_grouped_by_their_slide_metadata(tmp_path):
    nb = nbformat.read(notebook(tmp_path / "talk.ipynb"), as_version=4)
    groups = [[c.source.splitlines()[0] for c in group] for group in slides(nb)]
    assert groups == [["# The deck's title"], ["## A figure", "import plotly.graph_objects as go"],
                      ["## A view", "import torch, lmlab", "print('hello deck')"]]


def test_the_deck_is_one_offline_page(tmp_path):
    out = export_slides(notebook(tmp_path / "talk.ipynb"))  # no outputs yet: executed first
    assert out == tmp_path / "talk.slides.html"
    page = out.read_text()
    assert page.count('class="deck-slide"') == 3
    assert "hello deck" in page and re.search(r"<h1[^>]*>The deck(&#x27;|')s title", page)
    assert "hidden_setup" not in page and "speaker notes only" not in page
    assert 'class="lmlab-static TokenSurprise"' in page  # the view's snapshot, not a dead widget
    assert "(a live view" not in page
    assert page.count("Plotly.newPlot") == 1 and "data-figure=" in page
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # plotly.js inlined, once
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page)  # nothing fetched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_notebook_with_outputs_is_not_run_again(tmp_path):
    path = notebook(tmp_path / "ran.ipynb", [("code", "print('from before')", "slide")])
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="kept output\n")]
    nbformat.write(nb, path)
    page = export_slides(path, tmp_path / "deck.html").read_text()
    assert "kept output" in page and "from before" in page
    assert "from before\n</pre>" not in page  # the source is shown, but it did not run again


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="not a file"):
        export_slides(tmp_path / "missing.ipynb")
    (tmp_path / "broken.ipynb").write_text("{ not json")
    with pytest.raises(ConfigError, match="not a notebook"):
        export_slides(tmp_path / "broken.ipynb")
    with pytest.raises(ConfigError, match="skip or notes"):
        export_slides(notebook(tmp_path / "empty.ipynb", [("markdown", "x", "skip")]))
    out = subprocess.run([sys.executable, "-m", "lmlab.cli", "export-slides", str(tmp_path / "nope.ipynb")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "not a file" in out.stderr


def test_the_interpretability_views_appear_in_the_deck_as_their_snapshots(tmp_path):
    """The patching grids, a stepper's explained token and the explorer's direct effect, each as
    its static snapshot in the offline deck."""
    setup = ("import torch, lmlab\nfrom lmlab.widgets import AttentionExplorer, PatchingView, SamplingStepper\n"
             "tok = lmlab.CharTokenizer('abcdefgh|')\ntorch.manual_seed(0)\n"
             "model = lmlab.GPT(lmlab.GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2,"
             " n_embd=16))")
    cells = [("markdown", "# Circuits", "slide"), ("code", setup, "skip"),
             ("code", "view = PatchingView(model, tok, 'abcdefg|abcdef', 'abcdehg|abcdef',\n"
                      "                   answer='g', wrong='h')\nview.run(block=True)\nview", "slide"),
             ("code", "stepper = SamplingStepper(model, tok, 'abc', seed=0)\n"
                      "for _ in range(3): stepper.step()\nstepper.explain(4)\nstepper", "slide"),
             ("code", "x = AttentionExplorer(model, tok, 'abcabc')\nx.focus_box.value = 4\nx", "slide")]
    page = export_slides(notebook(tmp_path / "circuits.ipynb", cells)).read_text()
    assert 'class="lmlab-static PatchingView"' in page and "restored" in page
    assert 'class="lmlab-static SamplingStepper"' in page and "pushed" in page
    assert 'class="lmlab-static AttentionExplorer"' in page and "direct effect on predicting" in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page)
