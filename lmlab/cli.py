"""The `lmlab` command: train, sample, bench, lab.

    lmlab train --corpus shakespeare --preset tiny --steps 2000 --out runs/x
    lmlab train --nproc 2 ...   (or: torchrun --nproc_per_node=2 -m lmlab train ...)
    lmlab sample runs/x --prompt "ROMEO:" --tokens 200 --temperature 0.8 --top-k 40
    lmlab lab [FOLDER] [--copy-only] [-- JUPYTER-LAB-ARGS]
    lmlab export-slides notebooks/02_attention.ipynb [--out deck.html] [--execute]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import LmlabError

CHECKPOINT = "checkpoint.safetensors"


def _checkpoint_path(run: str) -> Path:
    path = Path(run)
    return path / CHECKPOINT if path.is_dir() or not path.suffix else path


def cmd_train(args) -> None:
    from . import distributed

    if args.nproc is not None and args.nproc < 1:
        raise LmlabError(f"--nproc {args.nproc} must be at least 1")
    if distributed.launched():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if args.nproc is not None and args.nproc != local:
            raise LmlabError(f"--nproc {args.nproc} but torchrun started {local} processes on "
                             "this machine; drop --nproc under torchrun")
    elif args.nproc is not None and args.nproc > 1:  # torchrun, which never returns
        if not args.resume:  # a batch that cannot be shared out is refused before launching
            _grad_accum(args, args.batch_size, args.nproc)
        distributed.launch(args.nproc, _without_nproc(args.argv), args.device)
    device = args.device
    if distributed.launched() and int(os.environ["WORLD_SIZE"]) > 1:
        device = str(distributed.init(args.device, args.dist_timeout))
    try:
        _train(args, device)
    except BaseException:
        distributed.finish(wait=False)  # the others may be inside a collective: no barrier
        raise
    distributed.finish()


def _without_nproc(argv: list[str]) -> list[str]:
    """`argv` without its --nproc N (torchrun's own parser would take it for its own)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _grad_accum(args, batch_size: int, world: int) -> int | None:
    """Micro-batches a step in each process: --grad-accum, or --global-batch shared out."""
    if args.global_batch is None:
        return args.grad_accum
    if args.grad_accum is not None:
        raise LmlabError("give --global-batch or --grad-accum, not both: the global batch is "
                         "batch size x grad accum x processes")
    per_step = batch_size * world
    if args.global_batch % per_step:
        raise LmlabError(
            f"--global-batch {args.global_batch} is not a whole number of micro-batches of "
            f"batch size {batch_size} on {world} process(es) ({per_step} sequences a "
            f"micro-step); pick a multiple of {per_step}")
    return args.global_batch // per_step


def _train(args, device: str) -> None:
    import torch

    from . import distributed
    from .data import TokenDataset, load_corpus
    from .model import GPT, GPTConfig
    from .tokenizers import BPETokenizer
    from .tokenizers import from_dict as tokenizer_from_dict
    from .train import TrainConfig, Trainer

    main, world = distributed.is_main(), distributed.world_size()
    say = print if main else (lambda *a, **k: None)
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
        _check_same_shape(args, ck.model.config, out)
        dataset = TokenDataset(text, ck.tokenizer, block_size=ck.model.config.block_size)
        trainer = Trainer.from_checkpoint(ck, out, dataset, device=device)
        accum = _grad_accum(args, trainer.config.batch_size, world)  # the checkpoint's batch
        trainer.update_config(max_steps=args.steps,
                              **({"grad_accum_steps": accum} if accum is not None else {}))
        say(f"resumed {out} at step {trainer.step_count}")
    else:
        accum = _grad_accum(args, args.batch_size, world)
        preset = args.preset or "tiny"
        block = args.block_size or GPTConfig.preset(preset).block_size
        tokenizer = None
        if args.bpe:  # trained once, on rank 0: every rank must use the same token ids
            tokenizer = tokenizer_from_dict(distributed.on_main(
                lambda: BPETokenizer.train(text, args.bpe).to_dict()))
        dataset = TokenDataset(text, tokenizer, block_size=block)
        config = GPTConfig.preset(preset, vocab_size=dataset.vocab_size, block_size=block,
                                  dropout=args.dropout)
        torch.manual_seed(args.seed)  # the weights, like the batches, follow from --seed
        model = GPT(config)
        warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)
        trainer = Trainer(model, dataset, TrainConfig(
            batch_size=args.batch_size, grad_accum_steps=accum or 1, max_steps=args.steps,
            learning_rate=args.lr, min_lr=args.lr / 10, warmup_steps=warmup,
            lr_decay_steps=args.lr_decay_steps, eval_interval=args.eval_interval,
            seed=args.seed, device=device, dtype=args.dtype, compile=args.compile))
        say(f"{preset}: {model.num_params() / 1e6:.2f}M parameters, "
            f"{dataset.vocab_size} tokens in the vocabulary, {len(dataset):,} tokens of text")
    c = trainer.config
    if world > 1 or c.grad_accum_steps > 1:
        say(f"{world} process(es) on {trainer.device.type}, a step of {c.batch_size} x "
            f"{c.grad_accum_steps} x {world} = {c.batch_size * c.grad_accum_steps * world} "
            f"sequences of {trainer.dataset.block_size} tokens")

    @trainer.on_eval
    def report(t, ev):
        from tqdm.auto import tqdm

        # first, on every rank: saving is collective (the ranks gather their random
        # streams), so it must not wait on rank 0's printing, which can fail (a closed
        # stdout) and whose error the trainer would swallow
        t.save(out)
        if main:
            tqdm.write(f"step {ev['step']}: train loss {_loss(ev.get('train_loss'))}, "
                       f"val loss {_loss(ev.get('val_loss'))}")

    trainer.run(progress=not args.quiet)
    trainer.save(out)
    say(f"saved {out}")


def _loss(value) -> str:
    """A loss for the log: 4 decimals, or – where there is none (no validation split)."""
    return "–" if value is None else f"{value:.4f}"


def _check_same_shape(args, shape, out) -> None:
    """On --resume, a --preset or --block-size that disagrees with the checkpoint is an
    error: the run continues with the checkpoint's model."""
    from .model import GPTConfig

    asked = {}
    if args.preset is not None:
        asked.update({k: v for k, v in GPTConfig.preset(args.preset).to_dict().items()
                      if k in ("n_layer", "n_head", "n_embd")})
    if args.block_size is not None:
        asked["block_size"] = args.block_size
    differ = {k: (v, getattr(shape, k)) for k, v in asked.items() if getattr(shape, k) != v}
    if differ:
        said = ", ".join(f"{k}={a} (checkpoint: {b})" for k, (a, b) in differ.items())
        raise LmlabError(
            f"--resume: {out} holds a model of another shape than asked for: {said}; drop "
            "--preset/--block-size to continue that run, or use --force (or another --out) "
            "to start a new one")


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

    code = bench_main([args.which])
    if code:
        sys.exit(code)


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

    t = sub.add_parser("train", help="train a GPT on a corpus, saving checkpoints",
                       allow_abbrev=False)  # --nproc is found by its full name
    t.add_argument("--corpus", default="shakespeare", help="a corpus name or a text file")
    t.add_argument("--preset", default=None, choices=["nano", "tiny", "small"],
                   help="the model's shape (default: tiny)")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--out", default="runs/default", help="run folder (or .safetensors file)")
    t.add_argument("--batch-size", type=int, default=12,
                   help="sequences a micro-batch, in each process")
    t.add_argument("--grad-accum", type=int, default=None, metavar="STEPS",
                   help="micro-batches summed into each optimizer step, in each process")
    t.add_argument("--global-batch", type=int, default=None, metavar="SEQUENCES",
                   help="sequences an optimizer step over all processes: sets --grad-accum")
    t.add_argument("--block-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=None, help="warmup steps (default: a tenth "
                   "of --steps, at most 100)")
    t.add_argument("--lr-decay-steps", type=int, default=None,
                   help="where the cosine schedule ends (default: --steps)")
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
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train with DDP in N processes on this machine (torchrun, loopback)")
    t.add_argument("--dist-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long a process waits for the others (rendezvous, each collective)")
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
    b.add_argument("which", choices=["forward", "train", "quality", "attention", "sampling",
                                     "distributed", "dashboard", "views", "device"])
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
    args.jupyter_args, args.argv = passed_on, argv
    try:
        args.func(args)
    except LmlabError as e:
        rank = f" (rank {os.environ['RANK']})" if "RANK" in os.environ else ""
        print(f"lmlab {args.command}{rank}: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
