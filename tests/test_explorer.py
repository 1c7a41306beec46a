"""The attention explorer without a browser: selectors, grid and table clicks, token
focus, knocking heads out, bad text, live mode, the Colab encoding; the selected head's
direct effect and its QK and OV circuits."""

import html
import math
import re
import sys

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

from lmlab import GPT, GPTConfig  # noqa: E402
from lmlab import circuits, interpret, passes  # noqa: E402
from lmlab.attribution import logit_attribution  # noqa: E402
from lmlab.hooks import run_with_cache  # noqa: E402
from lmlab.reading import weights_changed  # noqa: E402
from lmlab.train import Trainer  # noqa: E402
from lmlab.widgets import AttentionExplorer  # noqa: E402
from lmlab.widgets._canvas import default_encoding  # noqa: E402
from lmlab.widgets.heads import HeadGrid  # noqa: E402
from lmlab.widgets.matrix import AttentionMatrix  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 200



def z_of(explorer):
    """The big view's values, None where a cell is drawn as a gap (the masked future)."""
    assert explorer.matrix.causal
    m = explorer.matrix.values().tolist()
    return [[None if k > q else v for k, v in enumerate(row)] for q, row in enumerate(m)]


class expected_z:
    """The head's attention as the big view should show it: the gaps where they are, each
    value within 1e-3 (the view sends a float16 copy, to 1 / 65535)."""

    def __init__(self, model, tokenizer, text, layer, head):
        m = interpret.capture_attention(model, text, tokenizer).head(layer, head).tolist()
        self.rows = [[None if k > q else v for k, v in enumerate(row)] for q, row in enumerate(m)]

    def __eq__(self, z):
        return len(z) == len(self.rows) and all(
            len(a) == len(b) and all((u is None) == (v is None) and (u is None or abs(u - v) <= 1e-3)
                                     for u, v in zip(a, b))
            for a, b in zip(z, self.rows))

    def __repr__(self):
        return repr(self.rows)


def test_the_big_view_shows_the_selected_head(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    assert (x.layer_box.value, x.head_box.value) == (0, 0)  # the selectors say what is shown
    assert z_of(x) == expected_z(model, data.tokenizer, "the lazy dog", 0, 0)
    assert list(x.matrix.tokens)[:3] == ["t", "h", "e"]
    x.layer_box.value = 1
    x.head_box.value = 1
    assert z_of(x) == expected_z(model, data.tokenizer, "the lazy dog", 1, 1)
    assert list(x.grid.selected) == list(x.table.selected) == [1, 1]
    assert "layer 1, head 1" in x.matrix.title


def test_clicking_the_grid_or_the_table_selects_a_head(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.grid.selected = [1, 0]  # what a click on the canvas sends
    assert (x.layer_box.value, x.head_box.value) == (1, 0)
    assert z_of(x) == expected_z(model, data.tokenizer, "the lazy dog", 1, 0)
    x.table.selected = [0, 1]  # a click on a row
    assert list(x.grid.selected) == [0, 1]
    assert z_of(x) == expected_z(model, data.tokenizer, "the lazy dog", 0, 1)


def test_the_overview_and_the_table_hold_every_head(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    a = interpret.capture_attention(model, "the lazy dog", data.tokenizer)
    drawn, want = x.grid.images().int(), interpret.head_thumbnails(a, x.thumbnail).int()
    assert drawn.shape == want.shape and (drawn - want).abs().max() <= 1  # from the float16 copy
    assert [(r["layer"], r["head"]) for r in x.table.rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(r["induction"] is not None for r in x.table.rows)


def test_editing_the_text_recomputes(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.text_box.value = "a quick fox"
    assert len(x.attention.tokens) == len("a quick fox")
    assert z_of(x) == expected_z(model, data.tokenizer, "a quick fox", 0, 0)


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("ZZZ", "Z"),
    ("the dog " * 10, "at most 32 tokens"),
])
def test_bad_text_is_explained_and_the_last_view_stays(model, data, text, fragment):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    before = z_of(x)
    x.text_box.value = text
    assert fragment in x.status.value and "lmlab-error" in x.status.value
    assert z_of(x) == before
    x.text_box.value = "the fox"  # still usable
    assert x.status.value == "" and len(x.attention.tokens) == 7


def test_token_focus_outlines_row_and_column_and_shows_predictions(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.focus_box.value = 4
    assert x.matrix.focus == 4  # outlined in the page
    top = interpret.predictions_at(model, data.tokenizer, x.attention.ids, 4)
    assert "next token after position 4" in x.predictions.value
    assert f"{top.probs[0]:.3f}" in x.predictions.value


def test_knocking_a_head_out_shows_the_loss_change(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.select(1, 0)
    x.knock_button.value = True
    assert [list(h) for h in x.table.knocked_out] == [[1, 0]]
    effect = interpret.ablation_effect(model, x.attention.ids, [(1, 0)], "zero")
    assert "knocked out" in x.predictions.value and "L1H0" in x.predictions.value
    assert f"{effect['ablated_loss']:.4f}" in x.predictions.value
    x.mode_box.value = "mean"
    effect = interpret.ablation_effect(model, x.attention.ids, [(1, 0)], "mean")
    assert f"{effect['ablated_loss']:.4f}" in x.predictions.value
    assert not any(block.attn.hook_z.read for block in model.transformer.h)  # restored
    x.knock_button.value = False
    assert x.table.knocked_out == [] and "knocked out" not in x.predictions.value


def test_live_mode_follows_training(data):
    model = GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    trainer = Trainer(model, data, device="cpu", batch_size=4, max_steps=6, eval_interval=3,
                      eval_batches=1, warmup_steps=1, learning_rate=1e-2)
    callbacks = trainer.callback_count()
    x = AttentionExplorer(trainer=trainer, text="the lazy dog", every=3)
    before = x.attention.weights.clone()
    trainer.run(progress=False)
    assert "step 6" in x.grid.title
    assert not torch.equal(x.attention.weights, before)
    x.close()
    assert trainer.callback_count() == callbacks


def test_two_explorers_are_independent(model, data):
    a = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    b = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    a.select(1, 1)
    assert list(b.grid.selected) == [0, 0] and a.status.value == b.status.value == ""


def test_colab_gets_base64_instead_of_binary_buffers(monkeypatch, model, data):
    assert default_encoding() == "bytes"
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert default_encoding() == "base64"
    grid = HeadGrid()
    images = interpret.head_thumbnails(interpret.capture_attention(model, "the lazy dog", data.tokenizer))
    grid.set_images(images)
    assert grid.data == b"" and grid.data_b64 and torch.equal(grid.images(), images)
    matrix = AttentionMatrix()
    head = torch.rand(5, 5)
    matrix.set_matrix(head, list("abcde"))
    assert matrix.data == b"" and matrix.data_b64
    assert (matrix.values() - head.tril()).abs().max() <= 0.5 / 65535 + 1e-7  # causal: the triangle
    whole = AttentionMatrix(encoding="base64", causal=False)
    whole.set_matrix(head, list("abcde"))
    assert (whole.values() - head).abs().max() <= 0.5 / 65535 + 1e-7


def test_a_head_switch_sends_one_head_and_the_tokens_once_per_text(model, data):
    """The big view gets 2 bytes a cell of the causal triangle for a head switch, no
    per-cell hover text, and the token labels only when the text changes."""
    from lmlab.widgets._comm import RecordingComm, recording_comms

    with recording_comms():
        x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
        T = len(x.attention.tokens)
        RecordingComm.states.clear()
        x.select(1, 1)
        sent = [(state, buffers) for state, buffers in RecordingComm.states if "data" in buffers]
        assert len(sent) == 1 and "tokens" not in sent[0][0] and sent[0][1] == {"data": T * (T + 1)}
        assert torch.allclose(x.matrix.values(), x.attention.head(1, 1).float(), atol=1e-4)
        RecordingComm.states.clear()
        x.text_box.value = "a quick fox"
        assert [s["tokens"] for s, _ in RecordingComm.states if "tokens" in s] == [x.attention.tokens]
        assert x.attention.tokens[1] == "␣"  # the display strings, whitespace made visible


def test_the_matrix_refuses_what_it_cannot_draw():
    matrix = AttentionMatrix()
    with pytest.raises(ValueError, match="square"):
        matrix.set_matrix(torch.rand(3, 4), list("abc"))
    with pytest.raises(ValueError, match="2 tokens for a 3 x 3"):
        matrix.set_matrix(torch.rand(3, 3), list("ab"))
    with pytest.raises(ValueError, match="pass the 3"):
        matrix.set_matrix(torch.rand(3, 3))
    matrix.set_matrix(torch.full((3, 3), 2.0), list("abc"))  # clamped into [0, 1]
    assert matrix.values().max() == 1.0


def _read_png(path):
    import struct
    import zlib

    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    at, data = 8, b""
    while at < len(raw):
        n = struct.unpack(">I", raw[at:at + 4])[0]
        if raw[at + 4:at + 8] == b"IDAT":
            data += raw[at + 8:at + 8 + n]
        at += 12 + n
    rows = torch.frombuffer(bytearray(zlib.decompress(data)), dtype=torch.uint8).view(height, -1)
    return rows[:, 1:].reshape(height, width, 3)


def test_to_png_writes_the_selected_head(tmp_path, model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.select(1, 0)
    T = len("the lazy dog")
    pixels = _read_png(x.to_png(tmp_path / "head.png", pixels=T * 4))
    assert pixels.shape == (T * 4, T * 4, 3)
    weights = x.attention.head(1, 0)
    assert tuple(pixels[0, 4 * T - 1].tolist()) == (226, 226, 226)  # query 0, key T-1: masked
    assert tuple(pixels[0, 0].tolist()) == (28, 59, 135)  # query 0 attends only to itself: 1
    shade = round(255 - 227 * round(float(weights[T - 1, 0]) * 255) / 255)
    assert pixels[4 * T - 1, 0, 0] == shade
    grid = _read_png(x.to_png(tmp_path / "grid.png", what="grid"))
    assert grid.shape[0] == 2 * (x.grid.cell + 3) and grid.shape[1] == 2 * (x.grid.cell + 3)


def test_to_html_is_a_self_contained_snapshot(tmp_path, model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.select(0, 1)
    page = x.to_html(tmp_path / "view.html").read_text()
    tags = re.findall(r"<(?:script|link|img)\b[^>]*>", page.split("<body>")[1].split("<script")[0])
    assert all("http" not in tag for tag in tags)  # nothing fetched (the browser test blocks the net)
    assert "<script src" not in page.replace("\\", "")
    assert "data:image/png;base64," in page and "Plotly.newPlot" in page
    assert "outlined: layer 0, head 1" in page
    assert page.split('class="lmlab-table"')[1].count("<tr") == 1 + 4
    assert '<tr class="lmlab-selected"><td>0</td><td>1</td>' in page


def test_bertviz_gets_one_tensor_a_layer_and_renders_it(model, data):
    need("bertviz", "pip install -e '.[bertviz]'")
    import json

    from lmlab.widgets import head_view, model_view
    from lmlab.widgets.bertviz_views import bertviz_attention

    attention, tokens = bertviz_attention(model, data.tokenizer, "the lazy dog")
    a = interpret.capture_attention(model, "the lazy dog", data.tokenizer)
    assert len(attention) == 2 and all(t.shape == (1, 2, 12, 12) for t in attention)
    assert torch.equal(torch.cat(attention), a.weights) and tokens == a.tokens
    for view in (head_view, model_view):  # bertviz's own code, returning its page
        page = view(model, data.tokenizer, "the lazy dog", html_action="return").data
        params = json.loads(page.split("const params = ")[1].split("; // HACK")[0])
        shown = torch.tensor(params["attention"][0]["attn"])
        assert shown.shape == (2, 2, 12, 12)
        assert torch.allclose(shown, a.weights, atol=1e-6)


def test_clicking_the_matrix_focuses_the_query_token(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.matrix.focus = 5  # what a click on row 5 sends
    assert x.focus_box.value == 5 and "next token after position 5" in x.predictions.value
    x.focus_box.value = -1
    assert x.matrix.focus == -1 and "after position 11" in x.predictions.value


def test_every_message_is_valid_json(model, data):
    """The kernel warns "Out of range float values are not JSON compliant" for NaN."""
    from lmlab.widgets._comm import recording_comms

    with recording_comms() as log:
        x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
        x.select(1, 1)
        x.focus_box.value = 3
        x.knock_button.value = True
    assert len(log) > 10


def test_selecting_a_head_passes_through_no_other_head(model, data):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    seen = []
    x.grid.observe(lambda c: seen.append(tuple(c["new"])), "selected")
    x.table.observe(lambda c: seen.append(tuple(c["new"])), "selected")
    x.table.selected = [1, 1]  # a row click: layer and head both change
    assert set(seen) == {(1, 1)}  # never (1, 0), the new layer with the old head
    assert (x.layer_box.value, x.head_box.value) == (1, 1)


def test_editing_the_text_does_not_recompute_the_induction_scores(model, data, monkeypatch):
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    calls = []
    original = interpret.induction_scores
    monkeypatch.setattr(interpret, "induction_scores", lambda m: calls.append(1) or original(m))
    x.text_box.value = "a quick fox"
    assert calls == [] and x.table.rows[0]["induction"] is not None


def test_the_matrix_packs_again_when_causal_changes():
    head = torch.rand(4, 4)
    matrix = AttentionMatrix()
    matrix.set_matrix(head, list("abcd"))
    assert len(matrix.data) == 2 * 10  # the triangle: 4 x 5 / 2 cells
    matrix.causal = False  # e.g. an encoder's head: the whole square again, from the same cells
    assert len(matrix.data) == 2 * 16
    assert (matrix.values() - head).abs().max() <= 0.5 / 65535 + 1e-7


# ---- the selected head's direct effect and circuits ------------------------------------------


@pytest.fixture
def lively(data):
    """The tiny GPT with weights drawn wide (std 0.5), so that heads have effects to tell apart."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5)
    return model


def shown(widget) -> str:
    return html.unescape(widget.value)


def test_the_direct_effect_is_the_selected_heads_logit_attribution(lively, data):
    x = AttentionExplorer(lively, data.tokenizer, "the lazy dog")
    x.focus_box.value = 4  # "the l": the prediction after 'l'
    top = x.pass_.predictions(4, data.tokenizer, 2)
    titles = {}
    for layer, head in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        x.select(layer, head)
        titles[layer, head] = shown(x.direct_effect)
    passes.forget(lively)  # the attribution below runs its own forward
    want = logit_attribution(lively, "the lazy dog", 4, top.ids[0], top.ids[1], data.tokenizer)
    order = [r["part"] for r in want.top(len(want.rows()))]
    assert len({round(float(v), 2) for v in want.heads.flatten()}) == 4  # four different numbers
    for (layer, head), title in titles.items():
        part = f"L{layer}H{head}"
        assert (f"{part}'s direct effect on predicting {top.tokens[0]!r} after 'l': "
                f"{float(want.heads[layer, head]):+.2f} logits over the runner-up {top.tokens[1]!r} "
                f"(rank {order.index(part) + 1} of {len(order)} parts)") in title
        assert f"logit({top.tokens[0]!r}) − logit({top.tokens[1]!r}) = {want.logit:+.3f}" in title  # the bars
    assert "direct effect on predicting" in x._static_html()  # kept in the snapshot


def test_selecting_and_focusing_run_no_model_and_the_closed_circuits_compute_nothing(lively, data, monkeypatch):
    x = AttentionExplorer(lively, data.tokenizer, "the lazy dog")
    forwards, read = [], []
    lively.register_forward_pre_hook(lambda module, args: forwards.append(1))
    for name in ("qk_breakdown", "ov_circuit"):
        original = getattr(circuits, name)
        monkeypatch.setattr(circuits, name, lambda *a, f=original, n=name, **k: read.append(n) or f(*a, **k))
    calls = dict(passes.calls)
    x.select(1, 1)
    x.matrix.focus = 6  # a click on a row
    x.select(0, 1)
    assert read == [] and x.qk is None and x.qk_view.value == ""  # closed: nothing computed
    assert "L0H1's direct effect on predicting" in shown(x.direct_effect)
    x.circuits.selected_index = 0  # open
    assert read == ["ov_circuit", "qk_breakdown"] and x.qk is not None
    x.select(1, 0)
    x.focus_box.value = 9
    x.key_box.value = 2
    assert x.qk.key == 2 and "scoring key 2 'e'" in shown(x.qk_view)
    assert forwards == [] and passes.calls == calls
    passes.forget(lively)  # the store drops the pass (knock-outs push it out): the view's own still serves
    x.focus_box.value = 8
    assert x.qk is not None and x.qk.query == 8 and "query 8" in shown(x.qk_view)
    assert "L1H0's direct effect on predicting" in shown(x.direct_effect)  # read from the explorer's own pass
    assert forwards == [] and passes.calls == calls


def test_the_qk_breakdown_sums_to_the_heads_score(lively, data):
    x = AttentionExplorer(lively, data.tokenizer, "the lazy dog")
    x.select(1, 1)
    x.focus_box.value = 10
    x.circuits.selected_index = 0
    weights = x.attention.head(1, 1)[10, :11].float()
    assert x.key_box.value == int(weights.argmax())  # by default the key it attends to most
    x.key_box.value = 3
    # the model's own score of query 10 against key 3, from block 1's input stream
    ids = torch.tensor([x.attention.ids])
    _, cache = run_with_cache(lively, ids, "blocks.1.hook_resid_pre")
    block, D = lively.transformer.h[1], 16 // 2
    with torch.no_grad():
        q, k, _ = block.attn.c_attn(block.ln_1(cache["blocks.1.hook_resid_pre"][0])).split(16, dim=-1)
    scores = q[:, D:] @ k[:, D:].t() / math.sqrt(D)  # head 1's slice
    score = float(scores[10, 3])
    assert float(x.qk.matrix.sum()) == pytest.approx(score, abs=1e-4) and abs(score) > 0.1
    text = shown(x.qk_view)
    assert f"score before the softmax {x.qk.score:+.3f}" in text and abs(x.qk.score - score) < 1e-4
    assert f"the shares sum to the score: {float(x.qk.matrix.sum()):+.3f}" in text
    assert f"attention weight {float(scores[10, :11].softmax(-1)[3]):.3f}" in text
    largest = int(x.qk.by_query.abs().argmax())
    assert f"{float(x.qk.by_query[largest]):+.3f}" in text  # the query side's bars
    pair = x.qk.top(1)[0]
    assert f"<td>{pair['query_part']}</td><td>{pair['key_part']}</td>" in text
    assert "Where L1H1 looks (QK)" in x._static_html()  # open: in the snapshot too


def test_the_ov_table_shows_how_much_an_attention_only_head_copies(data):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=1, n_head=1, n_embd=16,
                          attn_only=True))
    with torch.no_grad():  # values and output the identity: the head writes the token it reads
        model.transformer.h[0].attn.c_attn.weight[32:].copy_(torch.eye(16))
        model.transformer.h[0].attn.c_proj.weight.copy_(torch.eye(16))
    x = AttentionExplorer(model, data.tokenizer, "the lazy dog")
    x.circuits.selected_index = 0
    sources = list(dict.fromkeys(x.attention.ids))
    want = circuits.ov_circuit(model, 0, 0, sources, data.tokenizer)
    assert want.copying > 0.5
    text = shown(x.ov_view)
    assert (f"What L0H0 writes (OV): copying {want.copying:.0%} of the text's {len(sources)} distinct "
            "tokens") in text
    assert "direct path only" not in text  # attention only: no MLP to leave out
    assert text.count("<tr>") == 1 + len(sources)
    assert text.count("background:#d9ecd0") == round(want.copying * len(sources))  # the copied tokens


def test_with_mlps_the_ov_table_says_it_is_the_direct_path_only(lively, data):
    x = AttentionExplorer(lively, data.tokenizer, "the lazy dog")
    x.circuits.selected_index = 0
    assert "This model has MLPs: this is the direct path only" in shown(x.ov_view)


def test_changed_weights_wait_for_the_next_read(lively, data):
    x = AttentionExplorer(lively, data.tokenizer, "the lazy dog")
    x.circuits.selected_index = 0
    weights_changed(lively)  # e.g. a training step
    x.focus_box.value = 5
    assert "weights have changed" in shown(x.direct_effect) and "weights have changed" in shown(x.qk_view)
    x.update()  # the explorer reads the text again
    assert "direct effect on predicting" in shown(x.direct_effect) and x.qk is not None


def test_a_hugging_face_model_is_told_the_panels_need_lmlabs_gpt(data):
    transformers = need("transformers", "pip install -e '.[hf]'")
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=data.vocab_size,
                                     bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    x = AttentionExplorer(hf, data.tokenizer, "the lazy dog")
    x.select(1, 1)
    x.focus_box.value = 4
    x.circuits.selected_index = 0
    assert "reads lmlab's GPT, not a GPT2LMHeadModel" in shown(x.direct_effect)
    assert "read lmlab's GPT, not a GPT2LMHeadModel" in shown(x.circuits_note)
    assert x.qk_view.value == x.ov_view.value == "" and x._keys.layout.display == "none"
    x.select(0, 1)  # the rest works
    assert x.status.value == "" and "next token after position 4" in x.predictions.value
    assert "lmlab's GPT" in x._static_html()

