"""The scaling-law lab in JupyterLab, headless Chromium: Start trains the sizes one after
another on the kernel's main thread while other cells run, Stop and Start continue the
same size, and the fit appears once they are trained."""

import re

import nbformat

from test_dashboard import cell_output, run_cell, wait_until

LAB = ".lmlab-scaling"


def progress(jlab) -> str:
    return jlab.text(f"{LAB} .lmlab-scaling-progress")


def test_start_trains_every_size_between_cells_and_draws_the_fit(jlab_only, page):
    jlab = jlab_only
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import threading, torch, lmlab\n"
        "from lmlab.widgets import ScalingLab\n"
        "threads = set()\n"
        "sizes = [dict(n_layer=1, n_head=2, n_embd=w) for w in (16, 32, 48)]\n"
        "lab = ScalingLab(lmlab.load_corpus('shakespeare')[:200_000], sizes, tokens_per_run=400 * 16 * 32,\n"
        "                 block_size=32, eval_batches=5, out='sweep.json', train=dict(eval_interval=1000))\n"
        "make = lab.plan.trainer\n"
        "def watched(i):\n"
        "    trainer = make(i)\n"
        "    trainer.on('step', lambda t, row: threads.add(threading.current_thread().name))\n"
        "    return trainer\n"
        "lab.plan.trainer = watched",
        "lab",
        "print('another cell ran with', sum(r is not None for r in lab.plan.runs), 'sizes done;',"
        " sorted(threads))",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, jlab.server.root / "scaling.ipynb")
    jlab.open("scaling.ipynb")
    for index in (0, 1):
        run_cell(jlab, index)
        jlab.wait_kernel_idle()
    jlab.wait_for(f"{LAB} .lmlab-start")
    assert "0 of 3 sizes trained" in progress(jlab)

    jlab.click(f"{LAB} .lmlab-start")
    wait_until(lambda: "size 1 (1×16): step" in progress(jlab), what="the first size to train")
    run_cell(jlab, 2)  # the notebook stays usable while the sweep trains
    wait_until(lambda: "another cell ran" in cell_output(jlab, 2), what="the other cell")
    assert "0 sizes done" in cell_output(jlab, 2) or "1 sizes done" in cell_output(jlab, 2)

    wait_until(lambda: "size 2 (1×32): step" in progress(jlab), timeout=120, what="the second size")
    jlab.click(f"{LAB} .lmlab-stop")
    wait_until(lambda: "Start continues it" in jlab.text(f"{LAB} .lmlab-error"), what="the stop notice")
    stopped = int(re.search(r"step (\d+) / ", progress(jlab)).group(1))
    assert "1 of 3 sizes trained" in progress(jlab) and stopped < 400

    jlab.click(f"{LAB} .lmlab-start")  # continues size 2, then size 3 follows on its own
    wait_until(lambda: "3 of 3 sizes trained" in progress(jlab), timeout=180, what="every size")
    wait_until(lambda: page.locator(f"{LAB} .lmlab-scaling-fit svg circle").count() == 3,
               what="three points on the fit chart")
    assert "α =" in jlab.text(f"{LAB} .lmlab-equation")
    assert page.locator(f"{LAB} .lmlab-scaling-curves svg path.series").count() == 3
    run_cell(jlab, 2)
    wait_until(lambda: "3 sizes done" in cell_output(jlab, 2), what="the other cell again")
    assert "['MainThread']" in cell_output(jlab, 2)  # clicks came on a subshell; steps on the main thread
    assert not jlab.cell_errors()
    page.locator(LAB).first.scroll_into_view_if_needed()
    jlab.element_screenshot(LAB, "scaling-lab")
