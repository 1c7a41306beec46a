"""lmlab.pretrained.from_pretrained: Hugging Face GPT-2 checkpoints in lmlab's GPT.

Offline: each test saves a tiny randomly initialised GPT2LMHeadModel with save_pretrained
and loads the folder; no real GPT-2 weights are downloaded."""

import time

import pytest
from _needs import need
import torch

transformers = need("transformers", "pip install -e '.[hf]'")

from lmlab import checkpoint  # noqa: E402
from lmlab.errors import CheckpointError, ConfigError  # noqa: E402
from lmlab.model import GPT, GPTConfig  # noqa: E402
from lmlab.pretrained import config_from_hf, from_pretrained  # noqa: E402
from lmlab.sampling import generate  # noqa: E402
from lmlab.tokenizers import BPETokenizer, GPT2Tokenizer  # noqa: E402

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=100)


def tiny_gpt2(folder, activation="gelu_new", seed=0, **changes):
    """A random GPT2LMHeadModel saved to `folder`; weights drawn wider than GPT-2's 0.02 so
    that the GELU variants give visibly different logits."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**{**SHAPE, **changes}, activation_function=activation,
                                     initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(folder)
    return hf


@pytest.mark.parametrize("activation, ours", [("gelu_new", "gelu_tanh"), ("gelu", "gelu")])
def test_logits_match_transformers(tmp_path, activation, ours):
    hf = tiny_gpt2(tmp_path, activation)
    model, tokenizer = from_pretrained(tmp_path)
    c = model.config
    shape = (c.activation, c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd)
    assert shape == (ours, 64, 100, 2, 2, 32)
    assert c.dropout == 0 and c.bias and not model.training
    assert tokenizer is None  # the folder has no tokenizer files
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, as GPT-2
    idx = torch.randint(100, (2, 64))
    with torch.no_grad():
        want = hf(idx).logits
        torch.testing.assert_close(model(idx).logits, want, atol=1e-4, rtol=0)
        # not vacuous: the other GELU gives other logits
        other = GPT(c.replace(activation="gelu" if ours == "gelu_tanh" else "gelu_tanh"))
        other.load_state_dict(model.state_dict())
        assert (other.eval()(idx).logits - want).abs().max() > 1e-3


def test_folder_tokenizer_is_loaded(tmp_path):
    bpe = BPETokenizer.train("the cat sat on the mat; the dog sat on the log. " * 20, vocab_size=270)
    hf_tok = transformers.GPT2TokenizerFast(tokenizer_object=bpe._tok)
    hf_tok.save_pretrained(tmp_path)
    tiny_gpt2(tmp_path, vocab_size=len(hf_tok))
    model, tokenizer = from_pretrained(tmp_path)
    assert isinstance(tokenizer, GPT2Tokenizer) and tokenizer.vocab_size == model.config.vocab_size
    text = "the cat sat on the log"
    assert tokenizer.encode(text) == bpe.encode(text) and tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.to_dict()["type"] == "gpt2" and "tokenizer" in tokenizer.to_dict()  # kept whole


@pytest.mark.parametrize("change, words", [
    (dict(activation_function="relu"), "activation_function='relu'"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
    (dict(n_inner=40), "n_inner=40"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
])
def test_what_lmlab_cannot_compute_is_refused(change, words):
    config = transformers.GPT2Config(**SHAPE, **change)
    with pytest.raises(ConfigError, match=words):
        config_from_hf(config)


def test_unknown_activation_refused_before_loading_weights(tmp_path):
    tiny_gpt2(tmp_path)
    config = transformers.GPT2Config.from_pretrained(tmp_path)
    config.activation_function = "silu"
    config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()  # no weights: the config alone is refused
    with pytest.raises(ConfigError, match="'silu' is not supported"):
        from_pretrained(tmp_path)


def test_generate_and_cache_work_on_the_loaded_model(tmp_path):
    hf = tiny_gpt2(tmp_path)
    model, _ = from_pretrained(tmp_path)
    prompt = [5, 17, 42]
    new = generate(model, prompt, 10, top_k=1, seed=0)
    assert len(new) == 10 and all(0 <= i < 100 for i in new)
    with torch.no_grad():  # greedy, the same as transformers' greedy decoding
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                           pad_token_id=0)[0, 3:].tolist()
        assert new == want
        idx = torch.tensor([prompt + new])
        cache = model.new_cache()
        first = model(idx[:, :5], cache=cache).logits
        rest = [model(idx[:, t:t + 1], cache=cache).logits for t in range(5, idx.size(1))]
        torch.testing.assert_close(torch.cat([first, *rest], 1), model(idx).logits, atol=1e-5, rtol=0)


def test_checkpoint_round_trip_and_old_checkpoints(tmp_path, monkeypatch):
    tiny_gpt2(tmp_path / "hf")
    model, _ = from_pretrained(tmp_path / "hf")
    checkpoint.save(tmp_path / "new.safetensors", model)
    back = checkpoint.load(tmp_path / "new.safetensors").model
    assert back.config.activation == "gelu_tanh"
    idx = torch.randint(100, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, model(idx).logits)
    # a checkpoint written before GPTConfig had `activation`: its config dict lacks the field
    old = GPT(GPTConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=16))
    plain = GPTConfig.to_dict
    monkeypatch.setattr(GPTConfig, "to_dict", lambda self: {k: v for k, v in plain(self).items()
                                                             if k != "activation"})
    checkpoint.save(tmp_path / "old.safetensors", old)
    monkeypatch.undo()
    assert "activation" not in checkpoint.read_header(tmp_path / "old.safetensors")["config"]
    loaded = checkpoint.load(tmp_path / "old.safetensors").model
    assert loaded.config.activation == "gelu"
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx).logits, old.eval()(idx).logits)


def test_gelu_tanh_config_checked_and_exported(tmp_path):
    with pytest.raises(ConfigError, match="gelu_tanh"):
        GPTConfig(activation="relu")
    from lmlab.pretrained import gpt2_config_for

    assert gpt2_config_for(GPTConfig(activation="gelu_tanh")).activation_function == "gelu_new"


def test_not_cached_offline_fails_fast_and_says_how(monkeypatch):
    name = "lmlab-tests/no-such-model"
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache.*local_files_only"):
        from_pretrained(name, local_files_only=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE.*connect to the internet once"):
        from_pretrained(name)
    assert time.monotonic() - start < 5


def test_missing_folder_and_file_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no folder"):
        from_pretrained(tmp_path / "missing")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file"):
        from_pretrained(tmp_path / "f.bin")
    with pytest.raises(CheckpointError, match="could not read the config"):
        from_pretrained(tmp_path)  # a folder without config.json
