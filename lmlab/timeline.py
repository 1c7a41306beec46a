"""The training timeline: a trainer's weights kept every few steps, so that any view can
show the model as it was at step k, and the heads' scores measured over training.

    timeline = Timeline(trainer)          # keeps snapshots as the run goes
    trainer.run(2000)
    timeline.steps                        # [0, 1, 2, ..., 1792, 1920]
    model = timeline.model_at(256)        # lmlab's GPT with the weights of step 256
    timeline.scores()                     # every head's scores at every snapshot

Which steps: by default every step up to 16, then 8 snapshots per doubling of the step
(every 2nd step up to 32, every 4th up to 64, ..., every 128th from 1,024), since most
change happens early; `every=N` keeps every N-th step instead. The weights of step 0 are
kept when the timeline is made.

Memory: snapshots are copies in host memory, float16 by default (half of float32's
bytes; each weight within float16's rounding, a relative 2⁻¹¹ = 4.9e-4, of the model's),
or float32 (bit for bit). Beyond `budget_mb` the timeline thins evenly: the first and the
newest snapshots stay, and the one whose neighbours are closest (in log steps for the
default schedule, in steps for `every=N`) is dropped, until the rest fits. Nothing is
written to disk unless asked: `trainer.save(path, timeline=True)` puts the snapshots in
the checkpoint, and `Trainer.load` / `restore` bring them back.

Reading: a snapshot is copied into a model of the timeline's own (`model_at`), never into
the trainer's, so scrubbing while training runs changes nothing in training. Snapshots
are taken in the trainer's "step" event under the model's lock; views read them between
steps.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from . import interpret
from .errors import ConfigError
from .health import Health
from .model import GPT
from .reading import model_lock, reading, weights_changed

DTYPES = {"float16": torch.float16, "float32": torch.float32}
METRICS = ("induction", "previous_token", "first_token", "entropy")
PER_DOUBLING = 8  # default schedule: snapshots per doubling of the step, from step 16


def default_schedule(step: int) -> bool:
    """Whether the default schedule keeps `step`: every step below 16, then every
    2^(⌊log2 step⌋ - 3)-th step (8 a doubling)."""
    if step < 2 * PER_DOUBLING:
        return True
    interval = 2 ** (int(math.log2(step)) - int(math.log2(PER_DOUBLING)))
    return step % interval == 0


@dataclass
class Emergence:
    """Head scores over training: `steps` [n] and, for each of METRICS, a float tensor
    [n, layer, head] (entropy in nats, the others attention fractions 0..1)."""

    steps: list[int]
    scores: dict

    def first_crossing(self, metric: str = "induction", threshold: float = 0.5) -> list[tuple]:
        """(layer, head, step) of each head whose `metric` reaches `threshold` (entropy:
        falls to it), at the first snapshot where it does; ordered by step."""
        values = self.scores[metric]
        reached = values <= threshold if metric == "entropy" else values >= threshold
        out = []
        for layer in range(values.size(1)):
            for head in range(values.size(2)):
                hits = reached[:, layer, head].nonzero()
                if len(hits):
                    out.append((layer, head, self.steps[int(hits[0])]))
        return sorted(out, key=lambda t: (t[2], t[0], t[1]))


class Timeline:
    """Snapshots of `trainer`'s model as it trains (see the module's docstring).

    every:      keep every N-th step (None: the default schedule)
    budget_mb:  the most host memory the snapshots take, in MiB (thinned beyond it)
    dtype:      "float16" or "float32", how each snapshot is kept
    health:     measure each layer's gradient norm and update-to-weight ratio every
                `health` steps (0: not), kept in `timeline.health`
    text:       the token ids the head scores are measured on (default: the start of the
                validation split, at most 128 tokens)
    probe:      token ids of a text with repeats to measure induction on (see
                `interpret.induction_score_on`; default: `interpret.induction_scores`'
                random tokens repeated once); a model that learnt to copy from short
                lines is better probed with lines like them
    """

    def __init__(self, trainer, every: int | None = None, budget_mb: float = 256,
                 dtype: str = "float16", health: int = 10, text: list[int] | None = None,
                 probe: list[int] | None = None):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ConfigError(f"every={every!r}: keep a snapshot every N >= 1 steps, or "
                              "every=None for the default schedule (dense early, sparse late)")
        if dtype not in DTYPES:
            raise ConfigError(f"dtype={dtype!r}; choose one of {sorted(DTYPES)}")
        self.trainer, self.every, self.dtype = trainer, every, DTYPES[dtype]
        self.budget = budget_mb * 2**20
        per = self.snapshot_bytes = sum(t.numel() * self.dtype.itemsize
                                        for t in self._tensors(trainer.model).values())
        if self.budget < 2 * per:
            raise ConfigError(
                f"budget_mb={budget_mb} holds fewer than two snapshots of this model (each "
                f"{per / 2**20:.2f} MiB as {dtype}); raise budget_mb to at least "
                f"{math.ceil(2 * per / 2**20)}")
        self._snapshots: dict[int, dict] = {}
        self._scores: dict[int, dict] = {}  # step -> {metric: [L, H]}
        self._probabilities: dict = {}  # (context ids, token, step) -> probability
        self._lock = threading.Lock()
        self._probe = threading.RLock()  # one measurement at a time on the "probe" model
        self._models: dict[str, GPT] = {}  # "view" (model_at) and "probe" (the scores), CPU
        self._loaded: dict[str, int] = {}
        if text is None:
            val = trainer.dataset.val_ids if len(trainer.dataset.val_ids) > 1 else trainer.dataset.train_ids
            text = val[: min(128, trainer.model.config.block_size)].tolist()
        self.text = list(text)
        self.probe = None if probe is None else list(probe)
        if self.probe is not None:
            if len(self.probe) > trainer.model.config.block_size:
                raise ConfigError(f"the induction probe has {len(self.probe)} tokens, more than "
                                  f"the model's context of {trainer.model.config.block_size}")
            interpret.induction_score_on(torch.zeros(1, 1, len(self.probe), len(self.probe)),
                                         self.probe)  # a probe without repeats is refused now
        old = getattr(trainer, "timeline", None)
        if old is not None:
            old.close()
        self.health = Health(trainer, every=health) if health else None
        self._take(trainer.step_count)
        self._subscriptions = [trainer.on("step", self._on_step), trainer.on("reset", self._on_reset)]
        trainer.timeline = self

    # ---- keeping ----------------------------------------------------------------------

    @staticmethod
    def _tensors(model) -> dict:
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}

    def wanted(self, step: int) -> bool:
        """Whether this timeline keeps `step` (before thinning)."""
        return default_schedule(step) if self.every is None else step % self.every == 0

    def _on_step(self, trainer, row) -> None:
        if self.wanted(trainer.step_count):
            self._take(trainer.step_count)

    def _on_reset(self, trainer, _) -> None:
        """New weights (reset, rollback, restore): snapshots after the trainer's step are of
        another run and go; the current weights are taken."""
        with self._lock:
            for step in [s for s in self._snapshots if s >= trainer.step_count]:
                self._forget(step)
        self._take(trainer.step_count)

    def _take(self, step: int) -> None:
        with model_lock(self.trainer.model):
            copy = {name: t.detach().to("cpu", self.dtype if t.is_floating_point() else t.dtype,
                                        copy=True)
                    for name, t in self._tensors(self.trainer.model).items()}
        with self._lock:
            self._forget(step)
            self._snapshots[step] = copy
            self._thin()

    def _forget(self, step: int) -> None:
        self._snapshots.pop(step, None)
        self._scores.pop(step, None)
        for key in [k for k in self._probabilities if k[2] == step]:
            del self._probabilities[key]
        for name, loaded in list(self._loaded.items()):
            if loaded == step:
                del self._loaded[name]

    def _thin(self) -> None:
        keep = max(2, int(self.budget // self.snapshot_bytes))
        measure = (lambda s: math.log1p(s)) if self.every is None else float
        while len(self._snapshots) > keep:
            steps = sorted(self._snapshots)
            gaps = [measure(steps[i + 1]) - measure(steps[i - 1]) for i in range(1, len(steps) - 1)]
            self._forget(steps[1 + gaps.index(min(gaps))])

    @property
    def steps(self) -> list[int]:
        """The steps kept, in order."""
        with self._lock:
            return sorted(self._snapshots)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return len(self._snapshots) * self.snapshot_bytes

    def weights(self, step: int) -> dict:
        """Snapshot `step` as {name: tensor} (parameters and buffers, tied ones once), in
        the timeline's dtype, on the CPU. Read-only: copy before changing."""
        with self._lock:
            if step not in self._snapshots:
                raise ConfigError(f"step {step} has no snapshot; the timeline keeps "
                                  f"{self._describe()}")
            return self._snapshots[step]

    def nearest(self, step: int) -> int:
        """The kept step closest to `step` (the earlier one on a tie)."""
        steps = self.steps
        return min(steps, key=lambda s: (abs(s - step), s))

    def _describe(self) -> str:
        steps = sorted(self._snapshots)
        shown = ", ".join(map(str, steps[:6])) + (f", ..., {steps[-1]}" if len(steps) > 6 else "")
        return f"{len(steps)} steps: {shown}"

    # ---- reading ----------------------------------------------------------------------

    def model_at(self, step: int, which: str = "view") -> GPT:
        """A model of the timeline's own (float32, CPU, eval mode) holding the weights of
        snapshot `step`. The same model is reused for every step (`which` names one of two:
        "view", what views show, and "probe", what `scores` measures with), so keep what
        you read from it, not the model."""
        weights = self.weights(step)
        model = self._models.get(which)
        if model is None:  # built on "meta": a fresh model's init would draw from the global
            with torch.device("meta"):  # RNG, which a training step may have swapped in
                model = GPT(self.trainer.model.config)
            model = model.to_empty(device="cpu").eval()
            model.lm_head.weight = model.transformer.wte.weight  # to_empty untied them
            self._models[which] = model
        if self._loaded.get(which) != step:
            with model_lock(model), torch.no_grad():
                for name, t in self._tensors(model).items():
                    t.copy_(weights[name])
            weights_changed(model)
            self._loaded[which] = step
        return model

    def scores(self) -> Emergence:
        """Every head's scores at every snapshot (see `interpret.head_summary`; induction
        on the default probe of `interpret.induction_scores`, the others on `self.text`).
        A snapshot is measured once: later calls measure only the new ones."""
        steps = self.steps
        for step in steps:
            if step not in self._scores:
                with self._probe:
                    scores = self._measure(step)
                with self._lock:
                    if step in self._snapshots:
                        self._scores[step] = scores
        with self._lock:
            steps = [s for s in steps if s in self._scores]
            return Emergence(steps, {m: torch.stack([self._scores[s][m] for s in steps])
                                     for m in METRICS})

    def _measure(self, step: int) -> dict:
        model = self.model_at(step, "probe")
        attention = interpret.capture_attention(model, self.text)
        w = attention.weights
        if self.probe is None:
            induction = interpret.induction_scores(model)
        else:
            weights = interpret.capture_attention(model, self.probe).weights
            induction = interpret.induction_score_on(weights, self.probe)
        return {
            "induction": induction,
            "previous_token": w.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1),
            "first_token": w[..., 1:, 0].mean(-1),
            "entropy": -torch.special.xlogy(w, w).sum(-1).mean(-1),
        }

    def probability(self, context: list[int], token: int) -> tuple[list[int], list[float]]:
        """(steps, probabilities): the probability of `token` next after the ids
        `context`, at every snapshot ("when did the model learn that 'Q' is followed by
        'u'")."""
        vocab = self.trainer.model.config.vocab_size
        if not context:
            raise ConfigError("the context is empty: give at least one token before the one "
                              "whose probability to follow")
        if not 0 <= token < vocab:
            raise ConfigError(f"token {token} is not in the model's vocabulary of {vocab}")
        context = tuple(context[-self.trainer.model.config.block_size:])
        out = []
        for step in self.steps:
            key = (context, token, step)
            if key not in self._probabilities:
                with self._probe:
                    model = self.model_at(step, "probe")
                    with reading(model):
                        logits = model(torch.tensor([context])).logits[0, -1]
                p = float(torch.softmax(logits.float(), -1)[token])
                with self._lock:
                    if step in self._snapshots:
                        self._probabilities[key] = p
            out.append((step, self._probabilities.get(key, math.nan)))
        return [s for s, _ in out], [p for _, p in out]

    # ---- files and the end --------------------------------------------------------------

    def to_checkpoint(self) -> tuple[dict, dict]:
        """(tensors, settings) for `trainer.save(path, timeline=True)`."""
        with self._lock:
            tensors = {f"timeline.{step}.{name}": t for step, snap in self._snapshots.items()
                       for name, t in snap.items()}
        settings = {"every": self.every, "budget_mb": self.budget / 2**20,
                    "dtype": str(self.dtype).removeprefix("torch."),
                    "health": self.health.every if self.health else 0, "text": self.text,
                    "probe": self.probe}
        return tensors, settings

    @classmethod
    def from_checkpoint(cls, trainer, tensors: dict, settings: dict) -> Timeline:
        """The timeline saved with a checkpoint, on `trainer` (restored from it)."""
        timeline = cls(trainer, every=settings["every"], budget_mb=settings["budget_mb"],
                       dtype=settings["dtype"], health=settings["health"], text=settings["text"],
                       probe=settings["probe"])
        snapshots: dict[int, dict] = {}
        for key, t in tensors.items():
            if key.startswith("timeline."):
                _, step, name = key.split(".", 2)
                snapshots.setdefault(int(step), {})[name] = t.to("cpu", copy=True)
        with timeline._lock:
            timeline._snapshots.update(snapshots)
            timeline._thin()
        return timeline

    def close(self) -> None:
        """Stop keeping snapshots (those kept stay readable)."""
        for sub in self._subscriptions:
            sub.remove()
        if self.health is not None:
            self.health.close()
        if getattr(self.trainer, "timeline", None) is self:
            self.trainer.timeline = None
