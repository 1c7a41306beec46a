"""The lessons, executed top to bottom by nbval in quick mode (LMLAB_QUICK=1)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_notebook_runs_with_nbval(notebook, data_dir, tmp_path):
    """Run from a copy: the kernel works in the notebook's folder, where lessons save files."""
    notebook = Path(shutil.copy(notebook, tmp_path / notebook.name))
    env = {**os.environ, "LMLAB_QUICK": "1", "LMLAB_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(notebook)],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
