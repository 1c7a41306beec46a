"""The `lmlab` command: train, sample, bench, lab.

    lmlab train --corpus shakespeare --preset tiny --steps 2000 --out runs/x
    lmlab sample runs/x --prompt "ROMEO:" --tokens 200 --temperature 0.8 --top-k 40
    lmlab lab [FOLDER] [--copy-only] [-- JUPYTER-LAB-ARGS]
    lmlab export-slides notebooks/02_attention.ipynb [--out deck.html] [--execute]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import LmlabError

CHECKPOINT = "checkpoint.safetensors"


def _checkpoint_path(run: str) -> Path:
    path = Path(run)
    return path / CHECKPOINT if path.is_dir() or not path.suffix else path


def cmd_train(args) -> None:
    from .data import TokenDataset, load_corpus
    from .model import GPT, GPTConfig
    from .tokenizers import BPETokenizer
    from .train import TrainConfig, Trainer

    out = _checkpoint_path(args.out)
    if args.resume and not out.exists():
        raise LmlabError(f"--resume: there is no checkpoint to resume at {out}; train without "
                         "--resume to start a new run there")
    if not args.resume and out.exists() and not args.force:
        raise LmlabError(f"{out} already holds a run: --resume continues it, --force replaces "
                         "it, or pick another --out")
    text = load_corpus(args.corpus)
    if args.resume:
        from . import checkpoint

        ck = checkpoint.load(out)
        dataset = TokenDataset(text, ck.tokenizer, block_size=ck.model.config.block_size)
        trainer = Trainer.from_checkpoint(ck, out, dataset, device=args.device)
        trainer.update_config(max_steps=args.steps)
        print(f"resumed {out} at step {trainer.step_count}")
    else:
        block = args.block_size or GPTConfig.preset(args.preset).block_size
        tokenizer = BPETokenizer.train(text, args.bpe) if args.bpe else None
        dataset = TokenDataset(text, tokenizer, block_size=block)
        config = GPTConfig.preset(args.preset, vocab_size=dataset.vocab_size, block_size=block,
                                  dropout=args.dropout)
        model = GPT(config)
        trainer = Trainer(model, dataset, TrainConfig(
            batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.lr,
            min_lr=args.lr / 10, warmup_steps=min(100, args.steps // 10),
            eval_interval=args.eval_interval, seed=args.seed, device=args.device,
            dtype=args.dtype, compile=args.compile))
        print(f"{args.preset}: {model.num_params() / 1e6:.2f}M parameters, "
              f"{dataset.vocab_size} tokens in the vocabulary, {len(dataset):,} tokens of text")

    @trainer.on_eval
    def report(t, ev):
        from tqdm.auto import tqdm

        tqdm.write(f"step {ev['step']}: train loss {ev['train_loss']:.4f}, "
                   f"val loss {ev['val_loss']:.4f}")
        t.save(out)

    trainer.run(progress=not args.quiet)
    trainer.save(out)
    print(f"saved {out}")


def cmd_sample(args) -> None:
    import torch

    from . import checkpoint
    from .sampling import generate

    ck = checkpoint.load(_checkpoint_path(args.run))
    if ck.tokenizer is None:
        raise LmlabError(f"{args.run} has no tokenizer to turn text into tokens")
    gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    ids = ck.tokenizer.encode(args.prompt)
    new = generate(ck.model, ids, args.tokens, args.temperature, args.top_k, args.top_p, gen)
    print(args.prompt + ck.tokenizer.decode(new))


def cmd_bench(args) -> None:
    from .bench.__main__ import main as bench_main

    bench_main([args.which])


def cmd_lab(args) -> None:
    import subprocess

    from .lessons import copy_lessons, lessons_dir

    folder = Path(args.folder or "lmlab-lessons")
    if folder.resolve() != lessons_dir():  # a clone's own notebooks/ are opened as they are
        copied, kept = copy_lessons(folder)
        print(f"lessons in {folder.resolve()}: {len(copied)} copied"
              + (f", {len(kept)} already there kept as they are ({', '.join(k.name for k in kept)})"
                 if kept else ""))
    if args.copy_only:
        return
    sys.exit(subprocess.call([sys.executable, "-m", "jupyter", "lab", *args.jupyter_args], cwd=folder))


def cmd_export_slides(args) -> None:
    import subprocess

    extra = (["--out", args.out] if args.out else []) + (["--execute"] if args.execute else [])
    # it lives with the widgets, which the engine never imports
    sys.exit(subprocess.call([sys.executable, "-m", "lmlab.widgets.slides", args.notebook, *extra]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmlab", description="A lab for small language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a GPT on a corpus, saving checkpoints")
    t.add_argument("--corpus", default="shakespeare", help="a corpus name or a text file")
    t.add_argument("--preset", default="tiny", choices=["nano", "tiny", "small"])
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--out", default="runs/default", help="run folder (or .safetensors file)")
    t.add_argument("--batch-size", type=int, default=12)
    t.add_argument("--block-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--eval-interval", type=int, default=250)
    t.add_argument("--bpe", type=int, default=None, metavar="VOCAB",
                   help="train a byte-level BPE tokenizer of this size (default: characters)")
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--device", default="auto")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    t.add_argument("--compile", action="store_true")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--force", action="store_true", help="replace a run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate text from a saved run")
    s.add_argument("run", help="run folder or checkpoint file")
    s.add_argument("--prompt", default="\n")
    s.add_argument("--tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.set_defaults(func=cmd_sample)

    b = sub.add_parser("bench", help="the benchmarks (same as python -m lmlab.bench)")
    b.add_argument("which", choices=["forward", "train", "quality", "attention", "sampling", "dashboard"])
    b.set_defaults(func=cmd_bench)

    lab = sub.add_parser("lab", help="copy the lessons into a folder and open JupyterLab there "
                                     "(arguments after -- go to jupyter lab, e.g. -- --port 8890)")
    lab.add_argument("folder", nargs="?", default=None,
                     help="where the lessons go (default: ./lmlab-lessons); lessons already "
                          "there are kept as they are")
    lab.add_argument("--copy-only", action="store_true", help="copy the lessons, open nothing")
    lab.set_defaults(func=cmd_lab)

    x = sub.add_parser("export-slides", help="a notebook as a static HTML slide deck that works offline")
    x.add_argument("notebook")
    x.add_argument("--out", default=None, help="the deck's path (default: NOTEBOOK.slides.html)")
    x.add_argument("--execute", action="store_true", help="run the notebook first, even with outputs")
    x.set_defaults(func=cmd_export_slides)
    return parser


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    passed_on = []  # after "--": for the program lmlab starts (jupyter lab)
    if "--" in argv:
        cut = argv.index("--")
        argv, passed_on = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.jupyter_args = passed_on
    try:
        args.func(args)
    except LmlabError as e:
        print(f"lmlab {args.command}: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
