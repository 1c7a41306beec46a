"""Pretraining then fine-tuning: a checkpoint trained on new text, its vocabulary grown
or refused, layers frozen, and the from-scratch control run."""

import pytest
import torch

from lmlab import GPT, CheckpointError, ConfigError, GPTConfig, TokenDataset, TokenizerError, Trainer
from lmlab.finetune import finetune, freeze_parameters, from_scratch, grow_vocabulary

PRE = "".join(f"to be or not to be, that is question {i % 7}.\n" for i in range(400))
NEW = "".join(f"{name}\n" for name in ["anna", "bob", "otto", "tessa", "ben", "nina"] * 150)
TRAIN = dict(batch_size=8, learning_rate=3e-3, warmup_steps=5, eval_interval=1000, eval_batches=4,
             seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    data = TokenDataset(PRE, block_size=16)
    model = GPT(GPTConfig(vocab_size=data.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32))
    trainer = Trainer(model, data, max_steps=150, **TRAIN)
    trainer.run(progress=False)
    path = tmp_path_factory.mktemp("pre") / "pre.safetensors"
    trainer.save(path)
    return trainer, path


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_finetuning_starts_a_new_run_from_the_pretrained_weights(pretrained):
    pre, path = pretrained
    before = weights(pre.model)
    tuned = finetune(path, NEW, max_steps=20, **TRAIN)
    assert tuned.step_count == 0 and len(tuned.history) == 0
    assert tuned.dataset.tokenizer.to_dict() == pre.dataset.tokenizer.to_dict()  # names: a subset
    for k, v in tuned.model.state_dict().items():
        assert torch.equal(v, before[k])
    tuned.run(progress=False)
    fc = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(tuned.model.state_dict()[fc], before[fc])
    for k, v in pre.model.state_dict().items():  # the pretrained trainer is left alone
        assert torch.equal(v, before[k])
    from_trainer = finetune(pre, NEW, max_steps=20, **TRAIN)
    assert from_trainer.model is not pre.model
    for k, v in from_trainer.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_pretrained_model_learns_the_new_text_faster_than_one_from_scratch(pretrained):
    _, path = pretrained
    tuned = finetune(path, NEW, max_steps=40, **TRAIN)
    scratch = from_scratch(tuned)
    assert scratch.model.config == tuned.model.config and scratch.config == tuned.config
    assert scratch.dataset is tuned.dataset
    for t in (tuned, scratch):
        t.run(progress=False)
    assert tuned.evaluate()["val_loss"] < scratch.evaluate()["val_loss"] - 0.1


def test_from_scratch_draws_fresh_weights_by_its_seed(pretrained):
    _, path = pretrained
    tuned = finetune(path, NEW, **TRAIN)
    a, b, c = from_scratch(tuned), from_scratch(tuned), from_scratch(tuned, seed=99)
    wte = [t.model.transformer.wte.weight for t in (tuned, a, b, c)]
    assert torch.equal(wte[1], wte[2]) and not torch.equal(wte[1], wte[3])
    assert not torch.equal(wte[0], wte[1])


def test_new_characters_grow_the_vocabulary_or_are_refused(pretrained):
    pre, path = pretrained
    text = NEW + "zoe\nxena\n" * 50
    old = pre.dataset.tokenizer
    assert "z" not in old.chars and "x" not in old.chars
    with pytest.raises(TokenizerError, match=r"2 character\(s\).*'xz'.*new_tokens='add'"):
        finetune(path, text, new_tokens="error", **TRAIN)
    tuned = finetune(path, text, **TRAIN)
    tok = tuned.dataset.tokenizer
    assert tok.chars == old.chars + ["x", "z"]  # old ids unchanged
    wte = tuned.model.transformer.wte.weight
    assert tuned.model.config.vocab_size == old.vocab_size + 2
    old_rows = pre.model.transformer.wte.weight.detach()
    assert torch.equal(wte[:old.vocab_size].detach(), old_rows)
    assert torch.allclose(wte[old.vocab_size:].detach(), old_rows.mean(0).expand(2, -1))
    assert tuned.model.lm_head.weight is wte  # still tied
    tuned.update_config(max_steps=5)
    tuned.run(progress=False)  # trains with the new tokens


def test_grow_vocabulary_keeps_the_old_predictions_ranked_alike():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16))
    grown = grow_vocabulary(model, 12)
    idx = torch.tensor([[1, 2, 3]])
    old, new = model(idx).logits, grown(idx).logits
    assert torch.allclose(new[..., :10], old, atol=1e-6)
    with pytest.raises(ConfigError, match="only grows"):
        grow_vocabulary(model, 5)


def test_frozen_blocks_do_not_move_and_the_rest_trains(pretrained):
    _, path = pretrained
    tuned = finetune(path, NEW, freeze=1, max_steps=10, **TRAIN)
    assert tuned.frozen[:2] == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert all(n.startswith(("transformer.wte", "transformer.wpe", "transformer.h.0.")) for n in tuned.frozen)
    optimised = {id(p) for g in tuned.optimizer.param_groups for p in g["params"]}
    params = dict(tuned.model.named_parameters())
    assert optimised == {id(p) for n, p in params.items() if n not in tuned.frozen}
    before = weights(tuned.model)
    tuned.run(progress=False)
    after = tuned.model.state_dict()
    for name in params:
        moved = not torch.equal(after[name], before[name])
        assert moved == (name not in tuned.frozen), name


@pytest.mark.parametrize("freeze, fragment", [
    (3, "the model has 2 blocks"),
    (["transformer.h.7"], "names no parameter; the model's parts are .*transformer.h.1"),
    ("all", "a number of blocks"),
])
def test_bad_freeze_is_explained(pretrained, freeze, fragment):
    with pytest.raises(ConfigError, match=fragment):
        finetune(pretrained[1], NEW, freeze=freeze, **TRAIN)


def test_freezing_everything_is_refused():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ConfigError, match="no parameter to train"):
        freeze_parameters(model, ["transformer"])


def test_a_dataset_with_another_tokenizer_is_refused(pretrained):
    with pytest.raises(CheckpointError, match="pass the text itself"):
        finetune(pretrained[1], TokenDataset(NEW, block_size=16), **TRAIN)
    with pytest.raises(ConfigError, match="new_tokens="):
        finetune(pretrained[1], NEW, new_tokens="ignore")
    with pytest.raises(ConfigError, match="checkpoint file"):
        finetune(pretrained[0].model, NEW)


def test_a_run_with_frozen_blocks_resumes_from_its_checkpoint_still_frozen(pretrained, tmp_path):
    _, path = pretrained
    whole = finetune(path, NEW, freeze=1, max_steps=10, **TRAIN)
    halves = finetune(path, NEW, freeze=1, max_steps=10, **TRAIN)
    whole.run(progress=False)
    halves.run(5, progress=False)
    halves.save(tmp_path / "half.safetensors")
    resumed = Trainer.load(tmp_path / "half.safetensors", NEW)
    assert resumed.frozen == whole.frozen and len(whole.frozen) > 2
    resumed.run(progress=False)
    assert [r["train_loss"] for r in resumed.history.rows()] == \
        pytest.approx([r["train_loss"] for r in whole.history.rows()], abs=1e-6)
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, whole.model.state_dict()[k], atol=1e-6, rtol=0)


def test_frozen_embeddings_with_new_characters_are_refused(pretrained):
    with pytest.raises(ConfigError, match="never train.*Freeze blocks only"):
        finetune(pretrained[1], NEW + "zoe\n" * 50, freeze=1, **TRAIN)
    tuned = finetune(pretrained[1], NEW + "zoe\n" * 50, freeze=["transformer.h.0"], **TRAIN)
    assert tuned.model.transformer.wte.weight.requires_grad


def test_the_pretrained_model_is_copied_not_trained_in_place(pretrained):
    from lmlab import checkpoint

    ck = checkpoint.load(pretrained[1])
    before = weights(ck.model)
    tuned = finetune(ck, NEW, max_steps=5, **TRAIN)
    assert tuned.model is not ck.model
    tuned.run(progress=False)
    for k, v in ck.model.state_dict().items():
        assert torch.equal(v, before[k])
    state = torch.random.get_rng_state()
    finetune(pretrained[0], NEW, **TRAIN)  # copying a trainer's model draws no random numbers
    assert torch.equal(torch.random.get_rng_state(), state)
