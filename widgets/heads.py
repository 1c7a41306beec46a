"""`HeadGrid`: every attention head at once, as small images on one canvas (`heads.js`).

144 plotly heatmap subplots took 9.4 s to draw in JupyterLab here; one canvas fed a
byte buffer draws the same 12 x 12 heads in a fraction of a second. Each head travels
as a uint8 image (attention x 255, query rows, key columns), downsampled in the engine
when the text is long. Colab's widget manager has failed on binary buffers
(googlecolab/colab-cdn-widget-manager#8), so there the same bytes go as base64 text
(`_canvas.CanvasView`).
"""

from __future__ import annotations

import torch
import traitlets

from ._canvas import HERE, CanvasView, esm

__all__ = ["HeadGrid"]


class HeadGrid(CanvasView):
    """Layers down, heads across; `selected` is [layer, head], set by a click. `data` holds
    uint8 [layer, head, size, size], row-major."""

    _esm = esm("heads.js")
    _css = HERE / "heads.css"
    n_layer = traitlets.Int(0).tag(sync=True)
    n_head = traitlets.Int(0).tag(sync=True)
    size = traitlets.Int(0).tag(sync=True)  # pixels a side of each head's image as sent
    cell = traitlets.Int(56).tag(sync=True)  # pixels a side of each head as drawn
    selected = traitlets.List(traitlets.Int(), default_value=[0, 0]).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def set_images(self, images: torch.Tensor, title: str = "") -> None:
        """Show `images`: uint8 [layer, head, size, size] (see `lmlab.interpret.head_thumbnails`)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.size(2) != images.size(3):
            raise ValueError(f"images must be uint8 [layer, head, size, size], not "
                             f"{images.dtype} {list(images.shape)}")
        raw = images.contiguous().numpy().tobytes()
        L, H, S, _ = images.shape
        with self.hold_sync():
            self._put(raw)
            self.n_layer, self.n_head, self.size, self.title = L, H, S, title
            layer, head = self.selected
            if layer >= L or head >= H:
                self.selected = [0, 0]

    def images(self) -> torch.Tensor:
        """What is shown, as uint8 [layer, head, size, size]."""
        shape = (self.n_layer, self.n_head, self.size, self.size)
        return torch.frombuffer(bytearray(self._raw()), dtype=torch.uint8).reshape(shape)
