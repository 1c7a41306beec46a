"""The optimiser a `TrainConfig` asks for: AdamW (fused where the device has it), Adam or
SGD, with weight decay on matrices and embeddings only (nanoGPT's groups)."""

from __future__ import annotations

import torch

from .model import GPT
from .train_config import TrainConfig

def optimizer_groups(model: GPT, config: TrainConfig) -> list[dict]:
    """Weight decay on matrices and embeddings, none on biases and norms (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def fused_adam_available(device: torch.device) -> bool:
    """Whether the installed torch has fused Adam/AdamW kernels for `device` (CUDA; the
    CPU since torch 2.4)."""
    probe = torch.zeros(1, device=device, requires_grad=True)
    try:
        torch.optim.AdamW([probe], fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def make_optimizer(model: GPT, config: TrainConfig, device: torch.device, fused: bool | None = None):
    """The optimizer `config` names, over `optimizer_groups`. Adam and AdamW use torch's
    fused kernels where the installed torch has them for `device` (`fused=None`): one
    kernel a tensor instead of a loop of elementwise ops; the same update."""
    groups = optimizer_groups(model, config)
    lr = config.lr_at(0)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    if fused is None:
        fused = fused_adam_available(device)
    return cls(groups, lr=lr, betas=tuple(config.betas), **({"fused": True} if fused else {}))
