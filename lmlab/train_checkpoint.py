"""A trainer's checkpoints: `write` puts the model, tokenizer, optimiser state, every
micro-batch stream and the history in one file (`lmlab.checkpoint`); `restore` loads one
into a trainer; `from_checkpoint` builds a trainer from one. `Trainer.save`, `restore`
and `load` call these."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from . import checkpoint
from .errors import CheckpointError
from .history import History
from .optim import make_optimizer
from .rollback import Rollback
from .timeline import Timeline
from .train_config import TrainConfig


def write(trainer, path, streams: dict, timeline: bool = False) -> Path:
    """Rank 0's part of `Trainer.save`: the file, with every rank's `streams` (and the
    snapshots of `trainer.timeline` with `timeline`)."""
    opt = trainer.optimizer.state_dict()
    tensors, opt_values = {}, {}
    for pid, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                opt_values[f"{pid}.{key}"] = value
    for slot, (batches, rng) in streams.items():  # dropout's own state: lmlab.rng
        tail = f".{slot}" if slot else ""  # slot 0 as one process always saved it
        tensors["rng.torch" + tail] = rng["cpu"]
        tensors["rng.batches" + tail] = batches
        if rng["cuda"] is not None:
            tensors["rng.cuda" + tail] = rng["cuda"]
    kept = None
    if timeline:
        if trainer.timeline is None:
            raise CheckpointError("save(path, timeline=True) but this trainer keeps no timeline; "
                                  "make one first: lmlab.Timeline(trainer)")
        snapshots, kept = trainer.timeline.to_checkpoint()
        tensors.update(snapshots)
    return checkpoint.save(
        path, trainer.model, trainer.dataset.tokenizer, tensors=tensors,
        trainer={
            "config": trainer.config.to_dict(),
            "step": trainer.step_count,
            "world_size": trainer.world_size,
            "tokens_seen": trainer.tokens_seen,
            "wall_time": trainer.wall_time,
            "param_groups": opt["param_groups"],
            "optimizer_values": opt_values,
            "history": trainer.history.to_json(),
            "frozen": trainer.frozen,
            **({"timeline": kept} if kept is not None else {}),
        },
    )


def restore(trainer, ck: checkpoint.Checkpoint, path) -> dict:
    """Load `ck` (read from `path`, which names it in errors) into `trainer`; returns the
    settings that changed (for the trainer's "config" event). Refused while a run is
    active, and for a checkpoint of another shape, tokenizer or number of micro-batches."""
    trainer._run.reset()  # refused while a run is active
    if ck.model.config != trainer.model.config:
        raise CheckpointError(
            f"{path} holds a model of shape {ck.model.config.to_dict()}, but this trainer's "
            f"model is {trainer.model.config.to_dict()}; use Trainer.load(path, dataset) to "
            "rebuild the model from the checkpoint"
        )
    meta = ck.extra.get("trainer")
    if meta is None:
        raise CheckpointError(f"{path} holds a model but no trainer state; save it with "
                              "trainer.save(path)")
    if ck.tokenizer is not None and trainer.dataset.tokenizer.to_dict() != ck.tokenizer.to_dict():
        raise CheckpointError(
            f"the dataset's tokenizer is not the one {path} was trained with: even with the "
            "same vocabulary size its token ids would stand for other text. Pass the text "
            "instead, Trainer.load(path, text), to tokenize it with the checkpoint's tokenizer")
    config = replace(TrainConfig.from_dict(meta["config"]), device=trainer.config.device)
    slots = config.grad_accum_steps * meta.get("world_size", 1)  # micro-batches a step
    if slots % trainer.world_size:
        raise CheckpointError(
            f"{path} was trained with {slots} micro-batches of {config.batch_size} a step, "
            f"which {trainer.world_size} processes cannot share evenly; resume it on a number "
            f"of processes that divides {slots}")
    config = replace(config, grad_accum_steps=slots // trainer.world_size)
    trainer._check_fit(trainer.model, trainer.dataset, config)
    with trainer.lock:
        if ck.model is not trainer.model:
            trainer.model.load_state_dict(ck.model.state_dict())
        changed = trainer._replace_config(config)
        state: dict = {}
        for name, value in ck.tensors.items():
            if name.startswith("optim."):
                _, pid, key = name.split(".", 2)
                state.setdefault(int(pid), {})[key] = value
        for name, value in meta["optimizer_values"].items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = value
        frozen = set(meta.get("frozen", ()))  # parameters fine-tuning left as they were
        for name, param in trainer.model.named_parameters():
            param.requires_grad_(name not in frozen)
        trainer.optimizer = make_optimizer(trainer.model, trainer.config, trainer.device)
        trainer.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        # RNG states are CPU byte tensors, whatever device the checkpoint was loaded onto
        tail = {slot: f".{slot}" if slot else "" for slot in range(slots)}
        trainer._set_streams({slot: (ck.tensors["rng.batches" + t], {
            "cpu": ck.tensors["rng.torch" + t], "cuda": ck.tensors.get("rng.cuda" + t)})
            for slot, t in tail.items()})
        trainer.step_count = meta["step"]
        trainer.tokens_seen = meta["tokens_seen"]
        trainer.wall_time = meta["wall_time"]
        trainer.history = History(meta["history"])
        trainer._ddp = None  # DDP hooks the parameters that are trainable when it is built
        trainer._wire()
        trainer._target = trainer.config.max_steps
        trainer.last_eval = None
        trainer.samples.clear()
        trainer._rollback = Rollback()
    return changed


def restore_timeline(trainer, ck: checkpoint.Checkpoint) -> None:
    """The timeline saved in `ck` (`save(path, timeline=True)`), onto `trainer`."""
    settings = ck.extra["trainer"].get("timeline")
    if settings is not None:
        Timeline.from_checkpoint(trainer, ck.tensors, settings)


def from_checkpoint(cls, ck: checkpoint.Checkpoint, path, data, device=None):
    """A `cls` (a Trainer) rebuilt from `ck`, read from `path`, training on `data` (text,
    tokenized with the checkpoint's tokenizer, or a TokenDataset)."""
    from .data import TokenDataset

    meta = ck.extra.get("trainer")
    if meta is None:
        raise CheckpointError(f"{path} holds no trainer state; save it with trainer.save(path)")
    if isinstance(data, str):
        if ck.tokenizer is None:
            raise CheckpointError(f"{path} stores no tokenizer; pass a TokenDataset instead "
                                  "of text")
        data = TokenDataset(data, ck.tokenizer, block_size=ck.model.config.block_size)
    config = TrainConfig.from_dict(meta["config"])
    if device is not None:
        config = replace(config, device=str(device))
    trainer = cls(ck.model, data, config)
    trainer._restore(ck, path)
    return trainer
