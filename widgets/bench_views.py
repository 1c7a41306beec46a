"""`python -m lmlab.bench views`: the views on a GPT-2-shaped model (12 layers x 12 heads,
768 wide, context 1,024, random weights) over a 128-token text, with a character
vocabulary and with GPT-2's 50,257 tokens.

In a real Jupyter kernel (started as JupyterLab starts one): the model's forwards and the
kernel's milliseconds per interaction (building the explorer on new weights, selecting a
head, focusing a token, knocking a head out, one Step of the stepper); one forward
recording every activation point against a plain forward; a training step with the points
present and unread against the same model with the points taken out (as before
`lmlab.hooks`). With `--browser`, the same interactions clicked in JupyterLab in
headless Chromium, from the click to the redrawn element (`tests/browser/
test_views_speed_browser.py`, which needs a source checkout), with a click on a generated
token explained in the stepper and a click on a patching cell (`test_why_speed_browser.py`,
`test_patching_browser.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmlab.bench import interleaved, percentile, rates, repeat, report, report_latency

TOKENS = 128
FULL_CONTEXT = 1024  # the browser's big-view case: GPT-2's whole context
SHAPES = {"characters": "GPT-2 shape, a character vocabulary",
          "gpt2-vocab": "GPT-2 shape, 50,257 tokens"}
CLICKED_ONLY = {"why": "GPT-2 shape, characters, the stepper on 32 + 20 tokens, a click on a token: explain",
                "patching": "GPT-2 shape, characters, 32 tokens, the patching view's grids drawn"}
BROWSER_TESTS = ("test_views_speed_browser.py", "test_why_speed_browser.py", "test_patching_browser.py")
GOALS = {"explorer built": "(goal <= 2,000 ms, <= 2 forwards)",
         "select a head": "(goal p95 <= 100 ms)", "focus a token": "(goal p95 <= 100 ms)",
         "knock a head out": "(goal p95 <= 1 forward + 100 ms)", "Step": "(goal p95 <= 100 ms)"}
CLICK_GOALS = {**GOALS, "later clicks": "(goal p95 <= 100 ms)",
               "show a cell's predictions": "(goal p95 <= 100 ms)"}


def gpt2_sized_tokenizer(text: str, vocab_size: int = 50257):
    """A byte-level BPE trained on `text`, padded with unused tokens to `vocab_size`: a
    vocabulary as large as GPT-2's for the unembedding and the softmax, offline."""
    from lmlab import BPETokenizer

    trained = BPETokenizer.train(text, vocab_size=vocab_size, min_frequency=1)._tok
    trained.add_tokens([f"<|unused {i}|>" for i in range(vocab_size - trained.get_vocab_size())])
    return BPETokenizer(trained)


def setup(vocab: str, tokens: int = TOKENS):
    """(model, tokenizer, text of `tokens` tokens) for a SHAPES key."""
    import torch

    import lmlab

    corpus = lmlab.load_corpus("shakespeare")
    tok = lmlab.CharTokenizer.fit(corpus) if vocab == "characters" else gpt2_sized_tokenizer(corpus)
    text = tok.decode(tok.encode(corpus[:4 * tokens])[:tokens])
    torch.manual_seed(0)
    config = lmlab.GPTConfig(vocab_size=tok.vocab_size, block_size=1024, n_layer=12, n_head=12,
                             n_embd=768, activation="gelu_tanh")
    return lmlab.GPT(config).eval(), tok, text


class Counter:
    """Counts the forwards of a model (a forward pre-hook on the model itself, not on its
    activation points, so the fused attention still runs)."""

    def __init__(self, model):
        self.n = 0
        model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.n += 1


def _timed(fn, counter: Counter) -> tuple[float, int]:
    """(milliseconds, forwards) of one call of `fn`."""
    before = counter.n
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3, counter.n - before


def interactions(vocab: str, clicks: int = 16, builds: int = 3) -> dict:
    """The kernel's side of each interaction, on SHAPES[vocab]: {"actions": {action:
    {"ms": [...], "forwards": [...]}}, "forward_ms": [a plain forward of the text, ...]}."""
    import torch

    from lmlab.reading import weights_changed
    from lmlab.widgets import AttentionExplorer, SamplingStepper

    model, tok, text = setup(vocab)
    counter = Counter(model)
    out = {name: {"ms": [], "forwards": []} for name in GOALS}

    def record(name, fn):
        ms, forwards = _timed(fn, counter)
        out[name]["ms"].append(ms)
        out[name]["forwards"].append(forwards)

    views = []
    for _ in range(builds):  # on new weights each time: the pass and the induction probe run
        weights_changed(model)
        record("explorer built", lambda: views.append(AttentionExplorer(model, tok, text)))
    explorer = views[-1]
    heads = [(layer, head) for layer in range(12) for head in range(12)][1:clicks + 1]
    for layer, head in heads:
        record("select a head", lambda: explorer.select(layer, head))
    for p in range(clicks):
        position = (p * 37 + 5) % TOKENS
        record("focus a token", lambda: setattr(explorer.focus_box, "value", position))
    for layer, head in heads[::-1]:
        explorer.select(layer, head)
        record("knock a head out", lambda: setattr(explorer.knock_button, "value", True))
        explorer.knock_button.value = False
    stepper = SamplingStepper(model, tok, text[:20], seed=0)
    for _ in range(clicks):
        record("Step", stepper.step)
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        model(ids)
        forward_ms = [_timed(lambda: model(ids), counter)[0] for _ in range(5)]
    for view in (*views, stepper):
        view.close()
    return {"actions": out, "forward_ms": forward_ms}


class _Bare:
    """What stood at an activation point before `lmlab.hooks`: nothing, a plain identity."""

    read = False

    def __call__(self, x):
        return x


def without_points(model):
    """`model` with every HookPoint replaced by a plain identity (no module call)."""
    from lmlab.hooks import HookPoint

    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, HookPoint):
                del module._modules[name]
                setattr(module, name, _Bare())
    return model


def recording_cost(rounds: int = 5, steps: int = 4) -> dict:
    """Tokens/s of a plain forward and of `run_with_cache` recording every point, on the
    GPT-2 shape (characters) over TOKENS tokens. Returns the rates."""
    import torch

    from lmlab.hooks import run_with_cache

    model, tok, text = setup("characters")
    ids = torch.tensor([tok.encode(text)])

    def plain():
        with torch.no_grad():
            model(ids)

    elapsed = interleaved({"plain forward": repeat(plain, steps),
                           "run_with_cache, every point": repeat(lambda: run_with_cache(model, ids),
                                                                 steps)}, rounds)
    return rates(elapsed, rounds * steps * TOKENS)


def training_cost(rounds: int = 5) -> dict:
    """{preset: tokens/s} of the Trainer on a model with its activation points (unread)
    and on a twin without them, nanoGPT's CPU configuration (lmlab.bench.training)."""
    from lmlab.bench.training import SHAPES as TRAIN_SHAPES
    from lmlab.bench.training import cpu_setup
    from lmlab.model import GPT
    from lmlab.train import Trainer

    out = {}
    for preset, batch, steps in TRAIN_SHAPES:
        model, dataset, config = cpu_setup(preset=preset, batch_size=batch, eval_interval=10**9)
        twin = GPT(model.config)
        twin.load_state_dict(model.state_dict())
        runners = {"points present, unread": Trainer(model, dataset, config),
                   "no points (as before)": Trainer(without_points(twin), dataset, config)}
        elapsed = interleaved({k: repeat(t.step, steps) for k, t in runners.items()}, rounds)
        out[preset] = {"rates": rates(elapsed, rounds * steps * batch * dataset.block_size),
                       "batch": f"{batch}x{dataset.block_size}"}
    return out


def kernel_figures(clicks: int = 16, rounds: int = 5) -> dict:
    """Everything measured in the kernel, as JSON-ready dicts."""
    import torch

    return {"threads": torch.get_num_threads(),
            "interactions": {vocab: interactions(vocab, clicks) for vocab in SHAPES},
            "recording": recording_cost(rounds), "training": training_cost(rounds)}


def print_kernel_figures(figures: dict) -> None:
    where = f"fp32, {figures['threads']} CPU threads, a {TOKENS}-token text"
    for vocab, found in figures["interactions"].items():
        actions = found["actions"]
        notes = {name: f"{max(v['forwards'])} forward(s) at most  {GOALS[name]}"
                 for name, v in actions.items()}
        report_latency(f"{SHAPES[vocab]}, in a Jupyter kernel (kernel side), {where}; a plain "
                       f"forward of the text: {percentile(found['forward_ms'], 50):.0f} ms",
                       {name: v["ms"] for name, v in actions.items()}, notes=notes)
    report(f"one forward recording every activation point vs a plain forward, GPT-2 shape, {where}",
           figures["recording"], baseline="plain forward",
           notes={"run_with_cache, every point": "(goal >= 0.77x: at most 1.3x the time)"})
    for preset, found in figures["training"].items():
        report(f"training, {preset} preset, batch {found['batch']}, fp32, {figures['threads']} CPU "
               "threads: activation points present and unread vs none", found["rates"],
               baseline="no points (as before)",
               notes={"points present, unread": "(goal >= 0.99x)"})


def browser_figures(clicks: int = 16) -> dict:
    """Click-to-repaint samples from the browser tests (`BROWSER_TESTS`: the views, the
    stepper's explain, the patching view), run through pytest (the browser test harness:
    JupyterLab on 127.0.0.1, Debian's Chromium)."""
    import lmlab

    folder = Path(lmlab.__file__).resolve().parents[1] / "tests" / "browser"
    tests = [folder / name for name in BROWSER_TESTS]
    if not all(test.exists() for test in tests):
        raise SystemExit(f"the click figures need a source checkout of lmlab: {folder} lacks the "
                         "browser tests (git clone the repository and pip install -e '.[dev]')")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "clicks.json"
        env = {**os.environ, "LMLAB_BENCH_OUT": str(out), "LMLAB_BENCH_CLICKS": str(clicks)}
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                *map(str, tests)], env=env, cwd=folder.parents[1])
        if code or not out.exists():
            raise SystemExit(f"the browser test failed (pytest exit code {code})")
        return json.loads(out.read_text())


def bench_views(clicks: int = 16, rounds: int = 5, browser: bool = False) -> dict:
    """Print every table; returns the figures."""
    from jupyter_client.manager import start_new_kernel

    from .bench import _execute

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        figures = json.loads(_execute(client, "import json\nfrom lmlab.widgets.bench_views import "
                                      f"kernel_figures\nprint(json.dumps(kernel_figures({clicks}, "
                                      f"{rounds})))").splitlines()[-1])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    print_kernel_figures(figures)
    if browser:
        figures["browser"] = browser_figures(clicks)
        for vocab, samples in figures["browser"].items():
            shape = (SHAPES.get(vocab) or CLICKED_ONLY.get(vocab)
                     or f"{SHAPES['characters']}, {FULL_CONTEXT:,} tokens (the whole context)")
            report_latency(f"{shape}, JupyterLab in headless Chromium: from the click to "
                           "the redrawn element", samples, notes=CLICK_GOALS)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m lmlab.widgets.bench_views", description=__doc__)
    parser.add_argument("--clicks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args()
    bench_views(args.clicks, args.rounds, args.browser)
