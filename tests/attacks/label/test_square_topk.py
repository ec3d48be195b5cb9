"""Square on a top-1 answer with its score: with the clean class on top, the shown margin
log p − log(1 − p) orders candidates as log p does, so untargeted it takes the very path of
Square with the cross-entropy loss under full scores."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bbattack import Oracle, Scores, TopK, TorchClassifier
from bbattack.attacks.label.square_topk import TopKSquare
from bbattack.attacks.score.square import SquareAttack

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


def test_under_top1_it_keeps_what_square_with_cross_entropy_keeps_under_scores(
    digits_torch: TorchClassifier, cases: tuple[FloatArray, IntArray, FloatArray]
) -> None:
    x, _, _ = cases
    pi = Oracle(digits_torch, TopK(1), max_queries=300)
    ql = Oracle(digits_torch, Scores(), max_queries=300)
    a = TopKSquare(eps=0.1).run(pi, x[:6], None)
    b = SquareAttack(eps=0.1, untargeted_loss="ce").run(ql, x[:6], None)
    assert [r.queries for r in a.images] == [r.queries for r in b.images]
    assert [r.success for r in a.images] == [r.success for r in b.images]
    assert any(r.success and r.queries > 3 for r in a.images)  # some needed Square's steps
    np.testing.assert_array_equal(a.x_adv, b.x_adv)


def test_the_margin_loss_under_scores_takes_another_path(
    digits_torch: TorchClassifier, cases: tuple[FloatArray, IntArray, FloatArray]
) -> None:
    """The check above can fail: Square's default (margin) loss keeps other windows."""
    x, _, _ = cases
    a = TopKSquare(eps=0.1).run(Oracle(digits_torch, TopK(1), max_queries=300), x[:6], None)
    b = SquareAttack(eps=0.1).run(Oracle(digits_torch, Scores(), max_queries=300), x[:6], None)
    assert [r.queries for r in a.images] != [r.queries for r in b.images]
