"""Quality: the validation loss lmlab's Trainer reaches in nanoGPT's CPU configuration,
side by side with nanoGPT's own training procedure re-implemented here on lmlab's model.

Two kinds of figure appear and are labelled apart: what is *run here* (both columns of
the table) and what is *quoted* from nanoGPT (its README's "1.88", and 1.8857, the
validation loss its `train.py` logs at step 2000 with seed 1337 — a log line, not run here).
"""

from __future__ import annotations

import time

import torch

from ..model import GPT
from ..train import Trainer, make_optimizer
from .training import cpu_setup

QUOTED_README_VAL_LOSS = 1.88  # nanoGPT's README: "gets us a loss of only 1.88"
QUOTED_LOG_VAL_LOSS = 1.8857  # nanoGPT's train.py log at step 2000, seed 1337


def lmlab_run(seed: int) -> dict:
    """lmlab's Trainer, as a user runs it; the final evaluation."""
    model, dataset, config = cpu_setup(seed)
    trainer = Trainer(model, dataset, config)
    trainer.run(progress=False)
    return trainer.last_eval


@torch.no_grad()
def _estimate(model, batch, iters: int) -> dict:
    model.eval()
    out = {s: sum(model(*batch(s)).loss.item() for _ in range(iters)) / iters
           for s in ("train", "val")}
    model.train()
    return out


def nanogpt_run(seed: int) -> dict:
    """nanoGPT's train.py procedure, random stream included, on lmlab's GPT: one global
    seed for the weights, the batches (prefetched) and the evaluations at every 250th
    iteration from 0, train/val split at int(0.9 n), AdamW unfused on the CPU. With seed
    1337 it prints the losses nanoGPT's log shows."""
    model, dataset, config = cpu_setup(seed)
    data = torch.cat([dataset.train_ids, dataset.val_ids])
    split = int(len(data) * 0.9)
    parts = {"train": data[:split], "val": data[split:]}
    torch.manual_seed(seed)
    model = GPT(model.config)
    optimizer = make_optimizer(model, config, torch.device("cpu"), fused=False)
    T, B = dataset.block_size, config.batch_size

    def batch(name):
        d = parts[name]
        ix = torch.randint(len(d) - T, (B,))
        return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + 1 + T] for i in ix])

    x, y = batch("train")
    it, last = 0, None
    while True:
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(it)
        if it % config.eval_interval == 0:
            last = _estimate(model, batch, config.eval_batches)
        if it == config.max_steps:
            return {"train_loss": last["train"], "val_loss": last["val"]}
        loss = model(x, y).loss
        x, y = batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        it += 1


def bench_quality(seeds: int = 1):
    """Final losses after 2000 steps, lmlab's Trainer and nanoGPT's procedure side by
    side, for `seeds` seeds (1337, 1, 2, ...). Returns (lmlab's, the procedure's) val losses."""
    print("nanoGPT CPU configuration (0.80M parameters, 2000 steps of 12x64 tokens); losses "
          "after step 2000, 20 evaluation batches each; every figure in the table is run here")
    print(f"{'seed':>6} {'lmlab Trainer':>14} {'':>8} {'nanoGPT procedure':>18} {'':>8} {'lmlab':>7}")
    print(f"{'':>6} {'train':>14} {'val':>8} {'train':>18} {'val':>8} {'s':>7}")
    ours, ref = [], []
    for seed in [1337, *range(1, seeds)]:
        t0 = time.perf_counter()
        a = lmlab_run(seed)
        wall = time.perf_counter() - t0
        b = nanogpt_run(seed)
        ours.append(a["val_loss"])
        ref.append(b["val_loss"])
        print(f"{seed:>6} {a['train_loss']:>14.4f} {a['val_loss']:>8.4f} "
              f"{b['train_loss']:>18.4f} {b['val_loss']:>8.4f} {wall:>7.0f}", flush=True)
    mean = sum(ours) / len(ours), sum(ref) / len(ref)
    print(f"  mean val loss over {len(ours)} seed(s), run here: lmlab Trainer {mean[0]:.4f}, "
          f"nanoGPT procedure {mean[1]:.4f}")
    print(f"  quoted, not run here: nanoGPT's README {QUOTED_README_VAL_LOSS}; its train.py log "
          f"shows val loss {QUOTED_LOG_VAL_LOSS} at step 2000 with seed 1337 (the procedure "
          f"above printed {ref[0]:.4f} for that seed)")
    return ours, ref
