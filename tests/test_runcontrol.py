"""Run control: the state machine, its drivers, interrupts, and the read path."""

import asyncio
import gc
import os
import random
import signal
import sys
import threading
import time
import weakref
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from lmlab import (GPT, ConfigError, GPTConfig, LmlabError, TokenDataset, TokenizerError,
                   TrainerStateError, TrainingError)
from lmlab.reading import model_lock
from lmlab import runcontrol
from lmlab.runcontrol import ACTIVE
from lmlab.sampling import next_token_distribution
from lmlab.train import TrainConfig, Trainer

TEXT = ("the quick brown fox jumps over the lazy dog. " * 200
        + "pack my box with five dozen liquor jugs! " * 200)


def make(max_steps=100_000, dropout=0.0, init=None, **overrides):
    ds = TokenDataset(TEXT, block_size=16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=16, n_layer=2, n_head=2,
                          n_embd=32, dropout=dropout))
    if init is not None:
        model.load_state_dict(init)
    cfg = dict(batch_size=4, max_steps=max_steps, warmup_steps=2, eval_interval=10,
               eval_batches=2, device="cpu")
    cfg.update(overrides)
    return Trainer(model, ds, TrainConfig(**cfg))


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.002)


# ---- states ---------------------------------------------------------------------------


def test_the_end_event_sees_a_run_that_has_ended():
    t = make(max_steps=5)
    seen = []
    t.on_end(lambda tr, state: seen.append((state, tr.state, tr.is_alive)))
    t.start()
    t.join(30)
    assert seen == [("finished", "finished", False)]


def test_pause_after_a_quick_resume_lets_no_step_run():
    t = make()
    t.start()
    try:
        wait_for(lambda: t.step_count >= 2)
        for _ in range(30):
            t.pause()
            t.resume()
            t.pause()  # returns once no step is in progress...
            n = t.step_count
            time.sleep(0.01)
            assert t.step_count == n, "a step ran after pause() returned"  # ...and none follows
            assert t.state == "paused"
            t.resume()
    finally:
        t.stop()


def test_pause_racing_the_end_of_a_run_leaves_a_consistent_state():
    t = make(max_steps=10**9)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave inside pause() and the run's end
    try:
        for _ in range(150):
            t.start(steps=1)
            while True:  # press Pause until the run has ended
                try:
                    t.pause(wait=False)
                    break
                except TrainerStateError:
                    if not t.is_alive:
                        break
            t.join(0.2)
            assert t.is_alive == (t.state in ACTIVE)
            if t.state == "paused":
                assert not t.join(0.05), "paused, but nothing is left to resume"
            t.stop()
            assert t.state in ("stopped", "finished") and not t.is_alive, t.state
            assert t.join(5)
    finally:
        sys.setswitchinterval(switch)


def test_stop_is_consistent_from_every_state():
    t = make()
    t.stop()  # idle: nothing to stop
    assert t.state == "idle"
    t.start()
    wait_for(lambda: t.step_count >= 1)
    t.pause()
    t.stop()  # from paused
    assert t.state == "stopped" and not t.is_alive and t.join(5)
    t.stop()  # again: a no-op
    assert t.state == "stopped"
    t.start()
    t.stop()  # right after start
    assert t.state == "stopped" and t.join(5)


def test_methods_that_make_no_sense_raise_clear_errors():
    t = make()
    with pytest.raises(TrainerStateError, match="cannot pause: the trainer is idle"):
        t.pause()
    with pytest.raises(TrainerStateError, match="cannot resume"):
        t.resume()
    t.start()
    try:
        wait_for(lambda: t.step_count >= 1)
        for call, fragment in ((t.start, "already running"), (t.step, "cannot step by hand"),
                               (t.reset, "cannot reset"), (t.rollback, "cannot roll back"),
                               (lambda: t.update_config(batch_size=2), "stop it before changing")):
            with pytest.raises(TrainerStateError, match=fragment):
                call()
        t.pause()
        t.step()  # by hand while paused: allowed, one step
    finally:
        t.stop()


class RunMachine(RuleBasedStateMachine):
    """Random sequences of calls from a second thread while the trainer's thread steps."""

    def __init__(self):
        super().__init__()
        self.t = make(max_steps=10**9)
        self.active_steps = 0
        self.overlaps = 0
        inner = self.t._step

        def counted():
            self.active_steps += 1
            if self.active_steps > 1:
                self.overlaps += 1
            try:
                time.sleep(0.001)
                return inner()
            finally:
                self.active_steps -= 1

        self.t._step = counted

    @rule(steps=st.integers(1, 4))
    def start(self, steps):
        if self.t.is_alive:
            with pytest.raises(TrainerStateError):
                self.t.start(steps=steps)
        else:
            self.t.start(steps=steps)

    @rule()
    def pause(self):
        if self.t.state in ("running", "pausing", "paused"):
            try:
                self.t.pause()
            except TrainerStateError:
                assert self.t.state not in ("running", "pausing", "paused")  # it ended meanwhile
                return
            assert not self.t._run.in_step or self.t.state not in ("paused",)
        elif self.t.state not in ACTIVE:
            with pytest.raises(TrainerStateError):
                self.t.pause()

    @rule()
    def resume(self):
        if self.t.state in ("paused", "pausing"):
            self.t.resume()

    @rule()
    def stop(self):
        self.t.stop()
        assert not self.t.is_alive and not self.t._run.in_step

    @rule()
    def step(self):
        if self.t.state in ("running", "pausing", "stopping"):
            return
        try:
            self.t.step()
        except TrainerStateError:
            assert self.t.state in ("running", "pausing", "stopping")  # resumed meanwhile

    @rule(seconds=st.sampled_from([0, 0.002, 0.01]))
    def wait(self, seconds):
        time.sleep(seconds)

    @invariant()
    def consistent(self):
        assert self.overlaps == 0, "two steps ran at once"
        state = self.t.state
        assert self.t.is_alive == (state in ACTIVE)
        if state in ("idle", "stopped", "finished", "failed"):
            assert not self.t._run.in_step or self.t._run._step_thread is threading.current_thread()

    def teardown(self):
        self.t.stop()
        assert self.t.join(5)


TestRunMachine = RunMachine.TestCase
TestRunMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                   suppress_health_check=list(HealthCheck))


# ---- interrupts -------------------------------------------------------------------------


N_REF = 12


@pytest.fixture(scope="module")
def reference():
    """Weights and optimiser state after each of the first N_REF steps, trained without
    interruption, and the initial weights to start every trial from."""
    init = {k: v.clone() for k, v in make().model.state_dict().items()}
    t = make(init=init)
    states = []
    for _ in range(N_REF):
        t.step()
        states.append(_state(t))
    return init, states


def _state(t):
    opt = t.optimizer.state_dict()["state"]
    return ({k: v.clone() for k, v in t.model.state_dict().items()},
            {(pid, key): (v.clone() if torch.is_tensor(v) else v)
             for pid, entry in opt.items() for key, v in entry.items()})


def _assert_whole_step(t, reference):
    _, states = reference
    weights, opt = states[t.step_count - 1]
    now_weights, now_opt = _state(t)
    for k, v in weights.items():
        assert torch.equal(now_weights[k], v), f"{k} is not from a whole step {t.step_count}"
    assert now_opt.keys() == opt.keys()
    for key, v in opt.items():
        assert torch.equal(torch.as_tensor(now_opt[key]), torch.as_tensor(v)), key


def _interrupt():
    os.kill(os.getpid(), signal.SIGINT)  # what a notebook's stop button sends the kernel


def _arm(t, where, at_step):
    """Send SIGINT from inside step `at_step`, at the point `where`."""
    def firing():  # in training step `at_step`, not in an evaluation
        return t.step_count + 1 == at_step and t.model.training

    if where == "forward":
        t.model.transformer.h[1].register_forward_hook(lambda *a: _interrupt() if firing() else None)
    elif where == "backward":
        t.model.transformer.h[0].mlp.c_fc.weight.register_hook(
            lambda g: _interrupt() if firing() else None)
    elif where == "optimizer":  # before AdamW updates any parameter
        t.optimizer.register_step_pre_hook(lambda *a: _interrupt() if firing() else None)
    elif where == "after-optimizer":  # parameters updated, gradients not yet cleared
        t.optimizer.register_step_post_hook(lambda *a: _interrupt() if firing() else None)


def _with_sigint_handler(handler, fn):
    previous = signal.signal(signal.SIGINT, handler)
    try:
        return fn()
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("where", ["forward", "backward", "optimizer", "after-optimizer"])
@pytest.mark.parametrize("at_step", [1, 4, 9])
def test_an_interrupt_inside_a_step_on_the_kernel_loop_stops_after_that_step(reference, where,
                                                                               at_step):
    t = make(init=reference[0])
    _arm(t, where, at_step)

    async def notebook():  # Start in a kernel: steps on the running loop
        t.start()
        assert t.driver == "loop"
        await t.wait()

    # While a cell runs, the kernel's SIGINT handler raises KeyboardInterrupt.
    _with_sigint_handler(signal.default_int_handler, lambda: asyncio.run(notebook()))
    assert t.state == "stopped" and t.error is None and t.step_count == at_step
    _assert_whole_step(t, reference)
    assert signal.getsignal(signal.SIGINT) is not runcontrol._sigint  # restored after the run


@pytest.mark.parametrize("where", ["backward", "optimizer"])
def test_an_interrupt_inside_a_blocking_run_stops_after_that_step(reference, where):
    t = make(init=reference[0])
    _arm(t, where, 3)
    _with_sigint_handler(signal.default_int_handler, lambda: t.run(progress=False))
    assert t.state == "stopped" and t.step_count == 3
    _assert_whole_step(t, reference)


@pytest.mark.parametrize("seed", range(8))
def test_interrupts_at_random_moments_leave_whole_steps(reference, seed):
    t = make(init=reference[0])
    delay = random.Random(seed).uniform(0.0, 0.03)

    async def notebook():
        t.start(steps=N_REF)
        threading.Timer(delay, _interrupt).start()
        await t.wait()
        await asyncio.sleep(0.05)  # the interrupt may come after the run: it must be harmless

    _with_sigint_handler(signal.SIG_IGN, lambda: asyncio.run(notebook()))  # an idle kernel
    assert t.state in ("stopped", "finished") and t.error is None
    if t.step_count:
        _assert_whole_step(t, reference)


# ---- the loop driver ----------------------------------------------------------------------


def test_start_on_a_running_loop_trains_between_other_work():
    t = make()
    ticks = []

    async def other_cell():
        while t.step_count < 20:
            ticks.append(t.step_count)
            await asyncio.sleep(0)

    async def notebook():
        t.start()
        assert t.driver == "loop" and t.state == "running"
        with pytest.raises(TrainerStateError, match="await trainer.wait"):
            t.join()
        await other_cell()
        t.pause()  # on the loop's own thread: no step can be in progress
        paused_at = t.step_count
        await asyncio.sleep(0.05)
        assert t.step_count == paused_at and t.state == "paused"
        t.resume()
        await asyncio.sleep(0.01)
        t.stop()
        await t.wait()

    asyncio.run(notebook())
    assert t.state == "stopped" and not t.is_alive
    assert len(set(ticks)) >= 10  # the other coroutine ran between many steps
    assert not [th for th in threading.enumerate() if th.name == "lmlab-trainer"]


def test_a_thread_is_used_without_an_event_loop():
    t = make(max_steps=3)
    t.start()
    assert t.driver == "thread"
    assert t.join(30) and t.state == "finished"
    with pytest.raises(TrainerStateError, match="needs a running asyncio event loop"):
        t.start(steps=1, driver="loop")


# ---- observers -------------------------------------------------------------------------------


def test_subscriptions_can_be_removed():
    t = make(max_steps=4)
    base = t.callback_count()
    seen = []
    sub = t.on("step", lambda tr, row: seen.append(row["step"]))
    assert t.callback_count() == base + 1 and sub.active
    t.step()
    sub.remove()
    sub.remove()  # idempotent
    t.step()
    assert seen == [1] and t.callback_count() == base and not sub.active


# ---- the read path ---------------------------------------------------------------------------


def test_next_token_distribution_reads_in_eval_mode():
    t = make(dropout=0.5)
    t.model.train()
    ids = t.dataset.tokenizer.encode("the quick")
    a = next_token_distribution(t.model, t.dataset.tokenizer, ids)
    b = next_token_distribution(t.model, t.dataset.tokenizer, ids)
    assert a.probs_raw == b.probs_raw  # no dropout
    assert t.model.training  # training mode restored


def test_sample_waits_for_the_models_lock():
    t = make()
    done = threading.Event()
    with model_lock(t.model):  # a step in progress holds this lock
        threading.Thread(target=lambda: (t.sample("the", 5, seed=0), done.set())).start()
        assert not done.wait(0.3), "sample() read the model while a step held its lock"
    assert done.wait(10)


def test_sampling_leaves_the_global_rng_alone():
    t = make(dropout=0.1)
    before = torch.get_rng_state()
    t.sample("the", 10)
    t.sample("the", 10, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert t.sample("the", 10, seed=3) == t.sample("the", 10, seed=3)


# ---- periodic samples, rollback, reset ------------------------------------------------------


def test_periodic_samples_come_from_the_engine():
    t = make(max_steps=12)
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        t.set_sampling(prompt="ROMEO:")
    got = []
    t.on("sample", lambda tr, s: got.append(s))
    t.set_sampling(prompt="the ", every=5, tokens=6)
    t.run(progress=False)
    assert [s["step"] for s in got] == [5, 10] == [s["step"] for s in t.samples]
    assert all(s["prompt"] == "the " and len(s["text"]) == 6 for s in got)


def test_a_diverged_run_can_go_back_to_its_last_healthy_evaluation():
    t = make(max_steps=400, learning_rate=3e-3)
    kept = {}
    t.on_eval(lambda tr, ev: kept.setdefault(tr.step_count, {
        k: v.clone() for k, v in tr.model.state_dict().items()}))
    t.run(steps=20, progress=False)
    assert t.rollback_point[0] == 20
    # an evaluation far worse than the best is not healthy: the snapshot stays at step 20
    t._keep_if_healthy({"step": 20, "train_loss": 345.0, "val_loss": 345.0})
    assert t.rollback_point[0] == 20
    with torch.no_grad():  # what a learning rate of 5 does, in one blow
        t.model.transformer.wte.weight.mul_(1e30)
    with pytest.raises(TrainingError, match="rollback\\(\\) returns to step 20"):
        t.run(progress=False)
    assert t.state == "failed"
    assert t.rollback() == 20
    assert t.state == "idle" and t.step_count == 20 and t.history.last()["step"] == 20
    assert all(torch.equal(v, t.model.state_dict()[k]) for k, v in kept[20].items())
    t.run(steps=3, progress=False)
    assert t.step_count == 23 and t.state == "finished"


def test_the_first_steps_can_be_undone_too():
    t = make(max_steps=100)
    assert t.rollback_point is None
    with pytest.raises(TrainerStateError, match="no healthy evaluation"):
        t.rollback()
    start = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.run(steps=3, progress=False)  # no evaluation yet (every 10 steps): step 0 was kept
    assert t.rollback_point[0] == 0 and t.rollback() == 0
    assert all(torch.equal(v, t.model.state_dict()[k]) for k, v in start.items())
    assert len(t.history) == 0


def test_reset_keeps_the_trainer_and_gives_fresh_weights():
    t = make(max_steps=50)
    model = t.model
    t.run(steps=5, progress=False)
    trained = model.transformer.wte.weight.detach().clone()
    events = []
    t.on("reset", lambda tr, _: events.append(tr.step_count))
    t.reset()
    assert t.model is model and t.step_count == 0 and len(t.history) == 0 and t.state == "idle"
    assert not torch.equal(model.transformer.wte.weight, trained)
    t.reset(n_layer=1, block_size=8)
    assert t.model.config.n_layer == 1 and t.dataset.block_size == 8 and events == [0, 0]
    t.run(steps=2, progress=False)
    assert t.step_count == 2


def test_min_lr_follows_the_learning_rate():
    c = TrainConfig(learning_rate=1e-5)
    assert c.final_lr == pytest.approx(1e-6) and c.lr_at(c.max_steps) == pytest.approx(1e-6)
    assert TrainConfig(learning_rate=1e-3, min_lr=5e-4).final_lr == 5e-4


# ---- engine edges ----------------------------------------------------------------------------


@pytest.mark.parametrize("call, fragment", [
    (lambda: make(max_step=10), "TrainConfig has no setting 'max_step'; did you mean 'max_steps'?"),
    (lambda: TrainConfig(learning_rat=1e-3), "did you mean 'learning_rate'?"),
    (lambda: GPTConfig.preset("nano", n_layers=3), "GPTConfig has no setting 'n_layers'; did you "
                                                   "mean 'n_layer'?"),
    (lambda: make().update_config(batchsize=4), "did you mean 'batch_size'?"),
])
def test_unknown_settings_suggest_the_right_name(call, fragment):
    with pytest.raises(ConfigError) as e:
        call()
    assert fragment in str(e.value)


# ---- found in review ---------------------------------------------------------------------------


def test_the_handler_left_between_steps_pins_no_trainer():
    holder = [make(max_steps=3)]
    ref = weakref.ref(holder[0])

    async def notebook():
        holder[0].start()
        saved = signal.signal(signal.SIGINT, signal.default_int_handler)  # a cell begins...
        await holder[0].wait()  # ...and the run ends during it
        signal.signal(signal.SIGINT, saved)  # the kernel restores what it saved

    _with_sigint_handler(signal.SIG_IGN, lambda: asyncio.run(notebook()))
    holder.clear()
    gc.collect()
    assert ref() is None  # whatever handler is left holds no trainer


def test_a_run_whose_loop_closes_fails_instead_of_staying_alive():
    t = make()

    async def notebook():
        t.start()
        await asyncio.sleep(0.05)  # the loop closes with the run active

    asyncio.run(notebook())
    assert t.state == "failed" and not t.is_alive and t.error is not None
    t.start(steps=2, driver="thread")  # and it can train again
    assert t.join(30) and t.state == "finished"


def test_stop_while_paused_during_a_step_by_hand():
    t = make()
    t.start()
    wait_for(lambda: t.step_count >= 1)
    t.pause()
    inside = threading.Event()
    go = threading.Event()
    t.on_step(lambda tr, row: (inside.set(), go.wait(10)))
    stepper = threading.Thread(target=t.step)
    stepper.start()
    assert inside.wait(10)
    t.stop(wait=False)  # no AssertionError: paused -> stopped
    go.set()
    stepper.join(10)
    t.stop()
    assert t.state == "stopped" and not t.is_alive and t.join(5)


def test_waiting_while_holding_the_models_lock_is_refused_not_a_deadlock():
    t = make()
    t.start(driver="thread")
    try:
        wait_for(lambda: t.step_count >= 1)
        with t.reading():
            with pytest.raises(TrainerStateError, match="holds"):
                t.stop()  # waiting here would wait for a step that needs this lock
    finally:
        t.stop()
    assert t.state == "stopped"


def test_join_from_the_runs_own_callback_is_refused():
    t = make(max_steps=2)
    t.on_end(lambda tr, state: tr.join())
    t.start(driver="thread")
    assert t.join(10) and any("would wait forever" in w for w in t.warnings)


def test_a_new_run_can_start_from_the_end_event_and_right_after_stop():
    t = make(max_steps=3)
    restarted = []

    def again(tr, state):
        if not restarted:
            restarted.append(state)
            tr.start(steps=2, driver="thread")

    t.on_end(again)
    t.start(driver="thread")
    wait_for(lambda: t.step_count == 5 and not t.is_alive)
    assert t.join(10) and restarted == ["finished"] and t.state == "finished"

    u = make()

    async def notebook():
        u.start()
        await asyncio.sleep(0.02)
        u.stop()
        u.start(steps=3)  # Stop then Start at once: the old driver only winds down
        await u.wait()

    asyncio.run(notebook())
    assert u.state == "finished" and u.error is None


def test_reset_without_a_new_shape_keeps_the_datasets_context():
    ds = TokenDataset(TEXT, block_size=8)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    t = Trainer(model, ds, TrainConfig(batch_size=4, max_steps=5, device="cpu"))
    t.reset()
    assert t.dataset.block_size == 8
    t.reset(block_size=12)
    assert t.dataset.block_size == 12 and t.model.config.block_size == 12


def test_an_interrupt_during_a_step_by_hand_raises_after_the_whole_step(reference):
    t = make(init=reference[0])
    _arm(t, "optimizer", 2)
    t.step()
    with pytest.raises(KeyboardInterrupt):
        _with_sigint_handler(signal.default_int_handler, t.step)
    assert t.step_count == 2 and len(t.history) == 2
    _assert_whole_step(t, reference)


def test_a_failing_periodic_sample_never_stops_training():
    t = make(max_steps=6)
    t.set_sampling(prompt="the ", every=2)
    t.sampling = replace(t.sampling, prompt="")  # set behind set_sampling's back
    t.run(progress=False)
    assert t.state == "finished" and any("periodic sample failed" in w for w in t.warnings)


def test_a_refused_rollback_leaves_a_failed_run_as_it_was():
    t = make()
    t.on_step(lambda tr, row: None)
    with torch.no_grad():
        t.model.transformer.wte.weight.fill_(float("nan"))
    t._rollback.snapshot = None
    t.start(driver="thread")
    t.join(10)
    t._rollback.snapshot = None
    assert t.state == "failed"
    with pytest.raises(TrainerStateError, match="no healthy evaluation"):
        t.rollback()
    assert t.state == "failed" and t.error is not None


def test_a_click_handled_on_a_subshell_thread_trains_on_the_main_loop():
    """ipykernel 7 runs widget comm handlers on a subshell thread with a loop of its own
    (JupyterLab 4.6's commsOverSubshells); the steps must still run on the main thread."""
    threads = set()

    async def kernel():
        t = make(max_steps=5)  # built in a cell, on the main thread
        t.on_step(lambda tr, row: threads.add(threading.current_thread().name))

        def subshell():
            async def click():
                t.start()
                assert t.driver == "loop"
            asyncio.run(click())

        worker = threading.Thread(target=subshell, name="subshell")
        worker.start()
        while worker.is_alive() or t.is_alive:
            await asyncio.sleep(0.01)
        await t.wait()
        return t

    t = asyncio.run(kernel())
    assert t.state == "finished" and t.step_count == 5
    assert threads == {"MainThread"}


def test_views_ask_what_is_possible_in_each_state():
    t = make(max_steps=10**9)

    def answers():
        return tuple(getattr(t, "can_" + k) for k in ("start", "pause", "resume", "stop", "step",
                                                       "change"))

    assert t.state == "idle" and answers() == (True, False, False, False, True, True)
    inside = []

    def during_a_step(trainer, row):
        if row["step"] == 3:  # the run's own step: pause after it, and ask meanwhile
            trainer.pause(wait=False)
            inside.append((trainer.state, answers()))

    t.on("step", during_a_step)
    t.start(driver="thread")
    wait_for(lambda: t.state == "paused")
    assert inside == [("pausing", (False, False, True, True, False, False))]
    assert answers() == (False, False, True, True, True, False)  # paused: a step by hand may run
    t.resume()
    wait_for(lambda: t.step_count >= 5)
    assert t.state == "running" and answers() == (False, True, False, True, False, False)
    t.stop()
    assert t.state == "stopped" and answers() == (True, False, False, False, True, True)
    by_hand = []
    t.on("step", lambda trainer, row: by_hand.append(trainer.can_step))
    t.step()
    assert by_hand == [False]  # no second step while one is in progress


def test_check_reset_says_what_reset_would_refuse_and_changes_nothing():
    t = make()
    t.step()
    with pytest.raises(ConfigError, match="n_embd=33 is not divisible by n_head=2"):
        t.check_reset(n_embd=33)
    with pytest.raises(LmlabError, match="pick a shorter context"):
        t.check_reset(block_size=10**6)
    shape, dataset = t.check_reset(n_layer=1, block_size=8)
    assert shape.n_layer == 1 and dataset.block_size == 8
    assert t.step_count == 1 and t.model.config.n_layer == 2 and t.dataset.block_size == 16


def test_a_reset_that_unpins_the_schedule_tells_a_config_event():
    t = make(max_steps=20)
    t.step()
    seen = []
    t.on("config", lambda trainer, changed: seen.append(changed))
    t.update_config(max_steps=40)  # after training began: the schedule is pinned at 20
    assert seen == [{"max_steps": 40, "lr_decay_steps": 20}]
    t.reset()
    assert seen[-1] == {"lr_decay_steps": None} and t.config.lr_decay_steps is None


def test_steps_by_hand_from_two_threads_take_turns():
    """Two clicks on Step handled on two threads (ipykernel 7's subshells): the second waits
    for the first instead of being refused."""
    t = make()
    inside, release = threading.Event(), threading.Event()
    t.on("step", lambda trainer, row: row["step"] == 1 and (inside.set(), release.wait(10)))
    first = threading.Thread(target=t.step)
    first.start()
    assert inside.wait(10)
    errors = []

    def second():
        try:
            t.step()
        except Exception as e:  # noqa: BLE001 - what the old code raised is the point
            errors.append(e)

    other = threading.Thread(target=second)
    other.start()
    time.sleep(0.2)
    assert t.step_count == 1 and other.is_alive()  # waiting its turn
    release.set()
    first.join(10)
    other.join(10)
    assert errors == [] and t.step_count == 2
    t.on("step", lambda trainer, row: trainer.step() if row["step"] == 3 else None)
    t.step()  # a step's own observer stepping again would wait for itself: refused, noted
    assert t.step_count == 3 and "own callbacks cannot step" in t.warnings[-1]
