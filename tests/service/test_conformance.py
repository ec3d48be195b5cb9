"""Each vendor's own client against ``bbattack serve --schema NAME`` on loopback: the answer
parses, and its labels are the service's own. The clients come with the ``conformance`` extra;
a test whose client is not installed is skipped.

Every client reaches a plain-http loopback URL through its documented options:
``google-cloud-vision`` (REST transport, ``client_options.api_endpoint`` with a scheme),
``boto3`` (``endpoint_url``), ``azure-ai-vision-imageanalysis`` (``endpoint``; key
credentials do not insist on https), ``huggingface_hub.InferenceClient`` (a URL as the model)
and Clarifai's ``clarifai-grpc`` (its HTTP+JSON channel, ``get_json_channel(base_url=...)``).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from wire_support import GOLDEN_RETRIEVER, KEYS, RED, colour_logits, serving

from bbattack import imagenet_classes
from bbattack.targets.labels import label_index


def _expected(threshold: float = 0.2) -> list[tuple[str, float]]:
    """The service's own labels for RED: (description, score), most topical first."""
    logits = colour_logits(np.full((1, 3, 224, 224), [[[1.0]], [[0.0]], [[0.0]]], np.float32))
    labels = label_index(imagenet_classes()).annotate(
        _softmax(logits), threshold=threshold, max_results=50
    )
    return [(a.description, a.score) for a in labels[0]]


def _softmax(z: NDArray[np.float32]) -> NDArray[np.float64]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def test_google_cloud_vision_client_gets_labels() -> None:
    vision = pytest.importorskip("google.cloud.vision")
    key = KEYS["gcv"][0]
    with serving("gcv") as s:
        client = vision.ImageAnnotatorClient(
            transport="rest", client_options={"api_endpoint": s.url, "api_key": key}
        )
        # label_detection sends {"features": [{"type": 4}]} under $alt=json;enum-encoding=int
        response = client.label_detection(image=vision.Image(content=RED), max_results=5)
        assert s.usage(key) == 1
    got = [(a.description, a.score) for a in response.label_annotations]
    want = _expected()[:5]
    assert [d for d, _ in got] == [d for d, _ in want]
    assert np.allclose([v for _, v in got], [v for _, v in want], atol=1e-6)
    assert all(a.mid.startswith("/wn/") for a in response.label_annotations)


def test_google_client_sees_the_quota_as_resource_exhausted() -> None:
    vision = pytest.importorskip("google.cloud.vision")
    exceptions = pytest.importorskip("google.api_core.exceptions")
    key = KEYS["gcv"][0]
    with serving("gcv", quota=1) as s:
        client = vision.ImageAnnotatorClient(
            transport="rest", client_options={"api_endpoint": s.url, "api_key": key}
        )
        client.label_detection(image=vision.Image(content=RED))
        with pytest.raises(exceptions.TooManyRequests):
            client.label_detection(image=vision.Image(content=RED))
        assert s.usage(key) == 1


def test_boto3_rekognition_client_gets_labels_with_parents() -> None:
    boto3 = pytest.importorskip("boto3")
    akid, secret = KEYS["rekognition"][0].split(":")
    with serving("rekognition") as s:
        client = boto3.client(
            "rekognition",
            endpoint_url=s.url,
            region_name="us-east-1",
            aws_access_key_id=akid,
            aws_secret_access_key=secret,
        )
        out = client.detect_labels(Image={"Bytes": RED}, MaxLabels=5, MinConfidence=20)
        assert s.usage(akid) == 1
    want = _expected()[:5]
    assert [label["Name"] for label in out["Labels"]] == [d for d, _ in want]
    assert np.allclose(
        [x["Confidence"] for x in out["Labels"]], [100 * v for _, v in want], atol=1e-3
    )
    first = out["Labels"][0]
    assert first["Name"] == "Golden Retriever"
    assert {"Dog", "Animal"} <= {p["Name"] for p in first["Parents"]}
    assert out["LabelModelVersion"] == "3.0"


def test_boto3_with_a_wrong_secret_gets_invalid_signature_and_pays_nothing() -> None:
    boto3 = pytest.importorskip("boto3")
    botocore_exceptions = pytest.importorskip("botocore.exceptions")
    akid = KEYS["rekognition"][0].split(":")[0]
    with serving("rekognition") as s:
        client = boto3.client(
            "rekognition",
            endpoint_url=s.url,
            region_name="eu-west-1",
            aws_access_key_id=akid,
            aws_secret_access_key="not-the-secret",
        )
        with pytest.raises(botocore_exceptions.ClientError) as e:
            client.detect_labels(Image={"Bytes": RED})
        assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert s.usage(akid) == 0


def test_azure_image_analysis_client_gets_tags() -> None:
    ia = pytest.importorskip("azure.ai.vision.imageanalysis")
    models = pytest.importorskip("azure.ai.vision.imageanalysis.models")
    credentials = pytest.importorskip("azure.core.credentials")
    key = KEYS["azure"][0]
    with serving("azure") as s:
        client = ia.ImageAnalysisClient(
            endpoint=s.url, credential=credentials.AzureKeyCredential(key)
        )
        result = client.analyze(image_data=RED, visual_features=[models.VisualFeatures.TAGS])
        assert s.usage(key) == 1
    assert (result.metadata.width, result.metadata.height) == (64, 56)
    got = {t.name: t.confidence for t in result.tags.list}
    want = {d.lower(): v for d, v in _expected()}
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) < 1e-5 for k in got)


def test_azure_client_with_a_wrong_key_gets_an_authentication_error() -> None:
    ia = pytest.importorskip("azure.ai.vision.imageanalysis")
    models = pytest.importorskip("azure.ai.vision.imageanalysis.models")
    credentials = pytest.importorskip("azure.core.credentials")
    azure_exceptions = pytest.importorskip("azure.core.exceptions")
    with serving("azure") as s:
        client = ia.ImageAnalysisClient(
            endpoint=s.url, credential=credentials.AzureKeyCredential("wrong")
        )
        with pytest.raises(azure_exceptions.ClientAuthenticationError):
            client.analyze(image_data=RED, visual_features=[models.VisualFeatures.TAGS])


def test_huggingface_inference_client_gets_the_models_classes() -> None:
    hub = pytest.importorskip("huggingface_hub")
    key = KEYS["hf"][0]
    names = imagenet_classes()
    with serving("hf") as s:
        client = hub.InferenceClient(model=f"{s.url}/models/bbattack/fake", token=key)
        raw = client.image_classification(RED)  # raw bytes
        top2 = client.image_classification(RED, top_k=2)  # JSON with parameters
        assert s.usage(key) == 2
    assert len(raw) == 5
    assert len(top2) == 2
    assert raw[0].label == top2[0].label == names.name(GOLDEN_RETRIEVER)
    assert raw[0].score == pytest.approx(_expected()[0][1], abs=1e-6)
    assert [r.score for r in raw] == sorted((r.score for r in raw), reverse=True)


def test_clarifai_grpc_json_channel_gets_concepts_for_a_batch() -> None:
    channel = pytest.importorskip("clarifai_grpc.channel.clarifai_channel")
    api = pytest.importorskip("clarifai_grpc.grpc.api")
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc

    assert api is not None
    key = KEYS["clarifai"][0]
    with serving("clarifai") as s:
        stub = service_pb2_grpc.V2Stub(channel.ClarifaiChannel.get_json_channel(base_url=s.url))
        one = resources_pb2.Input(data=resources_pb2.Data(image=resources_pb2.Image(base64=RED)))
        request = service_pb2.PostModelOutputsRequest(
            user_app_id=resources_pb2.UserAppIDSet(user_id="clarifai", app_id="main"),
            model_id="general-image-recognition",
            inputs=[one, one, one],
        )
        response = stub.PostModelOutputs(request, metadata=(("authorization", f"Key {key}"),))
        assert s.usage(key) == 3
        denied = stub.PostModelOutputs(request, metadata=(("authorization", "Key wrong"),))
        assert s.usage(key) == 3
    assert response.status.code == 10000
    assert len(response.outputs) == 3
    want = _expected()[:20]
    for output in response.outputs:
        assert output.status.code == 10000
        got = [(c.name, c.value) for c in output.data.concepts]
        assert [n for n, _ in got] == [d.lower() for d, _ in want]
        assert np.allclose([v for _, v in got], [v for _, v in want], atol=1e-5)
    assert denied.status.code == 11001
