"""Checkpoints: one safetensors file holding the weights (and any extra tensors),
with the config, tokenizer and metadata as JSON in its header. Never pickle.

Written through `files.atomic_write`: a crash or a kill never leaves half a file, and
no temporary file stays behind for long.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, ConfigError, TokenizerError
from .files import atomic_write
from .model import GPT, GPTConfig
from .tokenizers import from_dict as tokenizer_from_dict

FORMAT = "lmlab-checkpoint"
FORMAT_VERSION = 1
_WEIGHTS = "model."
_TIED = "lm_head.weight"


@dataclass
class Checkpoint:
    model: GPT
    tokenizer: object | None
    extra: dict = field(default_factory=dict)  # JSON metadata given to save()
    tensors: dict = field(default_factory=dict)  # extra tensors given to save()


def save(path, model: GPT, tokenizer=None, *, tensors: dict | None = None, **extra) -> Path:
    """Write model weights, config, tokenizer and `extra` (JSON-able) to `path`.

    `tensors` adds named tensors (optimizer state, RNG states) beside the weights.
    """
    path = Path(path)
    state = {
        _WEIGHTS + k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if k != _TIED
    }
    for k, v in (tensors or {}).items():
        state["extra." + k] = v.detach().to("cpu").contiguous()
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        "extra": extra,
    }
    try:
        meta = json.dumps(header, ensure_ascii=False)
    except TypeError as e:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {e}") from e
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={"lmlab": meta})
    return path


def read_header(path) -> dict:
    """The JSON header of a checkpoint, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000 or n + 8 > path.stat().st_size:
                raise ValueError("header size out of range")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        header = json.loads(meta["lmlab"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is not an lmlab checkpoint, or it is truncated or corrupted ({e})"
        ) from e
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lmlab checkpoint (format {header.get('format')!r})")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is checkpoint format version {header.get('version')}; this lmlab reads "
            f"version {FORMAT_VERSION}. Load it with the lmlab release that wrote it"
        )
    return header


def load(path, device="cpu") -> Checkpoint:
    """Read a checkpoint written by `save`; the model is returned in eval mode."""
    header = read_header(path)
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupted ({e})") from e
    try:
        config = GPTConfig(**header["config"])
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{path} holds an invalid model config ({e})") from e
    weights = {k[len(_WEIGHTS):]: v for k, v in state.items() if k.startswith(_WEIGHTS)}
    weights[_TIED] = weights.get("transformer.wte.weight")
    model = GPT(config).to(device)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: weights do not match the config they came with ({e})") from e
    model.eval()
    tokenizer = None
    if header.get("tokenizer") is not None:
        try:
            tokenizer = tokenizer_from_dict(header["tokenizer"])
        except (TokenizerError, KeyError) as e:
            raise CheckpointError(f"{path}: its tokenizer could not be rebuilt ({e})") from e
    tensors = {k[len("extra."):]: v for k, v in state.items() if k.startswith("extra.")}
    return Checkpoint(model, tokenizer, header.get("extra", {}), tensors)
