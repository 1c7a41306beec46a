"""lmlab: a Jupyter-native lab for small language models.

The engine (this package) is plain PyTorch and imports no notebook library;
the widgets live in `lmlab.widgets`.
"""

from . import attribution, checkpoint, circuits, patching
from .data import CORPORA, TokenDataset, load_corpus
from .errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    CorpusError,
    CorpusUnavailable,
    DataError,
    DistributedError,
    LmlabError,
    TokenizerError,
    TrainerStateError,
    TrainingError,
)
from .finetune import finetune, from_scratch
from .attribution import logit_attribution
from .interpret import capture_attention, logit_lens
from .model import GPT, GPTConfig, best_device
from .pretrained import from_pretrained
from .reading import reading
from .sampling import beam_search, distribution, generate, next_token_distribution, score
from .stepper import Stepper
from .timeline import Timeline
from .tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer
from .train import TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "GPT", "GPTConfig", "best_device", "CharTokenizer", "BPETokenizer", "GPT2Tokenizer",
    "load_corpus", "TokenDataset", "CORPORA", "checkpoint",
    "Trainer", "TrainConfig", "Timeline", "generate", "next_token_distribution", "reading",
    "capture_attention", "logit_lens", "from_pretrained",
    "attribution", "patching", "circuits", "logit_attribution",
    "finetune", "from_scratch", "Stepper", "distribution", "beam_search", "score",
    "LmlabError", "ConfigError", "TokenizerError", "CorpusError", "CorpusUnavailable",
    "ChecksumError", "DataError", "CheckpointError", "TrainerStateError", "TrainingError",
    "DistributedError",
]
