"""`HeadGrid`: every attention head at once, as small images on one canvas (`heads.js`).

144 plotly heatmap subplots took 9.4 s to draw in JupyterLab here; one canvas fed a
byte buffer draws the same 12 x 12 heads in a fraction of a second. Each head travels
as a uint8 image (attention x 255, query rows, key columns), downsampled in the engine
when the text is long. Colab's widget manager has failed on binary buffers
(googlecolab/colab-cdn-widget-manager#8), so there the same bytes go as base64 text.
"""

from __future__ import annotations

import base64
import pathlib
import sys

import anywidget
import torch
import traitlets

HERE = pathlib.Path(__file__).parent


def default_encoding() -> str:
    """'base64' in Colab, whose widget manager has failed on binary buffers; else 'bytes'."""
    return "base64" if "google.colab" in sys.modules else "bytes"


class HeadGrid(anywidget.AnyWidget):
    """Layers down, heads across; `selected` is [layer, head], set by a click."""

    _esm = HERE / "heads.js"
    _css = HERE / "heads.css"
    data = traitlets.Bytes(b"").tag(sync=True)  # uint8 [layer, head, size, size], row-major
    data_b64 = traitlets.Unicode("").tag(sync=True)  # the same, base64, when encoding is base64
    encoding = traitlets.Unicode("bytes").tag(sync=True)
    n_layer = traitlets.Int(0).tag(sync=True)
    n_head = traitlets.Int(0).tag(sync=True)
    size = traitlets.Int(0).tag(sync=True)  # pixels a side of each head's image as sent
    cell = traitlets.Int(56).tag(sync=True)  # pixels a side of each head as drawn
    selected = traitlets.List(traitlets.Int(), default_value=[0, 0]).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, encoding: str | None = None, **kwargs):
        super().__init__(encoding=encoding or default_encoding(), **kwargs)

    def set_images(self, images: torch.Tensor, title: str = "") -> None:
        """Show `images`: uint8 [layer, head, size, size] (see `lmlab.inspect.head_thumbnails`)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.size(2) != images.size(3):
            raise ValueError(f"images must be uint8 [layer, head, size, size], not "
                             f"{images.dtype} {list(images.shape)}")
        raw = images.contiguous().numpy().tobytes()
        L, H, S, _ = images.shape
        with self.hold_sync():
            if self.encoding == "base64":
                self.data, self.data_b64 = b"", base64.b64encode(raw).decode("ascii")
            else:
                self.data, self.data_b64 = raw, ""
            self.n_layer, self.n_head, self.size, self.title = L, H, S, title
            layer, head = self.selected
            if layer >= L or head >= H:
                self.selected = [0, 0]

    def images(self) -> torch.Tensor:
        """What is shown, as uint8 [layer, head, size, size]."""
        raw = base64.b64decode(self.data_b64) if self.encoding == "base64" else self.data
        shape = (self.n_layer, self.n_head, self.size, self.size)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(shape)
