"""Model FLOPs utilisation: how much of a GPU's bf16 peak a run achieves."""

from __future__ import annotations

import torch

from .model import GPT

PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40": 181e12,
                   "L4": 121e12, "A10": 125e12, "V100": 125e12, "T4": 65e12}


def mfu(model: GPT, tokens_per_s: float, device=None) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the GPU's bf16 peak
    (a table of known GPUs); None on the CPU or an unknown GPU."""
    device = torch.device(device or model.device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return model.flops_per_token() * tokens_per_s / peak if peak else None
