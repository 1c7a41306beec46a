"""lmlab's attention in bertviz's views: `head_view` and `model_view` (extra `bertviz`).

bertviz loads require.js and d3 from CDNs in the browser, so its views stay blank
offline; `AttentionExplorer` is the offline path. bertviz wants the attention as a list
with one tensor per layer of shape (1, heads, T, T), and the tokens as strings.
"""

from __future__ import annotations

from lmlab import interpret


def bertviz_attention(model, tokenizer, text) -> tuple[list, list[str]]:
    """(attention, tokens) as bertviz takes them: one (1, H, T, T) float32 tensor a layer."""
    a = interpret.capture_attention(model, text, tokenizer)
    return [a.weights[layer].unsqueeze(0) for layer in range(a.n_layer)], a.tokens


def _bertviz():
    try:
        import bertviz
    except ImportError as e:
        raise ImportError("bertviz is not installed: pip install 'lmlab[bertviz]' (or use "
                          "lmlab.widgets.AttentionExplorer, which needs no internet)") from e
    return bertviz


def head_view(model, tokenizer, text, **kwargs):
    """bertviz's head view of `text` (lines between tokens, one layer at a time). Needs
    internet in the browser (bertviz fetches its JavaScript from CDNs)."""
    attention, tokens = bertviz_attention(model, tokenizer, text)
    return _bertviz().head_view(attention, tokens, **kwargs)


def model_view(model, tokenizer, text, **kwargs):
    """bertviz's model view of `text` (every layer and head as small line plots). Needs
    internet in the browser (bertviz fetches its JavaScript from CDNs)."""
    attention, tokens = bertviz_attention(model, tokenizer, text)
    return _bertviz().model_view(attention, tokens, **kwargs)
