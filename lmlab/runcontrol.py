"""Run control: one state machine for a run of training steps, and the drivers that
run the steps.

States::

    idle ──begin──▶ running ──pause──▶ pausing ─(step ends)─▶ paused ──resume──▶ running
                       │  ╲                                      │
                       │   stop ─▶ stopping ─(step ends)─▶ stopped ◀── stop ─┘
                       ├──(target reached)──▶ finished
                       └──(a step raised)───▶ failed

`pausing` and `stopping` exist only while a step is in progress: a request that
arrives between steps takes effect at once. Every change of state happens in
`_set`, under one condition variable, so a view never sees a state that does not
match whether steps can run: `is_alive` is true exactly in running, pausing, paused
and stopping.

Drivers, chosen by measurement (ARCHITECTURE.md, "Run control and threads"):

- ``loop``: an asyncio task on the calling thread's running event loop, yielding
  between steps. A notebook kernel runs such a loop on the thread that has already
  used torch. Measured in a real kernel (`python -m lmlab.bench dashboard`, nanoGPT's
  CPU configuration, 2 cores): the dashboard's Start on the loop trained at 0.960x
  the speed of a blocking `trainer.run()` in the same kernel (mean of 3 runs), a
  trainer on a second thread at 0.72x: once one thread has run an OpenMP region,
  parallel ops on every other thread slow down. Other cells and widget clicks are
  handled between steps.
- ``thread``: a daemon thread, for scripts that have no event loop (and for callers
  that want the calling thread free, e.g. to drive a GPU from a thread).
- ``blocking``: the calling thread, until the run ends (`Trainer.run`).

Interrupts: on the main thread (where a kernel delivers its stop button's SIGINT),
every step runs with one module-level SIGINT handler that only records the request
for the active runs; a run then stops after the step, so an interrupt never lands
between `backward()` and the optimiser's update. The handler that was there is
restored after each step. An idle kernel ignores SIGINT; while a loop-driven run is
active the same handler stands in between steps (it holds no run, so a handler left
installed by the kernel's own save-and-restore pins nothing and does nothing).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import weakref

from .errors import TrainerStateError

STATES = ("idle", "running", "pausing", "paused", "stopping", "stopped", "finished", "failed")
ACTIVE = frozenset({"running", "pausing", "paused", "stopping"})
ENDED = frozenset({"idle", "stopped", "finished", "failed"})
TRANSITIONS = {
    "idle": {"running"},
    "running": {"pausing", "paused", "stopping", "stopped", "finished", "failed"},
    "pausing": {"running", "paused", "stopping", "stopped", "finished", "failed"},
    "paused": {"running", "stopped", "failed"},
    "stopping": {"stopped", "failed"},
    "stopped": {"running", "idle"},
    "finished": {"running", "idle"},
    "failed": {"running", "idle"},
}
DRIVERS = ("auto", "loop", "thread")

_active_runs: weakref.WeakSet = weakref.WeakSet()


def _sigint(signum, frame):
    """SIGINT while a step or a loop-driven run is active: record a stop request for the
    active runs. Runs between two bytecodes of the main thread, perhaps inside a
    critical section, so it only sets flags; the drivers act on them at safe points."""
    for run in list(_active_runs):
        run._interrupted = True
        run._wake_all()


def _install_sigint():
    """Install `_sigint` on the main thread; returns what to restore (or None)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.signal(signal.SIGINT, _sigint)
    return previous if previous is not None else signal.SIG_DFL  # None: set from C


def _restore_sigint(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_main_loop = None  # the main thread's running event loop, once seen (a kernel's shell loop)


def remember_main_loop() -> None:
    """Called from lmlab code that may run in a cell: note the main thread's loop."""
    global _main_loop
    if threading.current_thread() is threading.main_thread():
        loop = _running_loop()
        if loop is not None:
            _main_loop = loop


def _loop_for_steps():
    """The event loop to run steps on: the main thread's, when it is known and running
    (ipykernel 7 handles widget clicks on a subshell thread, which has a loop of its own
    but is a second OpenMP thread and never receives SIGINT); else this thread's."""
    remember_main_loop()
    main = _main_loop
    if main is not None and main.is_running() and not main.is_closed():
        return main
    return _running_loop()


class RunControl:
    """Runs `step()` until `done()` under the state machine above. `step` does one
    whole step (and its callbacks); `ended(state, error)` is called once per run, on the
    driver's thread, after the run's final state is set. `lock_owned()` tells whether
    the calling thread holds the model's lock (then waiting for a step would deadlock)."""

    def __init__(self, step, done, ended, lock_owned=lambda: False):
        self._step, self._done, self._ended, self._lock_owned = step, done, ended, lock_owned
        self._cond = threading.Condition(threading.RLock())
        self._state = "idle"
        self._in_step = False
        self._step_thread: threading.Thread | None = None
        self._generation = 0  # one per run; a driver of an older run only winds down
        self._outcome: dict = {}  # generation -> (final state, error)
        self._drivers = 0  # drivers not yet returned
        self._driver: str | None = None
        self._driver_thread: threading.Thread | None = None
        self._wakes: dict = {}  # generation -> wakes that run's waiting loop driver
        self._interrupted = False
        self._tasks: set = set()  # loop drivers' asyncio tasks, kept so they are not collected
        self._waiters: list = []  # (loop, future) of `await wait()` calls
        self.error: BaseException | None = None

    # ---- the state ------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def is_alive(self) -> bool:
        """True while steps can run: running, pausing, paused or stopping."""
        return self._state in ACTIVE

    # what may happen now: views ask these rather than compare states
    @property
    def can_start(self) -> bool:
        return self._state not in ACTIVE

    @property
    def can_pause(self) -> bool:
        return self._state == "running"

    @property
    def can_resume(self) -> bool:
        return self._state in ("paused", "pausing")

    @property
    def can_stop(self) -> bool:
        return self._state in ACTIVE

    @property
    def can_step(self) -> bool:
        return self._state not in ("running", "pausing", "stopping") and not self._in_step

    @property
    def driver(self) -> str | None:
        """How the current (or last) run's steps were driven: loop, thread or blocking."""
        return self._driver

    @property
    def in_step(self) -> bool:
        return self._in_step

    def _set(self, new: str) -> None:
        """The one place the state changes; the caller holds `_cond`."""
        if new not in TRANSITIONS[self._state]:
            raise AssertionError(f"run control: no transition {self._state} -> {new}")
        self._state = new
        if new in ENDED and new != "idle":
            self._outcome[self._generation] = (new, self.error)
        self._cond.notify_all()
        self._wake_all()

    def _wake_all(self) -> None:
        for wake in list(self._wakes.values()):
            wake()

    def _calling_driver(self) -> bool:
        """True on the thread that runs this run's steps (a callback, or the loop's
        own thread between steps)."""
        return threading.current_thread() is self._driver_thread

    def _check_can_wait(self, what: str) -> None:
        if self._lock_owned():
            raise TrainerStateError(
                f"{what}() waits for the step in progress, which needs the model's lock that "
                "this thread holds (inside reading() or trainer.lock); call it outside, or "
                "with wait=False")

    # ---- requests (any thread) --------------------------------------------------------

    def begin(self, driver: str) -> int:
        """Start a run (its generation number); refused while one is active."""
        with self._cond:
            if self.is_alive:
                raise TrainerStateError(
                    f"a run is already {self._state}; pause(), resume() or stop() it first")
            self.error = None
            self._generation += 1
            self._set("running")
            self._interrupted = False
            self._driver = driver
            self._drivers += 1
            return self._generation

    def pause(self, wait: bool = True) -> None:
        """Pause after the step in progress. With `wait`, return only once no step is in
        progress (a callback of the run itself never waits)."""
        with self._cond:
            if self._state in ("pausing", "paused"):
                return
            if self._state != "running":
                raise TrainerStateError(f"cannot pause: the trainer is {self._state}, not running")
            self._set("pausing" if self._in_step else "paused")
            if wait and not self._step_is_mine() and self._in_step:
                self._check_can_wait("pause")
                self._cond.wait_for(lambda: not self._in_step)

    def resume(self) -> None:
        with self._cond:
            if self._state not in ("paused", "pausing"):
                raise TrainerStateError(
                    f"cannot resume: the trainer is {self._state}, not paused; start() a new run")
            self._set("running")

    def stop(self, wait: bool = True) -> None:
        """Stop after the step in progress; a no-op when no run is active. With `wait`,
        return once no step is in progress and the driver has returned (except on the
        driver's own thread, where waiting could never end)."""
        with self._cond:
            if self._state == "paused":  # a step by hand while paused is not the run's
                self._set("stopped")
            elif self._state in ("running", "pausing"):
                self._set("stopping" if self._in_step else "stopped")
            if not wait or self._step_is_mine():
                return
            if self._in_step or (self._drivers and not self._calling_driver()):
                self._check_can_wait("stop")
            if self._calling_driver() or self._driver == "loop":
                # a loop driver winds down on its own loop, which may be busy with a cell
                self._cond.wait_for(lambda: not self._in_step)
            else:
                self._cond.wait_for(lambda: not self._in_step and not self._drivers)

    def reset(self) -> None:
        """Back to idle, for a trainer given fresh weights."""
        with self._cond:
            self._check_ended("reset")
            if self._state != "idle":
                self._set("idle")
            self.error = None

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the drivers to return; True when they have."""
        with self._cond:
            if self._drivers and self._calling_driver():
                if self._driver == "loop":
                    raise TrainerStateError(
                        "training runs on this notebook's event loop, between cells: waiting for "
                        "it here would stop it forever. Use `await trainer.wait()` in a cell, or "
                        "trainer.run() to train while the cell blocks")
                raise TrainerStateError("join() from the run's own callbacks would wait forever")
            if self._drivers:
                self._check_can_wait("join")
            return self._cond.wait_for(lambda: not self._drivers, timeout)

    async def wait(self) -> None:
        """Await the end of the run without blocking the event loop."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if not self._drivers:
                return
            done = loop.create_future()
            self._waiters.append((loop, done))
        await done

    def _check_ended(self, what: str) -> None:
        if self.is_alive:
            raise TrainerStateError(
                f"cannot {what} while the trainer is {self._state}; stop() it first")

    def _step_is_mine(self) -> bool:
        return self._in_step and threading.current_thread() is self._step_thread

    # ---- a step by hand ------------------------------------------------------------------

    def manual_step(self):
        """Run one step outside a run (idle, ended or paused); returns what step() returns.
        On the main thread an interrupt during it takes effect after it: KeyboardInterrupt
        is raised once the step is whole. Another step by hand in progress (e.g. a click
        handled on another thread) is waited for: steps by hand take turns."""
        with self._cond:
            if self._in_step and self._state not in ("running", "pausing", "stopping"):
                if self._step_is_mine():
                    raise TrainerStateError("a step's own callbacks cannot step by hand: the step "
                                            "in progress has not ended")
                self._check_can_wait("step")
                self._cond.wait_for(lambda: not self._in_step)
            if self._state in ("running", "pausing", "stopping") or self._in_step:
                raise TrainerStateError(
                    f"cannot step by hand while the trainer is {self._state}; pause() or stop() it "
                    "first")
            self._in_step, self._step_thread = True, threading.current_thread()
            self._interrupted = False
            _active_runs.add(self)
        previous = _install_sigint()
        try:
            return self._step()
        finally:
            _restore_sigint(previous)
            with self._cond:
                self._in_step = False
                interrupted, self._interrupted = self._interrupted, False
                if self._state not in ACTIVE:
                    _active_runs.discard(self)
                self._cond.notify_all()
                self._wake_all()
            if interrupted:
                raise KeyboardInterrupt("interrupted; the step completed")

    # ---- drivers -----------------------------------------------------------------------

    def start(self, driver: str = "auto") -> None:
        """Begin a run driven by `driver`: auto (the running event loop of this thread if
        there is one, as in a notebook kernel; else a thread), loop or thread."""
        if driver not in DRIVERS:
            raise TrainerStateError(f"driver={driver!r}; choose one of {list(DRIVERS)}")
        loop = _loop_for_steps()
        if driver == "loop" and loop is None:
            raise TrainerStateError("driver='loop' needs a running asyncio event loop on this "
                                    "thread (a notebook kernel has one); use driver='thread'")
        if driver == "auto":
            driver = "loop" if loop is not None else "thread"
        generation = self.begin(driver)
        if driver == "loop":
            def create():
                task = loop.create_task(self._drive_loop(loop, generation))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            if loop is _running_loop():
                self._driver_thread = threading.current_thread()
                create()
            else:  # from another thread (a subshell): onto the main thread's loop
                self._driver_thread = threading.main_thread()
                loop.call_soon_threadsafe(create)
        else:
            thread = threading.Thread(target=self._drive_sync, args=(generation,),
                                      name="lmlab-trainer", daemon=True)
            self._driver_thread = thread
            thread.start()

    def run_blocking(self) -> None:
        """Begin a run and drive it on the calling thread until it ends. On the main
        thread, SIGINT (Ctrl-C, a notebook's stop button) stops it after the step."""
        generation = self.begin("blocking")
        self._driver_thread = threading.current_thread()
        previous = _install_sigint()
        try:
            self._drive_sync(generation)
        finally:
            _restore_sigint(previous)

    def _acquire(self, generation: int) -> str:
        """Driver, before each step: 'step' (now in progress), 'wait' (paused) or 'end'."""
        with self._cond:
            if generation != self._generation:
                return "end"  # a newer run took over; this driver only winds down
            if self._interrupted:
                self._interrupted = False
                if self._state in ACTIVE:
                    self._set("stopped")
            if self._state == "stopping":
                self._set("stopped")
            if self._state == "pausing":
                self._set("paused")
            if self._state == "paused" or self._in_step:  # paused, or a step by hand
                return "wait"
            if self._state != "running":
                return "end"
            if self._done():
                self._set("finished")
                return "end"
            self._in_step, self._step_thread = True, threading.current_thread()
            return "step"

    def _release(self, error: BaseException | None = None) -> None:
        """Driver, after each step (or its failure)."""
        with self._cond:
            self._in_step = False
            if error is not None:
                self.error = error
                self._set("failed")
                return
            if self._interrupted and self._state in ("running", "pausing"):
                self._interrupted = False
                self._set("stopped")
            elif self._state == "stopping":
                self._set("stopped")
            elif self._state in ("running", "pausing") and self._done():
                self._set("finished")
            elif self._state == "pausing":
                self._set("paused")
            else:
                self._cond.notify_all()

    def _one_step(self, generation: int) -> bool:
        """Acquire and run one step, with SIGINT recorded rather than raised throughout.
        Returns the action taken ('step', 'wait' or 'end')."""
        previous = _install_sigint()
        try:
            action = self._acquire(generation)
            if action == "step":
                try:
                    self._step()
                except BaseException as e:  # kept and reported, never lost
                    self._release(e)
                else:
                    self._release()
            return action
        finally:
            _restore_sigint(previous)

    def _finish(self, generation: int, escaped: BaseException | None) -> None:
        """A driver returns: an active run it leaves behind (its loop closed, its task
        cancelled) fails with what stopped it; then the end is reported."""
        with self._cond:
            if self._in_step and self._step_thread is threading.current_thread():
                self._in_step = False
            if generation == self._generation and self._state in ACTIVE:
                self.error = escaped or RuntimeError("the run's driver stopped")
                self._set("failed")
            state, error = self._outcome.pop(generation, (self._state, self.error))
            self._wakes.pop(generation, None)
            if generation == self._generation:
                _active_runs.discard(self)
        try:
            self._ended(state, error)
        finally:
            with self._cond:
                self._drivers -= 1
                self._cond.notify_all()
                waiters = []
                if not self._drivers:
                    waiters, self._waiters = self._waiters, []
            for loop, done in waiters:
                loop.call_soon_threadsafe(lambda d=done: d.done() or d.set_result(None))

    def _drive_sync(self, generation: int) -> None:
        _active_runs.add(self)
        escaped = None
        try:
            while True:
                action = self._one_step(generation)
                if action == "end":
                    break
                if action == "wait":
                    with self._cond:
                        # a timeout, so that a SIGINT recorded meanwhile is seen
                        self._cond.wait_for(lambda: (self._state != "paused" and not self._in_step)
                                            or self._interrupted
                                            or generation != self._generation, timeout=0.25)
        except BaseException as e:
            escaped = e
            raise
        finally:
            self._finish(generation, escaped)

    async def _drive_loop(self, loop, generation: int) -> None:
        wake = asyncio.Event()
        with self._cond:
            self._wakes[generation] = lambda: loop.call_soon_threadsafe(wake.set)
        _active_runs.add(self)
        # An idle kernel ignores SIGINT; between steps, let it stop the run instead.
        on_main = threading.current_thread() is threading.main_thread()
        between = on_main and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        if between:
            signal.signal(signal.SIGINT, _sigint)
        escaped = None
        try:
            while True:
                wake.clear()
                action = self._one_step(generation)
                if action == "end":
                    break
                if action == "wait":
                    await wake.wait()
                    continue
                await asyncio.sleep(0)  # let the kernel handle messages and other cells
        except BaseException as e:  # cancelled, or the loop closed under it
            escaped = e
            raise
        finally:
            if between and signal.getsignal(signal.SIGINT) is _sigint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._finish(generation, escaped)
