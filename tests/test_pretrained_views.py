"""The views of lesson 8 on a model loaded by `from_pretrained`: the attention explorer,
the stepper and the logit lens, offline, on a tiny randomly initialised GPT2LMHeadModel
saved with its tokenizer and loaded through the same code path as GPT-2's weights."""

import pytest
import torch
from _needs import need

transformers = need("transformers", "pip install -e '.[hf]'")
need("ipywidgets", "pip install -e .")

from lmlab import BPETokenizer, capture_attention, logit_lens  # noqa: E402
from lmlab.pretrained import from_pretrained  # noqa: E402
from lmlab.widgets import AttentionExplorer, LogitLensView, SamplingStepper  # noqa: E402

TEXT = "the cat sat on the mat; the dog sat on the log. "


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    bpe = BPETokenizer.train(TEXT * 20, vocab_size=270)
    hf_tok = transformers.GPT2TokenizerFast(tokenizer_object=bpe._tok)
    hf_tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=len(hf_tok),
                                     initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(folder)
    model, tokenizer = from_pretrained(folder)
    return hf, model, tokenizer


def test_the_explorer_shows_the_loaded_models_attention(loaded):
    hf, model, tokenizer = loaded
    text = "the cat sat on the mat"
    view = AttentionExplorer(model, tokenizer, text)
    ids = torch.tensor([tokenizer.encode(text)])
    hf.config._attn_implementation = "eager"  # the attention probabilities, computed explicitly
    with torch.no_grad():
        want = torch.stack(hf(ids, output_attentions=True).attentions, 1)[0]  # [layer, head, T, T]
    torch.testing.assert_close(view.attention.weights.float(), want, atol=1e-3, rtol=0)  # a float16 copy
    assert len(view.summary) == 2 * 2
    torch.testing.assert_close(capture_attention(model, text, tokenizer).weights, want, atol=1e-5, rtol=0)


def test_the_stepper_offers_the_loaded_models_next_token_distribution(loaded):
    hf, model, tokenizer = loaded
    view = SamplingStepper(model, tokenizer, "the dog", seed=0)
    ids = torch.tensor([tokenizer.encode("the dog")])
    with torch.no_grad():
        want = torch.softmax(hf(ids).logits[0, -1], -1)
    d = view.stepper.distribution
    assert d.probs_raw[0] == pytest.approx(want.max().item(), abs=1e-5)
    assert d.ids[0] == want.argmax().item()
    view.step()
    assert len(view.stepper.ids) == ids.size(1) + 1


def test_the_logit_lens_view_reads_the_loaded_model(loaded):
    hf, model, tokenizer = loaded
    text = "the cat sat on the log"
    view = LogitLensView(model, tokenizer, text)
    lens = logit_lens(model, text, tokenizer, k=5)
    assert torch.equal(view.lens.top_ids, lens.top_ids)
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        top = hf(ids).logits[0].argmax(-1)
    assert torch.equal(lens.top_ids[-1, :, 0], top)  # the last row is the model's own prediction
