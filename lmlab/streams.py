"""The random streams a run draws from: one seed per micro-batch slot, so that what a step
draws depends on the global batch, not on how it is spread over processes."""

from __future__ import annotations

def _derived_seed(seed: int, stream: int) -> int:
    """A seed for the `stream`-th generator of a run, its sequence unrelated to `seed`'s."""
    return (seed * 6364136223846793005 + stream * 1442695040888963407) % 2**63


def stream_seeds(seed: int, slot: int) -> tuple[int, int]:
    """(batch offsets seed, dropout seed) of micro-batch `slot` of a run.

    An optimizer step sums the gradients of `grad_accum_steps x processes` micro-batches;
    slot k = rank x grad_accum_steps + micro-step draws its batches and its dropout
    from streams of its own. So what a step draws depends on the number of slots, not
    on how they are spread over processes: rank 1 of a 2-process run draws what
    micro-step 1 of a 1-process run with grad_accum_steps=2 draws. Slot 0 is the stream
    a plain one-process run has always drawn (evaluation uses streams 2 + step)."""
    if slot == 0:
        return _derived_seed(seed, 1), seed
    return _derived_seed(seed, -2 * slot), _derived_seed(seed, -2 * slot - 1)
