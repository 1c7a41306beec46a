"""Training benchmarks on nanoGPT's CPU configuration for character-level tiny
Shakespeare: 4 layers, 4 heads, 128 wide, context 64, batch 12, no bias, dropout 0,
lr 1e-3 cosine to 1e-4 over 2000 steps with 100 warmup, beta2 0.99."""

from __future__ import annotations

import time

import torch

from .data import TokenDataset, load_corpus
from .model import GPT, GPTConfig
from .train import TrainConfig, Trainer, make_optimizer

NANOGPT_README_VAL_LOSS = 1.88  # nanoGPT README: "gets us a loss of only 1.88"
NANOGPT_LOG_VAL_LOSS = 1.8857  # what nanoGPT's train.py prints at step 2000 (seed 1337)


def cpu_setup(seed: int = 1337, **train_overrides):
    """(model, dataset, config) of nanoGPT's CPU configuration."""
    text = load_corpus("shakespeare")
    dataset = TokenDataset(text, block_size=64)
    torch.manual_seed(seed)
    model = GPT(GPTConfig.preset("tiny", vocab_size=dataset.vocab_size, bias=False, dropout=0.0))
    settings = dict(batch_size=12, max_steps=2000, learning_rate=1e-3, min_lr=1e-4,
                    warmup_steps=100, lr_decay_steps=2000, betas=(0.9, 0.99), weight_decay=0.1,
                    grad_clip=1.0, eval_interval=250, eval_batches=20, seed=seed, device="cpu")
    config = TrainConfig(**{**settings, **train_overrides})
    return model, dataset, config


def lmlab_run(seed: int) -> dict:
    """lmlab's Trainer on the CPU configuration; the final evaluation."""
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
    iteration from 0, train/val split at int(0.9 n). With seed 1337 it reproduces the
    losses nanoGPT prints."""
    _, dataset, config = cpu_setup(seed)
    data = torch.cat([dataset.train_ids, dataset.val_ids])
    split = int(len(data) * 0.9)
    parts = {"train": data[:split], "val": data[split:]}
    torch.manual_seed(seed)
    model = GPT(GPTConfig.preset("tiny", vocab_size=dataset.vocab_size, bias=False))
    optimizer = make_optimizer(model, config, torch.device("cpu"))
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
    side on the same model code, for `seeds` seeds (1337, 1, 2, ...)."""
    print("nanoGPT CPU configuration (0.80M parameters, 2000 steps of 12x64 tokens); "
          "losses after step 2000, 20 evaluation batches each")
    print(f"{'seed':>6} {'lmlab train':>12} {'lmlab val':>10} {'nanoGPT train':>14} "
          f"{'nanoGPT val':>12} {'lmlab s':>8}")
    ours, ref = [], []
    for seed in [1337, *range(1, seeds)]:
        t0 = time.perf_counter()
        a = lmlab_run(seed)
        wall = time.perf_counter() - t0
        b = nanogpt_run(seed)
        ours.append(a["val_loss"])
        ref.append(b["val_loss"])
        print(f"{seed:>6} {a['train_loss']:>12.4f} {a['val_loss']:>10.4f} "
              f"{b['train_loss']:>14.4f} {b['val_loss']:>12.4f} {wall:>8.0f}", flush=True)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    print(f"mean validation loss: lmlab {mean(ours):.4f}, nanoGPT procedure {mean(ref):.4f} "
          f"over {len(ours)} seed(s)")
    print(f"nanoGPT's README: {NANOGPT_README_VAL_LOSS}; its train.py prints "
          f"{NANOGPT_LOG_VAL_LOSS} for seed 1337. lmlab's Trainer "
          f"{'meets' if ours[0] <= NANOGPT_README_VAL_LOSS else 'does not meet'} "
          f"<= {NANOGPT_README_VAL_LOSS} with seed 1337 ({ours[0]:.4f}).")
    return ours, ref


def _bare_loop(model, dataset, config):
    """A plain nanoGPT-style step: batch, forward, backward, clip, AdamW, same schedule."""
    from .bench import train_loss

    optimizer = make_optimizer(model, config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(config.seed)
    state = {"it": 0}

    def step():
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(state["it"])
        x, y = dataset.batch("train", config.batch_size, generator=generator)
        train_loss(model, x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["it"] += 1
    return step


def bench_train(rounds: int = 5, steps: int = 20):
    from .bench import _hf_model, _interleaved
    from .pretrained import to_hf_state_dict

    model, dataset, config = cpu_setup(eval_interval=10**9)
    trainer = Trainer(model, dataset, config)
    bare_model = GPT(model.config)
    bare_model.load_state_dict(model.state_dict())
    hf_model = _hf_model(model.config)
    hf_model.load_state_dict(to_hf_state_dict(model), strict=False)
    tps = _interleaved({
        "Trainer": trainer.step,
        "bare loop": _bare_loop(bare_model, dataset, config),
        "transformers": _bare_loop(hf_model, dataset, config),
    }, rounds, steps, config.batch_size * dataset.block_size)
    print("training tokens/s, nanoGPT CPU configuration (tiny, 12x64, AdamW, fp32)")
    for name, value in tps.items():
        print(f"  {name:14} {value:>10,.0f}")
    overhead = 1 - tps["Trainer"] / tps["bare loop"]
    print(f"  Trainer / bare loop     {tps['Trainer'] / tps['bare loop']:.3f}x "
          f"(overhead {overhead * 100:+.1f}%)")
    print(f"  Trainer / transformers  {tps['Trainer'] / tps['transformers']:.2f}x")
    if torch.cuda.is_available():
        from .train import mfu

        print(f"  MFU on CUDA: {mfu(model, tps['Trainer'])}")
    return tps
