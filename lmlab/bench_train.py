"""Training benchmarks on nanoGPT's CPU configuration for character-level tiny
Shakespeare: 4 layers, 4 heads, 128 wide, context 64, batch 12, no bias, dropout 0,
lr 1e-3 cosine to 1e-4 over 2000 steps with 100 warmup, beta2 0.99."""

from __future__ import annotations

import time

import torch

from .data import TokenDataset, load_corpus
from .model import GPT, GPTConfig
from .train import TrainConfig, Trainer, make_optimizer

NANOGPT_CPU_VAL_LOSS = 1.88  # nanoGPT README, after 2000 iterations


def cpu_setup(seed: int = 1337, **train_overrides):
    """(model, dataset, config) of nanoGPT's CPU configuration."""
    text = load_corpus("shakespeare")
    dataset = TokenDataset(text, block_size=64, seed=seed)
    torch.manual_seed(seed)
    model = GPT(GPTConfig.preset("tiny", vocab_size=dataset.vocab_size, bias=False, dropout=0.0))
    settings = dict(batch_size=12, max_steps=2000, learning_rate=1e-3, min_lr=1e-4,
                    warmup_steps=100, lr_decay_steps=2000, betas=(0.9, 0.99), weight_decay=0.1,
                    grad_clip=1.0, eval_interval=250, eval_batches=20, seed=seed, device="cpu")
    config = TrainConfig(**{**settings, **train_overrides})
    return model, dataset, config


def bench_quality():
    model, dataset, config = cpu_setup()
    print(f"nanoGPT CPU configuration: {model.num_params() / 1e6:.2f}M parameters, "
          f"{config.max_steps} steps of {config.batch_size}x{dataset.block_size} tokens")
    trainer = Trainer(model, dataset, config)
    trainer.on_eval(lambda t, e: print(
        f"step {e['step']:>5}: train {e['train_loss']:.4f}  val {e['val_loss']:.4f}", flush=True))
    t0 = time.perf_counter()
    trainer.run(progress=False)
    wall = time.perf_counter() - t0
    val = trainer.last_eval["val_loss"]
    verdict = "meets" if val <= NANOGPT_CPU_VAL_LOSS else "MISSES"
    print(f"final validation loss {val:.4f} (nanoGPT: {NANOGPT_CPU_VAL_LOSS}; {verdict} it), "
          f"wall time {wall:.0f} s")
    return val, wall


def _bare_loop(model, dataset, config, hf: bool = False):
    """A plain nanoGPT-style step: batch, forward, backward, clip, AdamW, same schedule."""
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(config.seed)
    state = {"it": 0}

    def step():
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(state["it"])
        x, y = dataset.batch("train", config.batch_size, generator=generator)
        if hf:
            logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        else:
            loss = model(x, y).loss
        loss.backward()
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
        "transformers": _bare_loop(hf_model, dataset, config, hf=True),
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
