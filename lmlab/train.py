"""Training: `TrainConfig`, and `Trainer`, which runs steps blocking (`run`) or in the
background (`start`, `pause`, `resume`, `stop`, `join` / `await wait()`), watched
through `History`, events and periodic samples.

Which thread or event loop drives the steps, and the one state machine that decides
what may run, are in `runcontrol.py`. The trainer holds the model's lock
(`reading.model_lock`) for the whole of each step, so `sample()`, next-token
distributions or attention read through `reading()` never see torn weights.
Observers (`on`) cannot break training: an exception in one is kept in
`trainer.warnings` and training goes on.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from . import checkpoint, distributed
from .errors import CheckpointError, ConfigError, DataError, TrainerStateError, TrainingError
from .history import History
from .model import GPT, GPTConfig, autocast, maybe_compile, resolve_device
from .reading import model_lock, reading, weights_changed
from .rng import TrainerRNG
from .runcontrol import RunControl, remember_main_loop
from .sampling import generate
from .settings import Checked

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
DTYPES = ("float32", "bfloat16")
EVENTS = ("step", "eval", "sample", "end", "error", "reset")
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
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "momentum"):
            v = getattr(self, name)
            if v is None and name == "min_lr":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name}={v!r} must be a finite number >= 0")
        if self.learning_rate <= 0 or self.learning_rate > 10:
            raise ConfigError(
                f"learning_rate={self.learning_rate!r} must be in (0, 10]; "
                "1e-3 suits small models with AdamW"
            )
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


def _derived_seed(seed: int, stream: int) -> int:
    """A seed for the `stream`-th generator of a run, its sequence unrelated to `seed`'s."""
    return (seed * 6364136223846793005 + stream * 1442695040888963407) % 2**63


def stream_seeds(seed: int, slot: int) -> tuple[int, int]:
    """(batch offsets seed, dropout seed) of micro-batch `slot` of a run.

    An optimizer step sums the gradients of `grad_accum_steps x processes` micro-batches;
    slot k = rank x grad_accum_steps + micro-step draws its batches and its dropout
    from streams of its own. So what a step draws depends on the number of slots, not
    on how they are spread over processes: rank 1 of a 2-process run draws what
    micro-step 1 of a 1-process run with grad_accum_steps=2 draws. Slot 0 is the stream
    a plain one-process run has always drawn (evaluation uses streams 2 + step)."""
    if slot == 0:
        return _derived_seed(seed, 1), seed
    return _derived_seed(seed, -2 * slot), _derived_seed(seed, -2 * slot - 1)


def optimizer_groups(model: GPT, config: TrainConfig) -> list[dict]:
    """Weight decay on matrices and embeddings, none on biases and norms (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def fused_adam_available(device: torch.device) -> bool:
    """Whether the installed torch has fused Adam/AdamW kernels for `device` (CUDA; the
    CPU since torch 2.4)."""
    probe = torch.zeros(1, device=device, requires_grad=True)
    try:
        torch.optim.AdamW([probe], fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def make_optimizer(model: GPT, config: TrainConfig, device: torch.device, fused: bool | None = None):
    """The optimizer `config` names, over `optimizer_groups`. Adam and AdamW use torch's
    fused kernels where the installed torch has them for `device` (`fused=None`): one
    kernel a tensor instead of a loop of elementwise ops; the same update."""
    groups = optimizer_groups(model, config)
    lr = config.lr_at(0)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    if fused is None:
        fused = fused_adam_available(device)
    return cls(groups, lr=lr, betas=tuple(config.betas), **({"fused": True} if fused else {}))


class Subscription:
    """What `Trainer.on` returns: `remove()` unsubscribes (idempotent)."""

    def __init__(self, trainer: Trainer, event: str, fn):
        self.trainer, self.event, self.fn = trainer, event, fn

    @property
    def active(self) -> bool:
        return self.fn in self.trainer._callbacks[self.event]

    def remove(self) -> None:
        self.trainer.off(self.event, self.fn)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"<Subscription {self.event} -> {name}{'' if self.active else ' (removed)'}>"


@dataclass(frozen=True)
class SampleSettings:
    """Periodic samples during training: every `every` steps (0: never), `tokens` tokens
    after `prompt` at `temperature`, seeded by the step so they repeat."""

    prompt: str
    every: int = 250
    tokens: int = 80
    temperature: float = 0.8


@dataclass(frozen=True)
class Snapshot:
    """Weights, optimiser and RNG state at an evaluation, kept in memory for rollback."""

    step: int
    loss: float  # validation loss, or training loss when there is no validation split
    tokens_seen: int
    wall_time: float
    evaluation: dict
    model: dict
    optimizer: dict
    streams: dict  # Trainer._stream_states(): this rank's batch and dropout streams
    learning_rate: float = 0.0  # the settings in effect then
    min_lr: float | None = None


HEALTHY_MARGIN = 1.1  # an evaluation within 10% of the best so far is healthy


class Trainer:
    """Trains `model` on `dataset` (a `TokenDataset`) with `config` (a `TrainConfig`;
    keyword overrides are applied on top).

    Built in a process of a torchrun launch (a process group initialised, see
    `lmlab.distributed`), it trains one model with DistributedDataParallel: each rank
    draws its own micro-batches (`stream_seeds`), gradients and losses are averaged over
    ranks, and rank 0 alone writes checkpoints and shows progress. Every rank must then
    make the same calls (`run`, `save`, `update_config`...): they communicate."""

    def __init__(self, model: GPT, dataset, config: TrainConfig | None = None, **overrides):
        config = replace(config or TrainConfig(), **overrides)
        self.config = config
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.device = resolve_device(config.device) if self.world_size == 1 \
            else distributed.rank_device(config.device)
        self.model = model.to(self.device)
        self.dataset = dataset  # left as given: batches are moved to the trainer's device
        self._check_fit(model, dataset, config)
        self._callbacks = {e: [] for e in EVENTS}
        self._run = RunControl(self._run_step, self._target_reached, self._run_ended,
                               lock_owned=lambda: self.lock._is_owned())
        remember_main_loop()  # built in a notebook cell: Start from a click trains here
        self._target = config.max_steps
        self._after_step = None
        self._pinned_decay = False  # lr_decay_steps was pinned when max_steps was raised
        self._ddp = None  # the model in DistributedDataParallel, under a process group
        self._fresh_state(config.seed)
        default_prompt = dataset.tokenizer.decode(dataset.train_ids[:1].tolist())
        self.sampling = SampleSettings(prompt=default_prompt, every=0)

    def _fresh_state(self, seed: int) -> None:
        self._set_streams({})
        self.optimizer = make_optimizer(self.model, self.config, self.device)
        self._wire()
        self.history = History()
        self.step_count = 0
        self.tokens_seen = 0
        self.wall_time = 0.0  # seconds spent in steps and evaluations
        self.last_eval: dict | None = None
        self.samples: collections.deque = collections.deque(maxlen=50)  # newest last
        self.warnings: collections.deque = collections.deque(maxlen=20)  # observers' errors
        self._snapshot: Snapshot | None = None
        self._best_loss: float | None = None

    def _set_streams(self, states: dict) -> None:
        """This rank's micro-batch streams, one a micro-step: a generator of batch offsets
        (not a replay of the one that drew the weights) and dropout's RNG, swapped in for
        the forward. Each continues from `states[slot]` (see `_stream_states`) where given,
        else starts from its seeds (`stream_seeds`). `generator` and `rng` are the first."""
        streams = []
        A = self.config.grad_accum_steps
        for slot in range(self.rank * A, (self.rank + 1) * A):
            batch_seed, dropout_seed = stream_seeds(self.config.seed, slot)
            generator, rng = torch.Generator().manual_seed(batch_seed), TrainerRNG(dropout_seed, self.device)
            if slot in states:
                generator.set_state(states[slot][0].cpu())
                rng.set_state(**states[slot][1])
            streams.append((generator, rng))
        self.generator, self.rng = streams[0]
        # None: one process, one batch a step, the notebook's path (`_forward_backward`)
        self._micro = streams if len(streams) > 1 or self.world_size > 1 else None

    def _stream_states(self) -> dict:
        """{slot: (batch generator state, dropout RNG state)} of this rank's streams."""
        first = self.rank * self.config.grad_accum_steps
        streams = self._micro or [(self.generator, self.rng)]
        return {first + i: (g.get_state(), r.state()) for i, (g, r) in enumerate(streams)}

    def _all_stream_states(self) -> dict:
        """`_stream_states` of every rank (a collective under a process group)."""
        if self.world_size == 1:
            return self._stream_states()
        return {k: v for part in distributed.all_gather(self._stream_states())
                for k, v in part.items()}

    def _wire(self) -> None:
        """What steps call: the model, compiled when asked, and under a process group the
        DDP around it (built again only when that changes: building it is collective)."""
        self._forward = maybe_compile(self.model, self.config.compile)
        if self.world_size == 1:
            self._ddp = None
        elif self._ddp is None or self._ddp.module is not self._forward:
            self._ddp = distributed.wrap(self._forward, self.device)

    @staticmethod
    def _check_fit(model, dataset, config):
        if dataset.vocab_size > model.config.vocab_size:
            raise ConfigError(
                f"the dataset's tokenizer has {dataset.vocab_size} tokens but the model's "
                f"vocab_size is {model.config.vocab_size}; build the model with "
                f"GPTConfig(vocab_size={dataset.vocab_size}, ...)"
            )
        if dataset.block_size > model.config.block_size:
            raise ConfigError(
                f"the dataset's block_size={dataset.block_size} is longer than the model's "
                f"context block_size={model.config.block_size}; use the same block_size for both"
            )
        need = config.batch_size * dataset.block_size + 1
        if len(dataset.train_ids) < need:
            raise DataError(
                f"the training split has {len(dataset.train_ids)} tokens, less than one batch "
                f"(batch_size {config.batch_size} x block_size {dataset.block_size} + 1 = {need}); "
                "use more text or a smaller batch_size"
            )

    @property
    def frozen(self) -> list[str]:
        """Names of the parameters that do not train (`requires_grad` off, e.g. by
        `lmlab.finetune(..., freeze=...)`), in `named_parameters` order; kept in checkpoints."""
        return [name for name, p in self.model.named_parameters() if not p.requires_grad]

    @property
    def lock(self):
        """The model's lock: held for the whole of each step and by every read."""
        return model_lock(self.model)

    # ---- events -------------------------------------------------------------------

    def on(self, event: str, fn) -> Subscription:
        """Call `fn(trainer, payload)` on `event`: step (the History row), eval (the
        losses), sample (a dict: step, prompt, text), end (the final state), error (the
        exception that stopped training), reset (None: weights and history replaced).
        Returns a `Subscription`; `.remove()` unsubscribes. An exception raised by `fn`
        is kept in `trainer.warnings`; training goes on."""
        if event not in EVENTS:
            raise ConfigError(f"unknown event {event!r}; choose one of {list(EVENTS)}")
        self._callbacks[event].append(fn)
        return Subscription(self, event, fn)

    def on_step(self, fn):
        """Decorator form of `on("step", fn)`; returns fn."""
        self.on("step", fn)
        return fn

    def on_eval(self, fn):
        self.on("eval", fn)
        return fn

    def on_end(self, fn):
        self.on("end", fn)
        return fn

    def on_error(self, fn):
        self.on("error", fn)
        return fn

    def off(self, event: str, fn) -> None:
        """Unsubscribe `fn` from `event` (nothing happens if it was not subscribed)."""
        if fn in self._callbacks.get(event, ()):
            self._callbacks[event].remove(fn)

    def callback_count(self) -> int:
        """How many observers are subscribed, over all events."""
        return sum(len(fns) for fns in self._callbacks.values())

    def _emit(self, event: str, payload) -> None:
        for fn in list(self._callbacks[event]):
            try:
                fn(self, payload)
            except Exception as e:  # an observer never stops training
                name = getattr(fn, "__qualname__", None) or repr(fn)
                self.warnings.append(f"step {self.step_count}: the {event} observer {name} raised "
                                     f"{type(e).__name__}: {e}")

    # ---- one step -------------------------------------------------------------------

    def lr(self) -> float:
        return self.config.lr_at(self.step_count)

    def step(self) -> dict:
        """One optimisation step by hand (idle, paused or after a run); returns its
        History row. Weights change only when the loss and the gradient norm are finite."""
        if not self.is_alive:
            self._keep_starting_point()
        return self._run.manual_step()

    def _run_step(self) -> dict:
        """A step with what follows it: events, periodic sample, rollback snapshot."""
        row, evaluated = self._step()
        self._emit("step", row)
        if evaluated is not None:
            self._keep_if_healthy(evaluated)
            self._emit("eval", evaluated)
        every = self.sampling.every
        if every and self.step_count % every == 0:
            try:
                sample = self._periodic_sample()
            except Exception as e:  # a sample is a view of training, never a reason to stop it
                self.warnings.append(f"step {self.step_count}: the periodic sample failed: "
                                     f"{type(e).__name__}: {e}")
            else:
                self._emit("sample", sample)
        if self._after_step is not None:
            self._after_step()
        return row

    def _step(self) -> tuple[dict, dict | None]:
        cfg = self.config
        with self.lock:
            t0 = time.perf_counter()
            lr = self.lr()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if not self.model.training:  # .train() walks every module: 1.4% of a tiny step
                self.model.train()
            try:
                if self._micro is None:
                    loss_value, tokens = self._forward_backward()
                else:
                    loss_value, tokens = self._accumulate()
                clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()
                if not math.isfinite(grad_norm):
                    self._non_finite("gradient norm", grad_norm)
                self.optimizer.step()
            finally:  # also when the step fails: no gradient is left for the next one
                self.optimizer.zero_grad(set_to_none=True)
                weights_changed(self.model)
            self.step_count += 1
            self.tokens_seen += tokens
            dt = time.perf_counter() - t0
            self.wall_time += dt
            row = {
                "step": self.step_count, "tokens": self.tokens_seen, "train_loss": loss_value,
                "val_loss": None, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tokens / dt, "wall_time": self.wall_time,
            }
            evaluated = None
            if self.step_count % cfg.eval_interval == 0 or self.step_count == cfg.max_steps:
                evaluated = self.evaluate()
                row["val_loss"] = evaluated["val_loss"]
                row["wall_time"] = self.wall_time
            self.history.append(row)
        return row, evaluated

    def _forward_backward(self) -> tuple[float, int]:
        """One batch's forward and backward (one process, no accumulation). Returns its
        loss and its number of tokens. Weights are left alone when the loss is not finite."""
        x, y = self.dataset.batch("train", self.config.batch_size, generator=self.generator,
                                  device=self.device)
        with self.rng.active(), autocast(self.device, self.config.dtype):
            loss = self._forward(x, y).loss
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            self._non_finite("loss", loss_value)
        loss.backward()  # draws nothing: dropout's masks were kept by the forward
        return loss_value, x.numel()

    def _accumulate(self) -> tuple[float, int]:
        """Forward and backward of this rank's micro-batches, one from each of its streams,
        leaving the mean of their gradients; under DDP the last backward also averages
        them over ranks (the others run in `no_sync`). Returns the loss, the mean over
        micro-batches and ranks, and the step's tokens over all ranks."""
        cfg, n = self.config, len(self._micro)
        forward = self._ddp if self._ddp is not None else self._forward
        total = torch.zeros((), device=self.device)
        for i, (generator, rng) in enumerate(self._micro):
            x, y = self.dataset.batch("train", cfg.batch_size, generator=generator,
                                      device=self.device)
            keep_local = self._ddp is not None and i < n - 1
            with self._ddp.no_sync() if keep_local else contextlib.nullcontext():
                with rng.active(), autocast(self.device, cfg.dtype):
                    loss = forward(x, y).loss
                (loss / n).backward()
            total += loss.detach()
        if self._ddp is not None:
            distributed.sum_over_ranks(total)
        loss_value = total.item() / (n * self.world_size)
        if not math.isfinite(loss_value):  # every rank sees the same mean, so all stop
            self._non_finite("loss", loss_value)
        return loss_value, x.numel() * n * self.world_size

    def _non_finite(self, what: str, value: float):
        back = self.rollback_point
        undo = (f"trainer.rollback() returns to step {back[0]} (val loss {back[1]:.4f}), the last "
                "healthy evaluation" if back else "trainer.reset() starts again from fresh weights")
        summary = f"the {what} became {value} at step {self.step_count + 1}"
        raise TrainingError(
            f"{summary}: training diverged and the weights of step {self.step_count} are kept. "
            f"{undo}; then train with a lower learning rate (it was {self.lr():.3g} at this step)",
            what=summary)

    @torch.no_grad()
    def evaluate(self, batches: int | None = None) -> dict:
        """Mean loss over `eval_batches` batches of each split, and perplexity. Batches
        come from a generator seeded by (seed, step): repeatable, and training's own
        batch sequence is untouched. Under a process group the ranks share out the same
        batches and sum their losses: the same figures as one process, sooner."""
        batches = batches or self.config.eval_batches
        with self.lock:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(_derived_seed(self.config.seed, 2 + self.step_count))
            was_training = self.model.training
            self.model.eval()
            splits = ("train", "val") if len(self.dataset.val_ids) else ("train",)
            totals = []
            for split in splits:
                total = 0.0
                for i in range(batches):
                    mine = i % self.world_size == self.rank
                    x, y = self.dataset.batch(split, self.config.batch_size, generator=gen,
                                              device=self.device if mine else None)
                    if mine:
                        with autocast(self.device, self.config.dtype):
                            total += self._forward(x, y).loss.item()
                totals.append(total)
            if self.world_size > 1:
                totals = distributed.sum_over_ranks(
                    torch.tensor(totals, dtype=torch.float64, device=self.device)).tolist()
            out = {"step": self.step_count}
            for split in ("train", "val"):
                mean = totals[splits.index(split)] / batches if split in splits else None
                out[f"{split}_loss"] = mean
                out[f"{split}_perplexity"] = None if mean is None else math.exp(min(mean, 50.0))
            self.model.train(was_training)
            self.wall_time += time.perf_counter() - t0
            self.last_eval = out
        return out

    # ---- reading the model --------------------------------------------------------------

    def reading(self, seed: int | None = None):
        """Context manager: read the model between steps (eval mode, no dropout, the
        model's lock, a generator of its own, seeded by `seed`). See `lmlab.reading`."""
        return reading(self.model, seed)

    def sample(self, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None) -> str:
        """The prompt and its continuation. Safe while training: it reads the weights
        between two steps, in eval mode, without touching the global RNG."""
        tokenizer = self.dataset.tokenizer
        ids = tokenizer.encode(prompt)
        with self.reading(seed) as gen:
            new = generate(self.model, ids, max_new_tokens, temperature, top_k, top_p, gen)
        return prompt + tokenizer.decode(new)

    def set_sampling(self, prompt: str | None = None, every: int | None = None,
                     tokens: int | None = None, temperature: float | None = None) -> SampleSettings:
        """Settings of the periodic samples taken during training (the `sample` event and
        `trainer.samples`); what is not given stays. The prompt is encoded now, so a
        prompt the tokenizer cannot encode is refused with the tokenizer's message."""
        new = replace(self.sampling, **{k: v for k, v in dict(
            prompt=prompt, every=every, tokens=tokens, temperature=temperature).items()
            if v is not None})
        if isinstance(new.every, bool) or not isinstance(new.every, int) or new.every < 0:
            raise ConfigError(f"every={new.every!r} must be a whole number of steps (0: never)")
        if isinstance(new.tokens, bool) or not isinstance(new.tokens, int) or new.tokens < 1:
            raise ConfigError(f"tokens={new.tokens!r} must be a positive whole number")
        if not new.temperature >= 0:
            raise ConfigError(f"temperature={new.temperature!r} must be >= 0 (0: greedy)")
        if not new.prompt:
            raise ConfigError("the sample prompt is empty; give at least one character")
        self.dataset.tokenizer.encode(new.prompt)
        self.sampling = new
        return new

    def _periodic_sample(self) -> dict:
        s = self.sampling
        text = self.sample(s.prompt, s.tokens, temperature=s.temperature, seed=self.step_count)
        sample = {"step": self.step_count, "prompt": s.prompt, "text": text[len(s.prompt):],
                  "temperature": s.temperature}
        self.samples.append(sample)
        return sample

    # ---- rollback ------------------------------------------------------------------------

    def _keep_if_healthy(self, evaluation: dict) -> None:
        """Keep the weights of an evaluation within 10% of the best so far (one snapshot,
        in memory), so that a diverged run can go back to it."""
        loss = evaluation["val_loss"] if evaluation.get("val_loss") is not None \
            else evaluation["train_loss"]
        if not math.isfinite(loss):
            return
        if self._best_loss is not None and loss > self._best_loss * HEALTHY_MARGIN:
            return
        self._best_loss = loss if self._best_loss is None else min(loss, self._best_loss)
        with self.lock:
            self._snapshot = Snapshot(
                step=self.step_count, loss=loss, tokens_seen=self.tokens_seen,
                wall_time=self.wall_time, evaluation=dict(evaluation),
                model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
                optimizer=copy.deepcopy(self.optimizer.state_dict()),
                streams=self._stream_states(),
                learning_rate=self.config.learning_rate, min_lr=self.config.min_lr)

    def _keep_starting_point(self) -> None:
        """Before the first step, keep step 0, so that even the first steps can be undone."""
        if self._snapshot is None and self.step_count == 0:
            self._keep_if_healthy(self.evaluate())

    @property
    def rollback_point(self) -> tuple[int, float] | None:
        """(step, validation loss) of the last healthy evaluation, or None."""
        s = self._snapshot
        return (s.step, s.loss) if s is not None else None

    def rollback(self) -> int:
        """Go back to the weights, optimiser state, history and learning rate of the last
        healthy evaluation (see `rollback_point`), e.g. after a learning rate that
        diverged. Returns that step. Refused while a run is active."""
        s = self._snapshot
        self._run._check_ended("roll back")
        if s is None:
            raise TrainerStateError("there is no healthy evaluation to go back to yet; "
                                    "trainer.reset() starts again from fresh weights")
        self._run.reset()
        with self.lock:
            self.model.load_state_dict(s.model)
            self.optimizer.load_state_dict(copy.deepcopy(s.optimizer))
            self._set_streams(s.streams)
            # the learning rate that trained those weights, not the one that diverged
            self.config = replace(self.config, learning_rate=s.learning_rate, min_lr=s.min_lr)
            self.step_count, self.tokens_seen, self.wall_time = s.step, s.tokens_seen, s.wall_time
            self.last_eval = dict(s.evaluation)
            self.history = History(r for r in self.history.rows() if r["step"] <= s.step)
            while self.samples and self.samples[-1]["step"] > s.step:
                self.samples.pop()
        self._emit("reset", None)
        return s.step

    def reset(self, config: GPTConfig | None = None, **changes) -> None:
        """Start again on this same trainer: fresh weights (a model of `config`, or of
        this model's shape with `changes`, e.g. n_layer=2), a fresh optimiser, step 0,
        history, samples and rollback point cleared. The training settings stay. The
        model object is kept when its shape does not change."""
        self._run._check_ended("reset")
        shape = (config or self.model.config).replace(**changes)
        dataset = self.dataset
        if shape.block_size != self.model.config.block_size:  # a new context: re-cut the text
            dataset = dataset.with_block_size(shape.block_size)
        self._check_fit(SimpleNamespace(config=shape), dataset, self.config)  # before any change
        self._run.reset()
        if self._pinned_decay:  # a fresh run: the schedule spans max_steps again
            self.config, self._pinned_decay = replace(self.config, lr_decay_steps=None), False
        with self.lock, torch.random.fork_rng(devices=[]):  # the global RNG is left alone
            torch.manual_seed(self.config.seed)
            if shape == self.model.config:
                self.model.reset_parameters()
            else:
                self.model = GPT(shape).to(self.device)
            self.dataset = dataset
            self._fresh_state(self.config.seed)
        self._target = self.config.max_steps
        self._emit("reset", None)

    # ---- runs ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """idle, running, pausing, paused, stopping, stopped, finished or failed."""
        return self._run.state

    @property
    def is_alive(self) -> bool:
        """True while a run is active (running, pausing, paused or stopping)."""
        return self._run.is_alive

    @property
    def driver(self) -> str | None:
        """What drives (or drove) the run: loop, thread or blocking."""
        return self._run.driver

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the last run, if any."""
        return self._run.error

    def _target_reached(self) -> bool:
        return self.step_count >= self._target

    def _run_ended(self, state: str, error: BaseException | None) -> None:
        self._emit("error" if error is not None else "end", error if error is not None else state)

    def _prepare(self, steps: int | None) -> None:
        if self.is_alive:
            raise TrainerStateError(
                f"the trainer is already {self.state}; use pause(), resume() or stop()")
        target = self.step_count + steps if steps else self.config.max_steps
        if self.step_count >= target:
            raise TrainerStateError(
                f"already at step {self.step_count} of max_steps={self.config.max_steps}; "
                "raise max_steps (trainer.update_config(max_steps=...)) or pass steps=N"
            )
        self._keep_starting_point()
        self._target = target

    def start(self, steps: int | None = None, driver: str = "auto") -> None:
        """Train in the background until max_steps (or `steps` more steps). In a notebook
        the steps run on the kernel's main event loop between cells, at full speed, even
        when called from a widget click handled on another thread; without an event loop
        (a script) on a thread. `driver` forces "loop" or "thread"."""
        self._prepare(steps)
        self._run.start(driver)

    def pause(self, wait: bool = True) -> None:
        """Pause after the step in progress; with `wait`, return once no step is in
        progress."""
        self._run.pause(wait)

    def resume(self) -> None:
        self._run.resume()

    def stop(self, wait: bool = True) -> None:
        """Stop after the step in progress (safe from any thread); a no-op when no run is
        active."""
        self._run.stop(wait)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True when it has. In a notebook whose trainer runs on
        the kernel's event loop, use `await trainer.wait()` instead."""
        return self._run.join(timeout)

    async def wait(self) -> None:
        """`await trainer.wait()`: the end of the run, without blocking the event loop."""
        await self._run.wait()

    def run(self, steps: int | None = None, progress: bool = True,
            after_step=None) -> History:
        """Train until max_steps (or `steps` more) on the calling thread, blocking, with a
        progress bar; `after_step()` is called after each step.

        Ctrl-C (or the notebook's stop button) stops it after the step in progress, so
        the model is always left whole. Raises the error that stopped training, if any.
        """
        from tqdm.auto import tqdm

        self._prepare(steps)
        progress = progress and self.rank == 0
        bar = tqdm(total=self._target, initial=self.step_count, disable=not progress,
                   unit="step", dynamic_ncols=True, mininterval=0.25)

        def show(*calls):
            # the bar is a view of training, never a reason to stop it: under a process
            # group only rank 0 draws it, and a rank 0 that failed there would leave the
            # others waiting in the next step's collectives
            nonlocal progress
            if not progress:
                return
            try:
                for call in calls:
                    call()
            except Exception as e:
                progress = False
                self.warnings.append(f"step {self.step_count}: the progress bar failed and was "
                                     f"turned off: {type(e).__name__}: {e}")

        def tick():
            show(lambda: self._update_bar(bar))
            if after_step is not None:
                after_step()

        self._after_step = tick
        try:
            self._run.run_blocking()
        finally:
            self._after_step = None
            show(lambda: self._update_bar(bar), bar.close)
        if self.error is not None:
            raise self.error
        return self.history

    def _update_bar(self, bar):
        row = self.history.last()
        if row is None or row["step"] == bar.n:
            return
        bar.n = row["step"]
        post = {"loss": f"{row['train_loss']:.4f}", "tok/s": f"{row['tokens_per_s']:,.0f}"}
        if self.last_eval and self.last_eval.get("val_loss") is not None:
            post["val"] = f"{self.last_eval['val_loss']:.4f}"
        bar.set_postfix(post, refresh=False)
        bar.update(0)  # redraws at most every mininterval

    def update_config(self, **changes) -> None:
        """Change settings between runs; each change takes effect at the next step.

        - optimizer: a fresh optimiser of that kind (the old one's moments do not carry
          over); betas, weight_decay, momentum: set on the optimiser, its state kept;
          compile: the model is (un)compiled.
        - max_steps raised after training began: the schedule is kept, so the learning
          rate does not jump back up; it stays at its final value for the extra steps
          (set lr_decay_steps to stretch the cosine over them instead).
        - grad_accum_steps: the micro-batch streams are dealt again; those that stay
          continue where they were, new ones start from their seeds.
        - device and seed belong to the trainer's making: refused, with what to do.
        """
        if self.is_alive:
            raise TrainerStateError("stop the run before changing its settings")
        for name, how in (("device", "save, then Trainer.load(path, text, device=...)"),
                          ("seed", "build a new Trainer with seed=...")):
            if name in changes and changes[name] != getattr(self.config, name):
                raise ConfigError(f"{name} cannot change on an existing trainer; {how}")
        old = self.config
        if (changes.get("max_steps", old.max_steps) > old.max_steps and self.step_count > 0
                and old.lr_decay_steps is None and "lr_decay_steps" not in changes):
            changes["lr_decay_steps"] = old.max_steps
            self._pinned_decay = True
        config = replace(old, **changes)
        self._check_fit(self.model, self.dataset, config)
        states = self._all_stream_states() if config.grad_accum_steps != old.grad_accum_steps \
            else None
        self.config = config
        if states is not None:
            self._set_streams(states)
        self._target = config.max_steps
        if config.optimizer != old.optimizer:
            self.optimizer = make_optimizer(self.model, config, self.device)
        else:
            for i, group in enumerate(self.optimizer.param_groups):
                if "betas" in group:
                    group["betas"] = tuple(config.betas)
                if "momentum" in group:
                    group["momentum"] = config.momentum
                group["weight_decay"] = config.weight_decay if i == 0 else 0.0
        if config.compile != old.compile:
            self._wire()

    # ---- checkpoints -------------------------------------------------------------------

    def save(self, path) -> Path:
        """Model, tokenizer, optimizer, RNG states and history in one checkpoint file.
        Returns the path written (`checkpoint.save`'s). Under a process group every rank
        calls it (the ranks' random streams are gathered) and rank 0 alone writes; every
        rank then returns rank 0's path, or raises when rank 0 could not write."""
        with self.lock:
            streams = self._all_stream_states()
            # rank 0 writes; every rank returns its path, or raises what stopped it
            return distributed.on_main(self._write, path, streams)

    def _write(self, path, streams: dict) -> Path:
        """Rank 0's part of `save`: the file, with every rank's `streams`."""
        opt = self.optimizer.state_dict()
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
        return checkpoint.save(
            path, self.model, self.dataset.tokenizer, tensors=tensors,
            trainer={
                "config": self.config.to_dict(),
                "step": self.step_count,
                "world_size": self.world_size,
                "tokens_seen": self.tokens_seen,
                "wall_time": self.wall_time,
                "param_groups": opt["param_groups"],
                "optimizer_values": opt_values,
                "history": self.history.to_json(),
                "frozen": self.frozen,
            },
        )

    def restore(self, path) -> None:
        """Load a checkpoint written by `save` into this trainer (same model shape).

        A run may resume with another number of processes: the global batch is kept
        (grad_accum_steps becomes the checkpoint's micro-batches a step over this run's
        processes), and so are the step, the learning-rate schedule, the optimizer state
        and every micro-batch stream, so the steps that follow draw the batches the
        interrupted run would have drawn."""
        self._restore(checkpoint.load(path, device=self.device), path)

    def _restore(self, ck: checkpoint.Checkpoint, path) -> None:
        self._run.reset()  # refused while a run is active
        if ck.model.config != self.model.config:
            raise CheckpointError(
                f"{path} holds a model of shape {ck.model.config.to_dict()}, but this trainer's "
                f"model is {self.model.config.to_dict()}; use Trainer.load(path, dataset) to "
                "rebuild the model from the checkpoint"
            )
        meta = ck.extra.get("trainer")
        if meta is None:
            raise CheckpointError(f"{path} holds a model but no trainer state; save it with "
                                  "trainer.save(path)")
        if ck.tokenizer is not None and self.dataset.tokenizer.to_dict() != ck.tokenizer.to_dict():
            raise CheckpointError(
                f"the dataset's tokenizer is not the one {path} was trained with: even with the "
                "same vocabulary size its token ids would stand for other text. Pass the text "
                "instead, Trainer.load(path, text), to tokenize it with the checkpoint's tokenizer")
        config = replace(TrainConfig.from_dict(meta["config"]), device=self.config.device)
        slots = config.grad_accum_steps * meta.get("world_size", 1)  # micro-batches a step
        if slots % self.world_size:
            raise CheckpointError(
                f"{path} was trained with {slots} micro-batches of {config.batch_size} a step, "
                f"which {self.world_size} processes cannot share evenly; resume it on a number "
                f"of processes that divides {slots}")
        config = replace(config, grad_accum_steps=slots // self.world_size)
        self._check_fit(self.model, self.dataset, config)
        with self.lock:
            if ck.model is not self.model:
                self.model.load_state_dict(ck.model.state_dict())
            self.config = config
            state: dict = {}
            for name, value in ck.tensors.items():
                if name.startswith("optim."):
                    _, pid, key = name.split(".", 2)
                    state.setdefault(int(pid), {})[key] = value
            for name, value in meta["optimizer_values"].items():
                pid, key = name.split(".", 1)
                state.setdefault(int(pid), {})[key] = value
            frozen = set(meta.get("frozen", ()))  # parameters fine-tuning left as they were
            for name, param in self.model.named_parameters():
                param.requires_grad_(name not in frozen)
            self.optimizer = make_optimizer(self.model, self.config, self.device)
            self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
            # RNG states are CPU byte tensors, whatever device the checkpoint was loaded onto
            tail = {slot: f".{slot}" if slot else "" for slot in range(slots)}
            self._set_streams({slot: (ck.tensors["rng.batches" + t], {
                "cpu": ck.tensors["rng.torch" + t], "cuda": ck.tensors.get("rng.cuda" + t)})
                for slot, t in tail.items()})
            self.step_count = meta["step"]
            self.tokens_seen = meta["tokens_seen"]
            self.wall_time = meta["wall_time"]
            self.history = History(meta["history"])
            self._ddp = None  # DDP hooks the parameters that are trainable when it is built
            self._wire()
            self._target = self.config.max_steps
            self.last_eval = None
            self.samples.clear()
            self._snapshot, self._best_loss = None, None
        self._emit("reset", None)

    @classmethod
    def load(cls, path, data, device=None) -> Trainer:
        """A trainer rebuilt from a checkpoint: its model, settings and state. `data` is
        the text to train on (a string, e.g. `load_corpus("shakespeare")`), tokenized with
        the checkpoint's own tokenizer, or a `TokenDataset` whose tokenizer must be the
        checkpoint's. The text is not stored in checkpoints: corpora are large and yours."""
        return cls.from_checkpoint(checkpoint.load(path), path, data, device)

    @classmethod
    def from_checkpoint(cls, ck: checkpoint.Checkpoint, path, data, device=None) -> Trainer:
        """`load` for a checkpoint already read (`path` names it in errors)."""
        from .data import TokenDataset

        meta = ck.extra.get("trainer")
        if meta is None:
            raise CheckpointError(f"{path} holds no trainer state; save it with trainer.save(path)")
        if isinstance(data, str):
            if ck.tokenizer is None:
                raise CheckpointError(f"{path} stores no tokenizer; pass a TokenDataset instead "
                                      "of text")
            data = TokenDataset(data, ck.tokenizer, block_size=ck.model.config.block_size)
        dataset = data
        config = TrainConfig.from_dict(meta["config"])
        if device is not None:
            config = replace(config, device=str(device))
        trainer = cls(ck.model, dataset, config)
        trainer._restore(ck, path)
        return trainer


PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40": 181e12,
                   "L4": 121e12, "A10": 125e12, "V100": 125e12, "T4": 65e12}


def mfu(model: GPT, tokens_per_s: float, device=None) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the GPU's bf16 peak
    (a table of known GPUs); None on the CPU or an unknown GPU."""
    device = torch.device(device or model.device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return model.flops_per_token() * tokens_per_s / peak if peak else None
