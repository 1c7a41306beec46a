"""What reading any causal LM takes: lmlab's `GPT` or a Hugging Face causal LM (e.g.
`transformers.GPT2LMHeadModel`). Its context length, its device, token ids checked
against its vocabulary, and display strings of ids, in one place for the views'
engines (`lmlab.interpret`, `lmlab.sampling`)."""

from __future__ import annotations

from typing import Callable

import torch

from .errors import ConfigError, TokenizerError
from .model import GPT
from .tokenizers import visible


def context_length(model) -> int | None:
    """The longest sequence `model` reads, in tokens (None when its config does not say)."""
    if isinstance(model, GPT):
        return model.config.block_size
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or not hasattr(config, "vocab_size"):
        raise ConfigError(f"cannot read a {type(model).__name__}: give lmlab's GPT or a Hugging "
                          "Face causal LM (e.g. transformers.GPT2LMHeadModel)")
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def token_ids(model, text_or_ids, tokenizer=None, limit: int | None = None) -> list[int]:
    """Token ids of a text (encoded with `tokenizer`) or a list of ids: at least one, each
    in the model's vocabulary, at most `limit` of them (never cropped)."""
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise ConfigError("text needs a tokenizer to encode it: pass tokenizer=..., "
                              "or give a list of token ids")
        ids = tokenizer.encode(text_or_ids)  # its own error names unknown characters
        what = f"the text is {len(ids)} tokens long"
    else:
        ids = [int(i) for i in text_or_ids]
        what = f"{len(ids)} tokens were given"
    if not ids:
        raise ConfigError("the text is empty (0 tokens); give at least one token to read")
    if limit is not None and len(ids) > limit:
        raise ConfigError(f"{what}, but this model reads at most {limit} tokens at once "
                          f"(its context); shorten the text to {limit} tokens or fewer")
    vocab = model.config.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise TokenizerError(f"token ids {bad[:5]} are outside the model's vocabulary "
                             f"(0..{vocab - 1}); was the text encoded with the model's tokenizer?")
    return ids


def one_token(model, token, tokenizer=None, what: str = "token") -> int:
    """The id of `token`, an id or a text that is exactly one token (with `tokenizer`);
    `what` names the argument in the error."""
    if isinstance(token, str):
        if tokenizer is None:
            raise ConfigError(f"{what}={token!r} is text: pass the tokenizer, or the token's id")
        ids = tokenizer.encode(token)
        if len(ids) != 1:
            raise ConfigError(f"{what}={token!r} is {len(ids)} tokens, not one; pass a single token or its id")
        return ids[0]
    vocab = model.config.vocab_size
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab:
        raise ConfigError(f"{what}={token!r} must be a token id from 0 to {vocab - 1}, or a one-token text")
    return token


def display(tokenizer) -> Callable[[int], str]:
    """id -> display string: the tokenizer's own `token_text`, else its decoding with
    whitespace made visible (e.g. a transformers tokenizer), else the id itself."""
    if tokenizer is None:
        return str
    if hasattr(tokenizer, "token_text"):
        return tokenizer.token_text
    return lambda i: visible(tokenizer.decode([i]))
