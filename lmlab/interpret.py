"""Looking inside a model: attention capture, per-head scores, head ablation, the top
next-token predictions at a position, compact images of attention for a browser,
token and position embeddings projected on their principal components, and the logit
lens (what each layer's residual stream would predict next).

Attention of one sequence is a float32 CPU tensor [layer, head, query, key] (L, H, T, T):
row q holds query q's probabilities over keys 0..q, summing to 1, zeros above the diagonal.
Every read of a model goes through `lmlab.reading` (its lock, eval mode, no autograd), so
it is safe while the model trains. Models are lmlab's `GPT` or a Hugging Face causal LM
(e.g. `transformers.GPT2LMHeadModel`); ablation needs lmlab's `GPT`.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .adapt import context_length, display, token_ids
from .errors import ConfigError
from .hooks import ActivationCache, hooks
from .model import GPT
from .reading import model_lock, reading
from .sampling import Distribution, largest, next_token_distribution


@dataclass(eq=False)
class Attention:
    """The attention of one sequence: weights [L, H, T, T], and its T tokens."""

    weights: torch.Tensor  # float32 on the CPU, [layer, head, query, key]
    tokens: list[str]  # display strings, whitespace made visible
    ids: list[int]

    @property
    def n_layer(self) -> int:
        return self.weights.size(0)

    @property
    def n_head(self) -> int:
        return self.weights.size(1)

    def head(self, layer: int, head: int) -> torch.Tensor:
        """One head's attention matrix [T, T] (query rows, key columns)."""
        return self.weights[layer, head]


# ---- capture ------------------------------------------------------------------------------


def _set_attn_implementation(model, name: str):
    if hasattr(model, "set_attn_implementation"):  # transformers >= 4.48
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name


def _hf_read(model, idx: torch.Tensor, attention: bool, streams: bool):
    """One forward of a Hugging Face causal LM: (logits [T, V], attention [L, H, T, T] or
    None, residual streams or None). Only its eager attention returns probabilities (sdpa
    returns none), so it is switched to eager for a call that reads them. Its hidden_states
    end with the final norm already applied, so the last stream is taken at the norm's input."""
    previous = model.config._attn_implementation
    switch = attention and previous != "eager"
    seen = []
    hook = (_final_norm(model).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
            if streams else None)
    if switch:
        _set_attn_implementation(model, "eager")
    try:
        out = model(input_ids=idx, output_attentions=attention, output_hidden_states=streams,
                    use_cache=False)
    finally:
        if switch:
            _set_attn_implementation(model, previous)
        if hook is not None:
            hook.remove()
    weights = stream_list = None
    if attention:
        if not out.attentions:
            raise ConfigError(f"{type(model).__name__} returned no attention probabilities even with "
                              "eager attention; load it with attn_implementation='eager'")
        weights = torch.stack([a[0] for a in out.attentions]).float().cpu()
    if streams:
        hidden = getattr(out, "hidden_states", None)
        if not hidden or len(seen) != 1:
            raise ConfigError(f"{type(model).__name__} did not give its hidden states and final norm "
                              "input; the logit lens reads lmlab's GPT and GPT-2-like models")
        stream_list = [*hidden[:-1], seen[0]]
    return out.logits[0], weights, stream_list


def read_pass(model, idx: torch.Tensor, attention: bool = True, streams: bool = True):
    """One forward of idx [1, T] (T within the context): (logits [T, V] on the model's
    device, attention [L, H, T, T] float32 on the CPU or None, the L + 1 residual streams
    [1, T, C] or None: the embeddings, then each block's output, all before the final norm).
    lmlab's GPT is read at its named points (`lmlab.hooks`), a Hugging Face model through
    its attentions and hidden states. Callers hold `reading(model)`."""
    if not isinstance(model, GPT):
        return _hf_read(model, idx, attention, streams)
    last = f"blocks.{model.config.n_layer - 1}.hook_resid_post"
    names = [n for n in model.hook_dict if (attention and n.endswith("attn.hook_pattern"))
             or (streams and (n.endswith("hook_resid_pre") or n == last))]
    cache = ActivationCache()
    record = [(n, lambda x, hook: dict.__setitem__(cache, hook.name, x)) for n in names]
    with hooks(model, record):
        logits = model(idx).logits[0]
    weights = (torch.stack([cache["pattern", i][0] for i in range(model.config.n_layer)]).float().cpu()
               if attention else None)
    stream_list = ([cache["resid_pre", i] for i in range(model.config.n_layer)] + [cache[last]]
                   if streams else None)
    return logits, weights, stream_list


def capture_attention(model, tokens_or_ids, tokenizer=None) -> Attention:
    """The attention of every head on one text (encoded with `tokenizer`) or list of ids.

    Read through `reading(model)`: between training steps, in eval mode, drawing nothing
    from the global RNG. A text longer than the model's context is refused, not cropped."""
    ids = token_ids(model, tokens_or_ids, tokenizer, context_length(model))
    with reading(model):
        idx = torch.tensor([ids], device=next(model.parameters()).device)
        _, weights, _ = read_pass(model, idx, attention=True, streams=False)
    return Attention(weights, list(map(display(tokenizer), ids)), ids)


# ---- per-head scores ----------------------------------------------------------------------


def induction_score(weights: torch.Tensor, length: int) -> torch.Tensor:
    """[L, H] scores of attention [L, H, 2·length, 2·length] on a sequence repeated twice:
    the mean, over queries i in the second half, of attention to key i - length + 1 (the
    token after the earlier occurrence of token i). An induction head scores near 1."""
    queries = torch.arange(length, 2 * length)
    return weights[..., queries, queries - length + 1].mean(-1)


def induction_score_on(weights: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """[L, H] induction scores of attention [L, H, T, T] on any text `ids` with repeats:
    the mean, over queries q whose token occurred before at p < q - 1 (its latest
    occurrence), of attention to key p + 1, the token that followed it. On a sequence
    repeated twice whose first half has no repeats it is `induction_score`."""
    last: dict[int, int] = {}
    queries, keys = [], []
    for q, token in enumerate(ids):
        p = last.get(token)
        if p is not None and p + 1 < q:
            queries.append(q)
            keys.append(p + 1)
        last[token] = q
    if not queries:
        raise ConfigError("the text repeats no token: an induction score needs a token that "
                          "occurs twice, with at least one token between")
    return weights[..., torch.tensor(queries), torch.tensor(keys)].mean(-1)


INDUCTION_LENGTH = 128  # the default probe: 128 random tokens, then the same 128 again


def induction_scores(model, length: int | None = None, seed: int = 0) -> torch.Tensor:
    """Induction scores [L, H] (see `induction_score`) on `length` random tokens repeated
    once. `length` defaults to INDUCTION_LENGTH and is clamped to half the model's context;
    tokens are distinct where the vocabulary allows, drawn from a generator seeded with
    `seed`. lmlab's GPT is scored layer by layer as each pattern passes its hook point."""
    context = context_length(model)
    half = context // 2 if context else length or INDUCTION_LENGTH
    length = min(INDUCTION_LENGTH if length is None else length, half)
    if length < 2:
        raise ConfigError(f"length={length} is too short for induction: use at least 2 tokens "
                          "(and a model whose context holds twice that)")
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    if length <= vocab:
        first = torch.randperm(vocab, generator=gen)[:length]
    else:
        first = torch.randint(vocab, (length,), generator=gen)
    ids = first.repeat(2).tolist()
    if not isinstance(model, GPT):
        return induction_score(capture_attention(model, ids).weights, length)
    scores = {}  # each layer's [H], scored as its pattern passes: no [L, H, T, T] is kept

    def score(pattern, hook):
        scores[hook.name] = induction_score(pattern[0].float(), length).cpu()

    with reading(model), hooks(model, [(lambda name: name.endswith("hook_pattern"), score)]):
        model(torch.tensor([ids], device=model.device))
    return torch.stack(list(scores.values()))


class HeadTable(list):
    """A list of rows, one dict per (layer, head): layer, head, entropy, previous_token,
    first_token, induction."""

    @property
    def rows(self) -> list[dict]:
        return list(self)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(list(self))


def head_summary(attention: Attention, induction: torch.Tensor | None = None) -> HeadTable:
    """Scores of each head on `attention`:

    entropy         mean over queries of the row's entropy, in nats (0: one key per query)
    previous_token  mean over queries q >= 1 of attention to key q - 1
    first_token     mean over queries q >= 1 of attention to key 0 (the "sink")
    induction       from `induction_scores(model)` [L, H] when given, else None

    previous_token and first_token are nan for a one-token text."""
    w = attention.weights
    entropy = -torch.special.xlogy(w, w).sum(-1).mean(-1)  # 0 · log 0 = 0
    previous = w.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)
    first = w[..., 1:, 0].mean(-1)
    rows = []
    for layer in range(w.size(0)):
        for head in range(w.size(1)):
            rows.append(dict(
                layer=layer, head=head,
                entropy=float(entropy[layer, head]),
                previous_token=float(previous[layer, head]),
                first_token=float(first[layer, head]),
                induction=None if induction is None else float(induction[layer, head]),
            ))
    return HeadTable(rows)


# ---- ablation -----------------------------------------------------------------------------


def _head_masks(model: GPT, heads) -> dict[int, torch.Tensor]:
    """{layer: bool mask [H]} from {layer: [head, ...]} or [(layer, head), ...]."""
    if isinstance(heads, dict):
        heads = [(layer, h) for layer, hs in heads.items() for h in ([hs] if isinstance(hs, int) else hs)]
    L, H = model.config.n_layer, model.config.n_head
    masks = {}
    for pair in heads:
        try:
            layer, head = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise ConfigError(f"{pair!r} is not a (layer, head) pair; give heads as "
                              "{layer: [head, ...]} or [(layer, head), ...]") from None
        if not (0 <= layer < L and 0 <= head < H):
            raise ConfigError(f"head (layer={layer}, head={head}) does not exist: this model has "
                              f"layers 0..{L - 1} and heads 0..{H - 1}")
        masks.setdefault(layer, torch.zeros(H, dtype=torch.bool))[head] = True
    return masks


_ablating: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> layers inside ablate()


def ablation_hooks(model: GPT, heads, mode: str = "zero") -> list[tuple[str, object]]:
    """Forward hooks (for `lmlab.hooks.hooks` or `run_with_hooks`) that knock `heads` out at
    each layer's `attn.hook_z` [B, T, H, D]: "zero" sets a head's output to zero, "mean"
    replaces it by its mean over the T positions of the forward call."""
    if not isinstance(model, GPT):
        raise ConfigError(f"ablation works on lmlab's GPT, not {type(model).__name__}")
    if mode not in ("zero", "mean"):
        raise ConfigError(f"mode={mode!r}; choose 'zero' or 'mean'")

    def knock(mask: torch.Tensor):
        def hook(z, _):
            off = mask.to(z.device).view(1, 1, -1, 1)
            return torch.where(off, 0.0 if mode == "zero" else z.mean(1, keepdim=True), z)
        return hook

    return [(f"blocks.{layer}.attn.hook_z", knock(mask)) for layer, mask in _head_masks(model, heads).items()]


@contextlib.contextmanager
def ablate(model: GPT, heads, mode: str = "zero"):
    """Knock heads out of `model` for the `with` block, on the model itself (no copy):

        with ablate(model, {0: [1, 3]}):   # or [(0, 1), (0, 3)]
            logits = model(idx).logits

    mode "zero": each head's output (its [T, D] slice of the attention output, before
    the output projection c_proj, at `blocks.{l}.attn.hook_z`) is zeroed. "mean":
    replaced by its mean over the T positions of the current forward call (so a one-token
    step on a key/value cache is left unchanged: ablate whole sequences). Holds the model's
    lock for the whole block, so no training step runs with heads ablated; the hooks are
    removed after."""
    fwd_hooks = ablation_hooks(model, heads, mode)
    layers = {int(name.split(".")[1]) for name, _ in fwd_hooks}
    with model_lock(model):
        busy = sorted(layers & _ablating.get(model, set()))
        if busy:
            raise ConfigError(f"layers {busy} already have heads ablated by an enclosing ablate(); "
                              "pass all the heads to one ablate() call")
        _ablating.setdefault(model, set()).update(layers)
        try:
            with hooks(model, fwd_hooks):
                yield model
        finally:
            _ablating[model] -= layers


def ablation_effect(model: GPT, tokens_or_ids, heads, mode: str = "zero",
                    tokenizer=None) -> dict[str, float]:
    """The text's mean next-token loss (cross-entropy, nats) as is, "loss", and with `heads`
    ablated (see `ablate`), "ablated_loss". The text needs 2 to block_size + 1 tokens."""
    ids = token_ids(model, tokens_or_ids, tokenizer, model.config.block_size + 1)
    if len(ids) < 2:
        raise ConfigError("a loss needs at least 2 tokens: one to read and one to predict")
    idx = torch.tensor([ids], device=model.device)
    x, y = idx[:, :-1], idx[:, 1:]
    with reading(model):
        loss = float(model(x, y).loss)
        with ablate(model, heads, mode):
            ablated = float(model(x, y).loss)
    return {"loss": loss, "ablated_loss": ablated}


# ---- predictions --------------------------------------------------------------------------


def predictions_at(model, tokenizer, ids: list[int], position: int, k: int = 10) -> Distribution:
    """The model's k most likely next tokens after reading ids[:position + 1] (temperature
    1, no filters): a `Distribution` cut to its top k, most likely first."""
    if not 0 <= position < len(ids):
        raise ConfigError(f"position={position} is outside the text's {len(ids)} tokens "
                          f"(0..{len(ids) - 1})")
    if k < 1:
        raise ConfigError(f"k={k} must be at least 1")
    d = next_token_distribution(model, tokenizer, list(ids[: position + 1]))
    return Distribution(d.ids[:k], d.tokens[:k], d.probs_raw[:k], d.probs[:k], removed=[])


def top_predictions(logits: torch.Tensor, tokenizer, k: int = 10) -> Distribution:
    """The k most likely next tokens of logits [V] (temperature 1, no filters), most
    likely first: what `predictions_at` gives, from logits already computed."""
    values, ids = largest(logits.float().softmax(-1), k)
    values, ids = values.tolist(), ids.tolist()
    show = display(tokenizer)
    return Distribution(ids, [show(i) for i in ids], values, values, removed=[])


# ---- images for a browser -----------------------------------------------------------------


def _to_uint8(weights: torch.Tensor) -> torch.Tensor:
    return (weights * 255).round_().clamp_(0, 255).to(torch.uint8)


def head_thumbnails(attention: Attention | torch.Tensor, size: int = 32) -> torch.Tensor:
    """Each head's matrix as a small image: uint8 [L, H, S, S], S = min(size, T), each
    pixel the largest weight of its block (so thin diagonals stay visible) times 255,
    rounded. For the overview grid of all heads when T is large."""
    w = attention.weights if isinstance(attention, Attention) else attention
    if size < 1:
        raise ConfigError(f"size={size} must be at least 1 pixel")
    S = min(size, w.size(-1))
    return _to_uint8(F.adaptive_max_pool2d(w.float(), S))


def quantize(attention: Attention | torch.Tensor) -> bytes:
    """The whole attention as bytes: uint8 weight × 255, rounded, row-major
    [layer, head, query, key] (L·H·T·T bytes; use `head_thumbnails` beyond T ≈ 128)."""
    w = attention.weights if isinstance(attention, Attention) else attention
    return _to_uint8(w.float()).contiguous().numpy().tobytes()


# ---- embeddings -----------------------------------------------------------------------------

EMBEDDINGS = ("tokens", "positions")


@dataclass(eq=False)
class Projection:
    """N embeddings [N, C] projected on their first `dims` principal components."""

    which: str  # "tokens" or "positions"
    labels: list[str]  # N display strings: tokens (whitespace made visible) or "pos 0", "pos 1", ...
    coords: torch.Tensor  # float32 [N, dims], the centred embeddings on each component
    explained: torch.Tensor  # float32 [dims], the fraction of the total variance on each component
    matrix: torch.Tensor  # float32 [N, C] on the CPU, the embeddings as read
    components: torch.Tensor  # float32 [dims, C], unit principal directions, largest variance first
    total: int  # rows the model has (N < total when cut by `limit`)

    @property
    def dims(self) -> int:
        return self.coords.size(1)


def _embedding_module(model, which: str) -> torch.nn.Module:
    if which not in EMBEDDINGS:
        raise ConfigError(f"which={which!r}; choose 'tokens' (one point per vocabulary entry) "
                          "or 'positions' (one point per position in the context)")
    context_length(model)  # refuses what is not a causal LM
    if isinstance(model, GPT):
        return model.transformer.wte if which == "tokens" else model.transformer.wpe
    if which == "tokens":
        return model.get_input_embeddings()
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2's learned positions
    if not isinstance(wpe, torch.nn.Embedding):
        raise ConfigError(f"{type(model).__name__} has no learned position embeddings (it may encode "
                          "positions another way, e.g. rotary); look at which='tokens' instead")
    return wpe


def embedding_matrix(model, which: str = "tokens") -> torch.Tensor:
    """The token embeddings [V, C] (which="tokens") or the position embeddings
    [block_size, C] ("positions") of lmlab's `GPT` or a Hugging Face GPT-2: a float32
    copy on the CPU, read between training steps."""
    module = _embedding_module(model, which)
    with reading(model):
        return module.weight.detach().float().cpu().clone()


def embedding_projection(model, tokenizer=None, which: str = "tokens", dims: int = 2,
                         limit: int | None = None) -> Projection:
    """Principal component analysis of the model's token or position embeddings: the
    matrix [N, C] centred, X, and its SVD X = U S Vᵀ; coords = X · V[:, :dims], [N, dims];
    explained = S² / ΣS², the first `dims`. Each component's sign is fixed so that its
    largest-magnitude loading is positive, so a map does not flip between refreshes.
    `limit` keeps the first `limit` rows (e.g. of GPT-2's 50257 tokens) before the PCA."""
    if isinstance(dims, bool) or dims not in (2, 3):
        raise ConfigError(f"dims={dims!r}; choose 2 (a flat map) or 3 (a map to turn around)")
    matrix = embedding_matrix(model, which)
    if not torch.isfinite(matrix).all():
        raise ConfigError(f"the {which} embeddings hold nan or inf values (did training diverge?); "
                          "reset or reload the model")
    total = matrix.size(0)
    if limit is not None:
        if limit < 2:
            raise ConfigError(f"limit={limit}; a map needs at least 2 rows")
        matrix = matrix[:limit]
    if min(matrix.shape) < dims:
        raise ConfigError(f"a {dims}-D map needs {dims} components, but the embeddings are "
                          f"{tuple(matrix.shape)}; choose dims=2")
    x = matrix.double()
    x = x - x.mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # s [K], vh [K, C], K = min(N, C)
    vh = vh[:dims]
    biggest = vh.abs().argmax(1, keepdim=True)
    vh = vh * vh.gather(1, biggest).sign()
    variance = s.square()
    explained = variance[:dims] / variance.sum().clamp_min(1e-30)
    if which == "tokens":
        show, known = display(tokenizer), getattr(tokenizer, "vocab_size", None) or total
        labels = [show(i) if i < known else f"#{i}" for i in range(matrix.size(0))]
    else:
        labels = [f"pos {i}" for i in range(matrix.size(0))]
    return Projection(which, labels, (x @ vh.T).float(), explained.float(), matrix, vh.float(), total)


def neighbour_table(matrix: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row of `matrix` [N, C], the k other rows most cosine-similar to it:
    (rows [N, k] int64, similarities [N, k] float32 in -1..1), most similar first; k is
    cut to N - 1. An all-zero row is 0-similar to everything."""
    unit = F.normalize(matrix.float(), dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-math.inf)
    top = sims.topk(min(k, matrix.size(0) - 1), dim=1)
    return top.indices, top.values


def nearest_neighbours(matrix: torch.Tensor, index: int, k: int = 5) -> list[tuple[int, float]]:
    """The k rows of `matrix` [N, C] most cosine-similar to row `index` (itself left out):
    [(row, similarity), ...], most similar first; fewer when N <= k."""
    n = matrix.size(0)
    if not 0 <= index < n:
        raise ConfigError(f"index={index} is outside the matrix's {n} rows (0..{n - 1})")
    if k < 1:
        raise ConfigError(f"k={k} must be at least 1")
    unit = F.normalize(matrix.float(), dim=1)
    sims = unit @ unit[index]
    sims[index] = -math.inf
    top = sims.topk(min(k, n - 1))
    return list(zip(top.indices.tolist(), top.values.tolist()))


# ---- logit lens ---------------------------------------------------------------------------

# where a Hugging Face causal LM keeps its final norm (GPT-2; Llama-likes; GPT-NeoX)
_FINAL_NORMS = ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm")


@dataclass(eq=False)
class LogitLens:
    """What the residual stream predicts next after each layer, read through the model's
    final norm and unembedding. Row 0 reads the embeddings (block 0's input), row l the
    output of block l - 1 (l = 1..L), so row L is the model's own prediction.

    Shapes: L blocks, T positions, k predictions kept per position, V vocabulary."""

    ids: list[int]  # the T input token ids
    tokens: list[str]  # their display strings, whitespace made visible
    top_ids: torch.Tensor  # int64 [L + 1, T, k]: each row's k likeliest next tokens, likeliest first
    top_probs: torch.Tensor  # float32 [L + 1, T, k]: their probabilities
    top_tokens: list[list[str]]  # [L + 1][T]: display string of each row's likeliest next token
    next_probs: torch.Tensor  # float32 [L + 1, T - 1]: the probability of the token that does come next
    log_probs: torch.Tensor | None = None  # float32 [L + 1, T, V] on the CPU with full=True, else None

    @property
    def n_layer(self) -> int:
        """L, the number of blocks (the lens has L + 1 rows)."""
        return self.top_ids.size(0) - 1

    @property
    def labels(self) -> list[str]:
        """The L + 1 row names: "embeddings", "block 0", ..., "block L-1" (after that block)."""
        return ["embeddings"] + [f"block {i}" for i in range(self.n_layer)]


def _final_norm(model) -> torch.nn.Module:
    if isinstance(model, GPT):
        return model.transformer.ln_f
    for path in _FINAL_NORMS:
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise ConfigError(f"cannot find the final norm of a {type(model).__name__} (looked for "
                      f"{', '.join(_FINAL_NORMS)}); the logit lens reads lmlab's GPT and GPT-2-like models")


def logit_lens(model, text_or_ids, tokenizer=None, k: int = 1, *, full: bool = False) -> LogitLens:
    """The logit lens (nostalgebraist, 2020) of one text (encoded with `tokenizer`) or list of
    T ids: each of the L + 1 residual streams [T, C] decoded as if it were the last,
    log_softmax(unembed(final_norm(x))) [T, V], the final norm (LayerNorm) recomputing its
    mean and variance for that stream (not reusing the last layer's scale, as a cached
    LayerNorm scale would). Keeps the top `k` per position ([L + 1, T, k]); with
    `full=True` also every log-probability [L + 1, T, V] (GPT-2: 50257 floats per row and
    position, about 2.6 GB for 12 layers × 1024 tokens).

    Works on lmlab's `GPT` and a Hugging Face GPT-2 (`GPT2LMHeadModel`, read through its
    hidden states); read through `reading(model)`. A text longer than the model's context
    is refused, not cropped. The last row equals the model's own next-token prediction."""
    ids = token_ids(model, text_or_ids, tokenizer, context_length(model))
    vocab = model.config.vocab_size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ConfigError(f"k={k!r} must be a whole number from 1 to the vocabulary size {vocab}")
    with reading(model):
        idx = torch.tensor([ids], device=next(model.parameters()).device)
        _, _, streams = read_pass(model, idx, attention=False, streams=True)
        return lens_of_streams(model, streams, ids, tokenizer, k, full=full)


def lens_of_streams(model, streams: list[torch.Tensor], ids: list[int], tokenizer=None, k: int = 1,
                    *, full: bool = False) -> LogitLens:
    """The logit lens (see `logit_lens`) of residual streams already read (`read_pass`):
    L + 1 tensors [1, T, C] (or [T, C]) of the text `ids`. Callers hold `reading(model)`."""
    show = display(tokenizer)
    norm = _final_norm(model)
    unembed = model.lm_head if isinstance(model, GPT) else model.get_output_embeddings()
    if unembed is None:
        raise ConfigError(f"{type(model).__name__} has no output embeddings to decode with")
    device = next(model.parameters()).device
    target = torch.tensor(ids[1:], device=device)
    top_ids, top_probs, next_probs, everything = [], [], [], []
    with torch.no_grad():
        for x in streams:
            x = x.to(device)
            x = x[0] if x.dim() == 3 else x
            logp = F.log_softmax(unembed(norm(x)).float(), dim=-1)  # [T, V]
            top = logp.topk(k, dim=-1)
            top_ids.append(top.indices.cpu())
            top_probs.append(top.values.exp().cpu())
            next_probs.append(logp[:-1].gather(1, target[:, None])[:, 0].exp().cpu())
            if full:
                everything.append(logp.cpu())
    top_ids = torch.stack(top_ids)
    return LogitLens(
        ids=ids,
        tokens=[show(i) for i in ids],
        top_ids=top_ids,
        top_probs=torch.stack(top_probs),
        top_tokens=[[show(i) for i in row] for row in top_ids[..., 0].tolist()],
        next_probs=torch.stack(next_probs),
        log_probs=torch.stack(everything) if full else None,
    )
