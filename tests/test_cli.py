import subprocess
import sys

import pytest

from lmlab import checkpoint


def lmlab(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lmlab.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_train_then_sample(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("LMLAB_DATA_DIR", str(data_dir))
    r = lmlab("train", "--corpus", "shakespeare", "--preset", "nano", "--steps", "40",
              "--eval-interval", "20", "--out", "runs/x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step 20: train loss" in r.stdout and "step 40:" in r.stdout
    ck = checkpoint.load(tmp_path / "runs/x/checkpoint.safetensors")
    assert ck.extra["trainer"]["step"] == 40
    r = lmlab("sample", "runs/x", "--prompt", "ROMEO:", "--tokens", "50", "--temperature", "0.8",
              "--top-k", "40", "--seed", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout.rstrip("\n")) >= 40
    r = lmlab("train", "--corpus", "shakespeare", "--preset", "nano", "--steps", "50",
              "--eval-interval", "25", "--out", "runs/x", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout and "step 50:" in r.stdout
    r = lmlab("train", "--corpus", "shakespeare", "--preset", "nano", "--steps", "5",
              "--out", "runs/x", cwd=tmp_path)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "--force" in r.stderr
    assert checkpoint.load(tmp_path / "runs/x/checkpoint.safetensors").extra["trainer"]["step"] == 50
    r = lmlab("train", "--corpus", "shakespeare", "--preset", "nano", "--steps", "5",
              "--out", "runs/x", "--force", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert checkpoint.load(tmp_path / "runs/x/checkpoint.safetensors").extra["trainer"]["step"] == 5
    r = lmlab("train", "--corpus", "shakespeare", "--steps", "5", "--out", "runs/empty", "--resume",
              cwd=tmp_path)
    assert r.returncode == 2 and "no checkpoint to resume at runs/empty" in r.stderr


def test_bad_input_is_one_clear_line(tmp_path):
    r = lmlab("train", "--corpus", "nosuchcorpus", "--out", "runs/y", cwd=tmp_path)
    assert r.returncode == 2
    assert "no corpus named 'nosuchcorpus'" in r.stderr and "Traceback" not in r.stderr
    r = lmlab("sample", "runs/none", cwd=tmp_path)
    assert r.returncode == 2 and "no checkpoint file" in r.stderr


def test_lmlab_bench_runs_the_device_checks_and_passes_their_exit_code(monkeypatch, capsys):
    import torch

    from lmlab import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cli.main(["bench", "device"])  # no GPU: says so, exit 0 (no SystemExit)
    assert "no CUDA GPU here" in capsys.readouterr().out
    monkeypatch.setattr("lmlab.bench.device.bench_device",
                        lambda device=None, quick=False: [("a check", False, "it failed")])
    with pytest.raises(SystemExit) as stopped:
        cli.main(["bench", "device"])
    assert stopped.value.code == 1
