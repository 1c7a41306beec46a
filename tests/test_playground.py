"""The tokenizer playground without a browser: BPE merges replayed one by one, tokenizers
compared on one text, GPT-2's tokenizer offline, and the widget's rows, slider and errors."""

import json
import math

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

from lmlab import BPETokenizer, CharTokenizer, load_corpus  # noqa: E402
from lmlab.tokenizers import (BYTE_TO_CHAR, GPT2Tokenizer, byte_level_bytes, bytes_text,  # noqa: E402
                              compare_tokenizers, gpt2_tokenizer_or_none)
from lmlab.widgets.playground import TokenizerPlayground  # noqa: E402

TEXTS = ["The quick brown fox jumps over the lazy dog.", "你好，世界", "🙂 emoji 👩‍👩‍👧 too",
         "To be, or not to be:\nthat is the question.   Spaces\tand tabs."]
MIXED = "The quick brown fox. 你好，世界"


@pytest.fixture(scope="module")
def shakespeare(data_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMLAB_DATA_DIR", str(data_dir))
        return load_corpus("shakespeare")


@pytest.fixture(scope="module")
def bpe(shakespeare):
    return BPETokenizer.train(shakespeare[:100_000], vocab_size=400)


# ---- merges replayed ------------------------------------------------------------------


def test_merges_are_the_hf_models_in_rank_order(bpe):
    model = json.loads(bpe._tok.to_str())["model"]
    expected = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    assert bpe.merges == expected
    assert len(bpe.merges) == bpe.vocab_size - 256  # every token past the bytes is one merge
    vocab = model["vocab"]
    for left, right in bpe.merges:  # each merge makes a token of the vocabulary
        assert vocab[left + right] >= 256
    # merged in order: a merge only uses tokens that exist by then
    known = {t for t, i in vocab.items() if i < 256}
    for left, right in bpe.merges:
        assert left in known and right in known
        known.add(left + right)


@pytest.mark.parametrize("text", TEXTS)
def test_all_merges_give_what_encode_gives(bpe, text):
    tokens = bpe.tokenize_with_merges(text, len(bpe.merges))
    assert tokens == bpe._tok.encode(text).tokens
    assert [bpe.token_id(t) for t in tokens] == bpe.encode(text)
    assert bpe.tokenize_with_merges(text) == tokens


def test_all_merges_give_what_encode_gives_on_a_corpus_page(bpe, shakespeare):
    page = shakespeare[200_000:205_000]  # text the tokenizer was not trained on
    assert [bpe.token_id(t) for t in bpe.tokenize_with_merges(page)] == bpe.encode(page)


@pytest.mark.parametrize("text", TEXTS)
def test_no_merges_gives_one_token_per_byte(bpe, text):
    tokens = bpe.tokenize_with_merges(text, 0)
    assert len(tokens) == len(text.encode("utf-8"))
    assert all(len(t) == 1 for t in tokens)
    assert b"".join(byte_level_bytes(t) for t in tokens).decode("utf-8") == text


@pytest.mark.parametrize("text", TEXTS)
def test_each_merge_never_adds_a_token(bpe, text):
    counts = [len(bpe.tokenize_with_merges(text, n)) for n in range(len(bpe.merges) + 1)]
    assert all(b <= a for a, b in zip(counts, counts[1:]))
    if text.isascii():
        assert counts[-1] < counts[0]


def test_a_merge_joins_exactly_its_pair(bpe):
    text = "the theme of the thing"
    for n in range(1, len(bpe.merges) + 1):
        before, after = bpe.tokenize_with_merges(text, n - 1), bpe.tokenize_with_merges(text, n)
        left, right = bpe.merges[n - 1]
        joined = before.count(left + right)
        assert after.count(left + right) - joined == len(before) - len(after)


def test_merge_text_names_the_merge_readably(bpe):
    k = next(k for k, (left, _) in enumerate(bpe.merges, 1) if left.startswith("Ġ"))
    left, right = bpe.merges[k - 1]
    shown = bpe.merge_text(k)
    assert shown.startswith(f"merge {k}: '␣")
    a, b, ab = (bytes_text(byte_level_bytes(t)) for t in (left, right, left + right))
    assert shown == f"merge {k}: '{a}' + '{b}' -> '{ab}'"


def test_replay_rejects_a_count_outside_the_merges(bpe):
    with pytest.raises(ValueError, match="choose 0"):
        bpe.tokenize_with_merges("abc", len(bpe.merges) + 1)


def test_the_byte_alphabet_is_hf_tokenizers_own():
    from tokenizers import pre_tokenizers

    assert sorted(BYTE_TO_CHAR.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert BYTE_TO_CHAR[ord(" ")] == "Ġ" and BYTE_TO_CHAR[ord("\n")] == "Ċ"
    assert byte_level_bytes("Ġthe") == b" the"


def test_byte_pieces_show_as_escapes_not_replacement_characters():
    assert bytes_text(" the".encode()) == "␣the"
    assert bytes_text("你".encode()[:2]) == "\\xe4\\xbd"
    assert bytes_text("你".encode()) == "你"


# ---- comparison ---------------------------------------------------------------------------


def test_compare_counts_tokens_and_characters_a_token(bpe):
    chars = CharTokenizer.fit(MIXED)
    rows = compare_tokenizers(MIXED, {"characters": chars, "BPE": bpe})
    assert [r.name for r in rows] == ["characters", "BPE"]
    c, b = rows
    assert c.ids == chars.encode(MIXED) and c.count == len(MIXED) and c.chars_per_token == 1.0
    assert c.tokens[3] == "␣" and "".join(c.tokens) == MIXED.replace(" ", "␣")
    assert b.ids == bpe.encode(MIXED) and b.count == len(b.ids) == len(b.tokens)
    assert b.chars_per_token == pytest.approx(len(MIXED) / b.count)
    assert not c.error and not b.error


def test_a_tokenizer_that_cannot_read_the_text_gives_an_error_entry(bpe):
    rows = compare_tokenizers("hello 世界", {"characters": CharTokenizer.fit("hello "), "BPE": bpe})
    assert "'世'" in rows[0].error and rows[0].ids == [] and rows[0].count == 0
    assert math.isnan(rows[0].chars_per_token)
    assert rows[1].error == "" and rows[1].ids == bpe.encode("hello 世界")


def test_a_gpt2_tokenizer_shows_its_byte_pieces_too(bpe):
    transformers = need("transformers", "pip install -e '.[hf]'")
    gpt2_like = GPT2Tokenizer(transformers.GPT2TokenizerFast(tokenizer_object=bpe._tok))
    ours, theirs = compare_tokenizers(MIXED, {"BPE": bpe, "GPT-2 kind": gpt2_like})
    assert theirs.ids == ours.ids and theirs.tokens == ours.tokens
    assert "\\xe4" in theirs.tokens and "\ufffd" not in "".join(theirs.tokens)


def test_gpt2_offline_says_so_at_once(monkeypatch):
    need("transformers", "pip install -e '.[hf]'")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-lmlab-test-cache")
    tok, message = gpt2_tokenizer_or_none()
    assert tok is None and "not available" in message and "left out" in message


# ---- the widget ---------------------------------------------------------------------------


def texts(row) -> list[str]:
    return [c["text"] for c in row.chips]


@pytest.fixture
def playground(bpe):
    chars = CharTokenizer.fit(MIXED + "abcdefghijklmnopqrstuvwxyz")
    return TokenizerPlayground(MIXED, tokenizers={"characters": chars, "BPE": bpe})


def test_one_row_of_chips_per_tokenizer(playground, bpe):
    w = playground
    assert "lmlab-playground" in w._dom_classes
    assert list(w.rows) == ["characters", "BPE"] and list(w.sliders) == ["BPE"]
    assert texts(w.rows["characters"]) == [ch if ch != " " else "␣" for ch in MIXED]
    ids = bpe.encode(MIXED)
    assert [c["title"] for c in w.rows["BPE"].chips] == [f"id {i}" for i in ids]
    assert w.rows["BPE"].stats == f"{len(ids)} tokens · {len(MIXED) / len(ids):.2f} characters a token"
    assert w.rows["characters"].stats == f"{len(MIXED)} tokens · 1.00 characters a token"
    assert w.sliders["BPE"].max == w.sliders["BPE"].value == len(bpe.merges)
    assert f"merge {len(bpe.merges)}:" in w.merge_labels["BPE"].value
    assert f"<td>{len(ids)}</td>" in w.summary.value and w.status.value == ""


def test_editing_the_text_recomputes_every_row(playground, bpe):
    w = playground
    w.text_box.value = "the lazy dog"
    assert texts(w.rows["characters"]) == list("the␣lazy␣dog")
    assert [c["title"] for c in w.rows["BPE"].chips] == [f"id {i}" for i in bpe.encode("the lazy dog")]
    assert w.results["BPE"].count == len(bpe.encode("the lazy dog"))


def test_the_slider_replays_the_merges(playground, bpe):
    w = playground
    slider, row = w.sliders["BPE"], w.rows["BPE"]
    slider.value = 0
    assert len(row.chips) == len(MIXED.encode("utf-8"))
    assert "no merges" in w.merge_labels["BPE"].value
    counts = []
    for n in range(1, slider.max + 1):
        slider.value = n
        assert texts(row) == [bytes_text(byte_level_bytes(t)) for t in bpe.tokenize_with_merges(MIXED, n)]
        assert w.merge_labels["BPE"].value.count(f"merge {n}:") == 1
        counts.append(len(row.chips))
    assert counts[-1] == len(bpe.encode(MIXED)) < len(MIXED.encode("utf-8"))
    slider.value = 3
    assert row.stats.startswith("after 3 of ") and f"(all merges: {counts[-1]})" in row.stats
    assert w.merge_labels["BPE"].value.count(bpe.merge_text(3).replace(">", "&gt;")) == 1
    assert texts(w.rows["characters"]) == [ch if ch != " " else "␣" for ch in MIXED]  # untouched


def test_unknown_characters_show_in_their_row_only(playground, bpe):
    w = playground
    w.text_box.value = "hello 世界 €"
    assert "'€'" in w.rows["characters"].error and w.rows["characters"].chips == []
    assert w.rows["BPE"].error == "" and len(w.rows["BPE"].chips) == len(bpe.encode("hello 世界 €"))
    assert "cannot read" in w.summary.value
    w.text_box.value = "hello"
    assert w.rows["characters"].error == "" and texts(w.rows["characters"]) == list("hello")


def test_empty_text_is_explained_and_the_last_view_stays(playground, bpe):
    w = playground
    before = w.rows["BPE"].chips
    w.text_box.value = ""
    assert "empty" in w.status.value and "lmlab-error" in w.status.value
    assert w.rows["BPE"].chips == before
    w.text_box.value = "fox"
    assert w.status.value == "" and texts(w.rows["characters"]) == list("fox")
    w = TokenizerPlayground("", [bpe])
    assert "empty" in w.status.value and w.to_html() == "<div class='lmlab-playground'></div>"
    w.text_box.value = "fox"
    assert len(w.rows["BPE (400)"].chips) == len(bpe.encode("fox")) and w.status.value == ""


@pytest.mark.parametrize("tokenizers, fragment", [(None, "needs tokenizers"), ({}, "no tokenizers"),
                                                  ({"x": 5}, "'x' is a int"),
                                                  (["nope"], "tokenizers[0] is a str"),
                                                  ("nope", "got a str")])
def test_a_non_tokenizer_is_refused_saying_what_is_accepted(tokenizers, fragment):
    with pytest.raises(TypeError) as e:
        TokenizerPlayground("text", tokenizers=tokenizers)
    assert fragment in str(e.value) and "{name: tokenizer}" in str(e.value)


def test_a_list_of_tokenizers_is_named_by_kind(bpe):
    chars = CharTokenizer.fit("abc ")
    w = TokenizerPlayground("a cab", [chars, bpe, CharTokenizer.fit("abc")])
    assert list(w.rows) == ["characters", "BPE (400)", "characters 2"]
    assert "' '" in w.rows["characters 2"].error  # no space in that one's vocabulary


def test_to_html_is_the_rows_as_drawn(playground, bpe):
    w = playground
    w.sliders["BPE"].value = 2
    page = w.to_html()
    assert page.startswith("<div class='lmlab-playground'>") and "<script" not in page
    pieces = bpe.tokenize_with_merges(MIXED, 2)
    assert f"data-chips='{len(MIXED)}'" in page and f"data-chips='{len(pieces)}'" in page
    assert page.count("<span title='id ") == len(MIXED) + len(pieces)
    assert "merge 2:" in page and "&lt;" not in MIXED
    w.text_box.value = "abc €"
    page = w.to_html()
    assert "color:#c00" in page and "not in the vocabulary: &#x27;€&#x27;" in page
