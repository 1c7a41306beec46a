"""`AttentionMatrix`: one attention head as a matrix on a canvas (`matrix.js`), query rows,
key columns, the tokens on both axes.

A plotly heatmap of 128 x 128 took 85-150 ms from a click to its redraw in Chromium here
(the figure's JSON, hover text per cell, a relayout), over the 100 ms that reads as
instant. Here a head travels as one binary buffer, attention x 65535 as uint16, 2 bytes
a cell, for a causal head only the lower triangle (16 kB at 128 tokens, 1 MB at GPT-2's
1,024); the token labels travel once per text. Hovering names both tokens and the
weight, and a click on a row focuses its query token, outlined at once in the page (no
kernel round trip); the outline of a focus set from the kernel is drawn the same way.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import traitlets

from ._canvas import HERE, CanvasView, esm

SCALE = 65535  # attention 1.0 as sent


@functools.lru_cache(maxsize=4)
def _triangle(T: int) -> tuple[np.ndarray, np.ndarray]:
    """The lower triangle's (rows, columns), row by row: made once per text length, not per
    head switch (at 1,024 tokens it is two arrays of half a million indices)."""
    return np.tril_indices(T)


class AttentionMatrix(CanvasView):
    """The selected head, big. `data` holds uint16 little-endian cells, row by row: all
    size x size of them, or for a causal head only the lower triangle (keys 0..q of each
    query q, size x (size + 1) / 2 cells: the rest is masked). `focus` is the query
    position outlined (-1: none), set by a click on the matrix or from the kernel."""

    _esm = esm("matrix.js")
    _css = HERE / "matrix.css"
    size = traitlets.Int(0).tag(sync=True)  # T, tokens a side
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)  # T display strings
    causal = traitlets.Bool(True).tag(sync=True)  # keys after the query drawn grey (masked)
    focus = traitlets.Int(-1).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    side = traitlets.Int(440).tag(sync=True)  # pixels a side the matrix aims at, at least 1 a token

    def set_matrix(self, matrix: torch.Tensor, tokens: list[str] | None = None, title: str = "") -> None:
        """Show `matrix`, attention [T, T] in [0, 1] (query rows, key columns); `tokens`
        (T display strings) when the text changed, else the ones shown stay."""
        if matrix.dim() != 2 or matrix.size(0) != matrix.size(1):
            raise ValueError(f"matrix must be square [T, T], not {list(matrix.shape)}")
        T = matrix.size(0)
        if tokens is not None and len(tokens) != T:
            raise ValueError(f"{len(tokens)} tokens for a {T} x {T} matrix")
        if tokens is None and len(self.tokens) != T:
            raise ValueError(f"the view has {len(self.tokens)} tokens; pass the {T} of this matrix")
        self._cells = np.rint(matrix.detach().float().clamp(0, 1).cpu().numpy() * SCALE).astype("<u2")
        with self.hold_sync():
            self._pack()
            if tokens is not None and list(tokens) != list(self.tokens):
                self.tokens = list(tokens)
            if self.focus >= T:
                self.focus = -1
            self.size, self.title = T, title

    def _pack(self) -> None:
        """Send the kept cells, the causal triangle only or the whole square."""
        cells = self._cells
        self._put((cells[_triangle(len(cells))] if self.causal else cells).tobytes())

    @traitlets.observe("causal")
    def _repack(self, change) -> None:
        if getattr(self, "_cells", None) is not None:
            self._pack()

    def values(self) -> torch.Tensor:
        """What is shown, float32 [T, T] (to 1 / 65535; masked cells 0)."""
        T, sent = self.size, np.frombuffer(self._raw(), dtype="<u2").astype(np.float32) / SCALE
        if not self.causal:
            return torch.from_numpy(sent.reshape(T, T))
        values = np.zeros((T, T), dtype=np.float32)
        values[_triangle(T)] = sent
        return torch.from_numpy(values)
