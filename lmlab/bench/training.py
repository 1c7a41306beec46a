"""Training speed: lmlab's Trainer against a bare nanoGPT-style loop on the same model,
and the same loop on transformers' GPT2LMHeadModel.

The `tiny` rows use nanoGPT's CPU configuration for character-level tiny Shakespeare:
4 layers, 4 heads, 128 wide, context 64, batch 12, no bias, dropout 0, lr 1e-3 cosine to
1e-4 over 2000 steps with 100 warmup, beta2 0.99, gradient clipping at 1.
"""

from __future__ import annotations

import torch

from ..data import TokenDataset, load_corpus
from ..model import GPT, GPTConfig
from ..train import TrainConfig, Trainer, optimizer_groups
from . import interleaved, rates, repeat, report
from .peers import hf_twin, train_loss

SHAPES = (("tiny", 12, 20), ("small", 4, 3))  # preset, batch, steps a round


def cpu_setup(seed: int = 1337, preset: str = "tiny", **train_overrides):
    """(model, dataset, config) of nanoGPT's CPU configuration (other presets: the same
    settings on that model, at its own context length)."""
    text = load_corpus("shakespeare")
    shape = GPTConfig.preset(preset, vocab_size=65, bias=False, dropout=0.0)
    dataset = TokenDataset(text, block_size=shape.block_size)
    torch.manual_seed(seed)
    model = GPT(shape.replace(vocab_size=dataset.vocab_size))
    settings = dict(batch_size=12, max_steps=2000, learning_rate=1e-3, min_lr=1e-4,
                    warmup_steps=100, lr_decay_steps=2000, betas=(0.9, 0.99), weight_decay=0.1,
                    grad_clip=1.0, eval_interval=250, eval_batches=20, seed=seed, device="cpu")
    config = TrainConfig(**{**settings, **train_overrides})
    return model, dataset, config


def bare_loop(model, dataset, config: TrainConfig):
    """One step of a plain nanoGPT-style loop: learning rate, batch, forward, backward,
    clip, torch's default AdamW (nanoGPT asks for the fused one on CUDA only)."""
    optimizer = torch.optim.AdamW(optimizer_groups(model, config), lr=config.lr_at(0),
                                  betas=tuple(config.betas))
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


def forward_backward(model, dataset, config: TrainConfig):
    """One step's forward and backward alone: no clip, no optimiser, no schedule. Every
    loop on this model does this much, so its rate is the ceiling of any loop's lead."""
    generator = torch.Generator().manual_seed(config.seed)

    def step():
        x, y = dataset.batch("train", config.batch_size, generator=generator)
        train_loss(model, x, y).backward()
        model.zero_grad(set_to_none=True)
    return step


def bench_train(rounds: int = 5) -> dict:
    """Training tokens/s of the Trainer, the bare loop and the bare loop on transformers,
    for each preset. Returns {preset: {runner: ratio to the bare loop}}."""
    out = {}
    for preset, batch, steps in SHAPES:
        model, dataset, config = cpu_setup(preset=preset, batch_size=batch, eval_interval=10**9)
        trainer = Trainer(model, dataset, config)
        twin = GPT(model.config)
        twin.load_state_dict(model.state_dict())
        elapsed = interleaved({
            "Trainer": repeat(trainer.step, steps),
            "bare loop": repeat(bare_loop(twin, dataset, config), steps),
            "bare loop on transformers": repeat(bare_loop(hf_twin(model), dataset, config), steps),
            "forward + backward only": repeat(forward_backward(twin, dataset, config), steps),
        }, rounds)
        per_s = rates(elapsed, rounds * steps * batch * dataset.block_size)
        optimizer = type(trainer.optimizer).__name__ + (
            " fused" if trainer.optimizer.defaults.get("fused") else "")
        out[preset] = report(
            f"training, {preset} preset, batch {batch}x{dataset.block_size}, fp32, "
            f"{torch.get_num_threads()} CPU threads (the Trainer's optimizer: {optimizer})",
            per_s, baseline="bare loop",
            notes={"forward + backward only": "(the ceiling: no loop on this model beats it)"})
        print(f"  Trainer / bare loop on transformers: "
              f"{per_s['Trainer'] / per_s['bare loop on transformers']:.3f}x", flush=True)
        if torch.cuda.is_available():
            from ..train import mfu

            print(f"  MFU on CUDA: {mfu(model, per_s['Trainer'])}")
    return out
