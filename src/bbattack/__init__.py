"""bbattack: black-box adversarial attacks with limited queries and information.

model = bbattack.load_model()                      # ImageNet EfficientNet-Lite0, ONNX Runtime
oracle = bbattack.Oracle(model, bbattack.TopK(1), max_queries=20_000)
result = bbattack.PIAttack().run(oracle, x, target=967, start=x_start, seed=0)
"""

from typing import Any

from ._version import __version__
from .attacks import (
    Attack,
    AttackConfig,
    AttackInfo,
    Ball,
    Goal,
    L2Ball,
    LinfBall,
    RunRequest,
    StepInfo,
    all_attacks,
    make_ball,
)
from .attacks.registry import public_attribute, public_classes
from .classes import ClassNames, imagenet_classes
from .errors import (
    BackendUnavailableError,
    BBAttackError,
    BudgetExhausted,
    ImageLoadError,
    OracleError,
    StartImageError,
    ThreatModelError,
    UnknownClassError,
    UserInputError,
    ViewRefused,
)
from .images import bundled_photos, load_image, quantize, save_png
from .models import CallableClassifier, Classifier, OnnxClassifier, TorchClassifier, load_model
from .oracle import (
    Label,
    Labels,
    LabelsObservation,
    Oracle,
    QueryKind,
    Scores,
    ScoresObservation,
    TopK,
    TopKObservation,
    View,
    view_from_name,
)
from .remote import errors as _remote_errors  # noqa: F401 - registers the API stop reasons
from .results import AttackResult, ImageResult, StepRecord
from .surrogates import Surrogate, resolve_surrogates
from .targets import LabelSource, LabelTarget, Vocabulary

__all__ = [
    "Attack",
    "AttackConfig",
    "AttackInfo",
    "AttackResult",
    "BBAttackError",
    "BackendUnavailableError",
    "Ball",
    "BudgetExhausted",
    "CallableClassifier",
    "ClassNames",
    "Classifier",
    "Goal",
    "ImageLoadError",
    "ImageResult",
    "L2Ball",
    "Label",
    "LabelSource",
    "LabelTarget",
    "Labels",
    "LabelsObservation",
    "LinfBall",
    "OnnxClassifier",
    "Oracle",
    "OracleError",
    "QueryKind",
    "RunRequest",
    "Scores",
    "ScoresObservation",
    "StartImageError",
    "StepInfo",
    "StepRecord",
    "Surrogate",
    "ThreatModelError",
    "TopK",
    "TopKObservation",
    "TorchClassifier",
    "UnknownClassError",
    "UserInputError",
    "View",
    "ViewRefused",
    "Vocabulary",
    "__version__",
    "all_attacks",
    "bundled_photos",
    "imagenet_classes",
    "load_image",
    "load_model",
    "make_ball",
    "quantize",
    "resolve_surrogates",
    "save_png",
    "view_from_name",
]
# Every registered attack of ours and its config (SquareAttack, SquareConfig, ...), from the
# registry: a new attack file is public without an edit here.
__all__ += public_classes("bbattack.attacks")
__all__.sort()


def __getattr__(name: str) -> Any:
    return public_attribute("bbattack.attacks", name, __name__)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
