"""The lessons: the notebooks that ship with lmlab, and the folder a user works in.

In the wheel they lie in `lmlab/notebooks/`; in a clone, in the repository's
`notebooks/`. `copy_lessons(folder)` copies them into a folder of the user's, never
replacing a notebook already there (the user's edits are theirs); `lmlab lab` does that,
then opens JupyterLab in the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import ConfigError

REPOSITORY = "https://github.com/lmlab/lmlab"

# The first code cell of every lesson (a test holds them to it).
SETUP_CELL = f"""\
# Setup: installs lmlab where it is missing (Colab) and turns on Colab's widget manager;
# in JupyterLab, Binder or a clone with lmlab installed it does nothing.
import importlib.util
import sys
if importlib.util.find_spec("lmlab") is None:
    %pip install -q "lmlab[lab] @ git+{REPOSITORY}"
if "google.colab" in sys.modules:
    from google.colab import output
    output.enable_custom_widget_manager()"""


def lessons_dir() -> Path:
    """The folder the shipped lessons are read from."""
    here = Path(__file__).resolve().parent
    for folder in (here / "notebooks", here.parent / "notebooks"):  # wheel, clone
        if any(folder.glob("*.ipynb")):
            return folder
    raise ConfigError(f"lmlab's lessons are missing from {here / 'notebooks'}: reinstall lmlab "
                      "(pip install --force-reinstall lmlab)")


def lessons() -> list[Path]:
    """The shipped lessons, in their order (00_quickstart first)."""
    return sorted(lessons_dir().glob("*.ipynb"))


def copy_lessons(folder) -> tuple[list[Path], list[Path]]:
    """Copy every lesson into `folder` (created if needed). Returns (copied, kept): a
    lesson already in `folder` is kept as it is, edited or not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; give a folder to copy the lessons into")
    folder.mkdir(parents=True, exist_ok=True)
    copied, kept = [], []
    for lesson in lessons():
        target = folder / lesson.name
        if target.exists():
            kept.append(target)
            continue
        shutil.copyfile(lesson, target)
        copied.append(target)
    return copied, kept
