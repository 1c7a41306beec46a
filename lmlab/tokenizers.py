"""Tokenizers behind one small protocol: encode, decode, vocab_size, token_text,
save/load as JSON.

- `CharTokenizer`: one token per character, any Unicode.
- `BPETokenizer`: byte-level BPE trained with Hugging Face `tokenizers`.
- `GPT2Tokenizer`: GPT-2's own tokenizer through `transformers` (the `hf` extra).

For the tokenizer playground: `BPETokenizer.merges` and `tokenize_with_merges(text, n)`
replay byte-level BPE one merge at a time; `compare_tokenizers` encodes one text with
several tokenizers; `gpt2_tokenizer_or_none` loads GPT-2's tokenizer or says why not.
"""

from __future__ import annotations

import json
import math
import os
import socket
import urllib.parse
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import TokenizerError
from .files import atomic_write

REPLACEMENT = "\ufffd"
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}


def visible(text: str) -> str:
    """Text with whitespace made visible: space ␣, newline ↵, tab →, carriage return ␍."""
    return "".join(_VISIBLE.get(ch, ch) for ch in text)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each of the 256 byte values as one printable character
    (printable ASCII and Latin-1 stand for themselves; the others, e.g. space, are shifted
    to 256 + n: space is 'Ġ', newline 'Ċ')."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    shifted = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(shifted)}}


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_level_bytes(token: str) -> bytes:
    """The bytes a byte-level BPE token string stands for: 'Ġthe' -> b' the'."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError as e:
        raise TokenizerError(f"{token!r} is not a byte-level BPE token (character {e} is "
                             "outside the 256-character byte alphabet)") from None


def bytes_text(data: bytes) -> str:
    """Display string of a token's bytes: whitespace made visible, and bytes that are only
    part of a character (a token may end inside '你', 3 bytes in UTF-8) as \\xNN."""
    return visible(data.decode("utf-8", errors="backslashreplace"))


@runtime_checkable
class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def token_text(self, id: int) -> str: ...
    def to_dict(self) -> dict: ...


class _Base:
    """Shared behaviour: display strings and JSON files."""

    def token_text(self, id: int) -> str:
        """Display string of one token id, whitespace made visible."""
        return visible(self.decode([int(id)]))

    def tokens_text(self, ids) -> list[str]:
        return [self.token_text(i) for i in ids]

    def save(self, path) -> None:
        path = Path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False)
        with atomic_write(path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def _check_ids(self, ids) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(
                f"token ids {bad[:5]} are outside this tokenizer's vocabulary "
                f"(0..{self.vocab_size - 1})"
            )
        return ids


class CharTokenizer(_Base):
    """One token per character. `unknown="replace"` maps unseen characters to '\ufffd'."""

    def __init__(self, chars, unknown: str = "error"):
        if unknown not in ("error", "replace"):
            raise TokenizerError(f"unknown={unknown!r}; choose 'error' or 'replace'")
        chars = list(chars)
        if unknown == "replace" and REPLACEMENT not in chars:
            chars.append(REPLACEMENT)
        if not chars:
            raise TokenizerError("a CharTokenizer needs at least one character; fit it on text")
        if len(set(chars)) != len(chars):
            raise TokenizerError("CharTokenizer characters must be distinct")
        self.chars = chars
        self.unknown = unknown
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def fit(cls, text: str, unknown: str = "error") -> CharTokenizer:
        """The sorted set of characters in `text` becomes the vocabulary."""
        if not text:
            raise TokenizerError("cannot fit a CharTokenizer on empty text")
        return cls(sorted(set(text)), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[ch] for ch in text]
        except KeyError:
            pass
        if self.unknown == "replace":
            fallback = stoi[REPLACEMENT]
            return [stoi.get(ch, fallback) for ch in text]
        missing = sorted({ch for ch in text if ch not in stoi})
        shown = ", ".join(repr(ch) for ch in missing[:10]) + (" ..." if len(missing) > 10 else "")
        known = "".join(visible(ch) for ch in self.chars[:80]) + (" …" if len(self.chars) > 80 else "")
        raise TokenizerError(
            f"the text uses {'a character' if len(missing) == 1 else f'{len(missing)} characters'} "
            f"not in the vocabulary: {shown}. The model knows these "
            f"{len(self.chars)}: {known} — write the text with those. (A tokenizer built with "
            "CharTokenizer.fit(text, unknown='replace') maps unknown characters to '\ufffd'.)"
        )

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in self._check_ids(ids))

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars, "unknown": self.unknown}


class BPETokenizer(_Base):
    """Byte-level BPE (GPT-2's scheme) trained with Hugging Face `tokenizers`.

    Every string can be encoded: the 256 byte values are always in the vocabulary.
    """

    def __init__(self, hf_tokenizer):
        self._tok = hf_tokenizer
        self._size = hf_tokenizer.get_vocab_size()  # fixed from here on; asked on every decode

    @classmethod
    def train(cls, text: str, vocab_size: int = 512, min_frequency: int = 2) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if not text:
            raise TokenizerError("cannot train a BPE tokenizer on empty text")
        if vocab_size < 257:
            raise TokenizerError(
                f"vocab_size={vocab_size} is too small for byte-level BPE: the 256 byte "
                "values come first; ask for at least 257 (e.g. 512)"
            )
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._size

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        return self._tok.decode(self._check_ids(ids))

    def to_dict(self) -> dict:
        return {"type": "bpe", "tokenizer": json.loads(self._tok.to_str())}

    def token_bytes(self, id: int) -> bytes:
        """The bytes token `id` stands for (a token may hold part of a character)."""
        token = self._tok.id_to_token(int(id))
        if token is None:
            self._check_ids([id])
        return byte_level_bytes(token)

    def token_id(self, token: str) -> int:
        """The id of a byte-level token string ('Ġthe'), e.g. one of `tokenize_with_merges`."""
        id = self._tok.token_to_id(token)
        if id is None:
            raise TokenizerError(f"{token!r} is not in this tokenizer's vocabulary")
        return id

    @cached_property
    def merges(self) -> list[tuple[str, str]]:
        """The learned merges in the order they were learned (their rank): (left, right)
        token strings of the byte-level alphabet, e.g. ('Ġ', 't') makes 'Ġt'."""
        return _merges(self._tok)

    def tokenize_with_merges(self, text: str, n: int | None = None) -> list[str]:
        """The byte-level token strings of `text` when only the first `n` merges are applied
        (n=0: one token per byte; n=None or len(merges): what `encode` gives)."""
        return _apply_merges(self._tok, self.merges, text, n)

    def merge_text(self, k: int) -> str:
        """Merge `k` (1-based, as the playground's slider counts) in words:
        "merge 17: 't' + 'h' -> 'th'"."""
        left, right = self.merges[k - 1]
        shown = [bytes_text(byte_level_bytes(t)) for t in (left, right, left + right)]
        return f"merge {k}: '{shown[0]}' + '{shown[1]}' -> '{shown[2]}'"


class GPT2Tokenizer(_Base):
    """GPT-2's tokenizer from `transformers` (install the `hf` extra).

    `GPT2Tokenizer()` loads it from the Hugging Face hub cache (downloaded once);
    `GPT2Tokenizer(hf_tokenizer)` wraps one already built.
    """

    def __init__(self, hf_tokenizer=None, name: str = "gpt2", local_files_only: bool = False):
        self.name = name if hf_tokenizer is None else None  # None: a tokenizer given as is
        if hf_tokenizer is None:
            hf_tokenizer = _load_gpt2(name, local_files_only)
        self._tok = hf_tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def decode(self, ids) -> str:
        return self._tok.decode(self._check_ids(ids), clean_up_tokenization_spaces=False)

    def token_bytes(self, id: int) -> bytes:
        """The bytes token `id` stands for (a token may hold part of a character)."""
        return byte_level_bytes(self._tok.convert_ids_to_tokens(self._check_ids([id]))[0])

    def to_dict(self) -> dict:
        """Loaded by name: the name (reloaded from the hub cache). Given as an object: its
        whole vocabulary and merges, so that it reloads as the same tokenizer."""
        if self.name is not None:
            return {"type": "gpt2", "name": self.name}
        backend = getattr(self._tok, "backend_tokenizer", None)
        if backend is None:
            raise TokenizerError("this GPT2Tokenizer wraps a tokenizer that cannot be saved (no "
                                 "fast `backend_tokenizer`); wrap a GPT2TokenizerFast instead")
        return {"type": "gpt2", "tokenizer": json.loads(backend.to_str())}


def _load_gpt2(name: str, local_files_only: bool):
    try:
        from transformers import GPT2TokenizerFast
    except ImportError as e:
        raise TokenizerError(
            "GPT-2's tokenizer needs transformers: pip install 'lmlab[hf]'"
        ) from e
    try:
        tok = GPT2TokenizerFast.from_pretrained(name, local_files_only=local_files_only)
        problem = None
    except (OSError, ValueError) as e:
        tok, problem = None, e
    # transformers 5 builds an empty tokenizer, rather than failing, when files are missing
    if tok is None or len(tok) < 256:
        raise TokenizerError(
            f"could not load the tokenizer {name!r} from the Hugging Face hub "
            f"({problem or 'its vocabulary files are missing'}); connect to the internet once "
            "so it is cached, or set HF_HOME to a cache that has it"
        ) from problem
    return tok


def gpt2_tokenizer_or_none(name: str = "gpt2", download: bool = True):
    """(GPT-2's tokenizer, "") when it is cached or can be downloaded, else (None, why):
    a lesson shows `why` and carries on without it. Without a cached copy, and with the
    Hugging Face hub unreachable, it returns at once rather than retrying for minutes."""
    try:
        return GPT2Tokenizer(name=name, local_files_only=True), ""
    except TokenizerError as e:
        problem = str(e)
    if download and os.environ.get("HF_HUB_OFFLINE", "0") in ("", "0", "false", "False"):
        endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        try:
            socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
            return GPT2Tokenizer(name=name), ""
        except OSError as e:
            problem = (f"it is not cached and the Hugging Face hub ({endpoint.hostname}) cannot "
                       f"be reached ({e}); connect to the internet once so it is cached")
        except TokenizerError as e:
            problem = str(e)
    return None, f"GPT-2's tokenizer is not available here, so it is left out: {problem}."


def _merges(hf_tokenizer) -> list[tuple[str, str]]:
    """The BPE model's merges, rank order, from its JSON ("a b" strings in older versions
    of `tokenizers`, [a, b] lists in newer ones)."""
    model = json.loads(hf_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise TokenizerError(f"this tokenizer's model is {model.get('type')!r}, not BPE: it has no merges")
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def _apply_merges(hf_tokenizer, merges, text: str, n: int | None) -> list[str]:
    """BPE encoding with the first `n` merges: each pre-tokenized word starts as single
    bytes; the adjacent pair whose merge has the lowest rank (< n) is merged everywhere
    in the word, left to right, until no pair of the first `n` merges is left."""
    n = len(merges) if n is None else n
    if not 0 <= n <= len(merges):
        raise TokenizerError(f"n={n} merges: choose 0..{len(merges)}")
    rank = {pair: r for r, pair in enumerate(merges[:n])}
    tokens = []
    for word, _ in hf_tokenizer.pre_tokenizer.pre_tokenize_str(text):
        parts = list(word)
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda p: rank.get(p, math.inf))
            if pair not in rank:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        tokens.extend(parts)
    return tokens


@dataclass
class Tokenization:
    """One tokenizer's reading of a text: `ids` and their display strings `tokens` (both
    [count]), `chars_per_token` (characters of the text / tokens), or `error` (why it
    could not encode the text; then ids and tokens are empty)."""

    name: str
    ids: list[int]
    tokens: list[str]
    error: str = ""
    text_chars: int = 0

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def chars_per_token(self) -> float:
        return self.text_chars / self.count if self.count else math.nan


def token_display(tokenizer, id: int) -> str:
    """Display string of one token: its bytes when the tokenizer has `token_bytes` (so a
    piece of a character shows as \\xNN rather than '\ufffd'), else its `token_text`."""
    if hasattr(tokenizer, "token_bytes"):
        return bytes_text(tokenizer.token_bytes(id))
    if hasattr(tokenizer, "token_text"):
        return tokenizer.token_text(id)
    return visible(tokenizer.decode([id]))


def compare_tokenizers(text: str, tokenizers: dict) -> list[Tokenization]:
    """`text` read by each of `tokenizers` ({name: tokenizer}), in their order. A tokenizer
    that cannot encode the text gives an entry with `error` set, not an exception."""
    rows = []
    for name, tok in tokenizers.items():
        try:
            ids = [int(i) for i in tok.encode(text)]
            shown = [token_display(tok, i) for i in ids]
        except (TokenizerError, ValueError, KeyError) as e:
            rows.append(Tokenization(name, [], [], error=str(e), text_chars=len(text)))
            continue
        rows.append(Tokenization(name, ids, shown, text_chars=len(text)))
    return rows


def from_dict(data: dict):
    """Rebuild a tokenizer from its `to_dict()`."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer(data["chars"], unknown=data.get("unknown", "error"))
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(json.dumps(data["tokenizer"])))
    if kind == "gpt2":
        if "tokenizer" in data:
            from tokenizers import Tokenizer as HFTokenizer
            from transformers import GPT2TokenizerFast

            backend = HFTokenizer.from_str(json.dumps(data["tokenizer"]))
            return GPT2Tokenizer(GPT2TokenizerFast(tokenizer_object=backend))
        return GPT2Tokenizer(name=data.get("name", "gpt2"))
    raise TokenizerError(
        f"unknown tokenizer type {kind!r}; expected 'char', 'bpe' or 'gpt2' "
        "(was the file written by lmlab's tokenizer.save?)"
    )


def load(path):
    """Read a tokenizer saved with `tokenizer.save(path)`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise TokenizerError(f"no tokenizer file at {path}") from e
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path} is not a tokenizer JSON file ({e})") from e
    return from_dict(data)
