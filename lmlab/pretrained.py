"""Bridges to Hugging Face `transformers` GPT-2 (the `hf` extra), both ways.

- `from_pretrained("gpt2")`: GPT-2's released weights (or any GPT2LMHeadModel folder
  saved with `save_pretrained`) in lmlab's `GPT`, with its tokenizer.
- `gpt2_config_for(config)`, `to_hf_state_dict(model)`: an lmlab model as a
  `transformers.GPT2LMHeadModel` (for parity tests).

GPT-2 stores its projections as `Conv1D` with weights [in, out]; lmlab's
`nn.Linear` holds [out, in], so those matrices are transposed on the way.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError, TokenizerError
from .model import GPT, GPTConfig, resolve_device
from .tokenizers import GPT2Tokenizer

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# transformers' activation_function -> GPTConfig.activation. "gelu_new", "gelu_fast" and
# "gelu_pytorch_tanh" are three implementations of the same tanh approximation.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "gelu_fast": "gelu_tanh"}
_TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}


def _exportable(config: GPTConfig) -> None:
    if config.attn_only:
        raise ConfigError("an attention-only model (attn_only=True) has no MLPs, and Hugging Face's "
                          "GPT-2 always has one: it cannot be exported to transformers")


def gpt2_config_for(config: GPTConfig):
    """A `transformers.GPT2Config` of the same shape and activation as `config`, with
    eager attention so attention probabilities can be returned."""
    from transformers import GPT2Config

    _exportable(config)
    hf = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function=_TO_HF_ACTIVATION[config.activation],
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf._attn_implementation = "eager"
    return hf


def to_hf_state_dict(model: GPT) -> dict:
    """lmlab weights under GPT2LMHeadModel's names; missing biases become zeros."""
    _exportable(model.config)
    out = {}
    for name, tensor in model.state_dict().items():
        t = tensor.t() if name.endswith(_CONV1D) else tensor
        out[name] = t.detach().clone()
    c = model.config
    if not c.bias:
        zeros = lambda n: torch.zeros(n, dtype=model.transformer.wte.weight.dtype)  # noqa: E731
        out["transformer.ln_f.bias"] = zeros(c.n_embd)
        for i in range(c.n_layer):
            p = f"transformer.h.{i}."
            for name, n in (("ln_1.bias", c.n_embd), ("ln_2.bias", c.n_embd),
                            ("attn.c_attn.bias", 3 * c.n_embd), ("attn.c_proj.bias", c.n_embd),
                            ("mlp.c_fc.bias", 4 * c.n_embd), ("mlp.c_proj.bias", c.n_embd)):
                out[p + name] = zeros(n)
    return out


# ---- Hugging Face GPT-2 -> lmlab ------------------------------------------------------------


def config_from_hf(hf_config) -> GPTConfig:
    """The `GPTConfig` of a `transformers.GPT2Config`, for inference (dropout 0). What
    lmlab's GPT cannot compute the same way is refused with a ConfigError: another
    activation, layer_norm_epsilon other than 1e-5, n_inner other than 4·n_embd, attention
    scaled otherwise than by 1/sqrt(D), cross-attention."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type != "gpt2":
        raise ConfigError(f"this is a {model_type!r} model; lmlab loads GPT-2 checkpoints "
                          "(model_type 'gpt2', e.g. 'gpt2', 'gpt2-medium' or a GPT2LMHeadModel folder)")
    act = hf_config.activation_function
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"activation_function={act!r} is not supported: lmlab's GPT computes "
                          f"{sorted(HF_ACTIVATIONS)} (exact or tanh-approximate GELU)")
    c = hf_config
    n_embd = c.n_embd
    refusals = [
        (abs(c.layer_norm_epsilon - 1e-5) > 1e-12, f"layer_norm_epsilon={c.layer_norm_epsilon} (lmlab: 1e-5)"),
        (c.n_inner not in (None, 4 * n_embd), f"n_inner={c.n_inner} (lmlab's MLP is 4·n_embd = {4 * n_embd})"),
        (not getattr(c, "scale_attn_weights", True), "scale_attn_weights=False"),
        (getattr(c, "scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx=True"),
        (getattr(c, "add_cross_attention", False), "add_cross_attention=True"),
    ]
    unsupported = [what for bad, what in refusals if bad]
    if unsupported:
        raise ConfigError(f"this GPT-2 variant has {', '.join(unsupported)}, which lmlab's GPT "
                          "does not compute; it loads standard GPT-2 checkpoints")
    return GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer,
                     n_head=c.n_head, n_embd=n_embd, dropout=0.0, bias=True,
                     activation=HF_ACTIVATIONS[act])


def from_hf_state_dict(state: dict, config: GPTConfig) -> dict:
    """GPT2LMHeadModel weights (its `state_dict()`) as lmlab's GPT state dict: Conv1D
    matrices transposed, the causal-mask buffers dropped, lm_head tied to wte (refused
    when the checkpoint's lm_head is a different matrix)."""
    wte = state["transformer.wte.weight"]
    head = state.get("lm_head.weight")
    if head is not None and head.data_ptr() != wte.data_ptr() and not torch.equal(head, wte):
        raise ConfigError("this checkpoint's lm_head differs from its token embeddings (wte); "
                          "lmlab's GPT ties the two, as GPT-2 does")
    with torch.device("meta"):  # the names only: nothing allocated, no RNG drawn
        names = list(GPT(config).state_dict())
    out = {}
    for name in names:
        if name == "lm_head.weight":
            out[name] = wte
            continue
        if name not in state:
            raise CheckpointError(f"the checkpoint has no {name!r}; is it a GPT-2 model?")
        t = state[name]
        out[name] = t.t() if name.endswith(_CONV1D) else t
    return {name: t.float().contiguous() for name, t in out.items()}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _hub_reachable(timeout: float = 3.0) -> str:
    """"" when the Hugging Face hub answers a TCP connection, else why not."""
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return ""
    except OSError as e:
        return f"the Hugging Face hub ({endpoint.hostname}) cannot be reached ({e})"


def _cached(name: str) -> bool:
    """Whether the hub cache holds `name`'s config and weights (or the index of their shards)."""
    from huggingface_hub import try_to_load_from_cache

    def found(filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(name, filename), str)
        except ValueError:  # not a valid hub name
            return False

    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return found("config.json") and any(map(found, weights))


def _source(name_or_path, local_files_only: bool) -> tuple[str, bool, bool]:
    """(what to give transformers, whether it is a local folder, whether to read only the
    cache). Refuses at once, without minutes of retries, what cannot be had offline."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), True, True
    if path.exists():
        raise CheckpointError(f"{text} is a file; give the folder a GPT-2 model was saved to "
                              "with save_pretrained (holding config.json and the weights)")
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text:
        raise CheckpointError(f"there is no folder {text}; give a folder saved with save_pretrained, "
                              "or a Hugging Face hub name such as 'gpt2'")
    if _cached(text):
        return text, False, True
    how = ("connect to the internet once so they are downloaded into the Hugging Face cache "
           "(gpt2 is about 550 MB), set HF_HOME to a cache that has them, or give the path of "
           "a folder saved with save_pretrained")
    if local_files_only or _offline():
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        raise CheckpointError(f"the weights of {text!r} are not in the Hugging Face cache, and "
                              f"{why} forbids downloading them; {how}")
    problem = _hub_reachable()
    if problem:
        raise CheckpointError(f"the weights of {text!r} are not in the Hugging Face cache, and "
                              f"{problem}; {how}")
    return text, False, False


def _tokenizer_for(source: str, is_folder: bool, files_only: bool) -> GPT2Tokenizer | None:
    """The checkpoint's tokenizer as lmlab's GPT2Tokenizer, or None when it has none."""
    if not is_folder:  # a hub name: reloaded by name from the hub cache when rebuilt
        try:
            return GPT2Tokenizer(name=source, local_files_only=files_only)
        except TokenizerError:
            return None
    folder = Path(source)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return None
    from transformers import GPT2TokenizerFast

    try:
        tok = GPT2TokenizerFast.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return None
    # a folder's tokenizer is kept whole (not by path) so that a checkpoint rebuilds it anywhere
    return GPT2Tokenizer(tok) if len(tok) >= 256 else None


def from_pretrained(name_or_path="gpt2", *, local_files_only: bool = False,
                    device=None) -> tuple[GPT, GPT2Tokenizer | None]:
    """Hugging Face GPT-2 weights in lmlab's `GPT`: (model in eval mode, tokenizer).

        model, tok = from_pretrained("gpt2")              # 124M; or "gpt2-medium", ...
        model, tok = from_pretrained("path/to/folder")    # saved with save_pretrained

    `name_or_path` is a hub name or a folder holding a GPT2LMHeadModel (config.json and
    its weights). The config maps to `config_from_hf` (GPT-2's "gelu_new" is
    activation="gelu_tanh", block_size=n_positions, dropout 0); what lmlab's GPT cannot
    compute is refused with a ConfigError. The tokenizer is `GPT2Tokenizer`, or None when
    the folder (or hub repo) has none.

    Weights come from a folder, the Hugging Face cache, or else a download. Not cached
    with `local_files_only`, HF_HUB_OFFLINE set, or the hub unreachable (a 3 s check):
    a CheckpointError at once saying how to get them. `device`: None for the CPU, "auto"
    for the best one here (CUDA, MPS, CPU), or any torch device."""
    try:
        from transformers import AutoConfig, GPT2LMHeadModel
    except ImportError as e:
        raise ImportError("from_pretrained needs transformers: pip install 'lmlab[hf]'") from e
    source, is_folder, files_only = _source(name_or_path, local_files_only)
    try:
        hf_config = AutoConfig.from_pretrained(source, local_files_only=files_only)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"could not read the config of {source!r} ({e}); is it a "
                              "folder saved with save_pretrained, or a hub name?") from e
    config = config_from_hf(hf_config)  # refuse before loading any weights
    try:
        hf = GPT2LMHeadModel.from_pretrained(source, config=hf_config, local_files_only=files_only)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"could not load the weights of {source!r} ({e})") from e
    with torch.device("meta"):  # no random initialisation to overwrite, no RNG drawn
        model = GPT(config)
    try:
        model.load_state_dict(from_hf_state_dict(hf.state_dict(), config), assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source!r}: the weights do not fit its config ({e})") from e
    model.lm_head.weight = model.transformer.wte.weight  # assign=True replaced the tied Parameter
    del hf
    model.to("cpu" if device is None else resolve_device(device)).eval()
    return model, _tokenizer_for(source, is_folder, files_only)
