"""The exceptions lmlab raises for bad input. Each message says what was wrong,
what is allowed, and how to fix it."""


class LmlabError(Exception):
    """Base class of every error lmlab raises on purpose."""


class ConfigError(LmlabError, ValueError):
    """An invalid model or training configuration value."""


class TokenizerError(LmlabError, ValueError):
    """Text a tokenizer cannot encode, or a tokenizer file it cannot read."""


class CorpusError(LmlabError, ValueError):
    """An unknown corpus name, a missing file, or an empty text."""


class CorpusUnavailable(LmlabError, RuntimeError):
    """A named corpus is not cached and could not be downloaded."""


class ChecksumError(LmlabError, RuntimeError):
    """A downloaded or cached file does not match its published sha256."""


class DataError(LmlabError, ValueError):
    """Too little text for the requested block size or batch."""


class CheckpointError(LmlabError, ValueError):
    """A checkpoint file that is truncated, corrupted, or of another format."""


class TrainerStateError(LmlabError, RuntimeError):
    """A trainer call that its current state does not allow (e.g. start twice)."""


class TrainingError(LmlabError, RuntimeError):
    """Training diverged: the loss or the gradient norm became non-finite. `what`
    says which and where, e.g. "the loss became nan at step 538"."""

    def __init__(self, message: str, what: str = ""):
        super().__init__(message)
        self.what = what


class DistributedError(LmlabError, RuntimeError):
    """A distributed launch that cannot work: more processes than GPUs, a rank that
    cannot reach the rendezvous in time, a process-group backend the device lacks."""
