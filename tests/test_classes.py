"""ImageNet class names: ids, names, synonyms, and helpful errors."""

from __future__ import annotations

import re

import pytest

from bbattack import ClassNames, UnknownClassError, UserInputError, imagenet_classes


def test_there_are_1000_classes_in_the_usual_order() -> None:
    names = imagenet_classes()
    assert len(names) == 1000
    assert [c.id for c in names.classes] == list(range(1000))
    assert names.name(0) == "tench"
    assert names.name(967) == "espresso"
    assert names.name(652) == "military uniform"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (967, 967),
        (0, 0),
        (999, 999),
        ("967", 967),
        (" 42 ", 42),
        ("espresso", 967),
        ("ESPRESSO", 967),
        ("  Espresso  ", 967),
        ("goldfish", 1),
        ("Carassius auratus", 1),  # a synonym
        ("carassius AURATUS", 1),
        ("tabby", 281),  # synonym of one class only
        ("tiger cat", 282),
        ("military uniform", 652),
        ("projectile", 744),
    ],
)
def test_resolve_by_id_name_synonym_and_case(key: str | int, expected: int) -> None:
    assert imagenet_classes().resolve(key) == expected


@pytest.mark.parametrize("key", [1000, -1, "1000", "123456"])
def test_out_of_range_ids_are_refused(key: str | int) -> None:
    with pytest.raises(UnknownClassError, match=r"out of range 0\.\.999"):
        imagenet_classes().resolve(key)


def test_unknown_class_errors_are_user_input_errors() -> None:
    with pytest.raises(UserInputError):
        imagenet_classes().resolve("definitely not a class")


def test_an_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownClassError) as info:
        imagenet_classes().resolve("espreso")
    message = str(info.value)
    assert "unknown class name 'espreso'" in message
    assert "closest" in message
    assert "967 (espresso)" in message


def test_a_name_with_no_close_match_says_so() -> None:
    with pytest.raises(UnknownClassError, match="no close match"):
        imagenet_classes().resolve("qqqqzzzzxxxx")


def test_close_match_hints_list_each_class_once() -> None:
    with pytest.raises(UnknownClassError) as info:
        imagenet_classes().resolve("espreso")
    ids = re.findall(r"(\d+) \(", str(info.value))
    assert len(ids) == len(set(ids)), str(info.value)


@pytest.mark.parametrize(("name", "ids"), [("missile", (657, 744)), ("crane", (134, 517))])
def test_an_ambiguous_name_lists_every_candidate_id(name: str, ids: tuple[int, int]) -> None:
    with pytest.raises(UnknownClassError, match="ambiguous") as info:
        imagenet_classes().resolve(name)
    message = str(info.value)
    for cid in ids:
        assert f"{cid} (" in message
    assert "use an id" in message


def test_a_class_own_name_wins_over_another_class_synonym() -> None:
    names = ClassNames.from_names(["cat", "dog"])
    assert names.resolve("cat") == 0
    assert names.resolve("DOG") == 1
    assert names.resolve(1) == 1
    with pytest.raises(UnknownClassError, match=r"out of range 0\.\.1"):
        names.resolve(2)
