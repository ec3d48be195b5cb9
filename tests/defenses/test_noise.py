"""RND's noise is seeded and resumes exactly; AAA never changes the top label."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bbattack import CallableClassifier, Labels, Oracle, Scores
from bbattack.attacks import registry
from bbattack.defenses import Aaa, Rnd
from bbattack.defenses.aaa import attract, fits, unattract
from bbattack.oracle import Forward, LabelsObservation, Query, ScoresObservation
from support import FloatArray


def _inputs(layer: Rnd, x: FloatArray, times: int) -> list[FloatArray]:
    got: list[FloatArray] = []

    def forward(z: FloatArray) -> ScoresObservation:
        got.append(z.copy())
        return ScoresObservation(np.full((len(z), 2), 0.5, np.float32))

    for _ in range(times):
        layer.handle(Query(x, np.zeros(len(x), np.int64), "init", Scores()), forward)
    return got


def test_rnd_is_deterministic_under_its_seed_and_resumes_exactly(colour_photos: FloatArray) -> None:
    x = colour_photos[:2]
    a = _inputs(Rnd(nu=0.02, seed=5), x, 4)
    assert all(np.array_equal(p, q) for p, q in zip(a, _inputs(Rnd(0.02, 5), x, 4), strict=True))
    assert not np.array_equal(a[0], _inputs(Rnd(0.02, 6), x, 1)[0])
    assert 0.01 < float(np.std(a[0] - x)) < 0.03
    assert a[0].min() >= 0
    assert a[0].max() <= 1
    first = Rnd(0.02, 5)
    _inputs(first, x, 2)
    later = Rnd(0.02, 5)
    later.restore(first.snapshot())
    assert all(np.array_equal(p, q) for p, q in zip(a[2:], _inputs(later, x, 2), strict=True))


def test_rnd_in_front_of_a_model_gives_the_same_run_twice(
    tiny_rgb: CallableClassifier, colour_photos: FloatArray
) -> None:
    def run() -> FloatArray:
        oracle = Oracle(tiny_rgb, Scores(), max_queries=60, middleware=[Rnd(0.02, 1)])
        return registry.build("square", eps=0.05).run(oracle, colour_photos[:1], None, seed=1).x_adv

    assert np.array_equal(run(), run())


@settings(max_examples=200, deadline=None)
@given(
    logits=arrays(
        np.float64, st.tuples(st.integers(1, 4), st.integers(2, 12)), elements=st.floats(-30, 30)
    ),
    tau=st.floats(0.1, 10),
    beta=st.floats(0, 0.99),
)
def test_aaa_never_changes_the_top_label(logits: FloatArray, tau: float, beta: float) -> None:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    out = attract(p, tau, beta)
    assert np.array_equal(out.argmax(axis=1), p.argmax(axis=1))
    assert np.allclose(out.sum(axis=1), 1, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    logits=arrays(
        np.float64, st.tuples(st.integers(1, 4), st.integers(2, 12)), elements=st.floats(-12, 12)
    ),
    tau=st.floats(0.5, 10),
    beta=st.floats(0.1, 0.95),
)
def test_an_attacker_who_knows_tau_and_beta_undoes_aaa(
    logits: FloatArray, tau: float, beta: float
) -> None:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    shown = attract(p, tau, beta)
    assert fits(shown, tau, beta).all()  # every answer AAA gives lies in its ranges
    back = unattract(shown, tau, beta)
    z, zb = np.log(np.maximum(p, 1e-30)), np.log(np.maximum(back, 1e-30))
    big = p > 1e-6  # the classes whose log-probabilities float32 keeps
    assert np.allclose(zb[big], z[big], atol=1e-3)


def test_a_margin_in_the_gap_between_aaa_ranges_shows_other_settings() -> None:
    def answer(margin: float) -> FloatArray:
        z = np.array([[0.0, -margin, -30.0]]) - np.logaddexp(0.0, -margin)
        return np.asarray(np.exp(z), np.float32)

    # tau 4, beta 0.8: margins within 0.4 of a multiple of 4 never show.
    assert not fits(answer(3.8), 4.0, 0.8)[0]
    assert not fits(answer(0.2), 4.0, 0.8)[0]
    assert fits(answer(2.0), 4.0, 0.8)[0]
    assert fits(answer(3.8), 3.0, 0.8)[0]


def test_aaa_reverses_the_margin_trend_and_leaves_labels_alone() -> None:
    z = np.log(np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]], np.float32))  # margins 1.25, 0.69
    out = attract(np.exp(z), tau=4.0, beta=0.8)
    shown = np.log(out[:, 0]) - np.log(out[:, 1])
    assert shown[1] > shown[0]  # a lower margin looks higher: the attack's step looks bad
    labels = LabelsObservation(np.array([[2, 0]], np.int64))

    def forward(x: FloatArray) -> LabelsObservation:
        return labels

    q = Query(np.zeros((1, 1, 2, 2), np.float32), np.zeros(1, np.int64), "init", Labels(2))
    f: Forward = forward
    assert Aaa().handle(q, f) is labels
