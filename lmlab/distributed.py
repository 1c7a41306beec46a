"""Training in several processes: PyTorch's DistributedDataParallel, launched by `torchrun`.

lmlab grows no distributed system of its own. `torchrun` starts the processes and gives
each its RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address; `init` joins the
process group (NCCL on CUDA, gloo on the CPU), and a `Trainer` built afterwards sees
the group: it wraps the model in DDP, draws its own micro-batches, averages the
evaluation over ranks, and lets rank 0 alone write (see `lmlab.train`).

Without a process group (a notebook, a plain script) everything here answers for one
process, rank 0 of 1, and nothing is communicated.

    lmlab train --nproc 2 ...                                      # one machine, loopback
    torchrun --standalone --nproc_per_node=8 -m lmlab train ...    # the same, by hand
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import sys

import torch
import torch.distributed as dist

from .errors import DistributedError

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
DEFAULT_TIMEOUT = 600.0  # seconds: torch's own default for NCCL


def launched() -> bool:
    """Whether torchrun started this process (it sets RANK, LOCAL_RANK and WORLD_SIZE)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def active() -> bool:
    """Whether a process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that prints and writes files."""
    return rank() == 0


def _uses_cuda(device) -> bool:
    if device in (None, "auto"):
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def check_gpus(nproc: int, device="auto") -> None:
    """Refuse `nproc` processes on one machine when they would train on CUDA (NCCL: one
    GPU a process) and fewer GPUs are visible."""
    if not _uses_cuda(device):
        return
    visible = torch.cuda.device_count()
    if nproc > visible:
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f"{visible} GPU{'s' if visible != 1 else ''} visible" + (
            f" (CUDA_VISIBLE_DEVICES={mask})" if mask is not None else "")
        fix = f"use --nproc {visible} (--global-batch keeps the batch), " if visible else ""
        raise DistributedError(
            f"{nproc} processes on CUDA need {nproc} GPUs (NCCL runs one process a GPU), but "
            f"this machine has {seen}; {fix}or pass --device cpu to train on the CPU with gloo")


def rank_device(device="auto") -> torch.device:
    """This process's device: `device` ("auto", "cpu", "cuda", "cuda:1"), CUDA's index
    set to LOCAL_RANK when not given. "auto" is CUDA when present, else the CPU (no
    process-group backend takes Apple MPS tensors)."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type not in ("cpu", "cuda"):
        raise DistributedError(f"device {device.type!r} cannot train with DDP (no process-group "
                               "backend for it); pass --device cpu, or cuda on NVIDIA GPUs")
    return device


def init(device="auto", timeout: float = DEFAULT_TIMEOUT) -> torch.device:
    """Join the process group torchrun prepared (its env:// rendezvous) and return this
    rank's device: NCCL on CUDA, gloo on the CPU. `timeout` (seconds) bounds the
    rendezvous and, afterwards, every collective."""
    if not launched():
        raise DistributedError("not started by torchrun (RANK, LOCAL_RANK and WORLD_SIZE are "
                               "unset); launch with torchrun --nproc_per_node=N -m lmlab train "
                               "..., or lmlab train --nproc N")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    check_gpus(local, device)
    device = rank_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout),
                                **({"device_id": device} if device.type == "cuda" else {}))
    except RuntimeError as e:  # torch's DistError and its timeouts are RuntimeErrors
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} could not join the "
            f"rendezvous at {where} within {timeout:g} s ({reason}); check that every node was "
            "started with the same --nnodes and --rdzv_endpoint (or --master_addr/--master_port) "
            "and can reach that address, or give slow nodes longer with --dist-timeout SECONDS"
        ) from e
    return device


def finish(wait: bool = True) -> None:
    """Leave the process group, if one is initialised, once what holds it (the DDP of a
    trainer no longer used) is gone and, with `wait`, once every rank has come this far:
    a rank that tears its connections down under another can abort it at exit."""
    if not active():
        return
    gc.collect()  # a Trainer is a reference cycle: its DDP would outlive the group
    if wait:
        dist.barrier()
    dist.destroy_process_group()


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` in DistributedDataParallel: its parameters broadcast from rank 0, its
    gradients averaged over ranks in the backward."""
    from torch.nn.parallel import DistributedDataParallel

    try:
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    except RuntimeError as e:
        if "expects same model across all ranks" not in str(e):
            raise
        raise DistributedError(
            f"the ranks built models of different shapes ({str(e).strip().splitlines()[0]}); "
            "every rank must build the same model: the same --preset, --block-size, --bpe "
            "and text, or the same checkpoint") from e


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks, in place; returns it."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather(obj) -> list:
    """Every rank's `obj` (picklable), in rank order; [obj] without a process group."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj):
    """Rank 0's `obj` on every rank (e.g. a tokenizer trained once)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` run by rank 0 alone (e.g. writing a file), its result on every
    rank. Rank 0 always reaches the broadcast, even when `fn` fails: the failure is then
    raised on every rank (rank 0's own exception; a DistributedError naming it on the
    others), so no rank waits until the timeout for a rank 0 that went elsewhere.
    Without a process group: `fn(*args, **kwargs)`."""
    if not active():
        return fn(*args, **kwargs)
    result, failure, error = None, None, None
    if dist.get_rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # told to the others below, then raised here
            error, failure = e, f"{type(e).__name__}: {e}"
    result, failure = from_main((result, failure))
    if error is not None:
        raise error
    if failure is not None:
        raise DistributedError(f"rank 0 failed, so rank {dist.get_rank()} stops too: {failure}")
    return result


def loopback_interface() -> str | None:
    """The name of the loopback network interface (lo on Linux, lo0 on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((n for n in names if n in ("lo", "lo0")), None)


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """torchrun with `nproc` processes on this machine, rendezvous on the loopback only,
    running `python -m lmlab ARGV` in each."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={nproc}", "--local-addr=127.0.0.1", "-m", "lmlab", *argv]


def launch(nproc: int, argv: list[str], device="auto"):
    """Replace this process with torchrun running `lmlab ARGV` in `nproc` processes,
    their sockets on the loopback interface. Does not return."""
    if nproc < 1:
        raise DistributedError(f"--nproc {nproc} must be at least 1")
    check_gpus(nproc, device)
    env = dict(os.environ)
    lo = loopback_interface()
    if lo is not None:
        env.setdefault("GLOO_SOCKET_IFNAME", lo)
        env.setdefault("NCCL_SOCKET_IFNAME", lo)
    sys.stdout.flush()
    sys.stderr.flush()
    command = torchrun_command(nproc, argv)
    os.execve(command[0], command, env)
