"""Tokenizers behind one small protocol: encode, decode, vocab_size, token_text,
save/load as JSON.

- `CharTokenizer`: one token per character, any Unicode.
- `BPETokenizer`: byte-level BPE trained with Hugging Face `tokenizers`.
- `GPT2Tokenizer`: GPT-2's own tokenizer through `transformers` (the `hf` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import TokenizerError
from .files import atomic_write

REPLACEMENT = "\ufffd"
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}


def visible(text: str) -> str:
    """Text with whitespace made visible: space ␣, newline ↵, tab →, carriage return ␍."""
    return "".join(_VISIBLE.get(ch, ch) for ch in text)


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
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        return self._tok.decode(self._check_ids(ids))

    def to_dict(self) -> dict:
        return {"type": "bpe", "tokenizer": json.loads(self._tok.to_str())}


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
