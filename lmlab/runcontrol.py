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

Drivers, chosen by measurement (DESIGN.md, "Run control and threads"):

- ``loop``: an asyncio task on the calling thread's running event loop, yielding
  between steps. A notebook kernel runs such a loop on the thread that has already
  used torch. Measured in a real kernel (`python -m lmlab.bench dashboard`, nanoGPT's
  CPU configuration, 2 cores): the dashboard's Start on the loop trained at 0.985x
  the speed of a blocking `trainer.run()` in the same kernel (mean of 3 runs), a
  trainer on a second thread at 0.70x: once one thread has run an OpenMP region,
  parallel ops on every other thread slow down. Other cells and widget clicks are
  handled between steps.
- ``thread``: a daemon thread, for scripts that have no event loop (and for callers
  that want the calling thread free, e.g. to drive a GPU from a thread).
- ``blocking``: the calling thread, until the run ends (`Trainer.run`).

Interrupts: on the main thread (where a kernel delivers its stop button's SIGINT),
every step runs with a SIGINT handler that only records the request; the run then
stops after the step, so an interrupt never lands between `backward()` and the
optimiser's update. The handler that was there is restored after each step.
"""

from __future__ import annotations

import asyncio
import signal
import threading

from .errors import TrainerStateError

STATES = ("idle", "running", "pausing", "paused", "stopping", "stopped", "finished", "failed")
ACTIVE = frozenset({"running", "pausing", "paused", "stopping"})
ENDED = frozenset({"idle", "stopped", "finished", "failed"})
TRANSITIONS = {
    "idle": {"running"},
    "running": {"pausing", "paused", "stopping", "stopped", "finished", "failed"},
    "pausing": {"running", "paused", "stopping", "stopped", "finished", "failed"},
    "paused": {"running", "stopped"},
    "stopping": {"stopped", "failed"},
    "stopped": {"running", "idle"},
    "finished": {"running", "idle"},
    "failed": {"running", "idle"},
}
DRIVERS = ("auto", "loop", "thread")


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class RunControl:
    """Runs `step()` until `done()` under the state machine above. `step` does one
    whole step (and its callbacks); `ended(state, error)` is called once per run, on the
    driver's thread, after the run's final state is set."""

    def __init__(self, step, done, ended):
        self._step, self._done, self._ended = step, done, ended
        self._cond = threading.Condition(threading.RLock())
        self._state = "idle"
        self._in_step = False
        self._step_thread: threading.Thread | None = None
        self._drivers = 0  # drivers not yet returned (0 or 1)
        self._driver: str | None = None
        self._driver_thread: threading.Thread | None = None
        self._wake = None  # wakes a waiting loop driver, from any thread
        self._interrupted = False
        self._task = None  # the loop driver's asyncio task, kept so it is not collected
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
        self._cond.notify_all()
        if self._wake is not None:
            self._wake()

    def _calling_driver(self) -> bool:
        """True on the thread that runs this run's steps (a callback, or the loop's
        own thread between steps)."""
        return threading.current_thread() is self._driver_thread

    # ---- requests (any thread) --------------------------------------------------------

    def begin(self, driver: str) -> None:
        with self._cond:
            if self.is_alive or self._drivers:
                raise TrainerStateError(
                    f"the trainer is already {self._state}; pause(), resume() or stop() it")
            self._set("running")
            self.error = None
            self._interrupted = False
            self._driver = driver
            self._drivers = 1

    def pause(self, wait: bool = True) -> None:
        """Pause after the step in progress. With `wait`, return only once no step is in
        progress (a callback of the run itself never waits)."""
        with self._cond:
            if self._state in ("pausing", "paused"):
                return
            if self._state != "running":
                raise TrainerStateError(f"cannot pause: the trainer is {self._state}, not running")
            self._set("pausing" if self._in_step else "paused")
            if wait and not self._step_is_mine():
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
            if self._state in ACTIVE and self._state != "stopping":
                self._set("stopping" if self._in_step else "stopped")
            if wait and not self._step_is_mine():
                if self._calling_driver():
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
        """Wait for the driver to return; True when it has."""
        with self._cond:
            if self._drivers and self._driver == "loop" and self._calling_driver():
                raise TrainerStateError(
                    "training runs on this notebook's event loop, between cells: waiting for it "
                    "here would stop it forever. Use `await trainer.wait()` in a cell, or "
                    "trainer.run() to train while the cell blocks")
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
        """Run one step outside a run (idle, ended or paused); returns what step() returns."""
        with self._cond:
            if self._state in ("running", "pausing", "stopping") or self._in_step:
                raise TrainerStateError(
                    f"cannot step by hand while the trainer is {self._state}; pause() or stop() it "
                    "first")
            self._in_step, self._step_thread = True, threading.current_thread()
        try:
            return self._step()
        finally:
            with self._cond:
                self._in_step = False
                self._cond.notify_all()
                if self._wake is not None:
                    self._wake()

    # ---- drivers -----------------------------------------------------------------------

    def start(self, driver: str = "auto") -> None:
        """Begin a run driven by `driver`: auto (the running event loop of this thread if
        there is one, as in a notebook kernel; else a thread), loop or thread."""
        if driver not in DRIVERS:
            raise TrainerStateError(f"driver={driver!r}; choose one of {list(DRIVERS)}")
        loop = _running_loop()
        if driver == "loop" and loop is None:
            raise TrainerStateError("driver='loop' needs a running asyncio event loop on this "
                                    "thread (a notebook kernel has one); use driver='thread'")
        if driver == "auto":
            driver = "loop" if loop is not None else "thread"
        self.begin(driver)
        if driver == "loop":
            self._driver_thread = threading.current_thread()
            self._task = loop.create_task(self._drive_loop(loop))
        else:
            thread = threading.Thread(target=self._drive_sync, name="lmlab-trainer", daemon=True)
            self._driver_thread = thread
            thread.start()

    def run_blocking(self) -> None:
        """Begin a run and drive it on the calling thread until it ends. On the main
        thread, SIGINT (Ctrl-C, a notebook's stop button) stops it after the step."""
        self.begin("blocking")
        self._driver_thread = threading.current_thread()
        previous = signal.signal(signal.SIGINT, self._sigint) if _on_main_thread() else None
        try:
            self._drive_sync()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _sigint(self, signum, frame):
        # Runs between two bytecodes of the main thread, perhaps inside a critical
        # section: record the request only; the driver acts on it at a safe point.
        self._interrupted = True
        if self._wake is not None:
            self._wake()

    def _acquire(self) -> str:
        """Driver, before each step: 'step' (now in progress), 'wait' (paused) or 'end'."""
        with self._cond:
            if self._interrupted:
                self._interrupted = False
                if self._state in ACTIVE and self._state != "stopped":
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

    def _one_step(self) -> None:
        shield = _on_main_thread()
        previous = signal.signal(signal.SIGINT, self._sigint) if shield else None
        try:
            self._step()
        except BaseException as e:  # kept and reported, never lost
            self._release(e)
        else:
            self._release()
        finally:
            if shield:
                signal.signal(signal.SIGINT, previous)

    def _finish(self) -> None:
        state, error = self._state, self.error
        try:
            self._ended(state, error)
        finally:
            with self._cond:
                self._drivers = 0
                self._wake = None
                self._cond.notify_all()
                waiters, self._waiters = self._waiters, []
            for loop, done in waiters:
                loop.call_soon_threadsafe(lambda d=done: d.done() or d.set_result(None))

    def _drive_sync(self) -> None:
        try:
            while True:
                action = self._acquire()
                if action == "end":
                    break
                if action == "wait":
                    with self._cond:
                        # a timeout, so that a SIGINT recorded meanwhile is seen
                        self._cond.wait_for(lambda: (self._state != "paused" and not self._in_step)
                                            or self._interrupted,
                                            timeout=0.25)
                    continue
                self._one_step()
        finally:
            self._finish()

    async def _drive_loop(self, loop) -> None:
        wake = asyncio.Event()
        self._wake = lambda: loop.call_soon_threadsafe(wake.set)
        # An idle kernel ignores SIGINT; between steps, let it stop the run instead.
        ignore_between = _on_main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        if ignore_between:
            signal.signal(signal.SIGINT, self._sigint)
        try:
            while True:
                wake.clear()
                action = self._acquire()
                if action == "end":
                    break
                if action == "wait":
                    await wake.wait()
                    continue
                self._one_step()
                await asyncio.sleep(0)  # let the kernel handle messages and other cells
        finally:
            if ignore_between and signal.getsignal(signal.SIGINT) == self._sigint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._finish()
