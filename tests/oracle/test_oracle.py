"""The oracle: exact query accounting, hard budgets, and views that reveal nothing extra."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bbattack import (
    BudgetExhausted,
    CallableClassifier,
    Label,
    Labels,
    Oracle,
    QueryKind,
    Scores,
    ThreatModelError,
    TopK,
    UserInputError,
    View,
    view_from_name,
)
from bbattack.oracle import (
    LabelsObservation,
    Observation,
    QueryEvent,
    ScoresObservation,
    TopKObservation,
)
from support import ANALYTIC_CLASSES, ANALYTIC_SHAPE, analytic_logits

FloatArray = NDArray[np.float32]
KINDS = list(QueryKind)


def images(n: int, seed: int = 0) -> FloatArray:
    return np.random.default_rng(seed).random((n, *ANALYTIC_SHAPE), dtype=np.float32)


class CountingModel(CallableClassifier):
    """The analytic model, counting how many rows it evaluates."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__(self._fn, ANALYTIC_SHAPE, ANALYTIC_CLASSES, batch_size=batch_size)
        self.rows = 0
        self.chunks: list[int] = []

    def _fn(self, x: FloatArray) -> FloatArray:
        self.rows += len(x)
        self.chunks.append(len(x))
        return analytic_logits(x)


# ---------------------------------------------------------------- budgets (property tests)


@st.composite
def budget_scenarios(
    draw: st.DrawFn,
) -> tuple[int, int | None, int | None, list[tuple[list[int], QueryKind]]]:
    n = draw(st.integers(1, 4))
    max_queries = draw(st.none() | st.integers(1, 12))
    max_total = draw(st.none() | st.integers(1, 30))
    batches = draw(
        st.lists(
            st.tuples(
                st.lists(st.integers(0, n - 1), max_size=9),
                st.sampled_from(KINDS),
            ),
            max_size=20,
        )
    )
    return n, max_queries, max_total, batches


@settings(max_examples=300, deadline=None)
@given(budget_scenarios())
def test_budgets_are_never_exceeded_and_refusals_charge_nothing(
    scenario: tuple[int, int | None, int | None, list[tuple[list[int], QueryKind]]],
) -> None:
    n, max_queries, max_total, batches = scenario
    model = CountingModel()
    events: list[QueryEvent] = []
    oracle = Oracle(
        model,
        Scores(),
        max_queries=max_queries,
        max_total_queries=max_total,
        hooks=[events.append],
    )
    ids = oracle.register(n)
    assert list(ids) == list(range(n))
    expected = np.zeros((n, len(KINDS)), dtype=np.int64)
    for batch, kind in batches:
        add = np.bincount(np.asarray(batch, dtype=np.int64), minlength=n)
        over_example = max_queries is not None and bool(
            (expected.sum(axis=1) + add > max_queries).any()
        )
        over_total = max_total is not None and int(expected.sum()) + len(batch) > max_total
        rows_before, events_before = model.rows, len(events)
        x = images(len(batch))
        if over_example or over_total:
            with pytest.raises(BudgetExhausted):
                oracle.query(x, np.asarray(batch, dtype=np.int64), kind)
            assert model.rows == rows_before, "a refused batch was evaluated"
            assert len(events) == events_before, "a refused batch ran the hooks"
        else:
            obs = oracle.query(x, np.asarray(batch, dtype=np.int64), kind)
            assert len(obs) == len(batch)
            expected[:, KINDS.index(kind)] += add
            assert model.rows == rows_before + len(batch)
            if batch:
                assert events[-1] == QueryEvent(kind, len(batch), int(expected.sum()))
        # Exact accounting, per example and per kind, after every batch.
        assert oracle.queries(ids).tolist() == expected.sum(axis=1).tolist()
        assert oracle.total_queries == int(expected.sum())
        for i in range(n):
            assert oracle.queries_by_kind(i) == {
                k.value: int(expected[i, j]) for j, k in enumerate(KINDS)
            }
        if max_queries is not None:
            assert (oracle.queries(ids) <= max_queries).all()
        if max_total is not None:
            assert oracle.total_queries <= max_total
    assert model.rows == oracle.total_queries


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 5),
    spent=st.lists(st.integers(0, 10), min_size=5, max_size=5),
    max_queries=st.none() | st.integers(10, 20),
    max_total=st.none() | st.integers(50, 90),
    cost=st.integers(1, 6),
    reserve=st.integers(0, 3),
)
def test_affordable_rows_can_pay_and_keep_their_reserve(
    n: int,
    spent: list[int],
    max_queries: int | None,
    max_total: int | None,
    cost: int,
    reserve: int,
) -> None:
    oracle = Oracle(CountingModel(), Scores(), max_queries=max_queries, max_total_queries=max_total)
    ids = oracle.register(n)
    for i in range(n):
        if spent[i]:
            oracle.query(images(spent[i]), np.full(spent[i], i), QueryKind.INIT)
    ok = oracle.affordable(ids, cost, reserve=reserve)
    assert ok.shape == (n,)
    winners = ids[ok]
    # Every affordable example pays its cost (one batch for all of them)...
    if len(winners):
        batch = np.repeat(winners, cost)
        oracle.query(images(len(batch)), batch, QueryKind.GRADIENT)
    # ...and can still spend its reserve afterwards.
    if reserve and len(winners):
        batch = np.repeat(winners, reserve)
        oracle.query(images(len(batch)), batch, QueryKind.FINAL)
    # Without a shared total, exactly the examples with cost + reserve left are affordable.
    own = np.array([max_queries is None or spent[i] + cost + reserve <= max_queries for i in ids])
    assert not (ok & ~own).any()
    if max_total is None:
        assert np.array_equal(ok, own)


def test_a_refused_batch_charges_and_evaluates_nothing() -> None:
    model = CountingModel()
    oracle = Oracle(model, Scores(), max_queries=5, max_total_queries=8)
    a, b = oracle.register(2)
    oracle.query(images(4), np.array([a, a, a, b]), QueryKind.GRADIENT)
    # Example a has 2 left: a batch with 3 rows for a is refused whole, b's rows included.
    with pytest.raises(BudgetExhausted, match="per-example"):
        oracle.query(images(4), np.array([b, a, a, a]), QueryKind.GRADIENT)
    assert oracle.queries(np.array([a, b])).tolist() == [3, 1]
    assert model.rows == 4
    # 4 spent of a total of 8: five more rows cross the total even though a and b could pay.
    with pytest.raises(BudgetExhausted, match="total"):
        oracle.query(images(5), np.array([a, a, b, b, b]), QueryKind.NOISE)
    assert oracle.total_queries == 4
    assert model.rows == 4
    oracle.query(images(4), np.array([a, a, b, b]), QueryKind.FINAL)
    assert oracle.queries(np.array([a, b])).tolist() == [5, 3]
    assert oracle.total_queries == 8
    with pytest.raises(BudgetExhausted):
        oracle.query(images(1), np.array([b]), QueryKind.FINAL)
    assert oracle.total_queries == 8


def test_counts_are_exact_per_kind() -> None:
    oracle = Oracle(CountingModel(), Scores())
    ids = oracle.register(3)
    plan = [
        (QueryKind.INIT, [0, 1, 2]),
        (QueryKind.GRADIENT, [0] * 10 + [2] * 4),
        (QueryKind.LINE_SEARCH, [1, 2, 2]),
        (QueryKind.SUCCESS_CHECK, [0, 1]),
        (QueryKind.NOISE, [1] * 7),
        (QueryKind.FINAL, [2]),
        (QueryKind.GRADIENT, [0, 1]),
    ]
    for kind, rows in plan:
        oracle.query(images(len(rows)), np.asarray(rows), kind)
    assert oracle.queries_by_kind(0) == {
        "init": 1,
        "gradient": 11,
        "line_search": 0,
        "success_check": 1,
        "noise": 0,
        "probe": 0,
        "binary_search": 0,
        "transfer": 0,
        "final": 0,
    }
    assert oracle.queries_by_kind(1) == {
        "init": 1,
        "gradient": 1,
        "line_search": 1,
        "success_check": 1,
        "noise": 7,
        "probe": 0,
        "binary_search": 0,
        "transfer": 0,
        "final": 0,
    }
    assert oracle.queries_by_kind(2) == {
        "init": 1,
        "gradient": 4,
        "line_search": 2,
        "success_check": 0,
        "noise": 0,
        "probe": 0,
        "binary_search": 0,
        "transfer": 0,
        "final": 1,
    }
    assert oracle.queries(ids).tolist() == [13, 11, 8]
    assert oracle.total_queries == 32


def test_examples_from_separate_registrations_are_counted_separately() -> None:
    oracle = Oracle(CountingModel(), Scores(), max_queries=3)
    first = oracle.register(2)
    second = oracle.register(1)
    assert second.tolist() == [2]
    oracle.query(images(3), np.array([2, 2, 2]), QueryKind.INIT)
    assert oracle.queries(first).tolist() == [0, 0]
    assert oracle.queries(second).tolist() == [3]
    assert oracle.remaining(np.array([0, 2])).tolist() == [3, 0]


def test_an_empty_batch_is_free() -> None:
    model = CountingModel()
    oracle = Oracle(model, TopK(2), max_queries=1)
    oracle.register(1)
    obs = oracle.query(
        np.zeros((0, *ANALYTIC_SHAPE), np.float32), np.zeros(0, np.int64), QueryKind.INIT
    )
    assert isinstance(obs, TopKObservation)
    assert obs.labels.shape == (0, 2)
    assert oracle.total_queries == 0
    assert model.rows == 0


@pytest.mark.parametrize(
    "view", [Scores(), TopK(1), TopK(3), Labels(1), Labels(4), Label()], ids=repr
)
def test_counts_and_observations_do_not_depend_on_model_chunking(
    view: View, analytic_factory: Callable[[int], CallableClassifier]
) -> None:
    x = images(23, seed=7)
    ids_plan = [
        (QueryKind.INIT, np.arange(3)),
        (QueryKind.GRADIENT, np.repeat(np.arange(3), 5)),
        (QueryKind.FINAL, np.array([2, 0, 1, 2, 0])),
    ]
    results = []
    for batch_size in (1, 3, 64):
        model = analytic_factory(batch_size)
        oracle = Oracle(model, view, max_queries=30)
        oracle.register(3)
        observations: list[Observation] = []
        start = 0
        for kind, ids in ids_plan:
            observations.append(oracle.query(x[start : start + len(ids)], ids, kind))
            start += len(ids)
        counts = [oracle.queries_by_kind(i) for i in range(3)]
        results.append((counts, observations))
    (counts0, obs0), *rest = results
    for counts, observations in rest:
        assert counts == counts0
        for a, b in zip(observations, obs0, strict=True):
            assert type(a) is type(b)
            for f in dataclasses.fields(a):
                assert np.array_equal(getattr(a, f.name), getattr(b, f.name))


# ---------------------------------------------------------------- views


def query_one(view: View, n: int = 4) -> Observation:
    oracle = Oracle(CountingModel(), view)
    ids = oracle.register(n)
    return oracle.query(images(n, seed=3), ids, QueryKind.INIT)


@pytest.fixture
def full_probs(analytic: CallableClassifier) -> FloatArray:
    """What the model says about the images of query_one, unfiltered."""
    return analytic(images(4, seed=3))


def test_scores_view_reveals_the_probability_vectors(full_probs: FloatArray) -> None:
    obs = query_one(Scores())
    assert isinstance(obs, ScoresObservation)
    assert [f.name for f in dataclasses.fields(obs)] == ["probs"]
    assert obs.probs.shape == (4, ANALYTIC_CLASSES)
    assert obs.probs.dtype == np.float32
    assert np.array_equal(obs.probs, full_probs)
    np.testing.assert_allclose(obs.probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk_view_reveals_only_k_labels_and_their_scores(k: int, full_probs: FloatArray) -> None:
    obs = query_one(TopK(k))
    assert isinstance(obs, TopKObservation)
    assert [f.name for f in dataclasses.fields(obs)] == ["labels", "scores"]
    assert obs.labels.shape == (4, k)
    assert obs.scores.shape == (4, k)
    assert obs.labels.dtype == np.int64
    assert not hasattr(obs, "probs")
    p = full_probs
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    assert np.array_equal(obs.labels, order)
    assert np.array_equal(obs.scores, np.take_along_axis(p, order, axis=1))
    # Best first.
    assert (np.diff(obs.scores, axis=1) <= 0).all()
    # The target's rank and score where revealed; -1 and NaN where not.
    assert obs.rank_of(order[:, 0]).tolist() == [0, 0, 0, 0]
    assert obs.rank_of(order[:, -1]).tolist() == [k - 1] * 4
    absent = np.array([next(c for c in range(ANALYTIC_CLASSES) if c not in row) for row in order])
    assert obs.rank_of(absent).tolist() == [-1] * 4
    assert np.isnan(obs.score_of(absent)).all()
    assert np.array_equal(obs.score_of(order[:, -1]), obs.scores[:, -1])


@pytest.mark.parametrize("view", [Labels(1), Labels(3), Label()], ids=repr)
def test_label_views_reveal_no_scores_at_all(view: View, full_probs: FloatArray) -> None:
    obs = query_one(view)
    assert isinstance(obs, LabelsObservation)
    assert [f.name for f in dataclasses.fields(obs)] == ["labels"]
    assert not hasattr(obs, "scores")
    assert not hasattr(obs, "probs")
    k = view.k or 1
    assert obs.labels.shape == (4, k)
    with pytest.raises(ThreatModelError):
        obs.score_of(obs.labels[:, 0])
    assert all(s is None for _, s in obs.topk(0))
    p = full_probs
    assert np.array_equal(obs.labels, np.argsort(-p, axis=1, kind="stable")[:, :k])
    assert np.array_equal(obs.top1(), p.argmax(axis=1))


@pytest.mark.parametrize("view", [Scores(), TopK(1), TopK(3), Labels(2), Label()], ids=repr)
def test_observation_arrays_are_read_only_and_own_their_memory(view: View) -> None:
    obs = query_one(view)
    assert not hasattr(obs, "__dict__")  # __slots__: nothing can be stashed on it
    for f in dataclasses.fields(obs):
        arr = getattr(obs, f.name)
        assert isinstance(arr, np.ndarray)
        assert arr.base is None, f"{f.name} is a view into a larger array"
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[0, 0] = 0
        with pytest.raises(AttributeError):
            setattr(obs, f.name, arr.copy())
    with pytest.raises((AttributeError, TypeError)):
        obs.extra = 1  # type: ignore[union-attr]


def test_view_from_name() -> None:
    assert view_from_name("scores") == Scores()
    assert view_from_name("topk", 3) == TopK(3)
    assert view_from_name("labels", 2) == Labels(2)
    assert view_from_name("label") == Label()
    with pytest.raises(UserInputError, match="unknown view"):
        view_from_name("logits")


@pytest.mark.parametrize(
    "make",
    [lambda: TopK(0), lambda: TopK(-1), lambda: Labels(0), lambda: Label(2), lambda: Label(0)],
)
def test_bad_k_raises_user_input_error(make: Callable[[], View]) -> None:
    with pytest.raises(UserInputError):
        make()


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize("field", ["max_queries", "max_total_queries"])
@pytest.mark.parametrize("value", [0, -1])
def test_budgets_below_one_raise(field: str, value: int) -> None:
    with pytest.raises(UserInputError, match=field):
        Oracle(CountingModel(), Scores(), **{field: value})  # type: ignore[arg-type]


def _with(x: FloatArray, value: float) -> FloatArray:
    y = x.copy()
    y[1, 0, 2, 3] = value
    return y


@pytest.mark.parametrize(
    "value", [np.nan, np.inf, -np.inf, -0.01, 1.01, 255.0], ids=lambda v: f"pixel={v}"
)
def test_invalid_pixels_raise_value_error_and_charge_nothing(value: float) -> None:
    model = CountingModel()
    oracle = Oracle(model, Scores())
    ids = oracle.register(3)
    with pytest.raises(ValueError, match="finite"):
        oracle.query(_with(images(3), value), ids, QueryKind.INIT)
    assert oracle.total_queries == 0
    assert model.rows == 0


def test_pixels_at_the_bounds_are_accepted() -> None:
    oracle = Oracle(CountingModel(), Scores())
    ids = oracle.register(2)
    x = np.stack([np.zeros(ANALYTIC_SHAPE, np.float32), np.ones(ANALYTIC_SHAPE, np.float32)])
    assert len(oracle.query(x, ids, QueryKind.INIT)) == 2


def test_malformed_batches_raise_value_error() -> None:
    oracle = Oracle(CountingModel(), Scores())
    ids = oracle.register(2)
    with pytest.raises(ValueError, match="one id per row"):
        oracle.query(images(3), ids, QueryKind.INIT)
    with pytest.raises(ValueError, match="one id per row"):
        oracle.query(images(2)[0], ids, QueryKind.INIT)
    with pytest.raises(ValueError, match="unregistered"):
        oracle.query(images(2), np.array([0, 2]), QueryKind.INIT)
    with pytest.raises(ValueError, match="unregistered"):
        oracle.query(images(1), np.array([-1]), QueryKind.INIT)
    with pytest.raises(ValueError, match="shape"):
        oracle.query(np.zeros((2, 3, 5, 5), np.float32), ids, QueryKind.INIT)
    assert oracle.total_queries == 0


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_the_model_is_called_in_chunks_of_at_most_batch_size(batch_size: int) -> None:
    model = CountingModel(batch_size=batch_size)
    oracle = Oracle(model, Scores())
    ids = oracle.register(2)
    oracle.query(images(70), np.repeat(ids, 35), QueryKind.GRADIENT)
    assert sum(model.chunks) == 70
    assert max(model.chunks) == min(batch_size, 70)


def test_classifier_rejects_bad_batch_size() -> None:
    with pytest.raises(UserInputError, match="batch_size"):
        CountingModel(batch_size=0)
