"""Model specs: every kind loads (ONNX, TorchScript, module:function, a transformers directory),
answers what the model itself answers with the same preprocessing, records a spec that loads
the same model again, and every bad spec is one line before any query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch

from bbattack import UserInputError, load_model
from bbattack.models import OnnxClassifier, TorchClassifier
from bbattack.surrogates import load_surrogate, resolve_surrogates
from bbattack.targets._preprocess import Preprocessing, resolve
from bbattack.targets.spec import ModelSpec, parse_spec, read_labels, with_options
from spec_models import (
    CLASSES,
    FACTORY_MODULE,
    LABELS,
    MEAN,
    STD,
    Files,
    reference,
    softmax,
    tiny_cnn,
    write_files,
)

OPTS: dict[str, Any] = {"input_size": 32, "mean": MEAN, "std": STD}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_files(tmp_path_factory.mktemp("spec-models"))


@pytest.fixture(autouse=True)
def _isolated(files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BBATTACK_CACHE_DIR", str(tmp_path / "cache"))  # ONNX exports
    monkeypatch.syspath_prepend(str(files.root))  # the factory's module


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random((3, 3, 224, 224), dtype=np.float32)


def spec_of(files: Files, kind: str) -> str:
    return {
        "onnx": str(files.onnx),
        "torchscript": str(files.torchscript),
        "factory": files.factory,
    }[kind]


@pytest.mark.parametrize("kind", ["onnx", "torchscript", "factory"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_each_kind_answers_what_the_module_answers(
    files: Files, x: np.ndarray, kind: str, backend: Literal["auto", "torch"]
) -> None:
    if kind == "onnx" and backend == "torch":
        with pytest.raises(UserInputError, match="runs on ONNX Runtime"):
            load_model(spec_of(files, kind), backend="torch", batch_size=4, **OPTS)
        return
    model = load_model(spec_of(files, kind), backend=backend, batch_size=4, **OPTS)
    assert model.input_shape == (3, 224, 224)
    assert model.num_classes == CLASSES
    np.testing.assert_allclose(model(x), softmax(reference(tiny_cnn(), x)), atol=1e-5)
    # auto: ONNX Runtime (a torch model exported and checked); torch: torch
    assert isinstance(model, OnnxClassifier if backend == "auto" else TorchClassifier)
    assert model.spec is not None
    assert model.preprocessing is not None
    assert model.preprocessing["input_size"] == [32, 32]


def test_the_three_kinds_of_one_network_have_one_weights_hash_per_format(files: Files) -> None:
    ts = load_model(str(files.torchscript), batch_size=4, **OPTS)
    fac = load_model(files.factory, batch_size=4, **OPTS)
    onnx = load_model(str(files.onnx), batch_size=4, **OPTS)
    assert ts.weights_id == fac.weights_id  # the state dict's hash
    assert onnx.weights_id is not None
    assert len(onnx.weights_id) == 16
    assert onnx.weights_id != ts.weights_id


def test_a_bgr_0_255_spec_equals_the_manual_preprocessing(files: Files, x: np.ndarray) -> None:
    mean, std = (104.0, 116.7, 122.7), (58.0, 57.0, 57.5)
    opts: dict[str, Any] = {
        "input_size": 32,
        "scale": 255,
        "channels": "bgr",
        "mean": mean,
        "std": std,
    }
    t = torch.nn.functional.interpolate(torch.from_numpy(x), size=(32, 32), mode="bilinear")
    t = (t.flip(1) * 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = softmax(tiny_cnn()(t).numpy())
    onnx = load_model(str(files.onnx), batch_size=4, **opts)
    script = load_model(str(files.torchscript), backend="torch", batch_size=4, **opts)
    for model in (onnx, script):
        np.testing.assert_allclose(model(x), want, atol=1e-5)


def test_an_nhwc_model_with_a_fixed_batch_says_its_layout_and_size(
    files: Files, x: np.ndarray
) -> None:
    model = load_model(str(files.onnx_nhwc), mean=MEAN, std=STD, batch_size=16)
    assert model.batch_size == 1  # exported for batches of 1: fed one image at a time
    assert model.preprocessing is not None
    assert model.preprocessing["layout"] == "nhwc"
    assert model.preprocessing["input_size"] == [32, 32]
    np.testing.assert_allclose(model(x), softmax(reference(tiny_cnn(), x)), atol=1e-5)
    with pytest.raises(UserInputError, match="fixed at 32x32"):
        load_model(str(files.onnx_nhwc), input_size=64)


def test_center_crop_keeps_the_model_aspect_ratio(x: np.ndarray) -> None:
    pipe = resolve(Preprocessing.of(input_size="32x16", resize="center-crop"))
    # a 2:1 (height:width) window of a 224x224 image: all rows, the middle 112 columns
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x[..., 56:168]), size=(32, 16), mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(pipe.numpy()(x), want, atol=1e-5)
    with torch.no_grad():
        got = pipe.torch_module(torch.nn.Identity())(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"input_size": "48x40", "channels": "bgr", "scale": 255, "mean": 100.0, "std": 60.0},
        {"input_size": 300, "resize": "center-crop", "crop": 0.875, "layout": "nhwc"},
        {"mean": "0.1,0.2,0.3", "std": "2,3,4"},
    ],
)
def test_numpy_and_torch_preprocessing_agree(x: np.ndarray, options: dict[str, Any]) -> None:
    pipe = resolve(Preprocessing.of(**options))
    with torch.no_grad():
        t = pipe.torch_module(torch.nn.Identity())(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pipe.numpy()(x), t, rtol=1e-5, atol=1e-4)


def test_squeezenet_caffe_input_from_the_spec_is_the_builtin_one(x: np.ndarray) -> None:
    from bbattack.squeezenet import SqueezeNet11

    builtin = SqueezeNet11()  # its own preprocessing: the first line of its forward
    t = torch.from_numpy(x)
    want = t.flip(1) * 255.0 - builtin.mean
    opts = Preprocessing.of(scale=255, channels="bgr", mean="104.006,116.669,122.679", std="1,1,1")
    pipe = resolve(opts)
    with torch.no_grad():
        assert torch.equal(pipe.torch_module(torch.nn.Identity())(t), want)
    np.testing.assert_allclose(pipe.numpy()(x), want.numpy(), atol=1e-4)


def test_the_spec_text_loads_the_same_model_again(files: Files, tmp_path: Path) -> None:
    spec = with_options(files.onnx.name, labels=files.labels.name, **OPTS)
    assert spec is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(files.root)  # relative paths become absolute in the canonical text
        first = load_model(spec, batch_size=4)
    assert first.spec is not None
    assert first.spec.startswith(str(files.onnx) + "?")
    assert str(files.labels) in first.spec
    again = load_model(first.spec, batch_size=4)  # from anywhere (tmp_path is the cwd)
    assert again.spec == first.spec
    assert again.weights_id == first.weights_id
    assert again.preprocessing == first.preprocessing
    assert again.class_names is not None
    assert again.class_names.name(3) == "dog"
    assert parse_spec(first.spec).text == first.spec


def test_labels_files_one_per_line_or_json(files: Files) -> None:
    assert read_labels(files.labels) == LABELS
    assert read_labels(files.labels_json) == LABELS
    model = load_model(str(files.onnx), labels=str(files.labels_json), batch_size=4, **OPTS)
    assert model.class_names is not None
    assert model.class_names.resolve("cat") == 2
    unnamed = load_model(str(files.onnx), batch_size=4, **OPTS)
    assert unnamed.class_names is not None
    assert unnamed.class_names.resolve("3") == 3


def test_a_transformers_directory_gives_its_size_mean_std_and_labels(
    files: Files, x: np.ndarray
) -> None:
    transformers = pytest.importorskip("transformers")
    assert files.hf is not None
    model = load_model(str(files.hf), backend="torch", batch_size=4)
    assert model.preprocessing is not None
    assert model.preprocessing["input_size"] == [32, 32]
    np.testing.assert_allclose(model.preprocessing["mean"], MEAN, rtol=1e-6)
    assert model.class_names is not None
    assert model.class_names.name(4) == "eel"
    assert model.family == "vit"
    hf = transformers.AutoModelForImageClassification.from_pretrained(
        str(files.hf), local_files_only=True
    ).eval()
    np.testing.assert_allclose(model(x), softmax(reference(hf, x)), atol=1e-5)
    # The processor itself turns 0-255 pixels at its size into what our pipeline gives.
    proc = transformers.AutoImageProcessor.from_pretrained(str(files.hf), local_files_only=True)
    img = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    theirs = proc(images=img, return_tensors="np")["pixel_values"]
    spec = parse_spec(str(files.hf))
    from bbattack.targets._loaders import open_hf
    from bbattack.targets.spec import pipeline_of

    ours = pipeline_of(spec, open_hf(files.hf).says).numpy()(
        (img.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_a_surrogate_from_a_file_is_differentiable_and_matches_its_module(
    files: Files, x: np.ndarray
) -> None:
    spec = with_options(str(files.torchscript), **OPTS)
    assert spec is not None
    s = load_surrogate(spec)
    t = torch.from_numpy(x[:2]).requires_grad_(True)
    logits = s.logits(t)
    np.testing.assert_allclose(logits.detach().numpy(), reference(tiny_cnn(), x[:2]), atol=1e-5)
    logits[:, 1].sum().backward()
    assert t.grad is not None
    assert float(t.grad.abs().sum()) > 0
    # It takes the target's pixels at any size: here 64x64
    assert s.logits(torch.zeros(1, 3, 64, 64)).shape == (1, CLASSES)
    with pytest.raises(UserInputError, match="ONNX model cannot be a surrogate"):
        load_surrogate(str(files.onnx))


def test_a_surrogate_with_the_targets_weights_is_refused(files: Files) -> None:
    target = load_model(files.factory, batch_size=4, backend="torch", **OPTS)
    spec = with_options(str(files.torchscript), **OPTS)
    assert spec is not None
    with pytest.raises(UserInputError, match="target's weights"):
        resolve_surrogates([spec], target)


def bad_specs(files: Files) -> list[tuple[str | ModelSpec, dict[str, Any], str]]:
    return [
        (str(files.garbage), {}, "not an ONNX model"),
        (str(files.state_dict), {}, "not a TorchScript file"),
        (str(files.root / "missing.onnx"), {}, "no such file"),
        ("resnet-50", {}, "unknown model"),
        (str(files.labels), {}, "unknown model file type"),
        (str(files.root), {}, "not a Hugging Face model"),
        (str(files.onnx), {**OPTS, "std": "0.2,0,0.2"}, "std of 0"),
        (str(files.onnx), {**OPTS, "mean": "1,2"}, "1 or 3 values"),
        (str(files.onnx), {**OPTS, "scale": 2}, "--scale"),
        (str(files.onnx), {**OPTS, "labels": str(files.short_labels)}, "3 labels, but"),
        (str(files.onnx), {**OPTS, "outputs": "probs"}, "not probabilities"),
        (str(files.torchscript), {"input_size": 40}, "failed on a dummy batch"),
        (str(files.onnx) + "?std=0.5", {"std": 0.5}, "given both"),
        ("lite0", {"mean": 0.5}, "built-in model"),
        (f"{FACTORY_MODULE}:nothing", {}, "has no function nothing"),
        ("os:getcwd", {}, "got str"),
    ]


def test_every_bad_spec_is_one_line(files: Files) -> None:
    for spec, options, says in bad_specs(files):
        with pytest.raises(UserInputError) as e:
            load_model(spec, batch_size=4, **options)
        assert says in str(e.value), (spec, str(e.value))
        assert "\n" not in str(e.value)


def test_an_output_that_is_not_n_by_classes_is_refused(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    (files.root / "spec_bad_shape.py").write_text(
        "import torch\n\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(0))\n"
    )
    with pytest.raises(UserInputError, match=r"a classifier's is \(N, classes\)"):
        load_model("spec_bad_shape:make", batch_size=4)


def test_a_query_string_round_trips_through_json(files: Files) -> None:
    spec = parse_spec(f"{files.onnx}?input-size=32&mean=0.5&labels={files.labels}")
    assert spec.kind == "onnx"
    assert spec.options.input_size == (32, 32)
    assert json.loads(json.dumps(spec.text)) == spec.text
    assert parse_spec(spec.text) == spec
