"""The label service's parts without a server: the committed WordNet hierarchy and its
generator, label scoring, image/base64 decoding, and the per-key ledger."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bbattack import ClassNames, ImageLoadError, UserInputError, bundled_photos, imagenet_classes
from bbattack import load_image as load_image_file
from bbattack.classes import ClassInfo
from bbattack.service import KeyLedger, LabelIndex, decode_base64, decode_image, imagenet_hierarchy
from bbattack.service import decode as decode_module

ROOT = Path(__file__).resolve().parents[2]
DATA_NOUN = Path("/usr/share/wordnet/data.noun")
GOLDEN_RETRIEVER, TABBY, ESPRESSO = 207, 281, 967
DOG, CAT = "n02084071", "n02121620"


@cache
def generator() -> ModuleType:
    """scripts/gen_imagenet_hierarchy.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_imagenet_hierarchy", ROOT / "scripts" / "gen_imagenet_hierarchy.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being built
    spec.loader.exec_module(module)
    return module


def chain(class_id: int) -> list[tuple[str, str]]:
    return list(imagenet_hierarchy()[imagenet_classes().classes[class_id].wnid])


# --- the hierarchy data -------------------------------------------------------------------


def test_every_class_has_ancestors_with_readable_names() -> None:
    tree = imagenet_hierarchy()
    assert set(tree) == {c.wnid for c in imagenet_classes().classes}
    for ancestors in tree.values():
        assert len(ancestors) >= 1
        for wnid, name in ancestors:
            assert re.fullmatch(r"n\d{8}", wnid)
            assert name
            assert "_" not in name
            assert name == name.strip()
        assert len({w for w, _ in ancestors}) == len(ancestors)


def test_dog_breeds_are_dogs_and_tabbies_are_cats() -> None:
    golden = chain(GOLDEN_RETRIEVER)
    names = [n for _, n in golden]
    assert (DOG, "dog") in golden
    assert names.index("dog") < names.index("animal")  # nearest first
    assert (CAT, "cat") in chain(TABBY)
    assert "dog" not in [n for _, n in chain(TABBY)]
    assert "coffee" in [n for _, n in chain(ESPRESSO)]


def test_abstract_synsets_are_left_out() -> None:
    names = {n for ancestors in imagenet_hierarchy().values() for _, n in ancestors}
    for abstract in ("entity", "physical entity", "object", "whole", "artifact", "living thing"):
        assert abstract not in names
    assert {"animal", "vehicle", "dog", "cat", "domestic animal", "container"} <= names


def test_the_json_is_small_and_says_how_it_was_made() -> None:
    ref = resources.files("bbattack").joinpath("data/imagenet_hierarchy.json")
    text = ref.read_text("utf-8")
    assert len(text.encode()) < 1_000_000
    doc = json.loads(text)
    assert doc["generator"] == "scripts/gen_imagenet_hierarchy.py"
    assert [row["id"] for row in doc["classes"]] == list(range(1000))


def test_the_generator_parses_wordnet_data_lines(tmp_path: Path) -> None:
    # A miniature data.noun in WordNet 3.0's format: header lines, '@' and '@i' pointers.
    data = tmp_path / "data.noun"
    data.write_text(
        "  1 This software and database is being provided\n"
        "00000001 03 n 01 entity 0 000 | root\n"
        "00000002 03 n 02 living_thing 0 animate_thing 0 001 @ 00000001 n 0000 | gloss\n"
        "00000003 05 n 01 dog 0 002 @ 00000002 n 0000 ~ 00000004 n 0000 | gloss\n"
        "00000004 05 n 01 Fido 0 001 @i 00000003 n 0000 | gloss\n",
        encoding="utf-8",
    )
    gen = generator()
    synsets = gen.parse_data_noun(data)
    assert synsets["00000002"].name == "living thing"
    assert synsets["00000003"].hypernyms == ("00000002",)  # '~' (hyponym) is not followed
    assert gen.ancestors_by_distance(synsets, "00000004") == ["00000003", "00000002", "00000001"]


@pytest.mark.skipif(
    not DATA_NOUN.is_file(), reason="needs WordNet 3.0: apt-get install wordnet-base"
)
def test_the_committed_json_is_what_the_generator_makes() -> None:
    gen = generator()
    classes = json.loads((ROOT / "src/bbattack/data/imagenet_classes.json").read_text("utf-8"))
    synsets = gen.parse_data_noun(DATA_NOUN)
    gen.check_version(synsets, classes)
    committed = json.loads((ROOT / "src/bbattack/data/imagenet_hierarchy.json").read_text("utf-8"))
    assert gen.build(synsets, classes) == committed["classes"]


# --- labels -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index() -> LabelIndex:
    return LabelIndex.from_class_names(imagenet_classes())


@pytest.fixture(scope="module")
def probs() -> np.ndarray:
    return np.random.default_rng(0).dirichlet(np.full(1000, 0.05), size=8).astype(np.float32)


def members(wnid: str) -> list[int]:
    """Classes under an ancestor, read straight from the JSON."""
    tree = imagenet_hierarchy()
    return [c.id for c in imagenet_classes().classes if wnid in {w for w, _ in tree[c.wnid]}]


def test_an_ancestor_scores_the_sum_of_its_classes(index: LabelIndex, probs: np.ndarray) -> None:
    scores = index.scores(probs)
    for wnid in (DOG, CAT, "n00015388", "n07881800"):  # dog, cat, animal, beverage
        ids = members(wnid)
        assert len(ids) >= 2
        row = index.mids.index(f"/wn/{wnid}")
        np.testing.assert_allclose(scores[:, row], probs[:, ids].astype(np.float64).sum(axis=1))
    assert len(members(DOG)) > 100  # every breed counts towards "Dog"
    row = index.mids.index(f"/wn/{imagenet_classes().classes[TABBY].wnid}")
    np.testing.assert_allclose(scores[:, row], probs[:, TABBY])


def test_labels_are_thresholded_sorted_unique_and_capped(
    index: LabelIndex, probs: np.ndarray
) -> None:
    for labels, p in zip(index.annotate(probs, threshold=0.1, max_results=7), probs, strict=True):
        assert 1 <= len(labels) <= 7
        ranks = [a.topicality for a in labels]
        assert ranks == sorted(ranks, reverse=True)
        assert min(a.score for a in labels) >= 0.1
        assert len({a.description.lower() for a in labels}) == len(labels)
        assert all(0 < a.topicality <= a.score and a.description[0].isupper() for a in labels)
        top = int(p.argmax())
        if p[top] >= 0.1 and len(labels) < 7:
            assert imagenet_classes().name(top).lower() in {a.description.lower() for a in labels}
    none = index.annotate(probs, threshold=1.01)
    assert none == [[] for _ in probs]


def test_a_sure_dog_is_labelled_dog(index: LabelIndex) -> None:
    p = np.full((1, 1000), 0.02 / 999, np.float32)
    p[0, GOLDEN_RETRIEVER] = 0.98
    labels = index.annotate(p, threshold=0.5, max_results=50)[0]
    by_name = {a.description: a for a in labels}
    assert {"Golden Retriever", "Dog", "Animal", "Domestic animal"} <= set(by_name)
    assert by_name["Dog"].mid == f"/wn/{DOG}"
    assert by_name["Dog"].score >= by_name["Golden Retriever"].score
    # Specific first, as Cloud Vision ranks them; jargon and duplicate sets are gone.
    names = [a.description for a in labels]
    assert names[0] == "Golden Retriever"
    assert names.index("Dog") < names.index("Mammal") < names.index("Animal")
    assert "Vertebrate" in names
    assert not {"Chordate", "Placental"} & set(names)


def fine_ids(*names: str) -> list[int]:
    return [imagenet_classes().resolve(n) for n in names]


def test_a_sure_flamingo_leads_with_flamingo_and_an_unsure_breed_with_dog(
    index: LabelIndex,
) -> None:
    # Before the ranking fix the top 5 were "Animal, Vertebrate, Chordate, Bird, Aquatic bird".
    p = np.full((2, 1000), 0.0, np.float32)
    (flamingo,) = fine_ids("flamingo")
    p[0, flamingo] = 0.9
    breeds = fine_ids("golden retriever", "Labrador retriever", "beagle", "pug", "collie")
    p[1, breeds] = [0.3, 0.2, 0.2, 0.15, 0.1]
    p += (1 - p.sum(axis=1, keepdims=True)) / 1000
    sure, unsure = index.annotate(p, threshold=0.2, max_results=5)
    assert [a.description for a in sure][:2] == ["Flamingo", "Wading bird"]
    assert "Bird" in [a.description for a in sure]
    assert unsure[0].description == "Dog"
    assert unsure[0].score > 0.9


def test_equal_descriptions_keep_the_best_score() -> None:
    names = ClassNames([ClassInfo(0, "a", "n1"), ClassInfo(1, "b", "n2"), ClassInfo(2, "c", "n3")])
    tree = {"n1": (("n9", "shield"),), "n2": (("n8", "Shield"),), "n3": ()}
    idx = LabelIndex.from_class_names(names, tree)
    labels = idx.annotate(np.array([[0.3, 0.6, 0.1]]), threshold=0.0)[0]
    # "Shield" (n8, 0.6) and "shield" (n9, 0.3) are one label; ties go to the earlier row.
    assert [(a.description, a.mid, round(a.score, 6)) for a in labels] == [
        ("B", "/wn/n2", 0.6),
        ("Shield", "/wn/n8", 0.6),
        ("A", "/wn/n1", 0.3),
        ("C", "/wn/n3", 0.1),
    ]


def test_max_results_may_differ_per_image(index: LabelIndex, probs: np.ndarray) -> None:
    out = index.annotate(probs[:2], threshold=0.0, max_results=[1, 4])
    assert [len(x) for x in out] == [1, 4]
    with pytest.raises(ValueError, match="one max_results per image"):
        index.annotate(probs[:2], max_results=[1])
    with pytest.raises(ValueError, match="shape"):
        index.scores(probs[:, :10])


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["coffee", "chelsea", "astronaut"])
def test_decoding_bytes_matches_load_image(name: str) -> None:
    path = bundled_photos()[name]
    np.testing.assert_array_equal(decode_image(path.read_bytes()), load_image_file(path))


def test_odd_shapes_and_modes_decode_to_rgb_224() -> None:
    for mode, size in (("L", (300, 20)), ("RGBA", (7, 900)), ("P", (1, 1)), ("I;16", (64, 48))):
        buf = io.BytesIO()
        Image.new(mode, size).save(buf, format="PNG")
        x = decode_image(buf.getvalue())
        assert x.shape == (3, 224, 224)
        assert x.dtype == np.float32
        assert 0.0 <= x.min() <= x.max() <= 1.0


def test_non_images_raise_image_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ppm = b"P6\n2 2\n255\n" + bytes(12)  # Pillow reads PPM, but the service does not take it
    for data in (b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + bytes(40), ppm, b"%!PS-Adobe-3.0 EPSF"):
        with pytest.raises(ImageLoadError):
            decode_image(data)
    buf = io.BytesIO()
    Image.new("RGB", (20, 10)).save(buf, format="PNG")
    monkeypatch.setattr(decode_module, "MAX_PIXELS", 199)
    with pytest.raises(ImageLoadError, match="too large"):
        decode_image(buf.getvalue())


def test_base64_like_protobuf_json() -> None:
    data = bytes(range(256))
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    for text in (std, url, std.rstrip("="), url.rstrip("=")):
        assert decode_base64(text) == data
    assert decode_base64("") == b""
    for bad in ("a", "abcde", "ab c", "ab\ncd", "@@@@", "é", "ab=c"):
        with pytest.raises(ValueError, match="base64"):
            decode_base64(bad)


# --- the ledger ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_token_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    ledger = KeyLedger(rate=2.0, burst=2, clock=clock)
    assert [ledger.admit("k"), ledger.admit("k")] == [None, None]
    wait = ledger.admit("k")
    assert wait == pytest.approx(0.5)
    assert ledger.admit("other") is None  # one bucket per key
    clock.now += 0.5
    assert ledger.admit("k") is None
    assert ledger.admit("k") == pytest.approx(0.5)
    clock.now += 100.0  # a long pause refills no more than the burst
    assert [ledger.admit("k") for _ in range(3)][2] == pytest.approx(0.5)
    assert ledger.calls == {"k": 8, "other": 1}


def test_the_quota_reserves_all_or_nothing_and_refunds() -> None:
    ledger = KeyLedger(quota=5)
    assert ledger.reserve("k", 4)
    assert not ledger.reserve("k", 2)
    assert ledger.usage == {"k": 4}
    ledger.refund("k", 3)
    assert ledger.reserve("k", 4)
    assert ledger.usage == {"k": 5}
    assert KeyLedger().reserve("k", 10**9)  # no quota


@pytest.mark.parametrize(
    "kwargs", [{"quota": -1}, {"rate": 0.0}, {"rate": float("inf")}, {"rate": 1.0, "burst": 0.5}]
)
def test_bad_ledger_settings_are_user_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserInputError):
        KeyLedger(**kwargs)
