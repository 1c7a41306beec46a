"""The lessons as files: the shared setup cell, quick mode, slide metadata, outputs
stripped; shipped in the wheel and copied out by `lmlab lab` without touching a user's
edits."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from lmlab.cli import main
from lmlab.lessons import SETUP_CELL, copy_lessons, lessons

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_lessons_are_the_repositorys_notebooks():
    assert [p.name for p in lessons()] == [p.name for p in NOTEBOOKS]
    assert NOTEBOOKS[0].name == "00_quickstart.ipynb" and len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_each_lesson_is_set_up_stripped_and_a_deck(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == SETUP_CELL  # installs on Colab, widget manager, nothing elsewhere
    assert code[0].metadata["slideshow"]["slide_type"] == "skip"  # not in a deck
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert all(c.outputs == [] and c.execution_count is None for c in code), "outputs not stripped"
    assert all(c.metadata.get("slideshow", {}).get("slide_type") for c in nb.cells)
    assert nb.cells[0].metadata["slideshow"]["slide_type"] == "slide"
    assert any("LMLAB_QUICK" in c.source for c in code)  # a quick mode for the tests
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_copying_keeps_what_the_user_changed(tmp_path, capsys):
    copied, kept = copy_lessons(tmp_path / "mine")
    assert [p.name for p in copied] == [p.name for p in NOTEBOOKS] and kept == []
    edited = tmp_path / "mine" / NOTEBOOKS[0].name
    edited.write_text("my own notes")
    main(["lab", str(tmp_path / "mine"), "--copy-only"])
    assert edited.read_text() == "my own notes"
    assert f"0 copied, {len(NOTEBOOKS)} already there kept" in capsys.readouterr().out
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["lab", str(tmp_path / "file"), "--copy-only"])
    assert "is a file" in capsys.readouterr().err


@pytest.mark.slow
def test_the_wheel_ships_the_lessons_and_lmlab_lab_finds_them(tmp_path):
    """Build the wheel, install it alone into a fresh virtual environment (its
    dependencies come from this one's site-packages, on a path), copy the lessons out."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("lmlab-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    str(wheel)], check=True)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # no .pth of it runs
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([python, "-c", "import lmlab; print(lmlab.__file__)"], capture_output=True,
                           text=True, check=True, env=env, cwd=tmp_path).stdout
    assert where.startswith(str(site)), where  # the wheel's lmlab, not this clone's
    out = subprocess.run([python, "-m", "lmlab.cli", "lab", "lessons", "--copy-only"], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    copied = sorted(p.name for p in (tmp_path / "lessons").glob("*.ipynb"))
    assert copied == [p.name for p in NOTEBOOKS]
    shipped = json.loads((tmp_path / "lessons" / "00_quickstart.ipynb").read_text())
    assert shipped == json.loads(NOTEBOOKS[0].read_text())
