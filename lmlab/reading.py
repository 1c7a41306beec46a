"""The one read path into a model that may be training.

Sampling, next-token distributions, attention and embeddings all read a model
through `reading(model)`: the model's lock (the trainer holds the same lock for the
whole of each step, so a reader never sees half-updated weights), eval mode (no
dropout), no autograd, and a random generator of its own, so reading never draws
from the global RNG that drives dropout. The training mode is restored after (a model
already in eval mode, `model.training` False, is read as it is).

Each model also has a weights version, `weights_version(model)`: a counter that every
change of its weights through lmlab advances (a training step, `load_state_dict`, a reset,
a restore or rollback), so what was read from one version can be kept until the next. A
change made by hand (an optimiser of your own, an edit of a parameter) is announced with
`weights_changed(model)`.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import weakref

import torch

_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_versions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """The lock shared by everything that trains or reads `model` (created on first use,
    forgotten with the model)."""
    with _guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def reading(model: torch.nn.Module, seed: int | None = None):
    """Read `model` between training steps: yields a CPU `torch.Generator` seeded with
    `seed` (or fresh entropy when None) for any sampling done inside.

        with reading(model, seed=0) as gen:
            ids = generate(model, prompt_ids, 20, generator=gen)
    """
    generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)
    with model_lock(model):
        was_training = model.training
        if was_training:  # eval() walks every module: a model in eval mode is read as it is
            model.eval()
        try:
            with torch.no_grad():
                yield generator
        finally:
            if was_training:
                model.train()


def weights_version(model: torch.nn.Module) -> int:
    """The version of `model`'s weights: 0 until its first change, then counting changes.
    A Hugging Face model gets a `load_state_dict` hook on first use, as lmlab's GPT has."""
    with _guard:
        version = _versions.get(model)
        if version is None:
            version = _versions[model] = 0
            if not hasattr(model, "hook_dict"):  # lmlab's GPT registers its own hook
                model.register_load_state_dict_post_hook(_loaded)
        return version


def weights_changed(model: torch.nn.Module) -> None:
    """Advance `model`'s weights version: whatever was read from its weights is stale."""
    with _guard:
        _versions[model] = _versions.get(model, 0) + 1


def _loaded(module, incompatible_keys) -> None:
    weights_changed(module)
