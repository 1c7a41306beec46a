"""Training in several processes: DDP under torchrun, gloo on the CPU, loopback only.

Two processes give the losses of one process accumulating the same global batch; their
checkpoint resumes in one process, and one process's resumes under torchrun on two, as if
never interrupted; rank 0 alone writes; what rank 0 does alone never leaves the others
waiting; a wrong launch is one clear error."""

import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from lmlab import GPT, GPTConfig, TokenDataset, checkpoint, distributed
from lmlab.cli import main
from lmlab.errors import ConfigError, DistributedError
from lmlab.train import TrainConfig, Trainer

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
        "All:\nResolved. resolved.\n\n") * 30
# 30 steps of a schedule planned for 40, so that the 40-step run continues the same one
FLAGS = ["--preset", "nano", "--block-size", "32", "--batch-size", "8", "--eval-interval", "10",
         "--warmup", "4", "--lr-decay-steps", "40", "--seed", "7", "--quiet"]
# torchrun runs this in each process: rank r works in the folder rank<r>
IN_RANK_FOLDER = ("import os, sys\nos.chdir('rank' + os.environ['RANK'])\n"
                  "from lmlab.cli import main\nmain(sys.argv[1:])\n")

# the same, with a dataset that holds out no validation text (val_fraction=0)
NO_VALIDATION = ("import sys\nimport lmlab.data\n\n"
                 "class NoValidation(lmlab.data.TokenDataset):\n"
                 "    def __init__(self, text, tokenizer=None, block_size=64, **kw):\n"
                 "        super().__init__(text, tokenizer, block_size, val_fraction=0.0)\n\n"
                 "lmlab.data.TokenDataset = NoValidation\n"
                 "from lmlab.cli import main\nmain(sys.argv[1:])\n")


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lo = distributed.loopback_interface()
    if lo:
        env["GLOO_SOCKET_IFNAME"] = lo
    return env


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _losses(rows):
    return [r["train_loss"] for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two 2-process runs on the same text and seed: 30 steps by torchrun, each rank in a
    folder of its own; 40 steps never interrupted, by `lmlab train --nproc 2`."""
    base = tmp_path_factory.mktemp("ddp")
    corpus = base / "text.txt"
    corpus.write_text(TEXT)
    (base / "in_rank_folder.py").write_text(IN_RANK_FOLDER)
    for folder in ("rank0", "rank1", "forty"):
        (base / folder).mkdir()
    thirty = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(base / "in_rank_folder.py"), "train", "--corpus", str(corpus), "--steps", "30",
         "--out", "runs/x", *FLAGS],
        cwd=base, env=_env(), capture_output=True, text=True, timeout=150)
    forty = subprocess.run(
        [sys.executable, "-m", "lmlab", "train", "--nproc", "2", "--corpus", str(corpus),
         "--steps", "40", "--out", "runs/x", *FLAGS],
        cwd=base / "forty", env=_env(), capture_output=True, text=True, timeout=150)
    return base, thirty, forty


@pytest.fixture
def one_thread():
    """The subprocesses' single thread, so that float sums are taken in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_give_the_losses_of_one_accumulating_two(runs, one_thread):
    base, thirty, _ = runs
    assert thirty.returncode == 0, thirty.stderr[-3000:]
    ck = checkpoint.load(base / "rank0/runs/x/checkpoint.safetensors")
    meta = ck.extra["trainer"]
    assert meta["step"] == 30 and meta["world_size"] == 2
    assert meta["config"]["grad_accum_steps"] == 1
    # one process, the same global batch: two micro-batches of 8 a step
    config = replace(TrainConfig.from_dict(meta["config"]), grad_accum_steps=2, device="cpu")
    torch.manual_seed(config.seed)  # as `lmlab train` draws the weights
    trainer = Trainer(GPT(ck.model.config), TokenDataset(TEXT, block_size=32), config)
    trainer.run(progress=False)
    assert _losses(trainer.history.rows()) == pytest.approx(_losses(meta["history"]), rel=1e-5)
    assert trainer.tokens_seen == meta["tokens_seen"] == 30 * 2 * 8 * 32
    evals = [r["val_loss"] for r in meta["history"] if r["val_loss"] is not None]
    assert [r["val_loss"] for r in trainer.history.rows() if r["val_loss"] is not None] \
        == pytest.approx(evals, rel=1e-5)


def test_its_checkpoint_resumes_in_one_process_as_if_never_interrupted(runs, one_thread):
    base, thirty, forty = runs
    assert forty.returncode == 0, forty.stderr[-3000:]
    assert "2 process(es) on cpu, a step of 8 x 1 x 2 = 16 sequences" in forty.stdout
    path = base / "rank0/runs/x/checkpoint.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert not any("module." in k for k in f.keys())  # the model, not its DDP wrapper
    uninterrupted = checkpoint.load(base / "forty/runs/x/checkpoint.safetensors").extra["trainer"]
    assert _losses(uninterrupted["history"][:30]) == \
        _losses(checkpoint.load(path).extra["trainer"]["history"])  # the same launch twice

    trainer = Trainer.load(path, TEXT, device="cpu")
    assert (trainer.world_size, trainer.step_count) == (1, 30)
    assert trainer.config.grad_accum_steps == 2  # the global batch of 16 kept
    trainer.update_config(max_steps=40)  # what `lmlab train --resume --steps 40` does
    trainer.run(progress=False)
    rows = trainer.history.rows()[30:]
    assert [r["step"] for r in rows] == list(range(31, 41))
    assert [r["lr"] for r in rows] == pytest.approx([r["lr"] for r in uninterrupted["history"][30:]])
    assert _losses(rows) == pytest.approx(_losses(uninterrupted["history"][30:]), rel=1e-5)


def _one_process_accumulating_two(frozen: str) -> Trainer:
    """What `lmlab train --grad-accum 2` builds from FLAGS (40 steps planned), with the
    parameters whose names start with `frozen` frozen, as fine-tuning leaves them."""
    dataset = TokenDataset(TEXT, block_size=32)
    torch.manual_seed(7)
    model = GPT(GPTConfig.preset("nano", vocab_size=dataset.vocab_size, block_size=32, dropout=0.0))
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(frozen))
    return Trainer(model, dataset, TrainConfig(
        batch_size=8, grad_accum_steps=2, max_steps=40, learning_rate=1e-3, min_lr=1e-4,
        warmup_steps=4, lr_decay_steps=40, eval_interval=10, seed=7, device="cpu"))


def test_torchrun_resumes_on_another_number_of_processes_the_same_schedule(tmp_path, one_thread):
    """One process accumulating 2 micro-batches trains 30 steps and saves; torchrun
    continues it on 2 processes (DDP built again over what the checkpoint leaves
    trainable, grad_accum_steps dealt out again from --global-batch) with the losses of
    the same process never interrupted."""
    frozen = "transformer.h.0."  # DDP must be built after they are frozen again (4c33984)
    whole = _one_process_accumulating_two(frozen)
    whole.run(progress=False)
    part = _one_process_accumulating_two(frozen)
    part.run(steps=30, progress=False)
    out = tmp_path / "x/checkpoint.safetensors"
    assert part.save(out) == out
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT)
    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "lmlab", "train", "--resume", "--corpus", str(corpus), "--steps", "40",
         "--global-batch", "16", "--out", str(tmp_path / "x"), "--quiet", "--dist-timeout", "60"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=150)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("at step 30") == 1  # rank 0 alone says so
    assert "2 process(es) on cpu, a step of 8 x 1 x 2 = 16 sequences" in resumed.stdout
    meta = checkpoint.load(out).extra["trainer"]
    assert (meta["step"], meta["world_size"], meta["config"]["grad_accum_steps"]) == (40, 2, 1)
    assert meta["frozen"] and all(name.startswith(frozen) for name in meta["frozen"])
    assert meta["tokens_seen"] == whole.tokens_seen == 40 * 16 * 32
    rows, never = meta["history"][30:], whole.history.rows()[30:]
    assert [r["step"] for r in rows] == list(range(31, 41))
    assert [r["lr"] for r in rows] == pytest.approx([r["lr"] for r in never])
    assert _losses(rows) == pytest.approx(_losses(never), rel=1e-5)
    assert [r["val_loss"] for r in rows if r["val_loss"] is not None] == \
        pytest.approx([r["val_loss"] for r in never if r["val_loss"] is not None], rel=1e-5)
    assert _files(tmp_path) == ["text.txt", "x/checkpoint.safetensors"]


def test_a_run_without_validation_text_finishes_on_two_processes(tmp_path):
    """val_loss is None without a validation split: rank 0's report of it must neither
    fail nor keep rank 0 from the checkpoint's collective (the other rank would wait
    there until --dist-timeout)."""
    (tmp_path / "text.txt").write_text(TEXT)
    (tmp_path / "no_validation.py").write_text(NO_VALIDATION)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "no_validation.py", "train", "--corpus", "text.txt", "--preset", "nano",
         "--block-size", "32", "--batch-size", "4", "--steps", "4", "--eval-interval", "2",
         "--out", "runs/x", "--quiet", "--dist-timeout", "15"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    for step in (2, 4):
        assert run.stdout.count(f"step {step}: train loss ") == 1
    assert run.stdout.count("val loss –") == 2
    meta = checkpoint.load(tmp_path / "runs/x/checkpoint.safetensors").extra["trainer"]
    assert meta["step"] == 4 and [r["val_loss"] for r in meta["history"]] == [None] * 4


def test_rank_zero_alone_writes(runs):
    base, thirty, forty = runs
    assert thirty.returncode == 0, thirty.stderr[-3000:]
    assert _files(base / "rank1") == []
    assert _files(base / "rank0") == ["runs/x/checkpoint.safetensors"]
    assert _files(base / "forty") == ["runs/x/checkpoint.safetensors"]
    assert sorted(p.name for p in base.iterdir()) == ["forty", "in_rank_folder.py", "rank0",
                                                      "rank1", "text.txt"]
    for run in (thirty, forty):  # printed once, by rank 0
        assert run.stdout.count("step 10: train loss") == 1
        assert run.stdout.count("saved runs/x/checkpoint.safetensors") == 1


def test_grad_accum_steps_is_validated():
    assert TrainConfig().grad_accum_steps == 1 and TrainConfig(grad_accum_steps=4).grad_accum_steps == 4
    assert TrainConfig.from_dict({"batch_size": 4}).grad_accum_steps == 1  # older checkpoints
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"grad_accum_steps=.* must be a positive integer"
                                              r".*batch_size x grad_accum_steps x processes"):
            TrainConfig(grad_accum_steps=bad)


def test_a_global_batch_sets_the_accumulation_per_process(monkeypatch, capsys, tmp_path):
    from argparse import Namespace

    from lmlab.cli import _grad_accum
    from lmlab.errors import LmlabError

    assert _grad_accum(Namespace(global_batch=64, grad_accum=None), 8, 2) == 4
    assert _grad_accum(Namespace(global_batch=64, grad_accum=None), 8, 1) == 8
    assert _grad_accum(Namespace(global_batch=None, grad_accum=3), 8, 2) == 3
    with pytest.raises(LmlabError, match="--global-batch 60 is not a whole number .* multiple of 16"):
        _grad_accum(Namespace(global_batch=60, grad_accum=None), 8, 2)
    with pytest.raises(LmlabError, match="not both"):
        _grad_accum(Namespace(global_batch=64, grad_accum=2), 8, 2)
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail(f"launched {a}"))
    with pytest.raises(SystemExit) as e:  # refused before torchrun starts
        main(["train", "--nproc", "2", "--global-batch", "20", "--batch-size", "8",
              "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "pick a multiple of 16" in capsys.readouterr().err


def test_more_processes_than_gpus_is_refused_before_launching(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail(f"launched {a}"))
    with pytest.raises(DistributedError, match="4 processes on CUDA need 4 GPUs .* 1 GPU visible"):
        distributed.check_gpus(4, "auto")
    distributed.check_gpus(2, "cpu")  # gloo: as many processes as asked
    with pytest.raises(SystemExit) as e:
        main(["train", "--nproc", "2", "--device", "cuda", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "2 processes on CUDA need 2 GPUs" in err and "--nproc 1" in err and "--device cpu" in err


def test_a_rank_that_cannot_reach_the_rendezvous_is_told_so(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    with pytest.raises(DistributedError, match=rf"rank 1 of 2 could not join the rendezvous at "
                                               rf"127.0.0.1:{port} within 1 s .*--dist-timeout"):
        distributed.init("cpu", timeout=1)
    assert not distributed.active()


def test_resuming_with_another_model_shape_is_refused(runs, capsys, tmp_path):
    base, thirty, _ = runs
    assert thirty.returncode == 0, thirty.stderr[-3000:]
    (tmp_path / "x").mkdir()
    (tmp_path / "x/checkpoint.safetensors").write_bytes(
        (base / "rank0/runs/x/checkpoint.safetensors").read_bytes())
    (tmp_path / "text.txt").write_text(TEXT)
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", "--preset", "tiny", "--corpus", str(tmp_path / "text.txt"),
              "--steps", "40", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "another shape than asked for: n_layer=4 (checkpoint: 2)" in err and "--force" in err
