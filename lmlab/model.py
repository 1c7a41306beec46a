"""A compact decoder-only Transformer (GPT), in the spirit of nanoGPT's model.py.

Shapes: B batch, T query positions, S key positions (past + T), C = n_embd,
H = n_head, D = C // H, V = vocab_size, L = n_layer.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn import functional as F

from .errors import ConfigError
from .hooks import HookPoint, name_points, run_with_cache, run_with_hooks
from .reading import weights_changed
from .settings import Checked

PRESETS: dict[str, dict] = {
    # ~0.1M parameters: trains in seconds, for tests and first demos.
    "nano": dict(n_layer=2, n_head=4, n_embd=64, block_size=64),
    # ~0.8M: nanoGPT's CPU configuration for tiny Shakespeare.
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
    # ~10.7M: nanoGPT's shakespeare-char model.
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
}

# GPTConfig.activation -> nn.GELU's `approximate` argument
ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}


@dataclass(frozen=True)
class GPTConfig(Checked):
    vocab_size: int = 65
    block_size: int = 64  # longest context, in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    activation: str = "gelu"  # the MLP's: "gelu" (exact, erf) or "gelu_tanh" (GPT-2's "gelu_new")
    attn_only: bool = False  # blocks without an MLP (and its norm): the circuits lessons' models

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if self.n_embd % self.n_head:
            multiple = max(self.n_head, self.n_embd // self.n_head * self.n_head)
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                f"pick n_embd as a multiple of n_head (e.g. {multiple})"
            )
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout={self.dropout!r} must be in [0, 1), e.g. 0.0 or 0.2")
        if not isinstance(self.attn_only, bool):
            raise ConfigError(f"attn_only={self.attn_only!r} must be True or False")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation={self.activation!r}; choose one of {sorted(ACTIVATIONS)} "
                              "('gelu_tanh' is the tanh approximation GPT-2 was trained with)")

    @classmethod
    def preset(cls, name: str, **overrides) -> GPTConfig:
        """A named configuration (`nano`, `tiny`, `small`), with fields overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> GPTConfig:
        return replace(self, **changes)


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # [B, T, V]
    loss: torch.Tensor | None  # scalar cross-entropy, when targets are given


class KVCache:
    """Keys and values of past positions, preallocated for block_size positions.

    `length` is how many positions are stored; each layer writes its own slot.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype=torch.float32):
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0
        self.capacity = config.block_size

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v [B, H, T, D] after the past; return all keys and values [B, H, S, D]."""
        end = self.length + k.size(2)
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.hook_pattern = HookPoint()  # [B, H, T, S]
        self.hook_z = HookPoint()  # [B, T, H, D]

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        """x [B, T, C] -> y [B, T, C]. The attention probabilities are computed explicitly
        only while a hook reads `hook_pattern`; otherwise the fused kernel runs."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)
        S = past + T
        explicit = self.hook_pattern.read
        mask = None
        if past and T > 1 or explicit:
            # query i sits at absolute position past + i and sees keys 0 .. past + i
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=past)
        if explicit:
            att = (q * (1.0 / math.sqrt(k.size(-1)))) @ k.transpose(-2, -1)  # scale the smaller side
            att = self.hook_pattern(torch.softmax(att.masked_fill_(~mask, float("-inf")).float(), dim=-1))
            y = self.attn_dropout(att).type_as(v) @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T > 1,
            )
        y = self.hook_z(y.transpose(1, 2))  # [B, T, H, D]: each head's output
        return self.resid_dropout(self.c_proj(y.reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=ACTIVATIONS[config.activation])
        self.hook_post = HookPoint()  # [B, T, 4C]
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.hook_post(self.gelu(self.c_fc(x)))))


class Block(nn.Module):
    """Attention then MLP, each added to the residual stream; attention only where
    `config.attn_only` (no ln_2, mlp, hook_resid_mid or hook_mlp_out)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        # the residual stream [B, T, C] and what is added to it, at named points (lmlab.hooks),
        # registered in the order a forward passes them
        self.hook_resid_pre = HookPoint()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.hook_attn_out = HookPoint()
        self.mlp = None
        if not config.attn_only:
            self.hook_resid_mid = HookPoint()
            self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config)
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x, cache=None, layer=0):
        x = self.hook_resid_pre(x)
        x = x + self.hook_attn_out(self.attn(self.ln_1(x), cache, layer))
        if self.mlp is not None:
            x = self.hook_resid_mid(x)
            x = x + self.hook_mlp_out(self.mlp(self.ln_2(x)))
        return self.hook_resid_post(x)


class FinalNorm(nn.LayerNorm):
    """The LayerNorm before the unembedding, its output at `hook_normalized`."""

    def __init__(self, n_embd: int, bias: bool):
        super().__init__(n_embd, bias=bias)
        self.hook_normalized = HookPoint()  # [B, T, C]

    def forward(self, x):
        return self.hook_normalized(super().forward(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=FinalNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied input/output embeddings
        self.hook_dict = name_points(self)  # {name: HookPoint}, see lmlab.hooks
        self.register_load_state_dict_post_hook(_loaded)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2's initialisation, drawn from the global RNG (as at construction)."""
        self.apply(self._init_weights)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))
        weights_changed(self)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counted once though tied; without position embeddings by default."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12·L·H·D·T."""
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * T

    def new_cache(self, batch_size: int = 1) -> KVCache:
        return KVCache(self.config, batch_size, self.device, self.transformer.wte.weight.dtype)

    def forward(self, idx, targets=None, *, cache: KVCache | None = None, start_at_layer: int = 0):
        """idx [B, T] token ids -> ModelOutput(logits [B, T, V], loss).

        A sequence longer than block_size (counting what the cache holds) keeps its
        last block_size tokens; targets are cropped the same way. With a cache, the
        new positions follow the cached ones and are stored into it. Activations are
        read or replaced at the named points of `lmlab.hooks`. With `start_at_layer=l`
        (TransformerLens's name), idx is instead the residual stream [B, T, C] entering
        block l, for example one recorded by an earlier pass: the blocks before it are
        skipped (no cache, no cropping).
        """
        if start_at_layer:
            if cache is not None or not 0 < start_at_layer <= self.config.n_layer:
                raise ConfigError(f"start_at_layer={start_at_layer} needs no cache and a layer in "
                                  f"1..{self.config.n_layer}")
            if idx.dim() != 3 or idx.size(1) > self.config.block_size:
                raise ConfigError(f"start_at_layer takes the residual stream [B, T, C], T at most "
                                  f"{self.config.block_size}, not {list(idx.shape)}")
            x = idx
        else:
            x, targets = self._embed(idx, targets, cache)
        for i in range(start_at_layer, self.config.n_layer):
            x = self.transformer.h[i](x, cache, i)
        if cache is not None:
            cache.length += x.size(1)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return ModelOutput(logits, loss)

    def _embed(self, idx, targets, cache):
        """Token and position embeddings of idx [B, T] (cropped to what fits) -> (x [B, T, C], targets)."""
        past = cache.length if cache is not None else 0
        limit = self.config.block_size - past
        if idx.size(1) > limit:
            if past:  # cropping would silently drop tokens the caller means to follow the cache
                raise ConfigError(
                    f"{idx.size(1)} new tokens do not fit after the {past} cached positions "
                    f"(block_size={self.config.block_size} holds {limit} more); feed at most "
                    f"{limit} tokens, or start a new cache with model.new_cache()"
                )
            idx = idx[:, -limit:]
            targets = targets[:, -limit:] if targets is not None else None
        pos = torch.arange(past, past + idx.size(1), dtype=torch.long, device=idx.device)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos)), targets

    def run_with_cache(self, tokens, names=None, **kwargs):
        """(logits, ActivationCache) of one forward: see `lmlab.hooks.run_with_cache`."""
        return run_with_cache(self, tokens, names, **kwargs)

    def run_with_hooks(self, tokens, fwd_hooks, **kwargs):
        """Logits of one forward with `fwd_hooks`: see `lmlab.hooks.run_with_hooks`."""
        return run_with_hooks(self, tokens, fwd_hooks, **kwargs)


def _loaded(module, incompatible_keys) -> None:
    weights_changed(module)


def best_device() -> torch.device:
    """CUDA if present, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device=None) -> torch.device:
    if device in (None, "auto"):
        return best_device()
    return torch.device(device)


def autocast(device, dtype: str = "float32"):
    """bf16 autocast on CUDA when asked for; a no-op context elsewhere."""
    device = torch.device(device)
    if dtype == "bfloat16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def maybe_compile(model: GPT, enabled: bool):
    """torch.compile the model when enabled (opt-in; compiling takes a while)."""
    return torch.compile(model) if enabled else model
