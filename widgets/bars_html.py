"""Signed bars as plain HTML: a direct logit attribution (`lmlab.attribution.Attribution`)
or any list of (label, value) shares. Plain HTML draws in one repaint, works in the static
snapshot unchanged, and needs no front end of its own. Its classes (`lmlab-signed-bars`,
`lmlab-signed-row`, `lmlab-attribution`) are its own: a view's stylesheet for other bars
(the stepper's candidates, `lmlab-bar-row`) does not reach them."""

from __future__ import annotations

import html

UP, DOWN = "#2e7d32", "#c62828"  # pushes the target up / down


def signed_bars(rows: list[tuple[str, float]], title: str = "", unit: str = "") -> str:
    """One bar per (label, value), in the order given, scaled to the largest |value|: green
    to the right for a positive value, red to the left for a negative one."""
    top = max((abs(v) for _, v in rows), default=0.0) or 1.0
    lines = []
    for label, value in rows:
        value = 0.0 if abs(value) < 5e-4 else value  # no "-0.000"
        width = 50 * abs(value) / top
        left = 50 if value >= 0 else 50 - width
        lines.append(
            "<div class='lmlab-signed-row' style='display:flex;align-items:center;gap:6px;height:18px'>"
            f"<span style='width:104px;flex:none;text-align:right;font:12px monospace;white-space:pre'>"
            f"{html.escape(label)}</span>"
            "<span style='position:relative;width:220px;flex:none;height:12px;background:#f4f4f4'>"
            "<span style='position:absolute;left:50%;top:0;bottom:0;border-left:1px solid #999'></span>"
            f"<span style='position:absolute;left:{left:.1f}%;width:{width:.1f}%;top:1px;bottom:1px;"
            f"background:{UP if value >= 0 else DOWN}'></span></span>"
            f"<span style='font:12px monospace'>{value:+.3f}{html.escape(unit)}</span></div>")
    head = f"<div style='font:600 12px sans-serif;margin:2px 0 4px'>{html.escape(title)}</div>" if title else ""
    return f"<div class='lmlab-signed-bars' style='font:12px sans-serif'>{head}{''.join(lines)}</div>"


def attribution_html(attribution, k: int = 10) -> str:
    """An attribution as two sets of bars: its k largest parts (either sign), largest first,
    and each layer's attention (its heads and bias summed) and MLP; then what the parts sum
    to against the model's logit."""
    a = attribution
    parts = signed_bars([(r["part"], r["effect"]) for r in a.top(k)],
                        f"Top {k} parts: {a.question}", " logits")
    layers = []
    for layer in range(a.heads.size(0)):
        layers.append((f"L{layer} attn", float(a.heads[layer].sum() + a.biases[layer])))
        if a.mlps is not None:
            layers.append((f"L{layer} MLP", float(a.mlps[layer])))
    per_layer = signed_bars([("embeddings", a.embed + a.pos_embed), *layers], "By layer")
    versus = html.escape(f" − logit({a.other_token!r})") if a.other is not None else ""
    footer = (f"<div style='font:12px sans-serif;color:#555;margin-top:4px'>"
              f"{html.escape(f'logit({a.target_token!r})')}{versus}"
              f" = {a.logit:+.3f}: the parts sum to {a.total:+.3f}, the final norm's bias adds "
              f"{a.bias_term:+.3f}. Direct effects only: through the residual stream to the unembedding, "
              "with the final norm's scale frozen.</div>")
    return (f"<div class='lmlab-attribution' style='display:flex;gap:24px;flex-wrap:wrap'>"
            f"<div>{parts}</div><div>{per_layer}</div></div>{footer}")
