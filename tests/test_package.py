"""Packaging: the engine stays Jupyter-free, imports stay light, the wheel ships lmlab.widgets."""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI = ("ipywidgets", "plotly", "IPython", "anywidget", "bertviz")


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=ROOT).stdout


def test_engine_imports_no_ui_or_heavy_packages():
    out = _run(
        "import sys, lmlab, lmlab.checkpoint, lmlab.data, lmlab.model, lmlab.tokenizers\n"
        "import lmlab.train, lmlab.sampling, lmlab.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {UI + ('transformers', 'tokenizers')!r}))"
    )
    assert out.strip() == "[]"


def test_engine_source_has_no_ui_imports():
    for path in (ROOT / "lmlab").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in UI, f"{path.name}: {line}"
                assert not words[1].startswith(("lmlab.widgets", ".widgets")), \
                    f"{path.name}: the engine imports the widgets: {line}"


def test_public_api():
    out = _run(
        "import lmlab\n"
        "print(lmlab.GPT, lmlab.GPTConfig, lmlab.CharTokenizer, lmlab.BPETokenizer,"
        " lmlab.load_corpus, lmlab.TokenDataset, lmlab.checkpoint.save, lmlab.checkpoint.load,"
        " lmlab.capture_attention, lmlab.Stepper, lmlab.distribution, lmlab.beam_search, lmlab.score)"
    )
    assert "lmlab.model.GPT" in out and "function save" in out


def test_widgets_importable_from_editable_install():
    import lmlab.widgets

    assert Path(lmlab.widgets.__file__).parent == ROOT / "widgets"


@pytest.mark.slow
def test_built_wheel_installs_lmlab_widgets(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("lmlab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lmlab/widgets/__init__.py" in names and "lmlab/model.py" in names
    assert not any(n.startswith(("tests/", "widgets/")) for n in names)
    # a fresh venv: the wheel installed by pip; its dependencies seen through PYTHONPATH
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    deps = os.path.dirname(os.path.dirname(__import__("torch").__file__))
    env = {**os.environ, "PYTHONPATH": deps, "PYTHONNOUSERSITE": "1"}
    out = subprocess.run(
        [py, "-c", "import lmlab, lmlab.widgets; print(lmlab.widgets.__file__, lmlab.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.split()
    assert all(p.startswith(str(env_dir)) for p in out), out


def test_binder_installs_torch_cpu_build():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch_pins = [ln for ln in lines if ln.startswith("torch")]
    assert len(torch_pins) == 1 and torch_pins[0].endswith("+cpu"), torch_pins

