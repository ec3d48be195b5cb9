"""The built-in ImageNet model (EfficientNet-Lite0): a few short end-to-end checks."""

from __future__ import annotations

import numpy as np
import pytest

from bbattack import (
    Classifier,
    Label,
    OnnxClassifier,
    Oracle,
    Scores,
    TorchClassifier,
    bundled_photos,
    imagenet_classes,
    load_image,
    load_model,
)
from bbattack.attacks.label.rays import RaySAttack
from bbattack.attacks.score.ql import QLAttack
from bbattack.attacks.score.square import SquareAttack

pytestmark = pytest.mark.imagenet

ESPRESSO = 967
MILITARY_UNIFORM = 652


@pytest.fixture(scope="module")
def model() -> Classifier:
    m = load_model()
    assert isinstance(m, OnnxClassifier)  # auto picks ONNX Runtime when it is installed
    return m


def photo(name: str) -> np.ndarray:
    return load_image(bundled_photos()[name])


def test_the_builtin_model_describes_itself(model: Classifier) -> None:
    assert model.input_shape == (3, 224, 224)
    assert model.num_classes == 1000
    assert model.class_names is imagenet_classes()
    assert model.name == "efficientnet-lite0"


def test_coffee_is_espresso(model: Classifier) -> None:
    p = model(photo("coffee")[None])[0]
    assert p.shape == (1000,)
    assert p.sum() == pytest.approx(1.0, abs=1e-4)
    assert int(p.argmax()) == ESPRESSO
    assert p[ESPRESSO] > 0.9


def test_grace_hopper_wears_a_military_uniform(model: Classifier) -> None:
    p = model(photo("grace_hopper")[None])[0]
    assert int(p.argmax()) == MILITARY_UNIFORM
    assert imagenet_classes().name(int(p.argmax())) == "military uniform"


def test_onnx_and_torch_backends_agree(model: Classifier) -> None:
    # An explicit batch size skips the (slow, cached) batch-size measurement of the torch model.
    torch_model = load_model(backend="torch", batch_size=4)
    assert isinstance(torch_model, TorchClassifier)
    x = np.stack([photo(n) for n in ("coffee", "chelsea", "rocket")])
    p_onnx, p_torch = model(x), torch_model(x)
    assert np.abs(p_onnx - p_torch).max() < 1e-4
    top5_onnx = np.argsort(-p_onnx, axis=1)[:, :5]
    top5_torch = np.argsort(-p_torch, axis=1)[:, :5]
    assert np.array_equal(top5_onnx, top5_torch)


def test_untargeted_ql_flips_a_low_confidence_photo(model: Classifier) -> None:
    x = photo("chelsea")
    oracle = Oracle(model, Scores(), max_queries=2_000)
    result = QLAttack().run(oracle, x, seed=0)
    r = result.images[0]
    assert r.success
    assert r.queries <= 2_000
    assert sum(r.queries_by_kind.values()) == r.queries
    assert r.linf <= 0.05 + 1e-6
    assert r.original is not None
    assert r.original.name == "Egyptian Mau"
    # The saved 8-bit image really is classified differently.
    top1 = int(model(result.x_adv)[0].argmax())
    assert top1 != r.original.id
    assert r.final_topk[0].id == top1


def test_untargeted_square_flips_confident_photos_within_200_queries(model: Classifier) -> None:
    names = ["coffee", "camera", "chessboard_RGB", "motorcycle_left"]  # 11, 60, 3, 15 queries
    x = np.stack([photo(n) for n in names])
    oracle = Oracle(model, Scores(), max_queries=200)
    result = SquareAttack().run(oracle, x, seed=0)
    clean = model(x).argmax(axis=1)
    adv = model(result.x_adv).argmax(axis=1)
    assert (adv != clean).all()  # the saved 8-bit images, judged by the model itself
    for r in result.images:
        assert r.success
        assert r.queries <= 200
        assert r.linf <= 0.05 + 1e-6


def test_untargeted_rays_flips_photos_from_the_top_label_alone(model: Classifier) -> None:
    names = ["coffee", "chelsea", "logo", "china"]  # 108, 31, 84 and 27 queries
    x = np.stack([photo(n) for n in names])
    oracle = Oracle(model, Label(), max_queries=200)
    result = RaySAttack().run(oracle, x)
    clean = model(x).argmax(axis=1)
    adv = model(result.x_adv).argmax(axis=1)
    assert (adv != clean).all()
    for r in result.images:
        assert r.success
        assert r.queries <= 200
        assert r.linf <= 0.05 + 1e-6
        assert r.final_topk[0].score is None  # the label view revealed no score
