"""Training in several processes: tokens/s of one process against two DDP processes
(gloo, loopback) on the same global batch, every process on one CPU thread.

Each runner is a set of long-lived worker processes holding a `Trainer`; a round asks
them for `steps` optimizer steps and they time it themselves, so process start-up and
the rendezvous are not counted. One optimizer step is the same work for every runner:
`per_rank x 2` sequences of the preset's context (one process: `grad_accum_steps=2`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
import traceback

import torch

from . import interleaved, rates, report

PRESET, PER_RANK, STEPS = "small", 4, 2  # preset, sequences a micro-batch, steps a round


def _worker(conn, rank: int, world: int, threads: int, port: int) -> None:
    """One process of a runner: a Trainer (DDP when `world` > 1) answering each round
    with its own seconds for STEPS steps."""
    try:
        torch.set_num_threads(threads)
        from .. import distributed
        from ..train import Trainer
        from .training import cpu_setup

        if world > 1:
            lo = distributed.loopback_interface()
            if lo:
                os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                              LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(port))
            distributed.init("cpu", timeout=300)
        model, dataset, config = cpu_setup(
            preset=PRESET, batch_size=PER_RANK, grad_accum_steps=2 // world,
            eval_interval=10**9, eval_batches=1)
        trainer = Trainer(model, dataset, config)
        conn.send(("ready", trainer.optimizer.defaults.get("fused", False)))
        while conn.recv():
            t0 = time.perf_counter()
            for _ in range(STEPS):
                trainer.step()
            conn.send(("round", time.perf_counter() - t0))
        distributed.finish()
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class Workers:
    """`world` worker processes (spawned, each on `threads` threads) behind one runner."""

    def __init__(self, world: int, threads: int = 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for rank in range(world):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, rank, world, threads, port), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.fused = self._answers("ready")[0]

    def _answers(self, kind: str) -> list:
        out = []
        for conn in self.conns:
            what, value = conn.recv()
            if what == "error":
                self.close()
                raise RuntimeError(f"a benchmark worker failed:\n{value}")
            out.append(value)
        return out

    def __call__(self) -> float:
        """One round: every process does STEPS steps; the slowest one's seconds."""
        for conn in self.conns:
            conn.send(True)
        return max(self._answers("round"))

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(False)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()


def bench_distributed(rounds: int = 5) -> dict:
    """Training tokens/s of 1 process (1 thread), 2 DDP processes (1 thread each), and,
    for reference, 1 process on 2 threads, on the same global batch. Returns the ratios
    to the one-thread process."""
    from ..model import GPTConfig

    block = GPTConfig.preset(PRESET).block_size
    runners = {"1 process, 1 thread": Workers(1), "2 processes (DDP, gloo), 1 thread each":
               Workers(2), "1 process, 2 threads (reference)": Workers(1, threads=2)}
    try:
        elapsed = interleaved(runners, rounds)
    finally:
        for workers in runners.values():
            workers.close()
    per_s = rates(elapsed, rounds * STEPS * 2 * PER_RANK * block)
    fused = " fused" if runners["1 process, 1 thread"].fused else ""
    return report(
        f"training in several processes, {PRESET} preset, a step of {2 * PER_RANK}x{block} "
        f"tokens (one process: 2 micro-batches of {PER_RANK}), fp32, AdamW{fused}, "
        f"{os.cpu_count()} CPU cores", per_s, baseline="1 process, 1 thread")
