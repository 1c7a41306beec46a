"""`HeadTable`: the per-head summary as a table (`table.js`): sortable by any column,
a click on a row selects the head, a "knock out" box per row switches a head off."""

from __future__ import annotations

import pathlib

import anywidget
import traitlets

HERE = pathlib.Path(__file__).parent


class HeadTable(anywidget.AnyWidget):
    """`rows`: dicts with "layer", "head" and one value per column; `columns`: [key,
    label] pairs shown in order; `selected` [layer, head]; `knocked_out` [[layer, head]...]."""

    _esm = HERE / "table.js"
    _css = HERE / "heads.css"
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    columns = traitlets.List(traitlets.List()).tag(sync=True)
    selected = traitlets.List(traitlets.Int(), default_value=[0, 0]).tag(sync=True)
    knocked_out = traitlets.List(traitlets.List(traitlets.Int())).tag(sync=True)
