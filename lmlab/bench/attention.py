"""Attention capture speed: a plain forward against one that returns every head's
attention, lmlab's capture against transformers' eager GPT2LMHeadModel on the same
weights, and the engine's part of switching the explorer to another head."""

from __future__ import annotations

import torch

from ..interpret import capture_attention
from ..model import GPT, GPTConfig
from . import interleaved, rates, repeat, report
from .peers import hf_twin

PRESET, TOKENS, STEPS = "small", 256, 4  # one sequence of TOKENS tokens, STEPS forwards a round


def bench_attention(rounds: int = 3) -> dict:
    """Tokens/s of a forward, with and without attention capture, and milliseconds per
    head switch. Returns {"capture_cost": capture time / forward time,
    "vs_transformers": lmlab capture speed / transformers', "head_switch_ms": ms}."""
    config = GPTConfig.preset(PRESET, vocab_size=65)
    torch.manual_seed(0)
    model = GPT(config).eval()
    ids = torch.randint(65, (TOKENS,), generator=torch.Generator().manual_seed(0)).tolist()
    x = torch.tensor([ids])
    twin = hf_twin(model).eval()
    twin.set_attn_implementation("eager")  # the only one that returns attention probabilities

    def forward():
        with torch.no_grad():
            model(x)

    def theirs():
        with torch.no_grad():
            out = twin(input_ids=x, output_attentions=True, use_cache=False)
        return torch.stack([a[0] for a in out.attentions]).float().cpu()  # [L, H, T, T]

    runners = {"forward": forward, "lmlab capture": lambda: capture_attention(model, ids),
               "transformers capture": theirs}
    elapsed = interleaved({name: repeat(fn, STEPS) for name, fn in runners.items()}, rounds)
    per_second = rates(elapsed, rounds * STEPS * TOKENS)
    where = f"{PRESET} preset, 1x{TOKENS} tokens, fp32, {torch.get_num_threads()} CPU threads"
    a = report(f"(a) attention capture vs a plain forward, {where}",
               {k: per_second[k] for k in ("forward", "lmlab capture")}, baseline="forward",
               notes={"lmlab capture": "(target: capture costs at most 1.5x a forward)"})
    b = report(f"(b) attention capture, lmlab vs transformers (eager), {where}",
               {k: per_second[k] for k in ("lmlab capture", "transformers capture")},
               baseline="transformers capture", notes={"lmlab capture": "(target: >= 1.0x)"})

    attention = capture_attention(model, ids)
    heads = [(layer, head) for layer in range(attention.n_layer) for head in range(attention.n_head)]
    switch = interleaved({"switch": lambda: [attention.head(*h).tolist() for h in heads]}, rounds)
    switch_ms = switch["switch"] / (rounds * len(heads)) * 1e3
    print(f"(c) head switch: one head's {TOKENS}x{TOKENS} weights to a list of lists (a heatmap's "
          f"z) in {switch_ms:.2f} ms, the mean over all {len(heads)} heads")
    return {"capture_cost": 1 / a["lmlab capture"], "vs_transformers": b["lmlab capture"],
            "head_switch_ms": switch_ms}
