"""A trainer's own random state, kept out of the process's global RNG.

Batches and evaluations draw from `torch.Generator`s of their own. Dropout cannot:
torch's dropout (and `scaled_dot_product_attention`'s) draws from the global RNG and
takes no generator. So a trainer keeps a private copy of that state and swaps it in
for each step (`with rng.active():`), saving what the step drew and putting the
caller's state back after. Code outside the steps never sees the trainer's draws, and
two trainers in one process never draw from each other's stream.

The swap is per thread of control, not a lock: while a step runs on a background
thread (`driver="thread"`), another thread that draws from the global RNG meanwhile
draws from the trainer's state, and finds its own state put back when the step ends.
"""

from __future__ import annotations

import contextlib

import torch


class TrainerRNG:
    """Global-RNG state (CPU and, on CUDA, the device's) of one trainer, seeded by `seed`."""

    def __init__(self, seed: int, device: torch.device):
        self.device = torch.device(device)
        with self._fork():
            torch.manual_seed(seed)
            self.cpu = torch.get_rng_state()
            self.cuda = self._cuda_state()

    def _devices(self) -> list:
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    def _fork(self):
        return torch.random.fork_rng(devices=self._devices())

    def _cuda_state(self) -> torch.Tensor | None:
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    @contextlib.contextmanager
    def active(self):
        """Inside: the global RNG is this trainer's; after: the caller's again."""
        with self._fork():
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            try:
                yield
            finally:
                self.cpu = torch.get_rng_state()
                self.cuda = self._cuda_state()

    def state(self) -> dict:
        """{"cpu": ByteTensor, "cuda": ByteTensor or None}: copies, for checkpoints."""
        return {"cpu": self.cpu.clone(), "cuda": None if self.cuda is None else self.cuda.clone()}

    def set_state(self, cpu: torch.Tensor, cuda: torch.Tensor | None = None) -> None:
        """Restore saved states (any device: RNG states always live on the CPU)."""
        self.cpu = cpu.detach().to("cpu", torch.uint8).clone()
        if cuda is not None and self.device.type == "cuda":
            self.cuda = cuda.detach().to("cpu", torch.uint8).clone()
