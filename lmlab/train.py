"""Training: `Trainer`, which runs steps blocking (`run`) or in the background (`start`,
`pause`, `resume`, `stop`, `join` / `await wait()`), watched through `History`, events
and periodic samples. It owns its settings (`TrainConfig`, in `train_config.py`): every
change goes through `update_config` (or `restore`, `rollback`, `reset`) and is told to
observers as one "config" event, so a view mirrors the trainer instead of keeping a copy.

The rooms around it: `optim.py` (the optimiser), `streams.py` (the random streams of
each micro-batch), `events.py` (observers), `rollback.py` (the last healthy weights),
`train_checkpoint.py` (its files), `progress.py` (the bar of a blocking run).

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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from . import checkpoint, distributed, train_checkpoint
from .errors import ConfigError, DataError, TrainerStateError, TrainingError
from .events import EVENTS, Events, Subscription
from .history import History
from .mfu import PEAK_BF16_FLOPS, mfu
from .model import GPT, GPTConfig, autocast, maybe_compile, resolve_device
from .optim import fused_adam_available, make_optimizer, optimizer_groups
from .progress import ProgressBar
from .reading import model_lock, reading, weights_changed
from .rng import TrainerRNG
from .rollback import HEALTHY_MARGIN, Rollback, Snapshot
from .runcontrol import RunControl, remember_main_loop
from .sampling import generate
from .streams import _derived_seed, stream_seeds
from .train_config import DTYPES, HINTS, OPTIMIZERS, SCHEDULES, TrainConfig

__all__ = ["Trainer", "TrainConfig", "SampleSettings", "Subscription", "EVENTS", "SCHEDULES",
           "OPTIMIZERS", "DTYPES", "HINTS", "HEALTHY_MARGIN", "Snapshot", "make_optimizer",
           "optimizer_groups", "fused_adam_available", "stream_seeds", "mfu", "PEAK_BF16_FLOPS"]


@dataclass(frozen=True)
class SampleSettings:
    """Periodic samples during training: every `every` steps (0: never), `tokens` tokens
    after `prompt` at `temperature`, seeded by the step so they repeat."""

    prompt: str
    every: int = 250
    tokens: int = 80
    temperature: float = 0.8


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
        self.events = Events(self, lambda message: self.warnings.append(
            f"step {self.step_count}: {message}"))
        self._run = RunControl(self._run_step, self._target_reached, self._run_ended,
                               lock_owned=lambda: self.lock._is_owned())
        remember_main_loop()  # built in a notebook cell: Start from a click trains here
        self._target = config.max_steps
        self._after_step = None
        self._pinned_decay = False  # lr_decay_steps was pinned when max_steps was raised
        self._ddp = None  # the model in DistributedDataParallel, under a process group
        self.timeline = None  # a lmlab.Timeline keeping snapshots of the weights, when made
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
        self._rollback = Rollback()

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
        exception that stopped training), reset (None: weights and history replaced),
        config ({setting: new value} of the settings that changed; "sampling": the new
        `SampleSettings`). Returns a `Subscription`; `.remove()` unsubscribes. An
        exception raised by `fn` is kept in `trainer.warnings`; training goes on."""
        return self.events.on(event, fn)

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
        self.events.off(event, fn)

    def callback_count(self) -> int:
        """How many observers are subscribed, over all events."""
        return self.events.count()

    def _emit(self, event: str, payload) -> None:
        self.events.emit(event, payload)

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
        old, self.sampling = self.sampling, new
        if new != old:
            self._told({"sampling": new})
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
        if not self._rollback.is_healthy(loss):
            return
        with self.lock:
            self._rollback.snapshot = Snapshot(
                step=self.step_count, loss=loss, tokens_seen=self.tokens_seen,
                wall_time=self.wall_time, evaluation=dict(evaluation),
                model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
                optimizer=copy.deepcopy(self.optimizer.state_dict()),
                streams=self._stream_states(),
                learning_rate=self.config.learning_rate, min_lr=self.config.min_lr)

    def _keep_starting_point(self) -> None:
        """Before the first step, keep step 0, so that even the first steps can be undone."""
        if self._rollback.snapshot is None and self.step_count == 0:
            self._keep_if_healthy(self.evaluate())

    @property
    def rollback_point(self) -> tuple[int, float] | None:
        """(step, validation loss) of the last healthy evaluation, or None."""
        return self._rollback.point

    def rollback(self) -> int:
        """Go back to the weights, optimiser state, history and learning rate of the last
        healthy evaluation (see `rollback_point`), e.g. after a learning rate that
        diverged. Returns that step. Refused while a run is active."""
        s = self._rollback.snapshot
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
            changed = self._replace_config(replace(self.config, learning_rate=s.learning_rate,
                                                   min_lr=s.min_lr))
            self.step_count, self.tokens_seen, self.wall_time = s.step, s.tokens_seen, s.wall_time
            self.last_eval = dict(s.evaluation)
            self.history = History(r for r in self.history.rows() if r["step"] <= s.step)
            while self.samples and self.samples[-1]["step"] > s.step:
                self.samples.pop()
        self._emit("reset", None)
        self._told(changed)
        return s.step

    def check_reset(self, config: GPTConfig | None = None, **changes) -> tuple[GPTConfig, object]:
        """What `reset(config, **changes)` would build, (model shape, dataset), or the error
        it would raise, without changing anything (a view asks before it stops a run)."""
        shape = (config or self.model.config).replace(**changes)
        dataset = self.dataset
        if shape.block_size != self.model.config.block_size:  # a new context: re-cut the text
            dataset = dataset.with_block_size(shape.block_size)
        self._check_fit(SimpleNamespace(config=shape), dataset, self.config)
        return shape, dataset

    def reset(self, config: GPTConfig | None = None, **changes) -> None:
        """Start again on this same trainer: fresh weights (a model of `config`, or of
        this model's shape with `changes`, e.g. n_layer=2), a fresh optimiser, step 0,
        history, samples and rollback point cleared. The training settings stay. The
        model object is kept when its shape does not change."""
        self._run._check_ended("reset")
        shape, dataset = self.check_reset(config, **changes)  # before any change
        self._run.reset()
        changed = {}
        if self._pinned_decay:  # a fresh run: the schedule spans max_steps again
            changed = self._replace_config(replace(self.config, lr_decay_steps=None))
            self._pinned_decay = False
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
        self._told(changed)

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
    def can_start(self) -> bool:
        """`start()` or `run()` may begin a run (none is active; max_steps may still refuse)."""
        return self._run.can_start

    @property
    def can_pause(self) -> bool:
        return self._run.can_pause

    @property
    def can_resume(self) -> bool:
        """Paused, or pausing after the step in progress."""
        return self._run.can_resume

    @property
    def can_stop(self) -> bool:
        return self._run.can_stop

    @property
    def can_step(self) -> bool:
        """`step()` may run one step by hand: no run is stepping (idle, paused or ended)."""
        return self._run.can_step

    @property
    def can_change(self) -> bool:
        """Settings, `reset`, `rollback` and `restore` are allowed: no run is active."""
        return not self._run.is_alive

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
                f"already at step {self.step_count} of max_steps={self.config.max_steps}: raise "
                "max_steps to train on, or reset (or run steps=N more)"
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
        self._prepare(steps)
        bar = ProgressBar(self, self._target, enabled=progress and self.rank == 0)

        def tick():
            bar.update()
            if after_step is not None:
                after_step()

        self._after_step = tick
        try:
            self._run.run_blocking()
        finally:
            self._after_step = None
            bar.close()
        if self.error is not None:
            raise self.error
        return self.history

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
            raise TrainerStateError(f"training is {self.state}: stop it before changing its "
                                    "settings (they apply from the next step)")
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
        changed = self._replace_config(config)
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
        self._told(changed)

    def _replace_config(self, config: TrainConfig) -> dict:
        """Make `config` the trainer's; returns {setting: new value} of what changed."""
        old, self.config = self.config, config
        return {f.name: getattr(config, f.name) for f in fields(config)
                if getattr(config, f.name) != getattr(old, f.name)}

    def _told(self, changed: dict) -> None:
        """The "config" event, once, for the settings that changed (none: no event)."""
        if changed:
            self._emit("config", changed)

    # ---- checkpoints -------------------------------------------------------------------

    def save(self, path, timeline: bool = False) -> Path:
        """Model, tokenizer, optimizer, RNG states and history in one checkpoint file;
        with `timeline`, the snapshots of `self.timeline` too (`lmlab.Timeline`). Returns
        the path written (`checkpoint.save`'s). Under a process group every rank calls it
        (the ranks' random streams are gathered) and rank 0 alone writes; every
        rank then returns rank 0's path, or raises when rank 0 could not write."""
        with self.lock:
            streams = self._all_stream_states()
            # rank 0 writes; every rank returns its path, or raises what stopped it
            return distributed.on_main(train_checkpoint.write, self, path, streams, timeline)

    def restore(self, path) -> None:
        """Load a checkpoint written by `save` into this trainer (same model shape).

        A run may resume with another number of processes: the global batch is kept
        (grad_accum_steps becomes the checkpoint's micro-batches a step over this run's
        processes), and so are the step, the learning-rate schedule, the optimizer state
        and every micro-batch stream, so the steps that follow draw the batches the
        interrupted run would have drawn."""
        self._restore(checkpoint.load(path, device=self.device), path)

    def _restore(self, ck: checkpoint.Checkpoint, path) -> None:
        changed = train_checkpoint.restore(self, ck, path)
        self._emit("reset", None)
        train_checkpoint.restore_timeline(self, ck)
        self._told(changed)

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
        return train_checkpoint.from_checkpoint(cls, ck, path, data, device)
