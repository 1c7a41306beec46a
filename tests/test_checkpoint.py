import json

import pytest
import torch

from lmlab import GPT, CharTokenizer, CheckpointError, GPTConfig, checkpoint

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
    assert not list(path.parent.glob("*.tmp"))


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


def test_failed_save_leaves_old_file_whole(saved):
    model, tok, path = saved
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="JSON"):
        checkpoint.save(path, model, tok, bad=object())
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*tmp"))
