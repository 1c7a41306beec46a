import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

from lmlab import GPT, CharTokenizer, CheckpointError, GPTConfig, checkpoint, files

RNG_STATE = torch.Generator().manual_seed(5).get_state()
CONFIG = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=False)


@pytest.fixture
def saved(tmp_path):
    model = GPT(CONFIG)
    tok = CharTokenizer.fit("abcdefghijklmnopqrs ")
    path = checkpoint.save(tmp_path / "run" / "m.safetensors", model, tok,
                           tensors={"rng": RNG_STATE}, step=7, note="é")
    return model, tok, path


def test_round_trip_restores_model_tokenizer_and_extras(saved):
    model, tok, path = saved
    ck = checkpoint.load(path)
    assert ck.model.config == CONFIG
    for (k, a), (_, b) in zip(model.state_dict().items(), ck.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert ck.model.lm_head.weight is ck.model.transformer.wte.weight
    assert ck.tokenizer.encode("abc") == tok.encode("abc")
    assert ck.extra == {"step": 7, "note": "é"}
    assert torch.equal(ck.tensors["rng"], RNG_STATE) and ck.tensors["rng"].dtype == torch.uint8
    idx = torch.randint(20, (1, 16))
    torch.testing.assert_close(ck.model(idx).logits, model.eval()(idx).logits)
    assert files.temporaries(path) == [] and os.listdir(path.parent) == [path.name]


def test_file_is_plain_safetensors_with_json_header(saved):
    _, _, path = saved
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        header = json.loads(f.metadata()["lmlab"])
        assert "model.transformer.wte.weight" in f.keys()
        assert "model.lm_head.weight" not in f.keys()  # tied: stored once
    assert header["version"] == checkpoint.FORMAT_VERSION
    assert header["config"]["n_embd"] == 16


def test_truncated_checkpoint(saved):
    _, _, path = saved
    data = path.read_bytes()
    for cut in (4, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|corrupted"):
            checkpoint.load(path)


def test_other_format_version(saved, tmp_path):
    model, tok, _ = saved
    from safetensors.torch import save_file

    header = {"format": checkpoint.FORMAT, "version": 99, "config": CONFIG.to_dict(),
              "tokenizer": None, "extra": {}}
    path = tmp_path / "future.safetensors"
    save_file({"model.x": torch.zeros(1)}, str(path), metadata={"lmlab": json.dumps(header)})
    with pytest.raises(CheckpointError, match="version 99"):
        checkpoint.load(path)


def test_foreign_and_missing_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not an lmlab checkpoint"):
        checkpoint.load(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        checkpoint.load(tmp_path / "missing.safetensors")
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04junk" * 10)
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path / "pickle.pt")


def test_failed_save_leaves_old_file_whole(saved, monkeypatch):
    model, tok, path = saved
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="JSON"):
        checkpoint.save(path, model, tok, bad=object())
    written = []

    def fail_rename(src, dst):  # the new file is written; the rename fails
        written.append(os.path.getsize(src))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_rename)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, model, tok, step=8)
    assert written and written[0] > 0
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]  # no temporary file left


KILLED_SAVE = """
import os, signal, sys
from lmlab import GPT, GPTConfig, checkpoint
real = checkpoint.save_file
def save_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename
checkpoint.save_file = save_then_die
config = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=False)
checkpoint.save(sys.argv[1], GPT(config))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="SIGKILL semantics are POSIX")
def test_a_killed_save_leaves_nothing_behind_for_long(saved):
    model, tok, path = saved
    before = path.read_bytes()
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], timeout=120)
        assert r.returncode == -signal.SIGKILL
    assert path.read_bytes() == before  # the rename never happened: the old file is whole
    left = files.temporaries(path)
    assert len(left) == 1 and ".lmlab-tmp-" in left[0].name  # the 2nd removed the 1st's
    checkpoint.save(path, model, tok, step=9)  # the next save removes what the killed ones left
    assert files.temporaries(path) == []
    assert checkpoint.load(path).extra["step"] == 9


def test_files_get_the_users_umask(saved, tmp_path):
    model, tok, path = saved
    old = os.umask(0o022)
    try:
        checkpoint.save(path, model, tok)
        tok.save(tmp_path / "tok.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "tok.json").st_mode) == 0o644
