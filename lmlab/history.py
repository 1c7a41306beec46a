"""`History`: the metrics rows a trainer appends and views read, thread-safe."""

from __future__ import annotations

import math
import threading

FIELDS = ("step", "tokens", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s",
          "wall_time")


class History:
    """Rows of (step, tokens seen, train loss, validation loss or None, learning rate,
    gradient norm, tokens/s, wall time in seconds of training). Appends come from the
    trainer's thread; reads return copies, so a view never sees a row half-written."""

    def __init__(self, rows=()):
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        for row in rows:
            self.append(row)

    def append(self, row: dict) -> None:
        clean = {k: row.get(k) for k in FIELDS}
        with self._lock:
            self._rows.append(clean)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        last = self.last()
        if last is None:
            return "History(no steps yet)"
        val = next((r["val_loss"] for r in reversed(self._rows) if r["val_loss"] is not None), None)
        return (f"History({len(self)} rows; step {last['step']}, train loss {last['train_loss']:.4f}"
                + (f", last val loss {val:.4f}" if val is not None else "") + ")")

    def rows(self, start: int = 0) -> list[dict]:
        """Copies of the rows from index `start` on."""
        with self._lock:
            return [dict(r) for r in self._rows[start:]]

    def last(self) -> dict | None:
        with self._lock:
            return dict(self._rows[-1]) if self._rows else None

    def column(self, name: str) -> list:
        with self._lock:
            return [r[name] for r in self._rows]

    def to_dict(self) -> dict[str, list]:
        """Columns as lists, one per field; val_loss is None where no evaluation ran."""
        with self._lock:
            return {k: [r[k] for r in self._rows] for k in FIELDS}

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.to_dict(), columns=list(FIELDS))

    def to_json(self) -> list[dict]:
        """Rows with non-finite floats as None, for JSON files."""
        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v
        with self._lock:
            return [{k: clean(v) for k, v in r.items()} for r in self._rows]


def smooth(values, weight: float = 0.9, state: float | None = None) -> tuple[list, float | None]:
    """Exponential moving average of `values`, starting at the first value; `state`
    continues an earlier call. Returns (smoothed values, state to continue).
    Non-finite values are passed through and do not poison the average."""
    out = []
    last = state
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(v)
            continue
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out, last


def downsample(n: int, max_points: int) -> range | list:
    """Indices of min(n, max_points) rows spread evenly over `n`, first and last
    included, so a chart sends a bounded number of points however long the run."""
    if n <= max_points:
        return range(n)
    if max_points < 2:
        return [n - 1]
    return [round(i * (n - 1) / (max_points - 1)) for i in range(max_points)]
