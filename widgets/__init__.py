"""lmlab's notebook widgets (ipywidgets + plotly), installed as `lmlab.widgets`.

They render engine state and forward clicks to engine methods; the machine learning
is in `lmlab`.
"""

from .attention import AttentionExplorer
from .bertviz_views import head_view, model_view
from .compare import RunComparison
from .dashboard import TrainingDashboard
from .embeddings import EmbeddingMap
from .lens import LogitLensView
from .model_compare import ModelComparison
from .patching import PatchingView
from .playground import TokenizerPlayground
from .scaling import ScalingLab
from .stepper import SamplingStepper
from .timeline import TimelineView
from .surprise import TokenSurprise

__all__ = ["TrainingDashboard", "RunComparison", "AttentionExplorer", "head_view", "model_view",
           "SamplingStepper", "TokenSurprise", "EmbeddingMap", "TokenizerPlayground", "ScalingLab",
           "LogitLensView", "ModelComparison", "PatchingView", "TimelineView"]
