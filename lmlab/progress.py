"""The progress bar of a blocking run (`Trainer.run`): tqdm, drawn by rank 0 only, and
never a reason to stop training."""

from __future__ import annotations


class ProgressBar:
    """A tqdm bar over `trainer`'s steps up to `total`. `update()` after each step;
    `close()` at the end. A bar that fails is turned off, with a line in the trainer's
    warnings: under a process group a rank 0 that failed here would leave the others
    waiting in the next step's collectives."""

    def __init__(self, trainer, total: int, enabled: bool = True):
        from tqdm.auto import tqdm

        self.trainer = trainer
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=trainer.step_count, disable=not enabled,
                        unit="step", dynamic_ncols=True, mininterval=0.25)

    def _safely(self, *calls) -> None:
        if not self.enabled:
            return
        try:
            for call in calls:
                call()
        except Exception as e:
            self.enabled = False
            self.trainer.warnings.append(f"step {self.trainer.step_count}: the progress bar failed "
                                         f"and was turned off: {type(e).__name__}: {e}")

    def update(self) -> None:
        self._safely(self._draw)

    def close(self) -> None:
        self._safely(self._draw, self.bar.close)

    def _draw(self) -> None:
        t, bar = self.trainer, self.bar
        row = t.history.last()
        if row is None or row["step"] == bar.n:
            return
        bar.n = row["step"]
        post = {"loss": f"{row['train_loss']:.4f}", "tok/s": f"{row['tokens_per_s']:,.0f}"}
        if t.last_eval and t.last_eval.get("val_loss") is not None:
            post["val"] = f"{t.last_eval['val_loss']:.4f}"
        bar.set_postfix(post, refresh=False)
        bar.update(0)  # redraws at most every mininterval
