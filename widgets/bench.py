"""`python -m lmlab.bench dashboard`: training speed in a real Jupyter kernel, blocking
(`trainer.run()`) against the dashboard's Start button (`click()`), and the dashboard's
own blocking `dashboard.run()`.

The kernel is started through `jupyter_client`, as JupyterLab starts one, and the
kernel's own thread uses torch before anything is timed, as every notebook does.
"""

from __future__ import annotations

import argparse
import json
import textwrap

from lmlab.bench import interleaved, rates, report

SETUP = """
import time, torch
from lmlab.bench.training import cpu_setup
from lmlab.model import GPT
from lmlab.train import Trainer
from lmlab.widgets import TrainingDashboard

model, dataset, config = cpu_setup(eval_interval=250)
def twin():
    m = GPT(model.config)
    m.load_state_dict(model.state_dict())
    return Trainer(m, dataset, config)
headless, watched, blocking, threaded = twin(), twin(), twin(), twin()
start_view = TrainingDashboard(watched, prompt="ROMEO:", sample_every=250)
blocking_view = TrainingDashboard(blocking, prompt="ROMEO:", sample_every=250)
for peer in (headless, threaded):  # the same periodic samples as the dashboards ask for
    peer.set_sampling(prompt="ROMEO:", every=250, tokens=80)
with torch.no_grad():  # the kernel's thread uses torch first, as in every notebook
    model(dataset.batch("train", 12)[0])
"""

# Each round trains `steps` more steps up to a new max_steps, so every runner ends its
# round with the evaluation a run does at max_steps: the same work for each.
ROUND = {
    "run": "headless.update_config(max_steps=headless.step_count + {steps})\n"
           "t0 = time.perf_counter(); headless.run(progress=False)\n"
           "print(time.perf_counter() - t0)",
    "dashboard.run": "blocking_view.steps_input.value = str(blocking.step_count + {steps})\n"
                     "t0 = time.perf_counter(); blocking_view.run()\n"
                     "print(time.perf_counter() - t0)",
    # a cell that clicks Start, then awaits the end without blocking the kernel's loop
    "start": "start_view.steps_input.value = str(watched.step_count + {steps})\n"
             "t0 = time.perf_counter(); start_view.start_button.click()\n"
             "assert watched.driver == 'loop', watched.driver\n"
             "await watched.wait()\n"
             "print(time.perf_counter() - t0)",
    # for reference: the same steps on a background thread (the old Start)
    "thread": "threaded.update_config(max_steps=threaded.step_count + {steps})\n"
              "t0 = time.perf_counter(); threaded.start(driver='thread')\n"
              "await threaded.wait()\n"
              "print(time.perf_counter() - t0)",
}


def _execute(client, code: str, timeout: float = 600) -> str:
    """Run `code` in the kernel; its printed output. Raises on an error."""
    msg_id = client.execute(textwrap.dedent(code))
    out = []
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            raise RuntimeError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)


def bench_dashboard(rounds: int = 8, steps: int = 100) -> dict:
    """Tokens/s of trainer.run(), the dashboard's Start, dashboard.run() and a trainer
    on a background thread, in one real kernel, nanoGPT's CPU configuration, in
    alternating rounds of `steps` steps, each round timed inside the kernel. Returns
    each runner's ratio to run()."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        _execute(client, SETUP)

        def runner(name):
            return lambda: float(_execute(client, ROUND[name].format(steps=steps)).split()[-1])

        names = {"trainer.run()": "run", "dashboard Start (click)": "start",
                 "dashboard.run()": "dashboard.run", "trainer.start(driver='thread')": "thread"}
        elapsed = interleaved({label: runner(name) for label, name in names.items()}, rounds,
                              warmup=False)
        info = json.loads(_execute(client, "import json; print(json.dumps({"
                                           "'tokens': config.batch_size * dataset.block_size,"
                                           " 'warnings': list(watched.warnings)}))"))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    ratios = report(
        f"training in a Jupyter kernel, nanoGPT CPU configuration, {rounds} alternating "
        f"rounds of {steps} steps", rates(elapsed, rounds * steps * info["tokens"]),
        baseline="trainer.run()",
        notes={"dashboard Start (click)": "(target >= 0.95)",
               "trainer.start(driver='thread')": "(a second thread: OpenMP oversubscribes)"})
    if info["warnings"]:
        print("  view warnings:", *info["warnings"], sep="\n    ")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m lmlab.widgets.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    bench_dashboard(parser.parse_args().rounds)
