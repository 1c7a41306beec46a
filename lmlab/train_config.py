"""`TrainConfig`: every setting of a training run, checked when it is made, and the
learning-rate schedule it implies (`lr_at`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError
from .settings import Checked

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
DTYPES = ("float32", "bfloat16")
HINTS = {"grad_accum_steps": ": the micro-batches summed into one optimizer step (1: none); "
                             "the global batch is batch_size x grad_accum_steps x processes"}


@dataclass(frozen=True)
class TrainConfig(Checked):
    batch_size: int = 12  # sequences a micro-batch, in each process
    grad_accum_steps: int = 1  # micro-batches an optimizer step, in each process
    max_steps: int = 2000
    learning_rate: float = 1e-3
    min_lr: float | None = None  # where the cosine schedule ends; None: learning_rate / 10
    warmup_steps: int = 100
    schedule: str = "cosine"
    lr_decay_steps: int | None = None  # cosine reaches min_lr here; None: max_steps
    weight_decay: float = 0.1  # on matrices and embeddings only
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    optimizer: str = "adamw"
    momentum: float = 0.9  # for sgd
    eval_interval: int = 250  # steps between evaluations
    eval_batches: int = 20
    seed: int = 1337
    device: str = "auto"
    dtype: str = "float32"  # "bfloat16": autocast on CUDA
    compile: bool = False

    def __post_init__(self):
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                hint = HINTS.get(name, "")
                raise ConfigError(f"{name}={v!r} must be a positive integer{hint}")

        for name in ("batch_size", "grad_accum_steps", "max_steps", "eval_interval",
                     "eval_batches"):
            positive_int(name)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if self.lr_decay_steps is not None:
            positive_int("lr_decay_steps")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10:
            raise ConfigError(f"learning_rate={lr!r} must be in (0, 10]; 1e-3 suits small models "
                              "with AdamW")
        for name in ("min_lr", "weight_decay", "grad_clip", "momentum"):
            v = getattr(self, name)
            if v is None and name == "min_lr":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name}={v!r} must be a finite number >= 0")
        if self.min_lr is not None and self.min_lr > self.learning_rate:
            raise ConfigError(f"min_lr={self.min_lr} is above learning_rate={self.learning_rate}; "
                              "min_lr is where the cosine schedule ends (e.g. learning_rate / 10)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas={self.betas!r} must be two numbers in [0, 1), e.g. (0.9, 0.99)")
        for name, allowed in (("schedule", SCHEDULES), ("optimizer", OPTIMIZERS),
                              ("dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}; choose one of {list(allowed)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def tokens_per_step(self, block_size: int, processes: int = 1) -> int:
        """Training tokens in one optimizer step: batch_size x grad_accum_steps x
        block_size, in each of `processes`."""
        return self.batch_size * self.grad_accum_steps * block_size * processes

    @property
    def final_lr(self) -> float:
        """Where the cosine schedule ends: min_lr, or a tenth of learning_rate."""
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    def lr_at(self, step: int) -> float:
        """Learning rate for the step numbered `step` (0-based): linear warmup, then
        cosine to min_lr at lr_decay_steps (nanoGPT's schedule), or constant."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return self.learning_rate
        decay = self.lr_decay_steps or self.max_steps
        if step >= decay:
            return self.final_lr
        ratio = (step - self.warmup_steps) / max(1, decay - self.warmup_steps)
        low = self.final_lr
        return low + 0.5 * (1 + math.cos(math.pi * ratio)) * (self.learning_rate - low)
