import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab import BPETokenizer, CharTokenizer, GPT2Tokenizer, TokenizerError, load_corpus
from lmlab.tokenizers import from_dict, load, visible
from _needs import need

SAMPLE = "To be, or not to be:\nthat is the question.\t床前明月光，疑是地上霜。"


def test_char_tokenizer_handles_any_unicode(data_dir, monkeypatch):
    monkeypatch.setenv("LMLAB_DATA_DIR", str(data_dir))
    poems = load_corpus("tang-poems")
    tok = CharTokenizer.fit(poems)
    assert tok.vocab_size > 1000
    assert tok.decode(tok.encode(poems[:500])) == poems[:500]


def test_unknown_characters_are_named_with_a_fix():
    tok = CharTokenizer.fit("abc ")
    with pytest.raises(TokenizerError) as e:
        tok.encode("a cat, a dog")
    msg = str(e.value)
    assert "'t'" in msg and "'d'" in msg and "','" in msg
    assert "CharTokenizer.fit" in msg and "unknown='replace'" in msg


def test_replace_mode_maps_unknown_to_replacement_char():
    tok = CharTokenizer.fit("abc", unknown="replace")
    assert tok.decode(tok.encode("abxc")) == "ab\ufffdc"


def test_token_text_makes_whitespace_visible():
    tok = CharTokenizer.fit(SAMPLE)
    assert tok.token_text(tok.encode(" ")[0]) == "␣"
    assert tok.token_text(tok.encode("\n")[0]) == "↵"
    assert tok.token_text(tok.encode("\t")[0]) == "→"
    assert tok.token_text(tok.encode("明")[0]) == "明"
    assert visible("a b\n") == "a␣b↵"


def test_decode_rejects_ids_outside_vocabulary():
    tok = CharTokenizer.fit("ab")
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([0, 5])


def test_bpe_is_trained_by_hf_tokenizers_and_compresses():
    text = load_corpus("python")[:200_000]
    tok = BPETokenizer.train(text, vocab_size=512)
    assert tok.vocab_size == 512
    ids = tok.encode(text[:5000])
    assert len(ids) < 0.6 * 5000  # merges learned: fewer tokens than bytes
    assert tok.decode(ids) == text[:5000]
    # text the corpus never showed still encodes: every byte is in the vocabulary
    assert tok.decode(tok.encode("床前明月光 🙂")) == "床前明月光 🙂"
    assert "def" in "".join(tok.token_text(i) for i in tok.encode("def f(): pass"))


def test_bpe_rejects_too_small_vocab():
    with pytest.raises(TokenizerError, match="at least 257"):
        BPETokenizer.train("hello world", vocab_size=100)


@pytest.mark.parametrize("make", [
    lambda: CharTokenizer.fit(SAMPLE),
    lambda: CharTokenizer.fit(SAMPLE, unknown="replace"),
    lambda: BPETokenizer.train(SAMPLE * 20, vocab_size=300),
])
def test_save_load_round_trip(tmp_path, make):
    tok = make()
    tok.save(tmp_path / "tok.json")
    again = load(tmp_path / "tok.json")
    assert type(again) is type(tok)
    assert again.vocab_size == tok.vocab_size
    assert again.encode(SAMPLE) == tok.encode(SAMPLE)
    assert again.to_dict() == tok.to_dict()


def test_load_rejects_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"type": "sentencepiece"}))
    with pytest.raises(TokenizerError, match="unknown tokenizer type"):
        load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a tokenizer JSON"):
        load(tmp_path / "y.json")


_CHAR = CharTokenizer.fit(SAMPLE)
_BPE = BPETokenizer.train(SAMPLE * 20, vocab_size=300)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=sorted(set(SAMPLE))))
def test_char_round_trip_property(s):
    assert _CHAR.decode(_CHAR.encode(s)) == s


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bpe_round_trip_property_any_text(s):
    assert _BPE.decode(_BPE.encode(s)) == s


def test_gpt2_tokenizer_wraps_transformers():
    """GPT-2's tokenizer class around a locally trained byte-level BPE (no hub here)."""
    transformers = need("transformers", "pip install '.[hf]'")
    bpe = BPETokenizer.train(SAMPLE * 20, vocab_size=300)
    hf = transformers.GPT2TokenizerFast(tokenizer_object=bpe._tok)
    tok = GPT2Tokenizer(hf)
    assert tok.vocab_size == len(hf)
    assert tok.encode(SAMPLE) == hf.encode(SAMPLE)
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert tok.token_text(tok.encode(" ")[0]) == "␣"
    data = tok.to_dict()  # the wrapped tokenizer itself, not the real GPT-2's name
    assert data["type"] == "gpt2" and "name" not in data
    again = from_dict(json.loads(json.dumps(data)))
    assert again.vocab_size == tok.vocab_size and again.encode(SAMPLE) == tok.encode(SAMPLE)


def test_gpt2_tokenizer_offline_says_what_to_do(tmp_path, monkeypatch):
    need("transformers", "pip install '.[hf]'")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(TokenizerError, match="cached"):
        GPT2Tokenizer(name="gpt2", local_files_only=True)
