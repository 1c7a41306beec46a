"""`python -m lmlab.bench NAME`, NAME one of forward, train, quality, attention, sampling,
distributed, dashboard, views, device, interp, timeline (see lmlab.bench)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from . import __doc__ as DOC


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lmlab.bench", description=DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["forward", "train", "quality", "attention", "sampling",
                                          "distributed", "dashboard", "views", "device", "interp",
                                          "timeline"])
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (speed)")
    parser.add_argument("--seeds", type=int, default=1, help="quality: how many seeds")
    parser.add_argument("--browser", action="store_true", help="views: also click in Chromium")
    parser.add_argument("--device", default=None, help="device: where to run the GPU checks (default cuda)")
    parser.add_argument("--quick", action="store_true", help="device: the checks small, no compile")
    parser.add_argument("--no-peer", action="store_true", help="interp: without TransformerLens")
    args = parser.parse_args(argv)
    rounds = {"rounds": args.rounds} if args.rounds else {}
    if args.which == "device":
        from .device import bench_device

        rows = bench_device(args.device, args.quick)
        return 0 if all(passed for _, passed, _ in rows) else 1
    if args.which == "forward":
        from .forward import bench_forward

        bench_forward(**rounds)
    elif args.which == "train":
        from .training import bench_train

        bench_train(**rounds)
    elif args.which == "attention":
        from .attention import bench_attention

        bench_attention(**rounds)
    elif args.which == "sampling":
        from .sampling import bench_sampling

        bench_sampling(**rounds)
    elif args.which == "distributed":
        from .distributed import bench_distributed

        bench_distributed(**rounds)
    elif args.which == "interp":
        from .interp import bench_interp

        bench_interp(**rounds, peer=not args.no_peer)
    elif args.which == "quality":
        from .quality import bench_quality

        bench_quality(args.seeds)
    elif args.which == "timeline":  # with the widgets, which the engine never imports
        extra = ["--rounds", str(args.rounds)] if args.rounds else []
        raise SystemExit(subprocess.call([sys.executable, "-m", "lmlab.widgets.bench_timeline", *extra]))
    elif args.which == "views":  # with the widgets, which the engine never imports
        extra = (["--browser"] if args.browser else []) + \
            (["--rounds", str(args.rounds)] if args.rounds else [])
        raise SystemExit(subprocess.call([sys.executable, "-m", "lmlab.widgets.bench_views", *extra]))
    else:  # it lives with the widgets, which the engine never imports
        extra = ["--rounds", str(args.rounds)] if args.rounds else []
        raise SystemExit(subprocess.call([sys.executable, "-m", "lmlab.widgets.bench", *extra]))


if __name__ == "__main__":
    raise SystemExit(main())
