import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_dir():
    """A folder holding the named corpora: $LMLAB_DATA_DIR (CI: ../shared/data), else
    ../shared/data, else lmlab's own cache, filled by downloading them once."""
    from lmlab import data

    env = os.environ.get("LMLAB_DATA_DIR")
    path = Path(env).resolve() if env else SHARED_DATA if SHARED_DATA.is_dir() else None
    if path is None:
        for name in data.DOWNLOADS:
            data.fetch(name)
        return data.cache_dir()
    missing = [d.filename for d in data.DOWNLOADS.values() if not (path / d.filename).exists()]
    if missing:
        pytest.fail(f"{path} lacks {missing}; point LMLAB_DATA_DIR at a folder holding them")
    return path


@pytest.fixture
def data(request):
    """A character dataset of the test module's `TEXT`, context 32."""
    from lmlab import TokenDataset

    return TokenDataset(request.module.TEXT, block_size=32)


@pytest.fixture
def model(data):
    """A tiny GPT for `data` (2 layers, 2 heads, 16 wide), the same weights every time."""
    from lmlab import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module: tiny models train faster so, and far faster on
    a machine that is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
