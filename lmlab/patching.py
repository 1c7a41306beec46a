"""Activation patching: which activations carry what makes a clean text's answer differ
from a corrupted one's.

Two texts of the same length T differ in a token or a few. The metric is the logit
difference at `position` (by default the last) between the clean answer and the corrupted
answer: m = logit[answer] - logit[wrong]. Each cell runs the corrupted text with one clean
activation put back and reports how much of the metric that restores,

    restored = (m_patched - m_corrupted) / (m_clean - m_corrupted)    0: corrupted, 1: clean

for three kinds of activation, as TransformerLens's `patching` module names them:

    resid_pre  [L, T]  the residual stream entering block l at one position
    heads      [L, H]  one head's output (hook_z) at every position
    mlps       [L, T]  one MLP's output at one position (not for attention-only models)

Batched: a layer's heads run as one batch, its positions as batches of a quarter of them
(`batch_size`); each cell starts at block l from the corrupted run's own stream (the blocks
before l would compute what they computed then). In a causal model the positions before
the first one a batch patches are the corrupted run's too, so a batch starting at position
s runs positions s..P only, attending to the corrupted run's keys and values before s (a
grid costs about half the positions' work); positions after P, where the metric is read,
cannot reach it and are not run. Nor are cells whose clean activation equals the corrupted
one bit for bit, as the positions before the first token the texts differ in do: putting
them back leaves the corrupted run, so their cells are known (0 restored). Only position P
goes through the unembedding. Each cell keeps the patched run's k likeliest tokens at
`position`, so a view shows them on a click without running the model.

    p = patch(model, "the cat sat", "the dog sat", tokenizer)
    p.resid[1, 4]; p.predictions("heads", 1, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .adapt import context_length, display, one_token, token_ids
from .errors import ConfigError
from .hooks import hooks, run_with_cache
from .model import GPT, KVCache
from .reading import reading, weights_version

KINDS = ("resid_pre", "heads", "mlps")
POSITIONS_PER_BATCH = 65536  # rows × positions of one batch at most


@dataclass(eq=False)
class Patching:
    """The restored fraction of every cell (nan where not run: a stopped grid), and what
    each patched run predicts at `position`. Shapes: L blocks, T positions, H heads, k kept."""

    clean_ids: list[int]
    corrupted_ids: list[int]
    clean_tokens: list[str]  # display strings
    corrupted_tokens: list[str]
    position: int  # where the metric is read (0..T-1)
    answer: int
    wrong: int
    answer_token: str
    wrong_token: str
    clean_metric: float  # logit[answer] - logit[wrong] on the clean text
    corrupted_metric: float  # the same on the corrupted text
    grids: dict = field(default_factory=dict)  # kind -> restored [L, T] or [L, H]
    top_ids: dict = field(default_factory=dict)  # kind -> int64 [L, T or H, k]
    top_probs: dict = field(default_factory=dict)  # kind -> float32 [L, T or H, k]
    complete: bool = False  # every cell of every kind asked for was run
    tokenizer: object = None

    @property
    def resid(self) -> torch.Tensor:
        return self.grids["resid_pre"]

    @property
    def heads(self) -> torch.Tensor:
        return self.grids["heads"]

    @property
    def mlps(self) -> torch.Tensor:
        return self.grids["mlps"]

    def predictions(self, kind: str, layer: int, index: int) -> list[tuple[str, float]]:
        """The patched run's k likeliest tokens at `position`, (display string, probability),
        for the cell (layer, position or head) of `kind`; [] for a cell not run."""
        if kind not in self.grids:
            raise ConfigError(f"no {kind!r} grid here; this one has {sorted(self.grids)}")
        grid = self.grids[kind]
        if not (0 <= layer < grid.size(0) and 0 <= index < grid.size(1)):
            raise ConfigError(f"cell ({layer}, {index}) is outside the {kind} grid {list(grid.shape)}")
        if math.isnan(float(grid[layer, index])):
            return []
        show = display(self.tokenizer)
        return [(show(int(i)), float(p)) for i, p in
                zip(self.top_ids[kind][layer, index], self.top_probs[kind][layer, index])]


class Patcher:
    """A patching grid run batch by batch, so that a view can show progress and stop it:

        patcher = Patcher(model, clean, corrupted, tokenizer)
        for done, total in patcher.steps(): ...   # one batch a step
        patcher.result

    The clean and corrupted texts run once, together, when it is made."""

    def __init__(self, model, clean, corrupted, tokenizer=None, *, answer=None, wrong=None,
                 position: int = -1, kinds=KINDS, k: int = 10, batch_size: int | None = None):
        if not isinstance(model, GPT):
            raise ConfigError(f"activation patching runs on lmlab's GPT, not a {type(model).__name__}")
        limit = context_length(model)
        clean_ids = token_ids(model, clean, tokenizer, limit)
        corrupted_ids = token_ids(model, corrupted, tokenizer, limit)
        T = len(clean_ids)
        if len(corrupted_ids) != T:
            raise ConfigError(f"the clean text is {T} tokens and the corrupted one {len(corrupted_ids)}; "
                              "patching needs the same length (swap tokens, don't add or remove them)")
        if isinstance(position, bool) or not isinstance(position, int) or not -T <= position < T:
            raise ConfigError(f"position={position!r} is outside the texts' {T} tokens (0..{T - 1}, or -1)")
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        unknown = [kind for kind in kinds if kind not in KINDS]
        if unknown or not kinds:
            raise ConfigError(f"kinds={kinds!r}: choose from {list(KINDS)}")
        if model.config.attn_only and "mlps" in kinds:
            if kinds == ["mlps"]:
                raise ConfigError("an attention-only model has no MLPs to patch; "
                                  "use kinds=('resid_pre', 'heads')")
            kinds.remove("mlps")  # the default asks for every kind: an attention-only model has two
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} must be a whole number of at least 1 (predictions kept per cell)")
        k = min(k, model.config.vocab_size)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ConfigError(f"batch_size={batch_size!r} must be a whole number of at least 1 (or None)")
        self.model, self.kinds, self.k = model, kinds, k
        self.position = position % T
        cap = max(1, POSITIONS_PER_BATCH // T)
        self.batch_size = batch_size or min(cap, max(1, math.ceil(T / 4)))  # positions a batch
        self.heads_per_batch = batch_size or min(cap, model.config.n_head)
        with reading(model):
            self.version = weights_version(model)
            both = torch.tensor([clean_ids, corrupted_ids], device=model.device)
            logits, cache = run_with_cache(model, both, lambda n: n.endswith(
                ("hook_resid_pre", "attn.hook_z", "hook_mlp_out")))
        self.cache = cache
        C, H = model.config.n_embd, model.config.n_head
        self.kv = []  # the corrupted run's keys and values at each block, [1, H, T, D] each
        with reading(model):
            for i, block in enumerate(model.transformer.h):
                _, keys, values = block.attn.c_attn(block.ln_1(cache["resid_pre", i][1:2])).split(C, dim=2)
                self.kv.append([t.view(1, T, H, C // H).transpose(1, 2) for t in (keys, values)])
        last = logits[:, self.position].float()
        answer = int(last[0].argmax()) if answer is None else one_token(model, answer, tokenizer, "answer")
        wrong = int(last[1].argmax()) if wrong is None else one_token(model, wrong, tokenizer, "wrong")
        show = display(tokenizer)
        if answer == wrong:
            raise ConfigError(f"the clean and the corrupted text both predict {show(answer)!r} at position "
                              f"{self.position}; corrupt the text so that the answer changes, or pass "
                              "answer= and wrong= (two different tokens)")
        self.answer, self.wrong = answer, wrong
        clean_metric, corrupted_metric = (float(v) for v in last[:, answer] - last[:, wrong])
        if abs(clean_metric - corrupted_metric) < 1e-6:
            raise ConfigError(f"the metric (logit of {show(answer)!r} minus {show(wrong)!r}) is the same on "
                              "both texts, so nothing can be restored; corrupt a token the answer depends on")
        L, H = model.config.n_layer, model.config.n_head
        width = {"resid_pre": T, "heads": H, "mlps": T}
        self.result = Patching(
            clean_ids=clean_ids, corrupted_ids=corrupted_ids,
            clean_tokens=[show(i) for i in clean_ids], corrupted_tokens=[show(i) for i in corrupted_ids],
            position=self.position, answer=answer, wrong=wrong, answer_token=show(answer),
            wrong_token=show(wrong), clean_metric=clean_metric, corrupted_metric=corrupted_metric,
            grids={kind: torch.full((L, width[kind]), float("nan")) for kind in kinds},
            top_ids={kind: torch.zeros(L, width[kind], k, dtype=torch.long) for kind in kinds},
            top_probs={kind: torch.zeros(L, width[kind], k) for kind in kinds}, tokenizer=tokenizer)
        self.corrupted_logits = last[1:2]
        self.jobs = [job for kind in kinds for layer in range(L) for job in self._plan(kind, layer)]
        self.done = 0

    def _plan(self, kind: str, layer: int) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
        """The batches of one layer of `kind`: (kind, layer, cells to run, cells known). A cell
        whose clean activation equals the corrupted run's, bit for bit (every position before
        the first token the texts differ in, in a causal model), or that patches a position
        after the metric's, leaves the corrupted run as it was: it is known without a run,
        and filled by the layer's first batch."""
        P, point = self.position, {"resid_pre": "resid_pre", "heads": "z", "mlps": "mlp_out"}[kind]
        both = self.cache[point, layer]  # [2, T, C] or, for heads, [2, T, H, D]
        if kind == "heads":
            differs = (both[0, :P + 1] != both[1, :P + 1]).flatten(2).any(-1).any(0)  # [H]
        else:
            differs = (both[0] != both[1]).any(-1) & (torch.arange(both.size(1), device=both.device) <= P)
        cells = torch.arange(differs.numel())
        run, known = cells[differs.cpu()], cells[~differs.cpu()]
        batches = list(run.split(self._rows(kind))) or [run]
        return [(kind, layer, rows, known if i == 0 else known[:0]) for i, rows in enumerate(batches)]

    @property
    def total(self) -> int:
        """Batches in the whole grid."""
        return len(self.jobs)

    def steps(self):
        """Run the batches not yet run, one per step; yields (batches done, total)."""
        while self.done < len(self.jobs):
            self.run_batch()
            yield self.done, len(self.jobs)

    def run_batch(self) -> None:
        """Run the next batch: some cells of one layer of one kind (see `batch_size`)."""
        kind, layer, rows, known = self.jobs[self.done]
        model, r = self.model, self.result
        with reading(model):
            if weights_version(model) != self.version:
                raise ConfigError("the model's weights changed (a training step) since this patching began; "
                                  "start it again, or pause training while it runs")
            if len(rows):
                self._keep(kind, layer, rows, self._patched(kind, layer, rows))
        self._keep(kind, layer, known, self.corrupted_logits.expand(len(known), -1))
        self.done += 1
        r.complete = self.done == len(self.jobs)

    def _patched(self, kind: str, layer: int, rows: torch.Tensor) -> torch.Tensor:
        """Logits [len(rows), V] at the metric's position of the corrupted run with the clean
        activation of each of `rows` (positions at most P, or heads) put back at `layer`."""
        model, P, clean = self.model, self.position, self.cache  # cache row 0: clean, row 1: corrupted
        # a causal model's positions before the first one patched are the corrupted run's: start there,
        # from its keys and values; positions after the metric's cannot reach it
        first = 0 if kind == "heads" else int(rows.min())
        x = clean["resid_pre", layer][1:2, first:P + 1].expand(len(rows), -1, -1).clone()
        cache = self._prefix(layer, first, len(rows))
        at, here = torch.arange(len(rows)), rows - first  # each row's patched position, in x
        fwd_hooks = []
        if kind == "resid_pre":
            x[at, here] = clean["resid_pre", layer][0, rows]
        elif kind == "heads":
            def put_head(z, hook):
                z = z.clone()
                z[at, :, rows] = clean["z", layer][0, :P + 1, rows].transpose(0, 1)
                return z
            fwd_hooks = [(f"blocks.{layer}.attn.hook_z", put_head)]
        else:
            def put_mlp(out, hook):
                out = out.clone()
                out[at, here] = clean["mlp_out", layer][0, rows]
                return out
            fwd_hooks = [(f"blocks.{layer}.hook_mlp_out", put_mlp)]
        with hooks(model, fwd_hooks):
            for i in range(layer, model.config.n_layer):
                x = model.transformer.h[i](x, cache, i)
            return model.lm_head(model.transformer.ln_f(x[:, -1])).float()  # [B, V] at P

    def _keep(self, kind: str, layer: int, cells: torch.Tensor, logits: torch.Tensor) -> None:
        """Store the restored fraction and the top k of `logits` [len(cells), V] in the grid."""
        if not len(cells):
            return
        r = self.result
        metric = logits[:, self.answer] - logits[:, self.wrong]
        r.grids[kind][layer, cells] = ((metric - r.corrupted_metric)
                                       / (r.clean_metric - r.corrupted_metric)).cpu()
        top = torch.softmax(logits, dim=-1).topk(self.k, dim=-1)
        r.top_ids[kind][layer, cells] = top.indices.cpu()
        r.top_probs[kind][layer, cells] = top.values.cpu()

    def _rows(self, kind: str) -> int:
        """Cells a batch of `kind` runs."""
        return self.heads_per_batch if kind == "heads" else self.batch_size

    def _prefix(self, layer: int, length: int, rows: int):
        """A key/value cache for `rows` copies of the corrupted text, holding its keys and
        values of positions 0..length-1 at blocks `layer` and after (None for length 0)."""
        if not length:
            return None
        model = self.model
        config = model.config.replace(block_size=self.position + 1)
        cache = KVCache(config, rows, model.device, model.transformer.wte.weight.dtype)
        for i in range(layer, config.n_layer):
            k, v = self.kv[i]
            cache.keys[i][:, :, :length] = k[:, :, :length]
            cache.values[i][:, :, :length] = v[:, :, :length]
        cache.length = length
        return cache

    def run(self, progress: bool = True, stop=None) -> Patching:
        """Run every batch left; a tqdm bar where it takes over a second (`progress`);
        `stop()` returning True between batches ends it early (`result.complete` False)."""
        from tqdm.auto import tqdm

        with tqdm(total=self.total, initial=self.done, disable=not progress, delay=1.0,
                  unit="batch", desc="patching", dynamic_ncols=True) as bar:
            for _ in self.steps():
                bar.update()
                if stop is not None and stop() and self.done < self.total:
                    break
        return self.result


def patch(model, clean, corrupted, tokenizer=None, *, answer=None, wrong=None, position: int = -1,
          kinds=KINDS, k: int = 10, batch_size: int | None = None, progress: bool = True,
          stop=None) -> Patching:
    """Patch every cell of `kinds` (see the module) from the clean text into the corrupted
    one (texts with `tokenizer`, or lists of ids; the same length). `answer` and `wrong`
    (token ids or one-token texts) default to the clean and the corrupted text's likeliest
    token at `position`. Read through `reading(model)`, between training steps."""
    patcher = Patcher(model, clean, corrupted, tokenizer, answer=answer, wrong=wrong, position=position,
                      kinds=kinds, k=k, batch_size=batch_size)
    return patcher.run(progress=progress, stop=stop)
