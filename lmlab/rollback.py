"""Rollback: the weights, optimiser and streams of the last healthy evaluation, kept in
memory, so that a run that diverged can go back to them (`Trainer.rollback`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

HEALTHY_MARGIN = 1.1  # an evaluation within 10% of the best so far is healthy


@dataclass(frozen=True)
class Snapshot:
    """Weights, optimiser and RNG state at an evaluation, kept in memory for rollback."""

    step: int
    loss: float  # validation loss, or training loss when there is no validation split
    tokens_seen: int
    wall_time: float
    evaluation: dict
    model: dict
    optimizer: dict
    streams: dict  # Trainer._stream_states(): this rank's batch and dropout streams
    learning_rate: float = 0.0  # the settings in effect then
    min_lr: float | None = None


class Rollback:
    """One `Snapshot` (or none) and the best loss seen, which says what is healthy."""

    def __init__(self):
        self.snapshot: Snapshot | None = None
        self.best_loss: float | None = None

    def is_healthy(self, loss: float) -> bool:
        """Whether an evaluation's `loss` is finite and within HEALTHY_MARGIN of the best
        so far; a healthy loss lowers the best."""
        if not math.isfinite(loss):
            return False
        if self.best_loss is not None and loss > self.best_loss * HEALTHY_MARGIN:
            return False
        self.best_loss = loss if self.best_loss is None else min(loss, self.best_loss)
        return True

    @property
    def point(self) -> tuple[int, float] | None:
        """(step, loss) of the snapshot, or None."""
        s = self.snapshot
        return (s.step, s.loss) if s is not None else None
