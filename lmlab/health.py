"""Optimisation health: each layer's gradient norm and update-to-weight ratio, measured
every few steps while a trainer runs.

The update-to-weight ratio of a layer is ‖ΔW‖ / ‖W‖ over its weight matrices for one step:
how far the step moved the weights, relative to their size. Karpathy's rule of thumb is
about 1e-3 (10^-3); much higher and the weights churn (the learning rate is too high, or
warmup too short), much lower and the layer barely learns (the learning rate is too low,
its gradients vanish, or it is frozen). Gradient norms are those the optimiser used, after
clipping. Measured through the optimiser's step hooks: on a measured step, one copy of
the weights before the update and a norm per parameter.
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError

TARGET = 1e-3  # Karpathy's heuristic for the update-to-weight ratio
FAR = 10  # a ratio more than 10x off TARGET is worth a word
RECENT = 5  # measurements the warning looks at (their median)


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: "embedding", "block 3", or "final"."""
    m = re.match(r"transformer\.h\.(\d+)\.", name)
    if m:
        return f"block {m.group(1)}"
    return "embedding" if name.startswith(("transformer.wte", "transformer.wpe")) else "final"


class Health:
    """Every `every` steps of `trainer`, per layer: the gradient norm and the update-to-
    weight ratio, appended to `rows` as {"step", "layer", "grad_norm", "update_ratio"}."""

    def __init__(self, trainer, every: int = 10):
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"health every={every!r}: measure every N >= 1 steps, or 0 for never")
        self.trainer, self.every = trainer, every
        self.rows: list[dict] = []
        self._optimizer = None
        self._handles: list = []
        self._before: dict | None = None
        self._subscriptions = [trainer.on(e, self._hook) for e in ("step", "reset", "config")]
        self._hook()

    def _hook(self, *_) -> None:
        """Hook the trainer's optimiser (again when it was rebuilt)."""
        optimizer = self.trainer.optimizer
        if optimizer is self._optimizer:
            return
        for h in self._handles:
            h.remove()
        self._optimizer = optimizer
        self._handles = [optimizer.register_step_pre_hook(self._pre),
                         optimizer.register_step_post_hook(self._post)]

    def _due(self) -> bool:
        return (self.trainer.step_count + 1) % self.every == 0  # the step being taken

    def _params(self):
        """The weight matrices that train (norms' gains and biases sit near 1 and 0, and
        their ratio says little), as Karpathy measured it."""
        return [(n, p) for n, p in self.trainer.model.named_parameters()
                if p.requires_grad and p.ndim == 2]

    def _pre(self, optimizer, args, kwargs) -> None:
        if not self._due():
            self._before = None
            return
        params = self._params()
        grads = {}
        for name, p in params:
            if p.grad is not None:
                layer = layer_of(name)
                grads[layer] = grads.get(layer, 0.0) + float(p.grad.detach().float().pow(2).sum())
        self._before = {"grads": grads, "weights": [p.detach().clone() for _, p in params]}

    def _post(self, optimizer, args, kwargs) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        moved, size = {}, {}
        for (name, p), old in zip(self._params(), before["weights"]):
            layer = layer_of(name)
            moved[layer] = moved.get(layer, 0.0) + float((p.detach() - old).float().pow(2).sum())
            size[layer] = size.get(layer, 0.0) + float(p.detach().float().pow(2).sum())
        step = self.trainer.step_count + 1
        for layer in moved:
            self.rows.append({
                "step": step, "layer": layer,
                "grad_norm": math.sqrt(before["grads"].get(layer, 0.0)),
                "update_ratio": math.sqrt(moved[layer]) / max(math.sqrt(size[layer]), 1e-12),
            })

    def series(self, field: str = "update_ratio") -> dict[str, tuple[list[int], list[float]]]:
        """{layer: (steps, values)} of `field` ("update_ratio" or "grad_norm")."""
        out: dict = {}
        for row in list(self.rows):
            steps, values = out.setdefault(row["layer"], ([], []))
            steps.append(row["step"])
            values.append(row[field])
        return out

    def warnings(self) -> list[str]:
        """A sentence for each layer whose recent update-to-weight ratio (the median of its
        last RECENT measurements) is more than FAR times off TARGET."""
        out = []
        for layer, (_, ratios) in self.series().items():
            recent = sorted(ratios[-RECENT:])
            if not recent:
                continue
            r = recent[len(recent) // 2]
            if r > TARGET * FAR:
                out.append(f"{layer}: updates are {r:.1e} of the weights a step, over {FAR}x the "
                           f"usual ~{TARGET:.0e}: the learning rate is likely too high (or warmup "
                           "too short); lower it if the loss is noisy or rising")
            elif 0 < r < TARGET / FAR:
                out.append(f"{layer}: updates are only {r:.1e} of the weights a step, under "
                           f"1/{FAR} of the usual ~{TARGET:.0e}: the layer barely learns; the "
                           "learning rate is likely too low, or its gradients vanish")
            elif r == 0:
                out.append(f"{layer}: its weights did not move: is it frozen, or are its "
                           "gradients zero?")
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for sub in self._subscriptions:
            sub.remove()

