"""Scaling laws: train a family of models on the same data (`sweep`), then fit how the
loss falls with size (`fit_power_law`), as Kaplan et al. (2020) and Hoffmann et al.
(2022, "Chinchilla") do at a far larger scale.

Units: parameters N are counted as Kaplan et al. count them, without the token and
position embeddings ("non-embedding"); tokens D are training tokens seen; compute C is
in FLOPs, C ≈ 6·N·D (forward 2·N·D, backward 4·N·D; attention's own FLOPs and the
output layer's are left out, as in Kaplan et al.); losses are cross-entropies in nats
per token.

    runs = sweep("shakespeare", [dict(n_layer=2, n_head=2, n_embd=w) for w in (16, 32, 64)],
                 tokens_per_run=500_000, out="sweep.json")
    fit = runs.fit()                    # L(N) = a·N^(−alpha) + c
    print(fit, fit.predict(1e6))
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .data import CORPORA, TokenDataset, load_corpus
from .errors import ConfigError, CorpusError, DataError
from .files import atomic_write
from .history import downsample
from .model import GPT, GPTConfig, PRESETS
from .tokenizers import CharTokenizer
from .train import TrainConfig, Trainer

FORMAT = "lmlab-sweep"
VERSION = 1

# Training settings of every run unless `train=` says otherwise; max_steps comes from the budget.
SWEEP_TRAIN = dict(batch_size=16, learning_rate=1e-3, warmup_steps=50, eval_interval=100, eval_batches=10)

# The lesson's sweep: 4 layers, widths 16 to 192 (13 thousand to 1.8 million non-embedding
# parameters, 135×), each trained on the same 1.15 million characters of Shakespeare.
DEFAULT_SIZES = [dict(n_layer=4, n_head=4, n_embd=w) for w in (16, 32, 64, 128, 192)]
DEFAULT_TOKENS = 1500 * 768

# Shannon (1951) put the entropy of printed English near 1 bit per character: a prior for the
# loss no character-level model of English text goes below, in nats.
ENGLISH_NATS_PER_CHAR = math.log(2)


def default_offset(tokenizer) -> float:
    """The irreducible loss c to fix a priori in a fit, in nats per token: about 1 bit per
    character for a character tokenizer (Shannon's estimate for English), else 0 (the
    pure power law; a token of several characters carries more)."""
    return ENGLISH_NATS_PER_CHAR if isinstance(tokenizer, CharTokenizer) else 0.0

# ---- counting -----------------------------------------------------------------------------


def count_params(model: GPT) -> dict:
    """{"params": all parameters (tied weights once), "params_embedding": token and
    position embeddings, "params_non_embedding": the rest, Kaplan et al.'s N}."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return {"params": total, "params_embedding": embedding, "params_non_embedding": total - embedding}


def training_flops(n_params: int, tokens: int) -> int:
    """Training compute in FLOPs, ≈ 6·N·D for N parameters and D tokens."""
    return 6 * n_params * tokens


# ---- the sweep ----------------------------------------------------------------------------


class Sweep(list):
    """The runs of a sweep, in the order of `sizes`: a list of dicts (see `sweep`)."""

    path: Path | None = None  # the JSON file the runs are kept in, if any
    complete: bool = True  # False when the sweep was stopped before its last run

    def column(self, name: str) -> list:
        """One field of every run, e.g. `column("val_loss")`."""
        return [run[name] for run in self]

    def fit(self, x: str = "params_non_embedding", y: str = "val_loss", c: float | None = None) -> PowerLaw:
        """`fit_power_law` of `y` against `x` over the runs (e.g. x="flops")."""
        return fit_power_law(self.column(x), self.column(y), c=c)


def sweep(corpus, sizes, *, tokens_per_run: int | None = None, compute_budget: float | None = None,
          out=None, train: TrainConfig | dict | None = None, block_size: int = 64,
          eval_batches: int = 100, history_points: int = 200, progress: bool = True,
          on_run_start=None, on_run_end=None, trainer_hook=None) -> Sweep:
    """Train one model per entry of `sizes`, one after another, on the same data, and
    return a `Sweep` (a list of dicts, one per run, in the order of `sizes`). Blocking;
    `lmlab.widgets.ScalingLab` runs the same `SweepPlan` live in a notebook.

    corpus, sizes, tokens_per_run | compute_budget, out, train, block_size, eval_batches,
        history_points: see `SweepPlan`.
    on_run_start(i, config): called before run i (a `GPTConfig`) trains.
    on_run_end(i, run): called after run i finished, trained or read from `out`.
    trainer_hook(trainer): called with each new `Trainer` before it trains, e.g. to
        subscribe a live chart with `trainer.on("step", ...)`.

    Stopping a run (Ctrl-C, or `trainer.stop()`) ends the sweep: the runs finished so
    far come back with `complete` False and a warning; the stopped run is not recorded.
    """
    plan = SweepPlan(corpus, sizes, tokens_per_run=tokens_per_run, compute_budget=compute_budget,
                     out=out, train=train, block_size=block_size, eval_batches=eval_batches,
                     history_points=history_points)
    runs = Sweep()
    runs.path = plan.path
    for i, config in enumerate(plan.configs):
        run = plan.runs[i]
        if run is None:
            if on_run_start is not None:
                on_run_start(i, config)
            trainer = plan.trainer(i)
            if trainer_hook is not None:
                trainer_hook(trainer)
            trainer.run(progress=progress)
            if trainer.state != "finished":  # stopped (Ctrl-C, or trainer.stop() from a hook)
                runs.complete = False
                warnings.warn(f"the sweep stopped during run {i}, which is not recorded; "
                              + (f"the finished runs are in {plan.path}: call sweep again with the "
                                 "same out= to resume" if plan.path is not None
                                 else "pass out= to resume later"),
                              stacklevel=2)
                return runs
            run = plan.record(i, trainer)
        runs.append(run)
        if on_run_end is not None:
            on_run_end(i, run)
    return runs


class SweepPlan:
    """The runs of a sweep, prepared: their shapes, budgets and settings, the results
    already in `out`, a `Trainer` for each missing run (`trainer(i)`) and the record of a
    finished one (`record(i, trainer)`). `sweep` trains them blocking; a widget can drive
    each trainer with `start()` instead.

    corpus: a corpus name (see `lmlab.CORPORA`), a text (any other string), or a
        `TokenDataset`. Text is tokenized once, by characters; every run sees the same
        tokenizer, the same train/validation split and the same batch order.
    sizes: a list of model shapes, each a `GPTConfig`, a dict of `GPTConfig` fields
        (e.g. `dict(n_layer=2, n_head=2, n_embd=32)`) or a preset name ("nano", ...).
        vocab_size is always the tokenizer's. Dicts without block_size get `block_size`
        (a `TokenDataset`'s own when one is given); all sizes must share one block_size.
    tokens_per_run: the same number of training tokens for every size; or
    compute_budget: FLOPs per run, the same for every size (compute-matched): a model of
        N non-embedding parameters trains on compute_budget / (6·N) tokens, so smaller
        models see more tokens. Budgets are rounded up to whole steps of
        batch_size × block_size tokens.
    train: a `TrainConfig`, or a dict of its fields over `SWEEP_TRAIN`; the same for
        every size, seed included (the same seed draws each model's first weights).
        max_steps is set by the budget, and warmup_steps capped at a tenth of it.
    out: a JSON file. After each finished run all results are written to it atomically;
        a run already there with the same shape, settings, data and budget is read back,
        not trained again, so an interrupted sweep resumes where it stopped.
    eval_batches: batches of each split for the final loss (`trainer.evaluate`).
    history_points: history rows kept per run, spread evenly (every evaluation kept).

    Each run's dict: "model" (GPTConfig fields), "train" (TrainConfig fields),
    "params", "params_embedding", "params_non_embedding" (N), "tokens" (D, trained on),
    "steps", "flops" (6·N·D, N non-embedding), "wall_time" (seconds spent in training
    steps and evaluations), "train_loss", "val_loss" (nats/token, final evaluation),
    "history" (History rows), "key" (what identifies the run in `out`) and "reused"
    (True when read back from `out`; not stored).
    """

    def __init__(self, corpus, sizes, *, tokens_per_run: int | None = None,
                 compute_budget: float | None = None, out=None,
                 train: TrainConfig | dict | None = None, block_size: int = 64,
                 eval_batches: int = 100, history_points: int = 200):
        if (tokens_per_run is None) == (compute_budget is None):
            raise ConfigError("give exactly one budget: tokens_per_run=... (the same tokens for every "
                              "size) or compute_budget=... (the same FLOPs for every size)")
        for name, value in (("tokens_per_run", tokens_per_run), ("compute_budget", compute_budget)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ConfigError(f"{name}={value!r} must be a positive number")
        dataset = _dataset(corpus, block_size)
        self.configs = _configs(sizes, dataset)
        if dataset.block_size != self.configs[0].block_size:
            dataset = dataset.with_block_size(self.configs[0].block_size)
        self.dataset = dataset
        self.eval_batches, self.history_points = eval_batches, history_points
        self.base = _train_config(train)
        self.path = Path(out) if out is not None else None
        self._stored = _read(self.path) if self.path is not None else []
        data_id = _fingerprint(dataset)
        budget = {"tokens_per_run": tokens_per_run} if tokens_per_run is not None \
            else {"compute_budget": compute_budget}
        self.params, self.train_configs, self.keys = [], [], []
        for i, config in enumerate(self.configs):
            n = count_params(_build(config, self.base.seed))["params_non_embedding"]
            target = tokens_per_run if tokens_per_run is not None else compute_budget / (6 * n)
            cfg = _run_config(self.base, target, config.block_size, i)
            self.params.append(n)
            self.train_configs.append(cfg)
            self.keys.append(_jsonable({"model": config.to_dict(), "train": _train_key(cfg),
                                        "data": data_id, "budget": budget,
                                        "eval_batches": eval_batches}))
        # each run's record once finished (read back from `out`, or trained), else None
        self.runs: list[dict | None] = [
            next(({**r, "reused": True} for r in self._stored if _same_run(r.get("key"), key)), None)
            for key in self.keys]

    def __len__(self) -> int:
        return len(self.configs)

    def next_missing(self) -> int | None:
        """The first run not finished yet, or None when all are."""
        return next((i for i, run in enumerate(self.runs) if run is None), None)

    def trainer(self, i: int) -> Trainer:
        """A `Trainer` for run i: its model's first weights drawn by the sweep's seed, its
        max_steps the run's budget."""
        return Trainer(_build(self.configs[i], self.base.seed), self.dataset, self.train_configs[i])

    def record(self, i: int, trainer: Trainer) -> dict:
        """Run i's record from its finished `trainer` (after a final evaluation); kept in
        `runs[i]` and written to `out`."""
        if trainer.step_count < self.train_configs[i].max_steps:
            raise ConfigError(f"run {i} is at step {trainer.step_count} of "
                              f"{self.train_configs[i].max_steps}; record it once it has finished")
        final = trainer.evaluate(self.eval_batches)
        counts = count_params(trainer.model)
        rows = trainer.history.to_json()
        keep = sorted(set(downsample(len(rows), self.history_points)) |
                      {j for j, r in enumerate(rows) if r["val_loss"] is not None})
        run = {
            "model": self.configs[i].to_dict(), "train": self.train_configs[i].to_dict(), **counts,
            "tokens": trainer.tokens_seen, "steps": trainer.step_count,
            "flops": training_flops(counts["params_non_embedding"], trainer.tokens_seen),
            "wall_time": trainer.wall_time,
            "train_loss": final["train_loss"], "val_loss": final["val_loss"],
            "history": [rows[j] for j in keep], "key": self.keys[i],
        }
        if self.path is not None:  # what another sweep on the same file recorded meanwhile stays
            self._stored = _read(self.path)
        self._stored = [r for r in self._stored if not _same_run(r.get("key"), run["key"])] + [run]
        if self.path is not None:
            _write(self.path, self._stored)
        self.runs[i] = {**run, "reused": False}
        return self.runs[i]

    def results(self) -> Sweep:
        """The finished runs, in the order of the sizes (`complete` False if some are missing)."""
        runs = Sweep(run for run in self.runs if run is not None)
        runs.path = self.path
        runs.complete = len(runs) == len(self)
        return runs


def _dataset(corpus, block_size: int) -> TokenDataset:
    if isinstance(corpus, TokenDataset):
        return corpus
    if not isinstance(corpus, str):
        raise CorpusError(f"corpus must be a corpus name, a text or a TokenDataset, not "
                          f"{type(corpus).__name__}")
    if corpus in CORPORA:
        return TokenDataset(load_corpus(corpus), block_size=block_size)
    if len(corpus) < 200 and "\n" not in corpus:
        raise CorpusError(f"no corpus named {corpus!r} (the corpora are {', '.join(CORPORA)}); to "
                          "train on your own text pass the text itself (at least a few thousand "
                          "characters) or a TokenDataset")
    return TokenDataset(corpus, block_size=block_size)


def _configs(sizes, dataset: TokenDataset) -> list[GPTConfig]:
    if isinstance(sizes, (str, dict, GPTConfig)) or not sizes:
        raise ConfigError("sizes must be a non-empty list of model shapes, e.g. "
                          "[dict(n_layer=2, n_head=2, n_embd=w) for w in (16, 32, 64)]")
    configs = []
    for size in sizes:
        if isinstance(size, GPTConfig):
            config = size
        elif isinstance(size, dict):
            config = GPTConfig(**{"block_size": dataset.block_size, **size})
        elif isinstance(size, str):
            config = GPTConfig.preset(size)
        else:
            raise ConfigError(f"a size must be a GPTConfig, a dict of its fields or a preset name "
                              f"({', '.join(PRESETS)}), not {type(size).__name__}")
        configs.append(config.replace(vocab_size=dataset.vocab_size))
    blocks = sorted({c.block_size for c in configs})
    if len(blocks) > 1:
        raise ConfigError(f"the sizes have block_size {blocks}; a sweep compares models on one "
                          "context length: give every size the same block_size")
    if len(set(configs)) < len(configs):
        raise ConfigError("two sizes have the same shape; list each shape once")
    return configs


def _train_config(train) -> TrainConfig:
    if train is None or isinstance(train, dict):
        return TrainConfig(**{**SWEEP_TRAIN, **(train or {})})
    if isinstance(train, TrainConfig):
        return train
    raise ConfigError(f"train= takes a TrainConfig or a dict of its fields, not {type(train).__name__}")


def tokens_per_step(cfg: TrainConfig, block_size: int) -> int:
    """Training tokens in one optimizer step: batch_size × grad_accum_steps × block_size."""
    return cfg.tokens_per_step(block_size)


def _run_config(base: TrainConfig, tokens: float, block_size: int, i: int) -> TrainConfig:
    per_step = tokens_per_step(base, block_size)
    steps = math.ceil(tokens / per_step - 1e-9)
    if tokens < per_step / 2:
        raise ConfigError(f"size {i} would train on {tokens:,.0f} tokens, less than half a step of "
                          f"batch_size × grad_accum_steps × block_size = {per_step} tokens; raise "
                          "the budget")
    return replace(base, max_steps=steps, warmup_steps=min(base.warmup_steps, steps // 10),
                   lr_decay_steps=None)


def _train_key(cfg: TrainConfig) -> dict:
    """Settings that change what a run learns (where it runs does not count)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("device", "compile")}


def _same_run(stored, key: dict) -> bool:
    """Whether a run read from `out` is the run `key` describes. A setting added to lmlab
    after the file was written is absent from its key: the run matches when the new
    setting is at its default (the run was trained as if it had been)."""
    if not isinstance(stored, dict) or not isinstance(stored.get("train"), dict):
        return False
    defaults = TrainConfig().to_dict()
    train = {**{k: v for k, v in _jsonable(defaults).items() if k in key["train"]}, **stored["train"]}
    return {**stored, "train": train} == key


def _fingerprint(dataset: TokenDataset) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(dataset.tokenizer.to_dict(), sort_keys=True).encode())
    for part in (dataset.train_ids, dataset.val_ids):
        h.update(b"|" + part.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _jsonable(obj):
    return json.loads(json.dumps(obj))  # tuples as lists: compares equal to what the file holds


def _build(config: GPTConfig, seed: int) -> GPT:
    """A model whose first weights are drawn by `seed`; the caller's global RNG is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(config)


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not a readable sweep file ({e}); delete it or pick another out=") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("runs"), list):
        raise DataError(f"{path} is not an lmlab sweep file; pick another out= (it is not overwritten)")
    return data["runs"]


def _write(path: Path, runs: list[dict]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, "runs": runs}, indent=1),
                       encoding="utf-8")


def compute_frontier(curves, points: int = 60):
    """The compute-efficient frontier of several training curves: for each compute C on a
    log-spaced grid of `points` from the least to the most compute any curve reached, the
    lowest loss any curve had reached by C. curves: (flops [n], loss [n]) pairs, flops
    increasing (FLOPs, e.g. `training_flops(N, tokens)` along a run; losses in nats).
    Returns (grid, best) lists, or None for fewer than two curves."""
    curves = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in curves]
    curves = [(x, y) for x, y in curves if len(x)]
    if len(curves) < 2:
        return None
    lo, hi = min(x[0] for x, _ in curves), max(x[-1] for x, _ in curves)
    if not lo > 0 or hi <= lo:
        return None
    grid = np.logspace(math.log10(lo), math.log10(hi), points)
    grid[0], grid[-1] = lo, hi  # exactly: logspace's ends can round inwards
    best = np.full(points, np.inf)
    for x, y in curves:
        # a run's loss by compute c: the lowest it reached at or before c
        running = np.minimum.accumulate(np.where(np.isfinite(y), y, np.inf))
        at = np.searchsorted(x, grid, side="right") - 1
        ok = at >= 0
        best[ok] = np.minimum(best[ok], running[at[ok]])
    keep = np.isfinite(best)
    return grid[keep].tolist(), best[keep].tolist()


# ---- fitting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLaw:
    """L(N) = a·N^(−alpha) + c, with standard errors (`*_err`; 0 for a value fixed a
    priori, nan with no degree of freedom left or for c = 0 at its bound). L is in the units it was fitted in
    (nats), N in its own (parameters, FLOPs, tokens). `rmse` is the fit's root mean
    square residual in log L. `pure` is the pure power law (c = 0), fitted by linear
    regression of log L on log N."""

    a: float
    alpha: float
    c: float
    a_err: float
    alpha_err: float
    c_err: float
    rmse: float
    n_points: int
    pure: PowerLaw | None = None

    def predict(self, N):
        """L at N (a number or an array of them; an array of the same shape back)."""
        N = np.asarray(N, dtype=np.float64)
        if np.any(~(N > 0)):
            raise ConfigError("predict() takes positive N")
        L = self.a * N ** -self.alpha + self.c
        return float(L) if L.ndim == 0 else L

    def __str__(self) -> str:
        text = (f"L(N) = {self.a:.4g}(±{self.a_err:.2g})·N^-{self.alpha:.4f}(±{self.alpha_err:.2g})"
                f" + {self.c:.4f}(±{self.c_err:.2g})")
        if self.pure is not None:
            text += f"; pure power law: {self.pure.a:.4g}·N^-{self.pure.alpha:.4f}(±{self.pure.alpha_err:.2g})"
        return text


def fit_power_law(N, L, *, c: float | None = None) -> PowerLaw:
    """Fit L(N) = a·N^(−alpha) + c to points N [n], L [n] (positive numbers: e.g.
    non-embedding parameters and validation losses in nats).

    Least squares on log L (errors relative to L), by Levenberg–Marquardt started from
    the best of a grid of offsets c; standard errors from the covariance
    s²·(JᵀJ)⁻¹ at the optimum (J the Jacobian of the residuals in a, alpha, c;
    s² = residual sum of squares / (n − parameters)). `c=` fixes the offset (the
    irreducible loss) a priori; it must be below every L. A fitted c is kept >= 0 (a
    cross-entropy is never negative): when the data show no floor, c = 0, c_err is nan
    and a, alpha are those of the pure power law. The returned law's `pure` is the
    c = 0 fit by linear regression of log L on log N.
    """
    N, L = _check_points(N, L, 2 if c is not None else 3)
    pure = _fit_pure(N, L)
    if c is not None:
        if not isinstance(c, (int, float)) or isinstance(c, bool) or not math.isfinite(c):
            raise ConfigError(f"c={c!r} must be a finite number (the loss no size goes below)")
        if c >= L.min():
            raise ConfigError(f"c={c} is not below every L (the smallest is {L.min():.6g}); the fixed "
                              "offset is the loss approached as N grows, so it must be lower")
        theta = _lm(N, L, _init_with_c(N, L, c), free=[True, True, False])
    else:
        theta = _lm(N, L, _init_free(N, L), free=[True, True, True])
        if theta[2] < 0:  # no floor in the data: the best offset allowed is 0
            theta = _lm(N, L, _init_with_c(N, L, 0.0), free=[True, True, False])
    log_a, alpha, c_fit = theta
    r, J = _residuals(N, L, theta)
    J = J * np.array([1 / math.exp(log_a), 1.0, 1.0])  # d/d(log a) -> d/da
    c_free = c is None and c_fit > 0
    errors = _std_errors(r, J[:, [True, True, c_free]])
    a_err, alpha_err = errors[:2]
    c_err = errors[2] if c_free else 0.0 if c is not None else math.nan
    return PowerLaw(math.exp(log_a), float(alpha), float(c_fit), a_err, alpha_err, c_err,
                    float(np.sqrt(np.mean(r ** 2))), len(N), pure)


def _check_points(N, L, params: int):
    try:
        N = np.asarray(N, dtype=np.float64)
        L = np.asarray(L, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"N and L must be sequences of numbers ({e})") from e
    if N.ndim != 1 or L.ndim != 1 or len(N) != len(L):
        raise ConfigError(f"N and L must be 1-D and of one length; got shapes {N.shape} and {L.shape}")
    if len(N) < params:
        names = "a, alpha, c" if params == 3 else "a, alpha"
        hint = "" if params == 2 else ", or fix the offset with c=..."
        raise ConfigError(f"{len(N)} point{'s' * (len(N) != 1)} cannot determine {params} parameters "
                          f"({names}); give at least {params} points{hint}")
    for name, v in (("N", N), ("L", L)):
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ConfigError(f"every {name} must be a positive finite number; got {v.tolist()}")
    if np.ptp(np.log(N)) == 0:
        raise ConfigError("every N is the same; a power law needs points at different N")
    return N, L


def _fit_pure(N, L) -> PowerLaw:
    """log L = log a − alpha·log N by ordinary least squares, with standard errors."""
    x, y = np.log(N), np.log(L)
    X = np.stack([np.ones_like(x), x], axis=1)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = X @ beta - y
    err_log_a, err_slope = _std_errors(r, X)
    a = math.exp(beta[0])
    return PowerLaw(a, float(-beta[1]), 0.0, a * err_log_a, err_slope, 0.0,
                    float(np.sqrt(np.mean(r ** 2))), len(N))


def _std_errors(r, J) -> list[float]:
    """Standard errors of least-squares parameters: sqrt(diag(s²·(JᵀJ)⁻¹))."""
    dof = len(r) - J.shape[1]
    if dof <= 0:
        return [math.nan] * J.shape[1]
    cov = (r @ r / dof) * np.linalg.pinv(J.T @ J)
    return [float(math.sqrt(max(v, 0.0))) for v in np.diag(cov)]


def _residuals(N, L, theta):
    """Residuals log(a·N^−alpha + c) − log L [n] and their Jacobian in (log a, alpha, c) [n, 3]."""
    log_a, alpha, c = theta
    P = np.exp(log_a - alpha * np.log(N))
    f = P + c
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(f) - np.log(L)
    J = np.stack([P / f, -P * np.log(N) / f, 1 / f], axis=1)
    return r, J


def _init_with_c(N, L, c):
    """(log a, alpha, c) from a line through log(L − c) against log N."""
    slope, intercept = np.polyfit(np.log(N), np.log(L - c), 1)
    return np.array([intercept, -slope, c])


def _init_free(N, L):
    """The best start over a grid of offsets c in [0, min L)."""
    best, best_cost = None, math.inf
    for c in L.min() * np.linspace(0, 0.999, 200):
        theta = _init_with_c(N, L, c)
        r, _ = _residuals(N, L, theta)
        cost = r @ r
        if np.isfinite(cost) and cost < best_cost:
            best, best_cost = theta, cost
    return best


def _lm(N, L, theta, free, iters: int = 500):
    """Levenberg–Marquardt on the residuals; parameters not `free` stay as given."""
    free = np.array(free)
    theta = theta.astype(np.float64)
    r, J = _residuals(N, L, theta)
    cost, damping = r @ r, 1e-3
    for _ in range(iters):
        Jf = J[:, free]
        A, g = Jf.T @ Jf, Jf.T @ r
        try:
            step = np.linalg.solve(A + damping * np.diag(np.diag(A) + 1e-12), -g)
        except np.linalg.LinAlgError:
            damping *= 10
            continue
        trial = theta.copy()
        trial[free] += step
        r2, J2 = _residuals(N, L, trial)
        cost2 = r2 @ r2
        if np.isfinite(cost2) and cost2 <= cost:
            done = cost - cost2 <= 1e-15 * max(cost, 1e-300) or np.all(np.abs(step) < 1e-12)
            theta, r, J, cost = trial, r2, J2, cost2
            damping = max(damping / 3, 1e-12)
            if done:
                break
        else:
            damping *= 4
            if damping > 1e12:
                break
    return theta
