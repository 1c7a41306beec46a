"""Benchmarks: `python -m lmlab.bench {forward,train,quality,dashboard}`.

Each figure is measured side by side with its peer in the same process, rounds
interleaved so that the machine's drift hits both alike. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import time

import torch

from .model import GPT, GPTConfig
from .pretrained import gpt2_config_for, to_hf_state_dict


def _hf_model(config: GPTConfig):
    try:
        from transformers import GPT2LMHeadModel
    except ImportError as e:
        raise SystemExit("this benchmark compares with transformers: pip install 'lmlab[hf]'") from e

    hf_config = gpt2_config_for(config)
    hf_config._attn_implementation = "sdpa"  # transformers' fastest CPU attention
    return GPT2LMHeadModel(hf_config)


def _interleaved(runners: dict, rounds: int, steps: int, tokens_per_step: int) -> dict:
    """tokens/s of each runner (a callable doing one step), timed in alternating rounds."""
    for run in runners.values():  # warm-up
        run()
    elapsed = {name: 0.0 for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                run()
            elapsed[name] += time.perf_counter() - t0
    return {name: rounds * steps * tokens_per_step / t for name, t in elapsed.items()}


def train_loss(model, x, y):
    """Cross-entropy of next-token logits for lmlab's GPT or transformers' GPT2LMHeadModel."""
    if isinstance(model, GPT):
        return model(x, y).loss
    logits = model(input_ids=x).logits
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))


def _fwd_bwd(model, x, y):
    def step():
        train_loss(model, x, y).backward()
        model.zero_grad(set_to_none=True)
    return step


def bench_forward(rounds: int = 3):
    """Forward + backward tokens/s, lmlab vs transformers' GPT2LMHeadModel, same shapes."""
    print("forward+backward tokens/s (fp32, CPU threads: %d)" % torch.get_num_threads())
    print(f"{'preset':8} {'batch':>8} {'lmlab':>10} {'transformers':>13} {'ratio':>6}")
    for preset, batch, steps in (("tiny", 12, 10), ("small", 4, 3)):
        config = GPTConfig.preset(preset, vocab_size=65)
        torch.manual_seed(0)
        ours = GPT(config)
        theirs = _hf_model(config)
        theirs.load_state_dict(to_hf_state_dict(ours), strict=False)
        x = torch.randint(65, (batch, config.block_size))
        y = torch.randint(65, (batch, config.block_size))
        tps = _interleaved({"lmlab": _fwd_bwd(ours, x, y),
                            "transformers": _fwd_bwd(theirs, x, y)},
                           rounds, steps, x.numel())
        ratio = tps["lmlab"] / tps["transformers"]
        print(f"{preset:8} {f'{batch}x{config.block_size}':>8} {tps['lmlab']:>10,.0f} "
              f"{tps['transformers']:>13,.0f} {ratio:>5.2f}x", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lmlab.bench", description=__doc__)
    parser.add_argument("which", choices=["forward", "train", "quality", "dashboard"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1, help="quality: how many seeds")
    args = parser.parse_args(argv)
    if args.which == "forward":
        bench_forward(args.rounds)
    elif args.which == "train":
        from .bench_train import bench_train

        bench_train(args.rounds)
    elif args.which == "quality":
        from .bench_train import bench_quality

        bench_quality(args.seeds)
    else:  # a widget benchmark: it lives with the widgets, which the engine never imports
        import subprocess
        import sys

        raise SystemExit(subprocess.call([sys.executable, "-m", "lmlab.widgets.bench"]))


if __name__ == "__main__":
    main()
