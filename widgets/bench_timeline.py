"""`python -m lmlab.bench timeline`: what the training timeline costs.

1. Training speed with a `Timeline` (the default schedule, float16 snapshots) and with it
   and the health measurements (every 10 steps), against none, in alternating rounds on
   nanoGPT's CPU configuration (`tiny`). Goal: snapshots ≥ 0.97x.
2. The scrub: one move of a `TimelineView` over a 20-snapshot `tiny` run, redrawing the
   dashboard, explorer, logit lens, embeddings map, stepper and model comparison on a
   64-token text, timed in this process (the kernel's side of a move; a browser adds the
   repaint). Goal: p95 ≤ 300 ms.
"""

from __future__ import annotations

import argparse
import time

import torch

from lmlab.bench import interleaved, rates, report, report_latency
from lmlab.bench.training import cpu_setup
from lmlab.model import GPT
from lmlab.timeline import Timeline
from lmlab.train import Trainer

STEPS = 100  # a round


def bench_overhead(rounds: int) -> dict:
    model, dataset, config = cpu_setup()

    def twin(**timeline):
        m = GPT(model.config)
        m.load_state_dict(model.state_dict())
        trainer = Trainer(m, dataset, config)
        if timeline:
            Timeline(trainer, **timeline)
        return trainer

    trainers = {"no timeline": twin(), "snapshots": twin(health=0),
                "snapshots + health": twin(health=10)}

    def runner(trainer):
        def round_():
            trainer.update_config(max_steps=trainer.step_count + STEPS)
            trainer.run(progress=False)
        return round_

    elapsed = interleaved({name: runner(t) for name, t in trainers.items()}, rounds)
    tokens = rounds * STEPS * config.batch_size * dataset.block_size
    kept = trainers["snapshots"].timeline
    return report(f"training with a timeline, tiny, {rounds} rounds of {STEPS} steps "
                  f"({len(kept.steps)} snapshots kept, {kept.nbytes / 2**20:.1f} MiB)",
                  rates(elapsed, tokens), "no timeline",
                  notes={"snapshots": "goal >= 0.97x"})


def bench_scrub(moves: int) -> dict:
    from lmlab.widgets import (AttentionExplorer, EmbeddingMap, LogitLensView, ModelComparison,
                               SamplingStepper, TimelineView, TrainingDashboard)

    model, dataset, config = cpu_setup(max_steps=200, eval_interval=100)
    trainer = Trainer(model, dataset, config)
    timeline = Timeline(trainer, every=10)  # 21 snapshots: 0, 10, ..., 200
    trainer.run(progress=False)
    text = dataset.tokenizer.decode(dataset.val_ids[:64].tolist())
    stepper = SamplingStepper(model, dataset.tokenizer, "ROMEO:", seed=0)
    stepper.stepper.greedy(20)
    other = Trainer(GPT(model.config), dataset, config)
    views = [TrainingDashboard(trainer), AttentionExplorer(trainer=trainer, text=text),
             LogitLensView(trainer=trainer, text=text), EmbeddingMap(trainer=trainer), stepper,
             ModelComparison(trainers={"run": trainer, "fresh": other}, text=text)]
    view = TimelineView(timeline, views, context="ROMEO", token=":")
    steps, samples = timeline.steps, []
    for i in range(moves):
        step = steps[(i * 7) % len(steps)]  # hops across the run, as a drag lets go anywhere
        t0 = time.perf_counter()
        view.show(step)
        samples.append((time.perf_counter() - t0) * 1e3)
    return report_latency(f"one move of the timeline, {len(views)} linked views, tiny, 64 tokens "
                          "(in this process)", {"move": samples}, notes={"move": "goal p95 <= 300 ms"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmlab.bench timeline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--moves", type=int, default=30)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    bench_overhead(args.rounds)
    bench_scrub(args.moves)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
