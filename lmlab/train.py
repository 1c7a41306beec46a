"""Training: `TrainConfig`, and `Trainer`, which runs steps blocking (`run`) or on a
background thread (`start`, `pause`, `resume`, `stop`, `join`) that a notebook can
watch through `History` and events.

Only the trainer owns a thread. It holds `trainer.lock` for the whole of each step,
so `sample()` or attention capture from another thread never sees torn weights.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from . import checkpoint
from .errors import CheckpointError, ConfigError, DataError, TrainerStateError, TrainingError
from .history import History
from .model import GPT, autocast, maybe_compile, resolve_device
from .sampling import generate

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
DTYPES = ("float32", "bfloat16")
EVENTS = ("step", "eval", "end", "error")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 12
    max_steps: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # where the cosine schedule ends
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
                raise ConfigError(f"{name}={v!r} must be a positive integer")

        for name in ("batch_size", "max_steps", "eval_interval", "eval_batches"):
            positive_int(name)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if self.lr_decay_steps is not None:
            positive_int("lr_decay_steps")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "momentum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name}={v!r} must be a finite number >= 0")
        if self.learning_rate <= 0 or self.learning_rate > 10:
            raise ConfigError(
                f"learning_rate={self.learning_rate!r} must be in (0, 10]; "
                "1e-3 suits small models with AdamW"
            )
        if self.min_lr > self.learning_rate:
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

    def lr_at(self, step: int) -> float:
        """Learning rate for the step numbered `step` (0-based): linear warmup, then
        cosine to min_lr at lr_decay_steps (nanoGPT's schedule), or constant."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return self.learning_rate
        decay = self.lr_decay_steps or self.max_steps
        if step >= decay:
            return self.min_lr
        ratio = (step - self.warmup_steps) / max(1, decay - self.warmup_steps)
        return self.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (self.learning_rate - self.min_lr)


def _derived_seed(seed: int, stream: int) -> int:
    """A seed for the `stream`-th generator of a run, its sequence unrelated to `seed`'s."""
    return (seed * 6364136223846793005 + stream * 1442695040888963407) % 2**63


def make_optimizer(model: GPT, config: TrainConfig, device: torch.device):
    """Weight decay on matrices and embeddings, none on biases and norms (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    lr = config.lr_at(0)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    extra = {"fused": True} if device.type == "cuda" else {}
    return cls(groups, lr=lr, betas=tuple(config.betas), **extra)


class Trainer:
    """Trains `model` on `dataset` (a `TokenDataset`) with `config` (a `TrainConfig`;
    keyword overrides are applied on top)."""

    def __init__(self, model: GPT, dataset, config: TrainConfig | None = None, **overrides):
        config = replace(config or TrainConfig(), **overrides)
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.dataset = dataset
        self._check_fit(model, dataset, config)
        if dataset.device != self.device:
            dataset.device = self.device
        torch.manual_seed(config.seed)  # dropout
        # batch offsets: a stream of its own, not a replay of the one that drew the weights
        self.generator = torch.Generator().manual_seed(_derived_seed(config.seed, 1))
        self.optimizer = make_optimizer(model, config, self.device)
        self._forward = maybe_compile(model, config.compile)
        self.history = History()
        self.step_count = 0
        self.tokens_seen = 0
        self.wall_time = 0.0  # seconds spent in steps and evaluations
        self.last_eval: dict | None = None
        self.error: BaseException | None = None
        self.lock = threading.RLock()
        self._callbacks = {e: [] for e in EVENTS}
        self._state = "idle"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._unpaused = threading.Event()
        self._parked = threading.Event()  # set while the paused loop waits
        self._done = threading.Event()  # set when the thread's loop has ended
        self._done.set()
        self._target = config.max_steps

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

    # ---- events -------------------------------------------------------------------

    def on(self, event: str, fn):
        """Call `fn(trainer, payload)` on `event`: step (the row), eval (the losses),
        end (the final state), error (the exception). Returns fn, so it can decorate."""
        if event not in EVENTS:
            raise ConfigError(f"unknown event {event!r}; choose one of {list(EVENTS)}")
        self._callbacks[event].append(fn)
        return fn

    def on_step(self, fn):
        return self.on("step", fn)

    def on_eval(self, fn):
        return self.on("eval", fn)

    def on_end(self, fn):
        return self.on("end", fn)

    def on_error(self, fn):
        return self.on("error", fn)

    def off(self, event: str, fn) -> None:
        """Unsubscribe `fn` from `event` (nothing happens if it was not subscribed)."""
        if fn in self._callbacks.get(event, ()):
            self._callbacks[event].remove(fn)

    def _emit(self, event: str, payload):
        for fn in list(self._callbacks[event]):
            try:
                fn(self, payload)
            except Exception as e:
                if event == "error":
                    continue  # never let a failing error handler hide the first error
                raise TrainingError(
                    f"the {event} callback {getattr(fn, '__name__', fn)!r} raised "
                    f"{type(e).__name__}: {e} after step {self.step_count}; the step itself "
                    "completed and the model is consistent"
                ) from e

    # ---- one step -------------------------------------------------------------------

    def lr(self) -> float:
        return self.config.lr_at(self.step_count)

    def step(self) -> dict:
        """One optimisation step; returns its History row. Weights change only when the
        loss and the gradient norm are finite."""
        cfg = self.config
        with self.lock:
            t0 = time.perf_counter()
            lr = self.lr()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = self.dataset.batch("train", cfg.batch_size, generator=self.generator)
            self.model.train()
            with autocast(self.device, cfg.dtype):
                loss = self._forward(x, y).loss
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                self._non_finite("loss", loss_value)
            loss.backward()
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()
            if not math.isfinite(grad_norm):
                self._non_finite("gradient norm", grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step_count += 1
            self.tokens_seen += x.numel()
            dt = time.perf_counter() - t0
            self.wall_time += dt
            row = {
                "step": self.step_count, "tokens": self.tokens_seen, "train_loss": loss_value,
                "val_loss": None, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": x.numel() / dt, "wall_time": self.wall_time,
            }
            evaluated = None
            if self.step_count % cfg.eval_interval == 0 or self.step_count == cfg.max_steps:
                evaluated = self.evaluate()
                row["val_loss"] = evaluated["val_loss"]
                row["wall_time"] = self.wall_time
            self.history.append(row)
        self._emit("step", row)
        if evaluated is not None:
            self._emit("eval", evaluated)
        return row

    def _non_finite(self, what: str, value: float):
        self.optimizer.zero_grad(set_to_none=True)
        raise TrainingError(
            f"the {what} became {value} at step {self.step_count + 1}; the weights of step "
            f"{self.step_count} are kept. Lower the learning rate (now {self.lr():.3g}; "
            f"try {self.config.learning_rate / 3:.3g}) or keep grad_clip on"
        )

    @torch.no_grad()
    def evaluate(self, batches: int | None = None) -> dict:
        """Mean loss over `eval_batches` batches of each split, and perplexity. Batches
        come from a generator seeded by (seed, step): repeatable, and training's own
        batch sequence is untouched."""
        batches = batches or self.config.eval_batches
        with self.lock:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(_derived_seed(self.config.seed, 2 + self.step_count))
            was_training = self.model.training
            self.model.eval()
            out = {"step": self.step_count}
            for split in ("train", "val"):
                if split == "val" and not len(self.dataset.val_ids):
                    out["val_loss"] = out["val_perplexity"] = None
                    continue
                total = 0.0
                for _ in range(batches):
                    x, y = self.dataset.batch(split, self.config.batch_size, generator=gen)
                    with autocast(self.device, self.config.dtype):
                        total += self._forward(x, y).loss.item()
                out[f"{split}_loss"] = total / batches
                out[f"{split}_perplexity"] = math.exp(min(total / batches, 50.0))
            self.model.train(was_training)
            self.wall_time += time.perf_counter() - t0
            self.last_eval = out
        return out

    def sample(self, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None) -> str:
        """The prompt and its continuation. Safe while the thread trains: it holds the
        trainer's lock, so it reads the weights between two steps."""
        tokenizer = self.dataset.tokenizer
        ids = tokenizer.encode(prompt)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with self.lock:
            new = generate(self.model, ids, max_new_tokens, temperature, top_k, top_p, gen)
        return prompt + tokenizer.decode(new)

    # ---- background thread -----------------------------------------------------------

    @property
    def state(self) -> str:
        """idle, running, paused, stopped, finished or failed."""
        return self._state

    @property
    def is_alive(self) -> bool:
        # an Event, not Thread.is_alive: a join interrupted by Ctrl-C can mark a live
        # thread as stopped
        return not self._done.is_set()

    def _begin(self, steps: int | None) -> None:
        """Check that a run may begin, and set the flags of a running one."""
        if self.is_alive:
            raise TrainerStateError(
                f"the trainer is already {self._state}; use pause(), resume() or stop()"
            )
        target = self.step_count + steps if steps else self.config.max_steps
        if self.step_count >= target:
            raise TrainerStateError(
                f"already at step {self.step_count} of max_steps={self.config.max_steps}; "
                "raise max_steps (trainer.update_config(max_steps=...)) or pass steps=N"
            )
        self._target = target
        self.error = None
        self._stop.clear()
        self._unpaused.set()
        self._state = "running"
        self._done.clear()

    def start(self, steps: int | None = None) -> None:
        """Train on a background thread until max_steps (or `steps` more steps); the
        notebook stays free meanwhile."""
        self._begin(steps)
        self._thread = threading.Thread(target=self._loop, name="lmlab-trainer", daemon=True)
        self._thread.start()

    def _loop(self):
        try:
            self._train_until_target()
        finally:
            self._done.set()

    def _train_until_target(self, after_step=None):
        try:
            while self.step_count < self._target:
                if not self._unpaused.is_set():
                    self._parked.set()
                    self._unpaused.wait()
                    self._parked.clear()
                if self._stop.is_set():
                    break
                self.step()
                if after_step is not None:
                    after_step()
        except BaseException as e:  # kept and reported, never lost
            self.error = e
            self._state = "failed"
            self._emit("error", e)
            return
        self._state = "stopped" if self._stop.is_set() else "finished"
        try:
            self._emit("end", self._state)
        except TrainingError as e:
            self.error = e
            self._state = "failed"
            self._emit("error", e)

    def pause(self, wait: bool = True) -> None:
        """Pause after the step in progress; with `wait`, return once it has finished."""
        if self._state != "running":
            raise TrainerStateError(f"cannot pause: the trainer is {self._state}, not running")
        if self._thread is None or not self._thread.is_alive():
            raise TrainerStateError("pause() is for runs begun with start(); stop() ends a "
                                    "blocking run()")
        self._unpaused.clear()
        self._state = "paused"
        if wait and threading.current_thread() is not self._thread:
            while not (self._parked.wait(0.05) or self._done.is_set()):
                pass

    def resume(self) -> None:
        if self._state != "paused":
            raise TrainerStateError(
                f"cannot resume: the trainer is {self._state}, not paused; start() a new run"
            )
        self._state = "running"
        self._unpaused.set()

    def stop(self, wait: bool = True) -> None:
        """Stop after the step in progress (safe from any thread); no-op when idle."""
        self._stop.set()
        self._unpaused.set()
        if wait and threading.current_thread() is not self._thread:
            self._done.wait()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        return self._done.wait(timeout)

    def run(self, steps: int | None = None, progress: bool = True,
            after_step=None) -> History:
        """Train until max_steps (or `steps` more) on the calling thread, blocking, with a
        progress bar; `after_step()` is called after each step.

        Ctrl-C (or the notebook's stop button) stops it after the step in progress, so
        the model is always left whole. Raises the error that stopped training, if any.
        Training here is faster than on start()'s thread: OpenMP runs one thread pool
        per Python thread that uses it, and two pools oversubscribe the cores.
        """
        from tqdm.auto import tqdm

        self._begin(steps)
        self._thread = threading.current_thread()
        previous = None
        if self._thread is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda *_: self.stop(wait=False))
        bar = tqdm(total=self._target, initial=self.step_count, disable=not progress,
                   unit="step", dynamic_ncols=True, mininterval=0.25)

        def tick():
            if progress:
                self._update_bar(bar)
            if after_step is not None:
                after_step()

        try:
            self._train_until_target(tick)
        finally:
            self._done.set()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self._update_bar(bar)
            bar.close()
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
        """Change settings between runs (e.g. learning_rate, max_steps, batch_size)."""
        if self.is_alive:
            raise TrainerStateError("stop or finish the run before changing its settings")
        config = replace(self.config, **changes)
        self._check_fit(self.model, self.dataset, config)
        self.config = config
        self._target = config.max_steps

    # ---- checkpoints -------------------------------------------------------------------

    def save(self, path) -> Path:
        """Model, tokenizer, optimizer, RNG states and history in one checkpoint file."""
        with self.lock:
            opt = self.optimizer.state_dict()
            tensors, opt_values = {}, {}
            for pid, entry in opt["state"].items():
                for key, value in entry.items():
                    if torch.is_tensor(value):
                        tensors[f"optim.{pid}.{key}"] = value
                    else:
                        opt_values[f"{pid}.{key}"] = value
            tensors["rng.torch"] = torch.get_rng_state()
            tensors["rng.batches"] = self.generator.get_state()
            if torch.cuda.is_available():
                tensors["rng.cuda"] = torch.cuda.get_rng_state()
            return checkpoint.save(
                path, self.model, self.dataset.tokenizer, tensors=tensors,
                trainer={
                    "config": self.config.to_dict(),
                    "step": self.step_count,
                    "tokens_seen": self.tokens_seen,
                    "wall_time": self.wall_time,
                    "param_groups": opt["param_groups"],
                    "optimizer_values": opt_values,
                    "history": self.history.to_json(),
                },
            )

    def restore(self, path) -> None:
        """Load a checkpoint written by `save` into this trainer (same model shape)."""
        self._restore(checkpoint.load(path, device=self.device), path)

    def _restore(self, ck: checkpoint.Checkpoint, path) -> None:
        if self.is_alive:
            raise TrainerStateError("stop the run before restoring a checkpoint")
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
        with self.lock:
            if ck.model is not self.model:
                self.model.load_state_dict(ck.model.state_dict())
            self.config = replace(TrainConfig.from_dict(meta["config"]), device=self.config.device)
            self._check_fit(self.model, self.dataset, self.config)
            state: dict = {}
            for name, value in ck.tensors.items():
                if name.startswith("optim."):
                    _, pid, key = name.split(".", 2)
                    state.setdefault(int(pid), {})[key] = value
            for name, value in meta["optimizer_values"].items():
                pid, key = name.split(".", 1)
                state.setdefault(int(pid), {})[key] = value
            self.optimizer = make_optimizer(self.model, self.config, self.device)
            self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
            torch.set_rng_state(ck.tensors["rng.torch"])
            self.generator.set_state(ck.tensors["rng.batches"])
            if "rng.cuda" in ck.tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(ck.tensors["rng.cuda"])
            self.step_count = meta["step"]
            self.tokens_seen = meta["tokens_seen"]
            self.wall_time = meta["wall_time"]
            self.history = History(meta["history"])
            self._forward = maybe_compile(self.model, self.config.compile)
            self._target = self.config.max_steps
            self._state = "idle"

    @classmethod
    def load(cls, path, dataset, device=None) -> Trainer:
        """A trainer rebuilt from a checkpoint: its model, settings and state."""
        return cls.from_checkpoint(checkpoint.load(path), path, dataset, device)

    @classmethod
    def from_checkpoint(cls, ck: checkpoint.Checkpoint, path, dataset, device=None) -> Trainer:
        """`load` for a checkpoint already read (`path` names it in errors)."""
        meta = ck.extra.get("trainer")
        if meta is None:
            raise CheckpointError(f"{path} holds no trainer state; save it with trainer.save(path)")
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
