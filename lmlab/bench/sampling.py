"""Sampling speed: `generate` on its key/value cache against re-reading the whole context
for every token, against transformers' `GPT2LMHeadModel.generate` (its own cache) on the
same weights, and the milliseconds of one `Stepper.step()` and one `Stepper.set(...)`."""

from __future__ import annotations

import statistics
import time

import torch

from ..model import GPT, GPTConfig
from ..reading import reading
from ..sampling import filter_probs, generate
from ..stepper import Stepper
from . import interleaved, rates, report
from .peers import hf_twin

PRESET, PROMPT, TEMPERATURE, TOP_K = "small", 8, 0.8, 40


def _no_cache(model: GPT, prompt: list[int], new: int, generator: torch.Generator) -> list[int]:
    """`generate` without a cache: every token re-reads the last block_size tokens."""
    tokens, block = list(prompt), model.config.block_size
    with reading(model):
        for _ in range(new):
            logits = model(torch.tensor([tokens[-block:]])).logits[0, -1]
            probs = filter_probs(logits, TEMPERATURE, TOP_K)
            tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens[len(prompt):]


def _median_ms(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_sampling(rounds: int = 3) -> dict:
    """Tokens/s of generation with and without a cache and against transformers, and the
    median milliseconds of a stepper's moves. Returns {"cache_speedup": cached / uncached
    speed, "vs_transformers": lmlab / transformers speed, "step_ms", "slide_step_ms",
    "set_ms"}."""
    config = GPTConfig.preset(PRESET, vocab_size=65)
    torch.manual_seed(0)
    model = GPT(config).eval()
    twin = hf_twin(model).eval()
    # prompt + new tokens fill the context exactly: no step slides the window (a slide
    # re-reads block_size tokens; the stepper's figures below show its cost apart)
    new = config.block_size - PROMPT
    prompt = torch.randint(65, (PROMPT,), generator=torch.Generator().manual_seed(0)).tolist()
    x = torch.tensor([prompt])

    def theirs():
        out = twin.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True,
                            temperature=TEMPERATURE, top_k=TOP_K, max_new_tokens=new,
                            min_new_tokens=new, pad_token_id=0)
        assert out.size(1) == PROMPT + new

    runners = {
        "generate (KV cache)": lambda: generate(model, prompt, new, TEMPERATURE, TOP_K, seed=0),
        "no cache": lambda: _no_cache(model, prompt, new, torch.Generator().manual_seed(0)),
        "transformers generate": theirs,
    }
    elapsed = interleaved(runners, rounds)
    per_second = rates(elapsed, rounds * new)
    where = (f"{PRESET} preset (block_size={config.block_size}), {PROMPT}-token prompt + {new} "
             f"new tokens, temperature {TEMPERATURE}, top_k {TOP_K}, fp32, "
             f"{torch.get_num_threads()} CPU threads")
    a = report(f"(a) generate, KV cache vs re-reading the context per token, {where}",
               {k: per_second[k] for k in ("generate (KV cache)", "no cache")}, baseline="no cache",
               notes={"generate (KV cache)": "(target: >= 3x)"})
    b = report(f"(b) generate, lmlab vs transformers' GPT2LMHeadModel.generate, {where}",
               {k: per_second[k] for k in ("generate (KV cache)", "transformers generate")},
               baseline="transformers generate", notes={"generate (KV cache)": "(target: >= 1.0x)"})

    calls = min(max(20, 40 * rounds), new - 1)  # steps that stay within the context
    stepper = Stepper(model, None, prompt, seed=0, temperature=TEMPERATURE, top_k=TOP_K)
    step_ms = _median_ms(stepper.step, calls)  # within the context: one position on the cache
    full = Stepper(model, None, prompt * (config.block_size // PROMPT), seed=0)
    slide_ms = _median_ms(full.step, max(5, calls // 4))  # past it: block_size tokens re-read
    settings = iter([dict(temperature=1.2, top_k=None), dict(temperature=TEMPERATURE, top_k=TOP_K)] * calls)
    set_ms = _median_ms(lambda: stepper.set(**next(settings)), calls)
    print(f"(c) Stepper, median of {calls} calls: step() {step_ms:.2f} ms within the context, "
          f"{slide_ms:.2f} ms past it (the window slides: {config.block_size} tokens re-read); "
          f"set(...) {set_ms:.3f} ms (re-filters the kept logits and builds the distribution "
          "record, no model call)")
    return {"cache_speedup": a["generate (KV cache)"], "vs_transformers": b["generate (KV cache)"],
            "step_ms": step_ms, "slide_step_ms": slide_ms, "set_ms": set_ms}
