"""Pictures of attention without a browser or an image library: the colours of
`heads.js`, written as PNG with zlib (no Pillow, no kaleido, no server round trip)."""

from __future__ import annotations

import struct
import zlib

import torch

MASKED = (226, 226, 226)  # the future, which a causal head never sees
GAP = 3
SELECTED = (228, 87, 46)  # the outline of the selected head, as in heads.js


def colour(values: torch.Tensor) -> torch.Tensor:
    """uint8 attention [..., S, S] (255 = 1) -> RGB uint8 [..., S, S, 3]: white to dark
    blue, grey above the diagonal."""
    t = values.float() / 255
    rgb = torch.stack([255 - 227 * t, 255 - 196 * t, 255 - 120 * t], dim=-1).round().to(torch.uint8)
    S = values.size(-1)
    future = torch.ones(S, S, dtype=torch.bool).triu(1)
    rgb[..., future, :] = torch.tensor(MASKED, dtype=torch.uint8)
    return rgb


def head_image(values: torch.Tensor, pixels: int = 512) -> torch.Tensor:
    """One head, uint8 [S, S], as RGB [N, N, 3] with N the multiple of S nearest `pixels`."""
    scale = max(1, round(pixels / values.size(-1)))
    rgb = colour(values)
    return rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def grid_image(images: torch.Tensor, cell: int = 48, selected: tuple[int, int] | None = None
               ) -> torch.Tensor:
    """Every head, uint8 [L, H, S, S], as one RGB picture: layers down, heads across,
    each head `cell` pixels a side (nearest neighbour), white gaps between; the
    `selected` (layer, head) outlined in the view's orange."""
    L, H, S, _ = images.shape
    index = (torch.arange(cell) * S // cell).clamp(max=S - 1)
    heads = colour(images)[:, :, index][:, :, :, index]  # [L, H, cell, cell, 3]
    out = torch.full((L * (cell + GAP), H * (cell + GAP), 3), 255, dtype=torch.uint8)
    for layer in range(L):
        for head in range(H):
            y, x = layer * (cell + GAP), head * (cell + GAP)
            out[y:y + cell, x:x + cell] = heads[layer, head]
    if selected is not None:
        y, x = selected[0] * (cell + GAP), selected[1] * (cell + GAP)
        box = out[max(0, y - 1):y + cell + 1, max(0, x - 1):x + cell + 1]
        orange = torch.tensor(SELECTED, dtype=torch.uint8)
        box[:2], box[-2:], box[:, :2], box[:, -2:] = orange, orange, orange, orange
    return out


def png(rgb: torch.Tensor) -> bytes:
    """RGB uint8 [height, width, 3] as the bytes of a PNG file."""
    height, width, _ = rgb.shape
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), rgb.reshape(height, -1)], dim=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.contiguous().numpy().tobytes(), 6))
            + chunk(b"IEND", b""))
