import dataclasses
import functools
import http.server
import threading

import pytest
import torch

from lmlab import (
    CORPORA,
    ChecksumError,
    ConfigError,
    CorpusError,
    CorpusUnavailable,
    DataError,
    TokenDataset,
    load_corpus,
)
from lmlab import data as data_module
from lmlab.tokenizers import BPETokenizer


@pytest.fixture
def shared(data_dir, monkeypatch):
    monkeypatch.setenv("LMLAB_DATA_DIR", str(data_dir))


def test_named_corpora_from_cache(shared):
    text = load_corpus("shakespeare")
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    names = load_corpus("names")
    assert names.splitlines()[0] == "emma"
    poems = load_corpus("tang-poems")
    first = poems.split("\n\n")[0].splitlines()
    assert len(first) >= 3  # title, author, lines
    assert len(poems.split("\n\n")) >= 300


def test_offline_corpora_are_real_text():
    py = load_corpus("python")
    assert len(py) > 100_000 and "def " in py and "import " in py
    arith = load_corpus("arithmetic").splitlines()
    a, rest = arith[0].split("+")
    b, c = rest.split("=")
    assert int(a) + int(b) == int(c)
    assert all(eval(line.split("=")[0]) == int(line.split("=")[1]) for line in arith[:200])
    lines = load_corpus("induction").splitlines()
    assert all(left == right for left, right in (line.split("|") for line in lines))
    assert len(set(lines)) > 0.9 * len(lines)
    assert data_module.arithmetic(seed=3) == data_module.arithmetic(seed=3)
    assert data_module.arithmetic(seed=3) != data_module.arithmetic(seed=4)


def test_file_path_and_text(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("hello there\nworld\n", encoding="utf-8")
    assert load_corpus(str(f)) == "hello there\nworld\n"
    assert load_corpus(f) == "hello there\nworld\n"
    assert load_corpus(text="some text, not a name") == "some text, not a name"
    spaced = tmp_path / "my notes.txt"  # a file name with a space is a file, not text
    spaced.write_text("notes\n", encoding="utf-8")
    assert load_corpus(str(spaced)) == "notes\n"
    with pytest.raises(CorpusError, match="no file at 'my other notes.txt'.*load_corpus\\(text="):
        load_corpus("my other notes.txt")
    with pytest.raises(CorpusError, match="not both"):
        load_corpus("names", text="x")


def test_unknown_name_lists_the_names():
    with pytest.raises(CorpusError) as e:
        load_corpus("shakespear")
    for name in CORPORA:
        assert name in str(e.value)


def test_missing_file_and_empty_inputs(tmp_path):
    with pytest.raises(CorpusError, match="no file at"):
        load_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match="empty"):
        load_corpus("")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(tmp_path / "empty.txt")


class _Server:
    """A loopback HTTP server serving one folder."""

    def __init__(self, root):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    s = _Server(root)
    s.root = root
    yield s
    s.close()


def _point(monkeypatch, name, url):
    spec = dataclasses.replace(data_module.DOWNLOADS[name], url=url)
    monkeypatch.setitem(data_module.DOWNLOADS, name, spec)


def test_download_verifies_and_caches(server, data_dir, tmp_path, monkeypatch):
    (server.root / "names.txt").write_bytes((data_dir / "names.txt").read_bytes())
    cache = tmp_path / "cache"
    monkeypatch.setenv("LMLAB_DATA_DIR", str(cache))
    _point(monkeypatch, "names", server.url + "/names.txt")
    assert load_corpus("names").startswith("emma\n")
    assert (cache / "names.txt").exists()
    assert not list(cache.glob("*.tmp"))
    server.close()  # now served from the cache
    assert load_corpus("names").startswith("emma\n")


def test_checksum_mismatch_is_not_kept(server, tmp_path, monkeypatch):
    (server.root / "names.txt").write_text("tampered\n")
    cache = tmp_path / "cache"
    monkeypatch.setenv("LMLAB_DATA_DIR", str(cache))
    _point(monkeypatch, "names", server.url + "/names.txt")
    with pytest.raises(ChecksumError, match="not kept"):
        load_corpus("names")
    assert not (cache / "names.txt").exists()


def test_corrupted_cache_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_DATA_DIR", str(tmp_path))
    (tmp_path / "names.txt").write_text("not the real file\n")
    with pytest.raises(ChecksumError, match="delete it"):
        load_corpus("names")


def test_offline_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_DATA_DIR", str(tmp_path))
    _point(monkeypatch, "shakespeare", "http://127.0.0.1:9/input.txt")  # nothing listens
    with pytest.raises(CorpusUnavailable) as e:
        load_corpus("shakespeare")
    msg = str(e.value)
    assert str(tmp_path / "tinyshakespeare.txt") in msg and "LMLAB_DATA_DIR" in msg
    assert data_module.DOWNLOADS["shakespeare"].sha256 in msg


def test_dataset_split_and_batches(shared):
    text = load_corpus("shakespeare")
    ds = TokenDataset(text, block_size=32)
    assert len(ds.train_ids) + len(ds.val_ids) == len(text)
    assert len(ds.val_ids) == int(len(text) * 0.1)
    x, y = ds.batch("train", 8, generator=torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert ds.tokenizer.decode(x[0].tolist()) in text
    again = ds.batch("train", 8, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(again, x)
    other = ds.batch("train", 8, generator=torch.Generator().manual_seed(2))[0]
    assert not torch.equal(other, x)
    torch.manual_seed(4)  # without a generator: torch's global RNG, like torch.randint
    first = ds.batch("train", 8)[0]
    torch.manual_seed(4)
    assert torch.equal(ds.batch("train", 8)[0], first)
    xv, _ = ds.batch("val", 4)
    assert ds.tokenizer.decode(xv[0].tolist()) in text[len(ds.train_ids) - 1:]


def test_dataset_with_bpe_tokens():
    text = load_corpus("python")[:100_000]
    tok = BPETokenizer.train(text, vocab_size=400)
    ds = TokenDataset(text, tok, block_size=16)
    assert ds.vocab_size == 400
    assert len(ds) < len(text)


def test_too_little_text_is_explained():
    with pytest.raises(DataError, match="block_size \\+ 1 = 65"):
        TokenDataset("a short text " * 3, block_size=64)
    with pytest.raises(DataError, match="empty"):
        TokenDataset("", block_size=8)
    with pytest.raises(DataError, match="split='test'"):
        TokenDataset("abcdefgh " * 100, block_size=8).batch("test", 2)


def test_dataset_settings_are_checked():
    with pytest.raises(ConfigError, match="takes no seed.*TrainConfig"):
        TokenDataset("abcdefgh " * 100, block_size=8, seed=1)
    with pytest.raises(ConfigError, match="did you mean 'block_size'"):
        TokenDataset("abcdefgh " * 100, blocksize=8)
