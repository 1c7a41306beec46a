"""Binder's environment, built the way repo2docker builds it (binder/requirements.txt,
then binder/postBuild from the repository's root), runs the quickstart lesson."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER_MEMORY = 2 * 1024**3  # bytes: mybinder.org's limit
MEASURE = ("import resource, subprocess, sys\n"
           "subprocess.run(sys.argv[1:], check=True)\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # KiB


@pytest.mark.slow
def test_the_binder_environment_runs_the_quickstart(tmp_path, data_dir):
    venv = tmp_path / "binder-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # PIP_RETRIES=0: where PyTorch's index cannot be reached (this machine serves the +cpu
    # wheel from a local folder) pip moves on at once instead of retrying every package.
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "PIP_RETRIES": "0"}
    env.pop("PYTHONPATH", None)
    subprocess.run(["pip", "install", "-q", "-r", str(ROOT / "binder" / "requirements.txt")],
                   check=True, env=env, cwd=ROOT)
    subprocess.run(["bash", str(ROOT / "binder" / "postBuild")], check=True, env=env, cwd=ROOT)
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"Binder environment: {size / 1e6:,.0f} MB")

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "00_quickstart.ipynb", work)
    run_env = {**env, "LMLAB_QUICK": "1", "LMLAB_DATA_DIR": str(data_dir)}
    # the largest process under this one run (the kernel): measured by a parent of its own,
    # since this process's RUSAGE_CHILDREN also holds every earlier test's processes
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, str(venv / "bin" / "python"), "-m", "jupyter", "nbconvert",
         "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=600", "--output",
         "ran.ipynb", "00_quickstart.ipynb"], check=True, env=run_env, cwd=work,
        capture_output=True, text=True)
    peak = int(measured.stdout.split()[-1]) * 1024
    print(f"peak memory of one process (the kernel): {peak / 1e6:,.0f} MB")
    ran = nbformat.read(work / "ran.ipynb", as_version=4)
    outputs = [o for c in ran.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("ROMEO:" in o.get("text", "") for o in outputs)  # the sample was printed
    assert peak < BINDER_MEMORY
