"""`python -m lmlab.bench dashboard`: training speed with and without a live dashboard."""

from __future__ import annotations

import time

from lmlab.bench_train import cpu_setup
from lmlab.model import GPT
from lmlab.train import Trainer

from ._comm import recording_comms
from .dashboard import TrainingDashboard


def bench_dashboard(rounds: int = 6, steps: int = 100):
    """nanoGPT's CPU configuration trained headless (`trainer.run`) and with a dashboard
    attached (`dashboard.run`; its comms live: every message JSON-encoded as a kernel
    would, no browser), in alternating rounds of `steps` steps; tokens/s of each and their
    ratio. Then the same dashboard driven by Start, on the trainer's background thread."""
    model, dataset, config = cpu_setup(eval_interval=250)
    headless = Trainer(model, dataset, config)
    with recording_comms() as log:
        twin = GPT(model.config)
        twin.load_state_dict(model.state_dict())
        watched = Trainer(twin, dataset, config)
        dashboard = TrainingDashboard(watched, prompt="ROMEO:")
        start_messages = len(log)
        elapsed = {"headless": 0.0, "dashboard": 0.0}
        for _ in range(rounds):
            for name, run in (("headless", lambda: headless.run(steps, progress=False)),
                              ("dashboard", lambda: dashboard.run(steps))):
                t0 = time.perf_counter()
                run()
                elapsed[name] += time.perf_counter() - t0
        sent = log[start_messages:]
        t0 = time.perf_counter()
        dashboard.steps_input.value = str(watched.step_count + steps * 2)
        dashboard.start_button.click()
        watched.join()
        background = steps * 2 * config.batch_size * dataset.block_size / (time.perf_counter() - t0)
    tokens = rounds * steps * config.batch_size * dataset.block_size
    tps = {name: tokens / t for name, t in elapsed.items()}
    ratio = tps["dashboard"] / tps["headless"]
    print(f"training tokens/s, nanoGPT CPU configuration, {rounds * steps} steps each")
    print(f"  headless            {tps['headless']:>10,.0f}")
    print(f"  with dashboard      {tps['dashboard']:>10,.0f}")
    print(f"  ratio               {ratio:.3f}x (budget >= 0.95)")
    print(f"  dashboard sent {len(sent)} messages, {sum(s for _, s in sent) / 1e3:,.0f} kB "
          f"({len(sent) / elapsed['dashboard']:.1f} messages/s), "
          f"{len(dashboard._samples)} samples")
    print(f"  Start button (background thread) {background:>10,.0f} "
          f"({background / tps['headless']:.2f}x headless: OpenMP's second thread pool)")
    return ratio
