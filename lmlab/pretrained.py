"""Bridges to Hugging Face `transformers` GPT-2 (the `hf` extra).

GPT-2 stores its projections as `Conv1D` with weights [in, out]; lmlab's
`nn.Linear` holds [out, in], so those matrices are transposed on the way.
"""

from __future__ import annotations

from .model import GPT, GPTConfig

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_config_for(config: GPTConfig):
    """A `transformers.GPT2Config` of the same shape as `config`, with exact GELU
    and eager attention so attention probabilities can be returned."""
    from transformers import GPT2Config

    hf = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu",
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
    import torch

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
