import math
import threading
import time

import pytest
import torch

from lmlab import GPT, CharTokenizer, CheckpointError, ConfigError, DataError, GPTConfig, TokenDataset
from lmlab import TokenizerError, TrainerStateError, TrainingError
from lmlab.train import TrainConfig, Trainer

TEXT = ("the quick brown fox jumps over the lazy dog. " * 200
        + "pack my box with five dozen liquor jugs! " * 200)


def make(max_steps=30, seed=0, **overrides):
    ds = TokenDataset(TEXT, block_size=16)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=16, n_layer=2, n_head=2,
                          n_embd=32, dropout=0.1))
    cfg = dict(batch_size=4, max_steps=max_steps, warmup_steps=5, eval_interval=10,
               eval_batches=2, seed=seed, device="cpu")
    cfg.update(overrides)
    return Trainer(model, ds, TrainConfig(**cfg))


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(batch_size=0), "batch_size=0"),
    (dict(learning_rate=-1), "learning_rate=-1"),
    (dict(learning_rate=float("nan")), "learning_rate=nan"),
    (dict(schedule="linear"), "schedule='linear'"),
    (dict(optimizer="lion"), "optimizer='lion'"),
    (dict(dtype="float16"), "dtype='float16'"),
    (dict(betas=(0.9, 1.2)), "betas"),
    (dict(min_lr=1.0), "min_lr=1.0 is above"),
    (dict(warmup_steps=-1), "warmup_steps=-1"),
])
def test_invalid_train_config(kwargs, fragment):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert fragment in str(e.value)


def test_schedule_warmup_cosine_and_constant():
    c = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=2000)
    assert c.lr_at(0) == pytest.approx(1e-3 / 101)
    assert c.lr_at(99) == pytest.approx(1e-3 * 100 / 101)
    assert c.lr_at(100) == pytest.approx(1e-3)
    assert c.lr_at(1050) == pytest.approx(5.5e-4)
    assert c.lr_at(2000) == pytest.approx(1e-4)
    k = TrainConfig(schedule="constant", warmup_steps=0, learning_rate=0.1)
    assert k.lr_at(0) == k.lr_at(5000) == 0.1


def test_steps_lower_the_loss_and_fill_history():
    t = make(max_steps=60, learning_rate=3e-3)
    first = t.evaluate()["train_loss"]
    t.run(progress=False)
    assert t.state == "finished" and t.step_count == 60
    h = t.history.to_dict()
    assert h["step"] == list(range(1, 61))
    assert h["tokens"][-1] == 60 * 4 * 16
    assert [s for s, v in zip(h["step"], h["val_loss"]) if v is not None] == [10, 20, 30, 40, 50, 60]
    assert t.last_eval["train_loss"] < first - 0.5
    assert t.last_eval["val_perplexity"] == pytest.approx(math.exp(t.last_eval["val_loss"]))
    assert all(r > 0 for r in h["tokens_per_s"]) and h["wall_time"] == sorted(h["wall_time"])
    df = t.history.to_pandas()
    assert list(df.columns)[:3] == ["step", "tokens", "train_loss"] and len(df) == 60


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_other_optimizers_train(optimizer):
    t = make(max_steps=30, optimizer=optimizer, learning_rate=0.05 if optimizer == "sgd" else 3e-3)
    before = t.evaluate()["train_loss"]
    t.run(progress=False)
    assert t.last_eval["train_loss"] < before
    assert type(t.optimizer).__name__.lower() == optimizer


def test_background_thread_states():
    t = make(max_steps=100_000)
    seen = []
    t.on_step(lambda tr, row: seen.append(row["step"]))
    assert t.state == "idle"
    t.start()
    wait_for(lambda: len(seen) >= 3)
    with pytest.raises(TrainerStateError, match="already running"):
        t.start()
    with pytest.raises(TrainerStateError, match="not paused"):
        t.resume()
    t.pause()
    assert t.state == "paused"
    time.sleep(0.1)
    n = t.step_count
    time.sleep(0.2)
    assert t.step_count == n  # no steps while paused
    text = t.sample("the ", 20, seed=1)  # the kernel stays usable
    assert text.startswith("the ") and len(text) == 24
    t.resume()
    wait_for(lambda: t.step_count > n + 2)
    t.stop()
    assert t.state == "stopped" and not t.is_alive
    assert t.history.last()["step"] == t.step_count
    with pytest.raises(TrainerStateError, match="cannot pause"):
        t.pause()


def test_stop_from_another_thread_mid_step():
    t = make(max_steps=100_000)
    in_step = threading.Event()
    original = t.dataset.batch

    def slow_batch(*a, **k):
        in_step.set()
        time.sleep(0.05)
        return original(*a, **k)

    t.dataset.batch = slow_batch
    t.start()
    in_step.wait(10)
    stopper = threading.Thread(target=t.stop)
    stopper.start()
    stopper.join(10)
    assert t.state == "stopped" and not t.is_alive
    rows = t.history.rows()
    assert rows[-1]["step"] == t.step_count == len(rows)  # the step in progress completed
    t.dataset.batch = original
    t.run(steps=3, progress=False)  # and the trainer carries on
    assert t.step_count == len(rows) + 3


def test_sample_while_training_reads_whole_weights():
    t = make(max_steps=100_000)
    t.start()
    try:
        for _ in range(10):
            with t.lock:  # what sample() holds: no step can be half-applied
                snapshot = {k: v.clone() for k, v in t.model.state_dict().items()}
                time.sleep(0.005)
                assert all(torch.equal(v, t.model.state_dict()[k]) for k, v in snapshot.items())
            assert len(t.sample("the", 5)) == 8
    finally:
        t.stop()
    assert t.error is None


def test_a_failing_observer_never_stops_training():
    t = make(max_steps=20)
    errors = []
    t.on_error(lambda tr, e: errors.append(e))

    @t.on_step
    def explode(tr, row):
        if row["step"] == 5:
            raise KeyError("boom")

    t.on_eval(lambda tr, ev: 1 / 0)
    t.start()
    t.join(30)
    assert t.state == "finished" and t.error is None and errors == []
    assert t.step_count == 20 and len(t.history) == 20
    warned = list(t.warnings)
    assert any("step 5" in w and "explode" in w and "KeyError" in w for w in warned)
    assert sum("ZeroDivisionError" in w for w in warned) == 2  # evaluations at 10 and 20


def test_run_returns_a_readable_history():
    t = make(max_steps=10)
    history = t.run(progress=False)
    assert repr(history).startswith("History(10 rows; step 10, train loss ")
    assert "last val loss" in repr(history)


def test_non_finite_loss_keeps_last_good_weights():
    t = make(max_steps=100)
    t.run(steps=3, progress=False)
    good = {k: v.clone() for k, v in t.model.state_dict().items()}
    with torch.no_grad():
        t.model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
        good["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    with pytest.raises(TrainingError) as e:
        t.run(progress=False)
    msg = str(e.value)
    assert "step 4" in msg and "weights of step 3 are kept" in msg and "learning rate" in msg
    assert "trainer.rollback() returns to step 0" in msg
    assert t.state == "failed" and t.step_count == 3
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, good[k]) or torch.allclose(v, good[k], equal_nan=True), k


def test_dataset_smaller_than_a_batch():
    ds = TokenDataset("abcdefgh " * 12, block_size=8, val_fraction=0.0)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(DataError, match="less than one batch"):
        Trainer(model, ds, TrainConfig(batch_size=64, device="cpu"))


def test_model_dataset_mismatch():
    ds = TokenDataset(TEXT, block_size=16)
    small_vocab = GPT(GPTConfig(vocab_size=5, block_size=16, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ConfigError, match=f"vocab_size={ds.vocab_size}"):
        Trainer(small_vocab, ds, device="cpu")


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    straight = make(max_steps=24)
    straight.run(progress=False)

    first = make(max_steps=24)
    first.run(steps=11, progress=False)
    first.save(tmp_path / "run.safetensors")
    del first
    torch.manual_seed(999)  # disturb the global RNG: dropout's state comes from the checkpoint
    ds = TokenDataset(TEXT, block_size=16)
    resumed = Trainer.load(tmp_path / "run.safetensors", ds, device="cpu")
    assert resumed.step_count == 11 and len(resumed.history) == 11
    resumed.run(progress=False)
    a = straight.history.to_dict()
    b = resumed.history.to_dict()
    assert a["train_loss"] == b["train_loss"]  # step for step, exactly
    assert a["val_loss"] == b["val_loss"]
    assert a["grad_norm"] == b["grad_norm"]


def test_resume_into_another_model_shape_is_refused(tmp_path):
    t = make(max_steps=5)
    t.run(progress=False)
    t.save(tmp_path / "a.safetensors")
    ds = TokenDataset(TEXT, block_size=16)
    other = Trainer(GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=16, n_layer=3, n_head=2,
                                  n_embd=32)), ds, device="cpu")
    with pytest.raises(CheckpointError, match="model of shape"):
        other.restore(tmp_path / "a.safetensors")
    assert other.step_count == 0


def test_update_config_between_runs():
    t = make(max_steps=5)
    t.run(progress=False)
    with pytest.raises(TrainerStateError, match="already at step 5"):
        t.start()
    t.update_config(max_steps=8, learning_rate=5e-4)
    t.run(progress=False)
    assert t.step_count == 8 and t.history.last()["lr"] <= 5e-4


def test_ctrl_c_during_run_stops_cleanly():
    import _thread

    t = make(max_steps=100_000)

    @t.on_step
    def interrupt(tr, row):
        if row["step"] == 3:
            _thread.interrupt_main()  # what Ctrl-C or the notebook's stop button does

    history = t.run(progress=False)
    assert t.state == "stopped" and not t.is_alive and t.error is None
    assert 3 <= t.step_count < 100 and len(history) == t.step_count


def test_a_dataset_with_another_tokenizer_is_refused_and_text_is_retokenized(tmp_path):
    t = make(max_steps=4)
    t.run(progress=False)
    t.save(tmp_path / "run.safetensors")
    permuted = CharTokenizer(sorted(set(TEXT), reverse=True))  # same characters, other ids
    other = TokenDataset(TEXT, permuted, block_size=16)
    assert other.vocab_size == t.dataset.vocab_size
    assert other.tokenizer.to_dict() != t.dataset.tokenizer.to_dict()
    with pytest.raises(CheckpointError, match="not the one .* was trained with"):
        Trainer.load(tmp_path / "run.safetensors", other, device="cpu")
    again = Trainer.load(tmp_path / "run.safetensors", TEXT, device="cpu")
    assert again.step_count == 4
    assert again.dataset.tokenizer.to_dict() == t.dataset.tokenizer.to_dict()
    assert torch.equal(again.dataset.train_ids, t.dataset.train_ids)


def test_changed_settings_take_effect():
    t = make(max_steps=20)
    t.run(steps=3, progress=False)
    t.update_config(optimizer="sgd", momentum=0.5)
    assert isinstance(t.optimizer, torch.optim.SGD) and t.optimizer.param_groups[0]["momentum"] == 0.5
    t.update_config(optimizer="adamw")
    moments_before = None
    t.run(steps=2, progress=False)
    moments_before = {k: v["exp_avg"].clone() for k, v in enumerate(t.optimizer.state.values())}
    t.update_config(betas=(0.8, 0.9), weight_decay=0.2)
    assert t.optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    assert [g["weight_decay"] for g in t.optimizer.param_groups] == [0.2, 0.0]
    kept = {k: v["exp_avg"] for k, v in enumerate(t.optimizer.state.values())}
    assert all(torch.equal(kept[k], v) for k, v in moments_before.items())  # state carried over
    with pytest.raises(ConfigError, match="device cannot change"):
        t.update_config(device="meta")
    with pytest.raises(ConfigError, match="seed cannot change"):
        t.update_config(seed=5)


def test_raising_max_steps_keeps_the_schedule():
    t = make(max_steps=20, warmup_steps=2)
    t.run(progress=False)
    last = t.history.last()["lr"]
    t.update_config(max_steps=30)
    t.run(progress=False)
    lrs = t.history.column("lr")[20:]
    assert max(lrs) <= last + 1e-12  # no jump back up
    assert lrs[-1] == pytest.approx(t.config.final_lr)
    t.reset()
    assert t.config.lr_decay_steps is None  # a fresh run stretches over max_steps again


def test_sampling_unknown_characters_says_what_the_model_knows():
    t = make(max_steps=1)
    with pytest.raises(TokenizerError) as e:
        t.sample("Emma")
    message = str(e.value)
    assert "'E'" in message and "The model knows these" in message and "Refit" not in message
    assert "abc" in message and "unknown='replace'" in message


def test_the_trainer_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    t = make(max_steps=6)  # dropout 0.1: every step draws masks
    torch.set_rng_state(before)
    t = Trainer(t.model, t.dataset, t.config)
    t.run(progress=False)
    t.reset()
    t.run(progress=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_two_trainers_with_dropout_keep_their_own_randomness():
    alone = [make(max_steps=8, seed=s) for s in (1, 2)]
    for t in alone:
        t.run(progress=False)
    a, b = make(max_steps=8, seed=1), make(max_steps=8, seed=2)
    for _ in range(8):  # interleaved, and the global RNG drawn from in between
        a.step()
        torch.rand(7)
        b.step()
    assert a.history.to_dict()["train_loss"] == alone[0].history.to_dict()["train_loss"]
    assert b.history.to_dict()["train_loss"] == alone[1].history.to_dict()["train_loss"]


def test_the_trainer_leaves_the_dataset_as_given():
    ds = TokenDataset(TEXT, block_size=16, device="meta")  # a device the trainer does not use
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    t = Trainer(model, ds, batch_size=2, max_steps=2, eval_interval=1, eval_batches=1, device="cpu")
    t.run(progress=False)
    assert ds.device == torch.device("meta") and t.step_count == 2


def test_adam_uses_the_fused_kernels_where_torch_has_them():
    from lmlab.train import fused_adam_available

    t = make(max_steps=3)
    has_cpu_kernels = torch.torch_version.TorchVersion(torch.__version__) >= "2.4"
    assert fused_adam_available(torch.device("cpu")) == has_cpu_kernels
    assert t.optimizer.defaults.get("fused") is fused_adam_available(t.device)
    t.update_config(optimizer="sgd")
    assert "fused" not in t.optimizer.defaults or not t.optimizer.defaults["fused"]


def test_a_step_trains_a_model_left_in_eval_mode():
    trainer = make()  # dropout 0.1
    trainer.model.eval()  # e.g. by a user who inspected it between steps
    trainer.step()
    assert trainer.model.training and all(m.training for m in trainer.model.modules())
