"""bbattack: black-box adversarial attacks with limited queries and information.

model = bbattack.load_model()                      # ImageNet EfficientNet-Lite0, ONNX Runtime
oracle = bbattack.Oracle(model, bbattack.TopK(1), max_queries=20_000)
result = bbattack.PIAttack().run(oracle, x, target=967, start=x_start, seed=0)
"""

from .attacks import (
    Attack,
    AttackConfig,
    AttackInfo,
    Ball,
    Goal,
    L2Ball,
    LinfBall,
    LOAttack,
    LOConfig,
    PIAttack,
    PIConfig,
    QLAttack,
    QLConfig,
    SimBAAttack,
    SquareAttack,
    StepInfo,
    all_attacks,
    make_ball,
)
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
from .results import AttackResult, ImageResult, StepRecord
from .targets import LabelSource, LabelTarget, Vocabulary

__version__ = "0.1.0"

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
    "LOAttack",
    "LOConfig",
    "Label",
    "LabelSource",
    "LabelTarget",
    "Labels",
    "LabelsObservation",
    "LinfBall",
    "OnnxClassifier",
    "Oracle",
    "OracleError",
    "PIAttack",
    "PIConfig",
    "QLAttack",
    "QLConfig",
    "QueryKind",
    "Scores",
    "ScoresObservation",
    "SimBAAttack",
    "SquareAttack",
    "StartImageError",
    "StepInfo",
    "StepRecord",
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
    "save_png",
    "view_from_name",
]
