"""`python -m lmlab ...`: the `lmlab` command (what `torchrun -m lmlab train ...` runs)."""

from .cli import main

main()
