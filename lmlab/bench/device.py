"""`python -m lmlab.bench device`: everything that needs a CUDA GPU, in one run of a few
minutes, printed as one table: the CUDA path in fp32 and bf16 autocast, fused AdamW,
`torch.compile`, a checkpoint restored on the GPU resuming step for step, the `small`
preset's tokens/s and MFU beside nanoGPT's published figure, and the views' cached pass
on a CUDA model against the same pass on the CPU.

Without a GPU it says so and exits 0. `--device cpu --quick` runs the same checks small,
on the CPU (no compile), so that the script itself is tested where there is no GPU.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch

from ..model import GPT, GPTConfig
from ..optim import fused_adam_available

# nanoGPT's README: config/train_shakespeare_char.py (our `small` preset, batch 64 x 256,
# bf16, compiled) "takes about 3 minutes" for 5,000 iterations on one A100, evaluations
# included: at least 5,000 x 64 x 256 / 180 s of training tokens a second.
NANOGPT_A100 = 5000 * 64 * 256 / 180


def _corpus() -> str:
    from ..data import load_corpus
    from ..errors import LmlabError

    try:
        return load_corpus("shakespeare")
    except LmlabError:  # offline, no cache: the corpus built from this Python's sources
        return load_corpus("python")[:1_200_000]


def _trainer(text: str, device, preset: str, batch: int, **overrides):
    from ..data import TokenDataset
    from ..train import Trainer

    config = GPTConfig.preset(preset, vocab_size=256)
    dataset = TokenDataset(text, block_size=config.block_size)
    torch.manual_seed(1337)
    model = GPT(config.replace(vocab_size=dataset.vocab_size))
    return Trainer(model, dataset, device=str(device), batch_size=batch, eval_interval=10**9,
                   warmup_steps=2, max_steps=10**6, **overrides)


def _rate(trainer, steps: int) -> tuple[float, float]:
    """(tokens/s over `steps` steps after one untimed step, the last loss)."""
    trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    t0, tokens = time.perf_counter(), trainer.tokens_seen
    for _ in range(steps):
        row = trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return (trainer.tokens_seen - tokens) / (time.perf_counter() - t0), row["train_loss"]


def checks(device, quick: bool = False):
    """Yield (check, passed, figure) rows, one check at a time."""
    from .. import passes
    from ..mfu import mfu
    from ..train import Trainer

    text = _corpus()
    preset, batch, steps = ("nano", 4, 3) if quick else ("small", 64, 30)

    fp32 = _trainer(text, device, preset, batch)
    rate, loss = _rate(fp32, steps)
    share = mfu(fp32.model, rate, device)
    yield ("train, fp32", math.isfinite(loss),
           f"{rate:,.0f} tokens/s, loss {loss:.3f}" + (f", MFU {share:.1%}" if share else ""))

    bf16 = _trainer(text, device, preset, batch, dtype="bfloat16")
    rate16, loss16 = _rate(bf16, steps)
    share = mfu(bf16.model, rate16, device)
    yield ("train, bf16 autocast", math.isfinite(loss16) and abs(loss16 - loss) < 0.05 * loss,
           f"{rate16:,.0f} tokens/s ({rate16 / rate:.2f}x fp32), loss {loss16:.3f} vs {loss:.3f}"
           + (f", MFU {share:.1%}" if share else ""))

    fused = bool(fp32.optimizer.defaults.get("fused"))
    yield ("fused AdamW", fused == fused_adam_available(device) and (fused or device.type != "cuda"),
           f"{type(fp32.optimizer).__name__}, fused={fused}")

    if quick:
        yield ("torch.compile", True, "skipped (quick)")
    else:
        compiled = _trainer(text, device, preset, batch, dtype="bfloat16", compile=True)
        t0 = time.perf_counter()
        compiled.step()  # the step-0 evaluation, then the compile and the first step
        first = time.perf_counter() - t0
        rate_c, loss_c = _rate(compiled, steps)
        share = mfu(compiled.model, rate_c, device)
        yield ("torch.compile, bf16", math.isfinite(loss_c) and abs(loss_c - loss16) < 0.05 * loss16,
               f"{rate_c:,.0f} tokens/s ({rate_c / rate16:.2f}x eager bf16), "
               f"first step {first:.0f} s (compiling)"
               + (f", MFU {share:.1%}" if share else ""))
        yield ("small preset vs nanoGPT", True,
               f"{max(rate16, rate_c):,.0f} tokens/s here; nanoGPT's README on one A100: "
               f">= {NANOGPT_A100:,.0f} tokens/s (3 min for 5,000 iterations of 64 x 256)")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.safetensors"
        fp32.save(path)
        expected = fp32.step()["train_loss"]
        resumed = Trainer.load(path, text, device=str(device))
        got = resumed.step()["train_loss"]
        yield ("restore on the device, resume", resumed.device.type == device.type
               and abs(got - expected) <= 1e-5 * abs(expected),
               f"next loss {got:.6f} vs {expected:.6f} without the restart")

    from ..tokenizers import CharTokenizer

    tok = CharTokenizer.fit(text[:100_000])
    shape = dict(n_layer=2, n_head=2, n_embd=32) if quick else dict(n_layer=12, n_head=12, n_embd=768)
    torch.manual_seed(0)
    on_cpu = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=1024, **shape)).eval()
    on_device = GPT(on_cpu.config).to(device).eval()
    on_device.load_state_dict(on_cpu.state_dict())
    words = tok.decode(tok.encode(text[:2000])[:128])
    t0 = time.perf_counter()
    a = passes.cached_pass(on_device, words, tok)
    ms = (time.perf_counter() - t0) * 1000
    b = passes.cached_pass(on_cpu, words, tok)
    gap = max(float((a.logits.cpu() - b.logits).abs().max()),
              float((a.attention.float().cpu() - b.attention.float()).abs().max()))
    yield ("views' cached pass on the device", gap < 2e-3,
           f"{ms:.0f} ms for 128 tokens ({'GPT-2 shape' if not quick else 'tiny'}); "
           f"largest gap to the CPU's {gap:.1e}")


def bench_device(device: str | None = None, quick: bool = False) -> list[tuple]:
    """Run `checks` on `device` (default: the first CUDA GPU) and print the table; returns
    its rows. Without a GPU (and no `device`), says so and returns []."""
    if device is None:
        if not torch.cuda.is_available():
            print("no CUDA GPU here (torch.cuda.is_available() is False): the GPU checks were "
                  "not run")
            return []
        device = "cuda"
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device checks on {where}, torch {torch.__version__}" + (" (quick)" if quick else ""),
          flush=True)
    rows = []
    for name, passed, figure in checks(device, quick):
        rows.append((name, passed, figure))
        print(f"  {name:34}  {'ok' if passed else 'FAILED':6}  {figure}", flush=True)
    return rows
