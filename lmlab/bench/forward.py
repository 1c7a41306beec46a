"""Forward + backward speed: lmlab's GPT against transformers' GPT2LMHeadModel."""

from __future__ import annotations

import torch

from ..model import GPT, GPTConfig
from . import interleaved, rates, repeat, report
from .peers import hf_twin, train_loss

SHAPES = (("tiny", 12, 10), ("small", 4, 3))  # preset, batch, steps a round


def _fwd_bwd(model, x, y):
    def step():
        train_loss(model, x, y).backward()
        model.zero_grad(set_to_none=True)
    return step


def bench_forward(rounds: int = 3) -> dict:
    """Forward + backward tokens/s on random tokens, same shapes and weights. Returns
    {preset: lmlab / transformers}."""
    out = {}
    for preset, batch, steps in SHAPES:
        config = GPTConfig.preset(preset, vocab_size=65)
        torch.manual_seed(0)
        ours = GPT(config)
        x = torch.randint(65, (batch, config.block_size))
        y = torch.randint(65, (batch, config.block_size))
        elapsed = interleaved({"lmlab": repeat(_fwd_bwd(ours, x, y), steps),
                               "transformers": repeat(_fwd_bwd(hf_twin(ours), x, y), steps)}, rounds)
        ratios = report(f"forward+backward, {preset} preset, batch {batch}x{config.block_size}, "
                        f"fp32, {torch.get_num_threads()} CPU threads",
                        rates(elapsed, rounds * steps * x.numel()), baseline="transformers")
        out[preset] = ratios["lmlab"]
    return out
