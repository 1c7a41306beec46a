"""Pretraining, then fine-tuning: a model trained on one text goes on training on
another (`finetune`), compared with the same model trained on the second text from
fresh weights (`from_scratch`).

    pre = lmlab.Trainer(GPT(config), lmlab.TokenDataset(shakespeare), max_steps=2000)
    pre.run(); pre.save("shakespeare.safetensors")
    tuned = finetune("shakespeare.safetensors", names, max_steps=300)
    scratch = from_scratch(tuned)          # same shape, data and settings; fresh weights
    tuned.run(); scratch.run()

Fine-tuning is a new run: a fresh optimizer and learning-rate schedule, step 0, its own
history; only the weights (and the tokenizer) come from the pretrained model.
"""

from __future__ import annotations

import torch

from . import checkpoint
from .data import TokenDataset
from .errors import CheckpointError, ConfigError, TokenizerError
from .model import GPT
from .tokenizers import CharTokenizer
from .train import TrainConfig, Trainer

NEW_TOKENS = ("add", "error")


def finetune(pretrained, data, config: TrainConfig | None = None, *, freeze=None,
             new_tokens: str = "add", block_size: int | None = None, **overrides) -> Trainer:
    """A `Trainer` that trains a copy of a pretrained model on new data.

    pretrained: a checkpoint file (`trainer.save(path)` or `lmlab.checkpoint.save`), or a
        `Trainer` (its model is copied, its tokenizer reused; it is left untouched).
    data: the new text (a string), tokenized with the pretrained model's tokenizer; or a
        `TokenDataset` made with that very tokenizer.
    new_tokens: characters of the new text that a character vocabulary lacks are "add"ed
        to it (the embedding grows by a row each, started at the mean of the old rows;
        the ids of the old characters stay) or are an "error". Byte-level BPE and GPT-2
        tokenizers encode any text: nothing is added.
    freeze: parameters that do not train: an int n, the token and position embeddings
        and blocks 0..n-1 (the output layer shares the token embedding's weights, so it
        stays too); or a list of parameter-name prefixes, e.g. ["transformer.h.0"].
    block_size: the context of the new dataset (default: the pretrained model's).
    config, overrides: the fine-tuning run's `TrainConfig` (default `TrainConfig()`),
        keyword fields applied on top, e.g. `max_steps=300, learning_rate=3e-4`.
    """
    model, tokenizer = _pretrained(pretrained)
    if new_tokens not in NEW_TOKENS:
        raise ConfigError(f"new_tokens={new_tokens!r}; choose one of {list(NEW_TOKENS)}")
    if isinstance(data, TokenDataset):
        if tokenizer is not None and data.tokenizer.to_dict() != tokenizer.to_dict():
            raise CheckpointError(
                "the dataset's tokenizer is not the pretrained model's, so its token ids would "
                "stand for other text; pass the text itself to tokenize it with the pretrained "
                "model's tokenizer")
        dataset = data
    elif isinstance(data, str):
        if tokenizer is None:
            raise CheckpointError("the pretrained model comes without a tokenizer; pass a "
                                  "TokenDataset made with the tokenizer it was trained with")
        tokenizer = _vocabulary_for(tokenizer, data, new_tokens)
        dataset = TokenDataset(data, tokenizer, block_size=block_size or model.config.block_size)
    else:
        raise ConfigError(f"data must be the new text (a string) or a TokenDataset, not "
                          f"{type(data).__name__}")
    grown = dataset.vocab_size - model.config.vocab_size
    if grown > 0:
        model = grow_vocabulary(model, dataset.vocab_size)
    if freeze is not None:
        frozen = freeze_parameters(model, freeze)
        if grown > 0 and "transformer.wte.weight" in frozen:
            raise ConfigError(
                f"freeze={freeze!r} freezes the token embeddings, but the vocabulary grew by {grown} "
                "character(s) whose embeddings would then never train (they would stay one and "
                "the same row, and the tied output layer could never predict them). Freeze "
                "blocks only, e.g. freeze=['transformer.wpe', 'transformer.h.0'], or pass "
                "new_tokens='error' to see which characters are new")
    return Trainer(model, dataset, config, **overrides)


def from_scratch(trainer: Trainer, seed: int | None = None) -> Trainer:
    """A `Trainer` like `trainer` (model shape, data, settings) from fresh weights drawn by
    `seed` (default: the trainer's config seed): fine-tuning's control run."""
    seed = trainer.config.seed if seed is None else seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(trainer.model.config)
    return Trainer(model, trainer.dataset, trainer.config)


def _pretrained(source) -> tuple[GPT, object | None]:
    """A copy of the pretrained model and its tokenizer (the source is left untouched)."""
    if isinstance(source, Trainer):
        with source.lock:  # a whole step's weights, even while it trains
            return _copy(source.model), source.dataset.tokenizer
    if isinstance(source, checkpoint.Checkpoint):
        return _copy(source.model), source.tokenizer
    if isinstance(source, GPT):
        raise ConfigError("pass the pretrained trainer, or a checkpoint file (trainer.save(path)), "
                          "so that its tokenizer comes with it")
    ck = checkpoint.load(source)
    return ck.model, ck.tokenizer


def _copy(model: GPT) -> GPT:
    """The same weights in a new model on the CPU, every parameter trainable."""
    with torch.device("meta"):  # nothing drawn from the RNG: every weight is overwritten
        copy = GPT(model.config)
    copy.load_state_dict({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                         assign=True)
    copy.lm_head.weight = copy.transformer.wte.weight  # assign=True replaced the tied Parameter
    return copy.requires_grad_(True)


def _vocabulary_for(tokenizer, text: str, new_tokens: str):
    """`tokenizer`, or a character tokenizer grown by the characters of `text` it lacks."""
    if not isinstance(tokenizer, CharTokenizer):
        return tokenizer  # byte-level: encodes every text
    missing = sorted(set(text) - set(tokenizer.chars))
    if not missing:
        return tokenizer
    shown = "".join(missing[:40]) + (" …" if len(missing) > 40 else "")
    if new_tokens == "error":
        raise TokenizerError(
            f"the new text uses {len(missing)} character(s) the pretrained vocabulary lacks: "
            f"{shown!r}; pass new_tokens='add' to add them (their embeddings start at the mean "
            "of the others), or remove them from the text")
    return CharTokenizer(tokenizer.chars + missing, unknown=tokenizer.unknown)


def grow_vocabulary(model: GPT, vocab_size: int) -> GPT:
    """A copy of `model` with `vocab_size` token embeddings [vocab_size, C]: the old rows
    kept, each new row the mean of the old ones (so a new token starts as an "average"
    token, not as noise the model was never trained to ignore)."""
    old = model.config.vocab_size
    if vocab_size < old:
        raise ConfigError(f"vocab_size={vocab_size} is below the model's {old}; a vocabulary "
                          "only grows")
    grown = GPT(model.config.replace(vocab_size=vocab_size)).to(model.device)
    state = model.state_dict()
    weight = state["transformer.wte.weight"]
    state["transformer.wte.weight"] = torch.cat(
        [weight, weight.mean(0, keepdim=True).expand(vocab_size - old, -1)])
    state["lm_head.weight"] = state["transformer.wte.weight"]
    grown.load_state_dict(state)
    return grown


def freeze_parameters(model: GPT, freeze) -> list[str]:
    """Turn off gradients (`requires_grad`) for what `freeze` names (see `finetune`);
    returns the names of the parameters frozen, in `named_parameters` order."""
    names = [name for name, _ in model.named_parameters()]
    if isinstance(freeze, bool) or not isinstance(freeze, (int, list, tuple)):
        raise ConfigError(f"freeze={freeze!r}: give a number of blocks (with the embeddings) or a "
                          "list of parameter-name prefixes")
    if isinstance(freeze, int):
        n = model.config.n_layer
        if not 0 <= freeze <= n:
            raise ConfigError(f"freeze={freeze}: the model has {n} blocks; freeze 0 to {n} of them")
        prefixes = ["transformer.wte.", "transformer.wpe."] + [f"transformer.h.{i}." for i in range(freeze)]
    else:
        prefixes = list(freeze)
        for prefix in prefixes:
            if not isinstance(prefix, str) or not any(_under(name, prefix) for name in names):
                groups = sorted({".".join(name.split(".")[:3 if ".h." in name else 2]) for name in names})
                raise ConfigError(f"freeze: {prefix!r} names no parameter; the model's parts are "
                                  f"{', '.join(groups)}")
    frozen = []
    for name, param in model.named_parameters():
        if any(_under(name, prefix) for prefix in prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    if len(frozen) == len(names):
        raise ConfigError("freeze leaves no parameter to train; freeze fewer blocks")
    return frozen


def _under(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(prefix.rstrip(".") + ".")
