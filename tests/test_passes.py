"""One kept pass under the views: how many times each interaction runs the model (counted
by a hook on the model's forward), what makes a new pass, that a kept pass gives today's
numbers, and the cache's bound."""

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

from lmlab import interpret  # noqa: E402
from lmlab import passes  # noqa: E402
from lmlab.reading import weights_changed, weights_version  # noqa: E402
from lmlab.sampling import score  # noqa: E402
from lmlab.train import Trainer  # noqa: E402
from lmlab.widgets import AttentionExplorer, LogitLensView, SamplingStepper, TokenSurprise  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 200
SAID = "the lazy dog"


class Forwards:
    """Counts the forwards of a model (calls of its top-level module)."""

    def __init__(self, model):
        self.n = 0
        model.register_forward_pre_hook(lambda *_: setattr(self, "n", self.n + 1))

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def test_building_the_explorer_runs_two_passes_and_clicks_run_none(model, data):
    count = Forwards(model)
    x = AttentionExplorer(model, data.tokenizer, SAID)
    assert count.take() == 2  # the text, and the induction probe
    x.select(1, 1)
    x.grid.selected = [0, 1]
    x.table.selected = [1, 0]
    assert count.take() == 0  # selecting a head
    x.focus_box.value = 3
    x.focus_box.value = 5
    assert count.take() == 0  # focusing a token: the kept pass's logits
    x.knock_button.value = True
    assert count.take() == 1  # one ablated pass
    x.focus_box.value = 2
    x.select(0, 0)
    assert count.take() == 0  # the ablated pass is kept too
    x.knock_button.value = True  # a second head: a new set of heads
    assert count.take() == 1 and len(x.knocked_out()) == 2
    x.mode_box.value = "mean"
    assert count.take() == 1
    x.text_box.value = "a quick fox"
    assert count.take() == 2  # the new text, and its ablated pass; the induction probe is kept
    AttentionExplorer(model, data.tokenizer, "a quick fox")
    assert count.take() == 0  # a second view of the same text on the same weights


def test_a_second_view_of_the_text_reuses_the_pass(model, data):
    count = Forwards(model)
    AttentionExplorer(model, data.tokenizer, SAID)
    count.take()
    lens_view = LogitLensView(model, data.tokenizer, SAID)
    assert count.take() == 0
    assert lens_view.lens.top_ids.shape[1] == len(SAID)
    TokenSurprise(model, data.tokenizer, SAID + "!"[:0])
    assert count.take() == 1  # the surprise view reads all but the last token: another text


def test_a_training_step_and_load_state_dict_make_a_new_pass(model, data):
    trainer = Trainer(model, data, device="cpu", batch_size=4, max_steps=1, eval_interval=100,
                      eval_batches=1, warmup_steps=1, learning_rate=1e-2)
    first = passes.cached_pass(model, SAID, data.tokenizer)
    assert passes.cached_pass(model, SAID, data.tokenizer) is first
    version = weights_version(model)
    trainer.run(progress=False)
    assert weights_version(model) > version
    after = passes.cached_pass(model, SAID, data.tokenizer)
    assert after is not first and not torch.equal(after.logits, first.logits)
    model.load_state_dict(model.state_dict())
    assert passes.cached_pass(model, SAID, data.tokenizer) is not after
    count = Forwards(model)
    passes.cached_induction(model)
    passes.cached_induction(model)
    assert count.take() == 1
    weights_changed(model)  # a change made by hand, announced
    passes.cached_induction(model)
    assert count.take() == 1


def test_the_live_explorer_reads_once_per_update(data):
    from lmlab import GPT, GPTConfig

    def trainer():
        model = GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
        return Trainer(model, data, device="cpu", batch_size=4, max_steps=6, eval_interval=100,
                       eval_batches=1, warmup_steps=1, learning_rate=1e-2)

    alone, watched = trainer(), trainer()
    x = AttentionExplorer(trainer=watched, text=SAID, every=3)
    count, baseline = Forwards(watched.model), Forwards(alone.model)
    alone.run(progress=False)
    watched.run(progress=False)
    # the run's own forwards, and at steps 3 and 6 the text and the probe on the new weights
    assert count.take() == baseline.take() + 2 * 2
    assert x.pass_.version == weights_version(watched.model)


def test_a_kept_pass_gives_what_each_reading_gives_alone(model, data):
    tok = data.tokenizer
    ids = tok.encode(SAID)
    found = passes.cached_pass(model, SAID, tok)
    with torch.no_grad():
        torch.testing.assert_close(found.logits, model.eval()(torch.tensor([ids])).logits[0])
    attention = interpret.capture_attention(model, SAID, tok)
    torch.testing.assert_close(found.attention.float(), attention.weights, atol=1e-3, rtol=0)
    for got, want in zip(found.summary, interpret.head_summary(attention), strict=True):  # from float32
        assert got == pytest.approx(want, abs=1e-6)
    for position in (0, 4, len(ids) - 1):
        got, want = found.predictions(position, tok), interpret.predictions_at(model, tok, ids, position)
        assert got.ids == want.ids and got.probs == pytest.approx(want.probs, abs=1e-6)
    effect = interpret.ablation_effect(model, ids, [(1, 0), (0, 1)], "mean")
    ablated = passes.cached_ablation(model, ids, [(0, 1), (1, 0)], "mean")
    assert found.loss() == pytest.approx(effect["loss"], rel=1e-5)
    assert ablated.loss() == pytest.approx(effect["ablated_loss"], rel=1e-5)
    assert passes.cached_ablation(model, ids, {1: [0], 0: [1]}, "mean") is ablated  # same heads
    want_lens = interpret.logit_lens(model, SAID, tok, k=3)
    view = LogitLensView(model, tok, SAID, k=3)
    assert torch.equal(view.lens.top_ids, want_lens.top_ids)
    torch.testing.assert_close(view.lens.top_probs, want_lens.top_probs)
    surprise = TokenSurprise(model, tok, SAID)
    assert surprise.score.probs == pytest.approx(score(model, tok, SAID).probs, abs=1e-6)
    induction = interpret.induction_scores(model)
    seq = interpret.capture_attention(model, _probe(model))
    torch.testing.assert_close(induction, interpret.induction_score(seq.weights, len(_probe(model)) // 2))


def _probe(model):
    length = min(interpret.INDUCTION_LENGTH, model.config.block_size // 2)
    first = torch.randperm(model.config.vocab_size, generator=torch.Generator().manual_seed(0))[:length]
    return first.repeat(2).tolist()


def test_an_ablated_pass_starts_at_the_first_layer_knocked_out(model, data):
    """From the kept pass's residual stream: the blocks before the first knocked-out head
    do not run again, and the logits equal a whole ablated forward."""
    ids = data.tokenizer.encode(SAID)
    passes.cached_pass(model, ids)
    ran = []
    handle = model.transformer.h[0].register_forward_pre_hook(lambda *_: ran.append(0))
    try:
        for heads, mode, block_0_runs in [([(1, 0)], "zero", 0), ([(1, 1)], "mean", 0),
                                          ([(0, 1), (1, 0)], "mean", 1)]:
            ran.clear()
            ablated = passes.cached_ablation(model, ids, heads, mode)
            assert len(ran) == block_0_runs
            with interpret.ablate(model, heads, mode), torch.no_grad():
                want = model.eval()(torch.tensor([ids])).logits[0]
            torch.testing.assert_close(ablated.logits, want, atol=1e-5, rtol=1e-5)
        passes.forget(model)  # no kept pass: the whole forward
        ran.clear()
        passes.cached_ablation(model, ids, [(1, 0)])
        assert ran == [0]
    finally:
        handle.remove()


def test_ablation_refuses_what_it_refused(model, data):
    ids = data.tokenizer.encode(SAID)
    with pytest.raises(interpret.ConfigError, match="does not exist"):
        passes.cached_ablation(model, ids, [(5, 0)])
    with pytest.raises(interpret.ConfigError, match="choose 'zero' or 'mean'"):
        passes.cached_ablation(model, ids, [(0, 0)], "half")


def test_the_cache_holds_the_last_passes_within_its_bytes(model, data, monkeypatch):
    texts = ["the dog", "the fox", "a lazy dog", "quick", "brown fox"]
    kept = [passes.cached_pass(model, t, data.tokenizer) for t in texts]
    store = passes._store(model)
    assert len(store.passes) == passes.MAX_PASSES
    assert passes.cached_pass(model, texts[-1], data.tokenizer) is kept[-1]
    assert passes.cached_pass(model, texts[0], data.tokenizer) is not kept[0]  # the oldest went
    monkeypatch.setattr(passes, "MAX_BYTES", 1)
    newest = passes.cached_pass(model, "over", data.tokenizer)
    assert list(store.passes.values()) == [newest]  # the newest always stays
    assert newest.attention.dtype == torch.float16 and newest.nbytes > 0


def test_a_step_of_the_stepper_is_one_cached_token(model, data):
    s = SamplingStepper(model, data.tokenizer, "the quick")
    count = Forwards(model)
    lengths = []
    model.register_forward_pre_hook(lambda m, args, kwargs: lengths.append(args[0].shape[1]), with_kwargs=True)
    s.step()
    s.step()
    assert count.take() == 2 and lengths == [1, 1]
    s.temperature.value = 0.5
    s.back()
    assert count.take() == 0
