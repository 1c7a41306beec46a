"""Corpora by name, file or text, and the token dataset that batches them.

Named corpora download once into a cache (`LMLAB_DATA_DIR`, else
`~/.cache/lmlab`), verified against their published sha256. `python`,
`arithmetic` and `induction` are built offline.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import ChecksumError, ConfigError, CorpusError, CorpusUnavailable, DataError
from .settings import check_names

_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Download:
    filename: str
    url: str
    sha256: str
    to_text: Callable[[bytes], str]


def _utf8(data: bytes) -> str:
    return data.decode("utf-8")


def _tang_poems(data: bytes) -> str:
    """The 300 Tang poems as title, author, lines, blank line."""
    poems = json.loads(data.decode("utf-8"))
    parts = []
    for poem in poems:
        parts.append("\n".join([poem["title"], poem["author"], *poem["paragraphs"]]) + "\n")
    return "\n".join(parts)


DOWNLOADS: dict[str, Download] = {
    "shakespeare": Download(
        "tinyshakespeare.txt",
        f"{_RAW}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        _utf8,
    ),
    "names": Download(
        "names.txt",
        f"{_RAW}/karpathy/makemore/master/names.txt",
        "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
        _utf8,
    ),
    "tang-poems": Download(
        "tang300.json",
        f"{_RAW}/chinese-poetry/chinese-poetry/master/"
        + urllib.request.quote("全唐诗/唐诗三百首.json"),
        "d77a145f7470da2ed2f79515944563c062ffc43fceda07f195a36ead66b7e5c7",
        _tang_poems,
    ),
}


def python_source(max_chars: int = 1_000_000) -> str:
    """Python standard library source files of this interpreter, in name order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


def arithmetic(n: int = 20_000, digits: int = 2, seed: int = 0) -> str:
    """Lines like `12+34=46`, operands uniform with up to `digits` digits."""
    rng = random.Random(seed)
    top = 10**digits - 1
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, top), rng.randint(0, top)
        lines.append(f"{a}+{b}={a + b}")
    return "\n".join(lines) + "\n"


def induction(n: int = 10_000, min_len: int = 4, max_len: int = 12, seed: int = 0) -> str:
    """Lines of a random letter run said twice (`qfzkb|qfzkb`): the second half can
    only be predicted by copying from the first, which an induction head learns."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = []
    for _ in range(n):
        run = "".join(rng.choice(letters) for _ in range(rng.randint(min_len, max_len)))
        lines.append(f"{run}|{run}")
    return "\n".join(lines) + "\n"


BUILT: dict[str, Callable[[], str]] = {
    "python": python_source,
    "arithmetic": arithmetic,
    "induction": induction,
}

CORPORA = sorted([*DOWNLOADS, *BUILT])


def cache_dir() -> Path:
    """Where downloaded corpora live: $LMLAB_DATA_DIR, else ~/.cache/lmlab."""
    env = os.environ.get("LMLAB_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmlab"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(name: str, timeout: float = 30.0) -> Path:
    """Path of a named corpus file in the cache, downloading and verifying it first."""
    spec = DOWNLOADS[name]
    folder = cache_dir()
    path = folder / spec.filename
    if path.exists():
        digest = _sha256(path.read_bytes())
        if digest != spec.sha256:
            raise ChecksumError(
                f"{path} has sha256 {digest}, expected {spec.sha256}; delete it so "
                f"lmlab downloads it again from {spec.url}"
            )
        return path
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise CorpusUnavailable(
            f"corpus {name!r} is not in the cache and could not be downloaded from "
            f"{spec.url} ({getattr(e, 'reason', e)}). If this machine is offline, copy "
            f"that file to {path} (sha256 {spec.sha256}), or point LMLAB_DATA_DIR at a "
            f"folder holding {spec.filename}; the 'python' corpus needs no download"
        ) from e
    digest = _sha256(data)
    if digest != spec.sha256:
        raise ChecksumError(
            f"the download of {spec.url} has sha256 {digest}, expected {spec.sha256}; "
            "it was not kept. Try again later, or copy a verified file into "
            f"{folder}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def load_corpus(source=None, *, text: str | None = None) -> str:
    """Text of a named corpus (see `CORPORA`) or of a UTF-8 file (a `Path`, or a string
    naming an existing file); `text=` passes text through, checked to be non-empty.
    Nothing is guessed from a string's shape: a string that is neither a corpus name
    nor an existing file is an error.
    """
    if text is not None:
        if source is not None:
            raise CorpusError("pass either a corpus name or path, or text=..., not both")
        if not isinstance(text, str) or not text:
            raise CorpusError("text= must be a non-empty string")
        return text
    if isinstance(source, os.PathLike):
        return _read_file(Path(source))
    if not isinstance(source, str):
        raise CorpusError(f"load_corpus takes a corpus name or a file path, not "
                          f"{type(source).__name__}; for raw text use load_corpus(text=...)")
    if source in DOWNLOADS:
        loaded = DOWNLOADS[source].to_text(fetch(source).read_bytes())
    elif source in BUILT:
        loaded = BUILT[source]()
    elif not source.strip():
        raise CorpusError("the corpus name is empty; pass a corpus name, a file path, or "
                          "text=...")
    elif os.path.isfile(source):
        loaded = _read_file(Path(source))
    else:
        raise CorpusError(
            f"no corpus named {source!r} and no file at {source!r} (working directory "
            f"{os.getcwd()}); named corpora are {', '.join(CORPORA)}. For your own text use "
            "load_corpus(text=...) or lmlab.TokenDataset(text)"
        )
    if not loaded:
        raise CorpusError(f"the corpus {source!r} is empty")
    return loaded


def _read_file(path: Path) -> str:
    if not path.is_file():
        raise CorpusError(f"no file at {str(path)!r} (working directory {os.getcwd()})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text ({e}); convert it to UTF-8") from e
    if not text:
        raise CorpusError(f"the file {path} is empty")
    return text


class TokenDataset:
    """A text encoded once, split into train (first part) and validation (last part).

    `batch(split, batch_size)` returns inputs x and targets y, both int64 [B, block_size]
    on `device`, y shifted one token left of x. Random offsets come from the generator
    passed in, else from torch's global RNG. A dataset holds no random state: a
    `Trainer` draws its batches from a generator seeded by `TrainConfig.seed`.
    """

    def __init__(self, text: str, tokenizer=None, block_size: int = 64,
                 val_fraction: float = 0.1, device="cpu", **unknown):
        from .tokenizers import CharTokenizer

        if "seed" in unknown:
            raise ConfigError(
                "TokenDataset takes no seed: the Trainer draws training batches from a "
                "generator seeded by TrainConfig(seed=...); for batches of your own, pass "
                "dataset.batch(..., generator=torch.Generator().manual_seed(n))")
        check_names(unknown, ("tokenizer", "block_size", "val_fraction", "device"), "TokenDataset")
        if not text:
            raise DataError("the text is empty; load a corpus first (lmlab.load_corpus)")
        if not 0 <= val_fraction < 1:
            raise DataError(f"val_fraction={val_fraction} must be in [0, 1), e.g. 0.1")
        if not isinstance(block_size, int) or block_size <= 0:
            raise DataError(f"block_size={block_size!r} must be a positive integer")
        self.tokenizer = tokenizer if tokenizer is not None else CharTokenizer.fit(text)
        self.block_size = block_size
        self.device = torch.device(device)
        ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        n_val = int(len(ids) * val_fraction)
        self.train_ids, self.val_ids = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
        need = block_size + 1
        for split, part in (("train", self.train_ids), ("val", self.val_ids)):
            if (split == "train" or val_fraction > 0) and len(part) < need:
                raise DataError(
                    f"the {split} split has {len(part)} tokens but one block needs "
                    f"block_size + 1 = {need} (the text has {len(ids)} tokens, "
                    f"val_fraction={val_fraction}); use a longer text, a smaller "
                    "block_size, or a smaller val_fraction"
                )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def with_block_size(self, block_size: int) -> TokenDataset:
        """The same tokens and split, cut into blocks of another length."""
        if not isinstance(block_size, int) or block_size <= 0:
            raise DataError(f"block_size={block_size!r} must be a positive integer")
        for split, part in (("train", self.train_ids), ("val", self.val_ids)):
            if len(part) and len(part) < block_size + 1:
                raise DataError(f"the {split} split has {len(part)} tokens, fewer than one block of "
                                f"{block_size} + 1; pick a shorter context")
        other = copy.copy(self)
        other.block_size = block_size
        return other

    def __len__(self) -> int:
        return len(self.train_ids) + len(self.val_ids)

    def split(self, name: str) -> torch.Tensor:
        if name == "train":
            return self.train_ids
        if name == "val":
            if not len(self.val_ids):
                raise DataError("this dataset has no validation split; build it with val_fraction > 0")
            return self.val_ids
        raise DataError(f"split={name!r}; choose 'train' or 'val'")

    def batch(self, split: str = "train", batch_size: int = 12, generator=None, device=None):
        """(x, y): int64 [batch_size, block_size] each, on `device` (default self.device),
        offsets drawn from `generator` (default: torch's global RNG)."""
        data = self.split(split)
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise DataError(f"batch_size={batch_size!r} must be a positive integer")
        T = self.block_size
        starts = torch.randint(len(data) - T, (batch_size,), generator=generator)
        offsets = starts[:, None] + torch.arange(T + 1)
        chunk = data[offsets]
        x, y = chunk[:, :-1], chunk[:, 1:]
        device = torch.device(device) if device is not None else self.device
        if device.type == "cuda":
            return (x.pin_memory().to(device, non_blocking=True),
                    y.pin_memory().to(device, non_blocking=True))
        return x.to(device), y.to(device)
