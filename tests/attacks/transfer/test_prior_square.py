"""Square with prior-signed windows (the surrogate-guided attack's QL hand-off): a prior that
points the right way earns a growing share of the windows, one that points the wrong way
decays towards random signs; inside the surrogate-guided attack every query is still counted
and a batch equals single runs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bbattack import CallableClassifier, Labels, Oracle, Scores, TopK, TorchClassifier, View
from bbattack.attacks.base import AttackState
from bbattack.attacks.transfer._prior_square import PriorSquare
from bbattack.attacks.transfer.transfer import TransferAttack
from bbattack.errors import UserInputError
from bbattack.surrogates import Surrogate, resolve_surrogates
from defense_support import _W, SIZE
from support import FloatArray, IntArray

PRIOR_MAX = 0.8


def _direction(state: AttackState, rows: IntArray) -> FloatArray:
    """The tiny linear model's own direction from the clean class to the target (blockwise)."""
    d = _W[:, state.target[rows]] - _W[:, state.orig[rows]]  # (48, m)
    blocks = d.T.reshape(len(rows), 3, 4, 4)
    out: FloatArray = np.repeat(np.repeat(blocks, SIZE // 4, axis=2), SIZE // 4, axis=3)
    return out


class _Known(PriorSquare):
    """A prior from the model itself (sign +1) or its opposite (-1); records the shares."""

    sign = 1.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.shares: list[float] = []

    def step(self, oracle: Oracle, state: AttackState) -> None:
        rows = self.stale(state)
        self.set_prior(state, rows, self.sign * _direction(state, rows))
        super().step(oracle, state)
        self.shares.append(float(self.share(state, np.array([0]))[0]))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_prior_earns_its_share_of_the_windows(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray, sign: float
) -> None:
    attack = _Known(eps=0.05, prior_max=PRIOR_MAX)
    attack.sign = sign
    oracle = Oracle(tiny_rgb, Scores(), max_queries=200)
    x = colour_photos[:1]
    clean = int(tiny_rgb(x).argmax())
    res = attack.run(oracle, x, np.array([(clean + 3) % 10]), seed=0)
    assert res.images[0].queries == oracle.total_queries <= 200
    final = attack.shares[-1]
    if sign > 0:
        assert final > PRIOR_MAX / 2  # prior-signed windows were kept more often than random
    else:
        assert final < PRIOR_MAX / 2  # the wrong way: random signs take over


@pytest.fixture(scope="module")
def cnn(digits_cnn: TorchClassifier, digits_torch: TorchClassifier) -> list[Surrogate]:
    return resolve_surrogates([digits_cnn], digits_torch)


def test_the_prior_hand_off_counts_every_query_and_a_batch_equals_single_runs(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
) -> None:
    x, target, _ = cases
    attack = TransferAttack(eps=0.1, prior=0.9, rounds=2)

    def run(i: slice) -> Any:
        oracle = Oracle(digits_torch, Scores(), max_queries=150)
        res = attack.run(oracle, x[i], target[i], seed=list(range(8))[i], surrogates=cnn)
        assert [r.queries for r in res.images] == oracle.queries().tolist()
        return res

    batch = run(slice(0, 4))
    assert any(r.queries_by_kind["line_search"] > 0 for r in batch.images)  # Square ran
    for r in batch.images:
        assert sum(r.queries_by_kind.values()) == r.queries <= 150
    for i in range(4):
        one = run(slice(i, i + 1))
        assert np.array_equal(batch.x_adv[i], one.x_adv[0])
        assert batch.images[i].queries == one.images[0].queries


@pytest.mark.parametrize(
    ("view", "norm"), [(Scores(), "l2"), (TopK(1), "linf"), (Labels(1), "linf")]
)
def test_a_prior_the_run_would_ignore_is_refused_before_any_query(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
    view: View,
    norm: str,
) -> None:
    x, target, _ = cases
    oracle = Oracle(digits_torch, view, max_queries=150)
    attack = TransferAttack(eps=0.1, norm=norm, prior=0.9)
    with pytest.raises(UserInputError, match="prior applies to the QL hand-off"):
        attack.run(oracle, x[:1], target[:1], seed=0, surrogates=cnn)
    assert oracle.total_queries == 0
