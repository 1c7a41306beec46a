"""Attribution and patching speed, on the `small` preset over 64 tokens and a GPT-2-shaped
model (12 x 12, width 768, GPT-2's 50,257-token vocabulary, random weights) over 32:

(a) direct logit attribution of one position (one forward keeping each head's and MLP's
    output, then the projection) against a plain forward of the same text (goal <= 1.2x);
(b) the residual-stream patching grid (every layer x position; the texts differ in the
    middle token) against the forwards it stands for, (layers x positions / batch) forwards
    of a batch of `batch` texts (goal <= 1.5x, and under 10 s for the GPT-2 shape), the same
    grid where the texts differ in their first token (nothing shared to skip), and against
    TransformerLens 4 doing the same grid with its hooks on the same weights
    (`transformer_lens.patching.get_act_patch_resid_pre` on a TransformerBridge; goal >= 1.0x).

A click on a patching cell or a stepper chip runs no model; its click-to-repaint in
Chromium is measured by the browser tests (`python -m lmlab.bench views --browser`).
"""

from __future__ import annotations

import tempfile

import torch

from ..attribution import logit_attribution
from ..model import GPT, GPTConfig
from ..patching import Patcher
from . import interleaved, rates, repeat, report

SHAPES = (
    ("small preset", GPTConfig.preset("small", vocab_size=65), 64),
    ("GPT-2 shape", GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                              activation="gelu_tanh"), 32),
)


def _texts(config: GPTConfig, tokens: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(config.vocab_size, (tokens,), generator=g).tolist()
    corrupted = list(clean)
    corrupted[tokens // 2] = (corrupted[tokens // 2] + 1) % config.vocab_size
    return clean, corrupted


def bench_interp(rounds: int = 3, peer: bool = True, shapes=SHAPES) -> dict:
    """Prints (a) and (b) for each of `shapes`, (name, GPTConfig, tokens); returns {name:
    {"attribution": ratio to a forward, "grid": ratio to its forwards, "grid_s": seconds,
    "vs_transformer_lens": speed ratio}}. The GPT-2 shape's grids run once, without warm-up."""
    out = {}
    for name, config, tokens in shapes:
        torch.manual_seed(0)
        model = GPT(config).eval()
        clean, corrupted = _texts(config, tokens)
        x = torch.tensor([clean])
        where = f"{name}, {tokens} tokens, fp32, {torch.get_num_threads()} CPU threads"

        def forward(batch=x):
            with torch.no_grad():
                model(batch)

        attribution = report(f"(a) direct logit attribution of one position vs a forward, {where}",
                             rates(interleaved({"forward": repeat(forward, 10),
                                                "attribution": repeat(lambda: logit_attribution(
                                                    model, clean, -1, clean[-1]), 10)}, rounds), 10 * rounds),
                             baseline="forward", unit="per s",
                             notes={"attribution": "(goal: at most 1.2x a forward's time)"})

        with torch.no_grad():  # the clean text's two likeliest (random weights predict alike on both texts)
            answer, wrong = model(x).logits[0, -1].topk(2).indices.tolist()

        def grid(corrupted=corrupted):
            Patcher(model, clean, corrupted, answer=answer, wrong=wrong, kinds="resid_pre").run(progress=False)

        first_swapped = [(clean[0] + 1) % config.vocab_size] + clean[1:]  # no position is shared: all run

        batch = min(tokens, Patcher(model, clean, corrupted, answer=0, wrong=1, kinds="resid_pre").batch_size)
        forwards = config.n_layer * tokens / batch
        stand_in = torch.tensor([clean] * batch)
        runners = {"grid": grid, "its forwards": lambda: [forward(stand_in) for _ in range(round(forwards))],
                   "grid, token 0 swapped instead": lambda: grid(first_swapped)}
        notes = {"grid": "(goal: at most 1.5x its forwards' time)",
                 "grid, token 0 swapped instead": "(the worst case: no position before the change to skip)"}
        if peer:
            import transformer_lens.patching as tl_patching
            from transformers.utils import logging as hf_logging

            from .peers import tl_twin

            tl_patching.tqdm = lambda cells, **_: cells  # its progress bar, one line per cell, off
            hf_logging.disable_progress_bar()

            bridge = tl_twin(model, tempfile.mkdtemp(prefix="lmlab-bench-tl-"))
            tokens_t = torch.tensor([corrupted])

            def theirs():
                with torch.no_grad():
                    _, clean_cache = bridge.run_with_cache(torch.tensor([clean]))
                    tl_patching.get_act_patch_resid_pre(bridge, tokens_t, clean_cache,
                                            lambda logits: logits[0, -1, answer] - logits[0, -1, wrong])

            runners["TransformerLens grid"] = theirs
            notes["grid"] += ", vs TransformerLens >= 1.0x"
        elapsed = interleaved(runners, 1 if name == "GPT-2 shape" else rounds, warmup=name != "GPT-2 shape")
        n = 1 if name == "GPT-2 shape" else rounds
        speed = report(f"(b) the residual patching grid, {config.n_layer} layers x {tokens} positions, "
                       f"batch {batch} ({round(forwards)} forwards of {batch}x{tokens} stand for it), {where}",
                       rates(elapsed, n), baseline="grid", unit="grids/s", notes=notes)
        grid_s, worst_s = elapsed["grid"] / n, elapsed["grid, token 0 swapped instead"] / n
        print(f"    the grid took {grid_s:.2f} s ({worst_s:.2f} s with token 0 swapped); "
              f"{speed['its forwards']:.2f}x its forwards' time"
              + (f"; TransformerLens took {elapsed['TransformerLens grid'] / n:.1f} s" if peer else ""))
        out[name] = {"attribution": 1 / attribution["attribution"], "grid": speed["its forwards"],
                     "grid_s": grid_s, "worst_grid_s": worst_s}
        if peer:
            out[name]["vs_transformer_lens"] = 1 / speed["TransformerLens grid"]
    return out
