"""What the canvas widgets share: binary images as widget state, and one JS prelude.

`CanvasView` carries one image buffer as `data` (bytes) or, where a host's widget
manager has failed on binary buffers (Colab: googlecolab/colab-cdn-widget-manager#8),
as `data_b64` (the same bytes, base64 text). An anywidget front end is one ES module
loaded from a string, so it cannot import a sibling file; `esm(name)` puts `_canvas.js`
(the bytes' decoding, the Save PNG button) ahead of the widget's own module instead.
"""

from __future__ import annotations

import base64
import pathlib
import sys

import anywidget
import traitlets

HERE = pathlib.Path(__file__).parent


def default_encoding() -> str:
    """'base64' in Colab, whose widget manager has failed on binary buffers; else 'bytes'."""
    return "base64" if "google.colab" in sys.modules else "bytes"


def esm(name: str) -> str:
    """The front end `name` (a .js file here) with the shared prelude ahead of it."""
    return (HERE / "_canvas.js").read_text() + "\n" + (HERE / name).read_text()


class CanvasView(anywidget.AnyWidget):
    """A widget whose image travels as one buffer: `_put(raw)` sends, `_raw()` reads back."""

    data = traitlets.Bytes(b"").tag(sync=True)
    data_b64 = traitlets.Unicode("").tag(sync=True)  # the same, base64, when encoding is base64
    encoding = traitlets.Unicode("bytes").tag(sync=True)

    def __init__(self, encoding: str | None = None, **kwargs):
        super().__init__(encoding=encoding or default_encoding(), **kwargs)

    def _put(self, raw: bytes) -> None:
        """Set the buffer (inside the caller's `hold_sync`, with the traits that describe it)."""
        if self.encoding == "base64":
            self.data, self.data_b64 = b"", base64.b64encode(raw).decode("ascii")
        else:
            self.data, self.data_b64 = raw, ""

    def _raw(self) -> bytes:
        """The buffer shown, as bytes."""
        return base64.b64decode(self.data_b64) if self.encoding == "base64" else bytes(self.data)
