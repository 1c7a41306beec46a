"""Benchmarks: `python -m lmlab.bench NAME`, NAME one of those below.

One harness for every speed figure: the runners being compared take turns, round after
round in one process (or one kernel), so the machine's drift hits them alike; the
result is printed as tokens/s with each runner's ratio to a baseline. Figures are
printed, never asserted.

    forward    lmlab's GPT vs transformers' GPT2LMHeadModel, forward + backward
    train      lmlab's Trainer vs a bare training loop vs the same loop on transformers
    quality    final losses, lmlab's Trainer vs nanoGPT's procedure, over seeds
    attention  attention capture vs a plain forward, and vs transformers' capture
    sampling   generation with the key/value cache vs without, and vs transformers
    distributed  training tokens/s of 1 process vs 2 DDP processes (gloo), one thread each
    dashboard  training in a real Jupyter kernel: run() vs the dashboard's Start
    views      the views on a GPT-2-shaped model: forwards and milliseconds per interaction in a
               real kernel, recording every activation vs a plain forward, training with the
               activation points unread vs none; with --browser, click-to-repaint in Chromium
    interp     direct logit attribution vs a forward; the residual patching grid vs the forwards it
               stands for, and vs TransformerLens 4's patching on the same weights
    timeline   training with snapshots (and health) vs without; one move of the timeline view
               over six linked views, milliseconds
    device     the checks that need a CUDA GPU (CUDA, bf16, fused AdamW, compile, restore,
               MFU, the views' pass), one table; without a GPU it says so and exits 0
"""

from __future__ import annotations

import time
from typing import Callable


def interleaved(runners: dict[str, Callable], rounds: int, warmup: bool = True) -> dict[str, float]:
    """Seconds each runner took over `rounds` alternating rounds.

    A runner is a callable doing one round. When it returns a number, that is the
    round's duration in seconds as the runner measured it itself (e.g. inside a Jupyter
    kernel, without the messaging around it); otherwise the call is timed here. With
    `warmup`, each runner does one untimed round first."""
    if warmup:
        for run in runners.values():
            run()
    elapsed = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            own = run()
            elapsed[name] += own if isinstance(own, (int, float)) else time.perf_counter() - t0
    return elapsed


def repeat(fn: Callable, times: int) -> Callable:
    """A runner whose round is `fn()` called `times` times."""
    def round_():
        for _ in range(times):
            fn()
    return round_


def rates(elapsed: dict[str, float], work: float) -> dict[str, float]:
    """Work per second of each runner, given the total `work` (e.g. tokens) each did."""
    return {name: work / seconds for name, seconds in elapsed.items()}


def report(title: str, per_second: dict[str, float], baseline: str, unit: str = "tokens/s",
           notes: dict[str, str] | None = None) -> dict[str, float]:
    """Print one table: each runner's rate and its ratio to `baseline`. Returns the ratios."""
    notes = notes or {}
    width = max(len(name) for name in per_second)
    print(title)
    print(f"  {'':{width}}  {unit:>12}  ratio to {baseline}")
    ratios = {}
    for name, value in per_second.items():
        ratios[name] = value / per_second[baseline]
        note = f"  {notes[name]}" if name in notes else ""
        print(f"  {name:{width}}  {value:>12,.0f}  {ratios[name]:.3f}x{note}")
    return ratios


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, linearly interpolated between ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def report_latency(title: str, samples: dict[str, list[float]], unit: str = "ms",
                   notes: dict[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """Print one table: each action's p50 and p95 over its samples (in `unit`), how many
    samples, and a note (e.g. the goal). Returns {action: (p50, p95)}."""
    notes = notes or {}
    width = max(len(name) for name in samples)
    print(title)
    print(f"  {'':{width}}  {'p50 ' + unit:>10}  {'p95 ' + unit:>10}  {'n':>4}")
    out = {}
    for name, values in samples.items():
        out[name] = (percentile(values, 50), percentile(values, 95))
        note = f"  {notes[name]}" if name in notes else ""
        print(f"  {name:{width}}  {out[name][0]:>10,.1f}  {out[name][1]:>10,.1f}  {len(values):>4}{note}")
    return out
