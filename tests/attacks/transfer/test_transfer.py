"""The surrogate-guided attack on the digits MLP, with a CNN trained on the same digits as its
surrogate (another architecture, as a user's local model is against a cloud API): it succeeds
on most cases, spends exactly the queries it reports, never passes its budget, refuses the
target as a surrogate, and a batch equals single runs. How it compares with the
surrogate-free attacks is measured in the benchmarks, not asserted here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bbattack import Labels, Oracle, Scores, TopK, TorchClassifier, View
from bbattack.attacks import registry
from bbattack.attacks.transfer._transfer import SurrogateMeter, metered
from bbattack.attacks.transfer.transfer import TransferAttack
from bbattack.errors import UserInputError
from bbattack.oracle import Forward, Middleware, Observation, Query
from bbattack.surrogates import Surrogate, as_surrogate, resolve_surrogates, surrogate_block
from support import Digits

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


@pytest.fixture(scope="module")
def cnn(digits_cnn: TorchClassifier, digits_torch: TorchClassifier) -> list[Surrogate]:
    return resolve_surrogates([digits_cnn], digits_torch)


@pytest.mark.parametrize(
    ("view", "targeted"),
    [(Scores(), True), (TopK(1), True), (Scores(), False), (TopK(1), False)],
    ids=["ql-targeted", "pi-targeted", "ql-untargeted", "pi-untargeted"],
)
def test_the_surrogate_guided_attack_succeeds_on_most_cases(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
    view: View,
    targeted: bool,
) -> None:
    """How it compares with the surrogate-free attacks is measured in the benchmarks: the
    trained weights, and so the exact counts, differ slightly from one CPU to another."""
    x, target, start = cases
    t = target if targeted else None
    s = start if view.kind != "scores" else None
    oracle = Oracle(digits_torch, view, max_queries=1_000)
    res = TransferAttack(eps=0.2).run(oracle, x, t, start=s, surrogates=cnn)
    ok = np.array([r.success for r in res.images])
    # measured: 15/16, 15/16 and 16/16, most within 10 queries of 1,000
    assert ok.sum() >= 12
    assert [r.queries for r in res.images] == oracle.queries().tolist()
    for r in res.images:
        assert sum(r.queries_by_kind.values()) == r.queries <= 1_000
        assert r.queries_by_kind["final"] == 1
    d = np.abs(res.x_adv.astype(np.float64) - x).reshape(len(x), -1).max(axis=1)
    assert (d[ok] <= 0.2 + 1e-6).all()
    assert np.array_equal(np.rint(res.x_adv * 255) / 255, res.x_adv)
    hit = digits_torch(res.x_adv).argmax(axis=1)
    want = hit == target if targeted else hit != digits_torch(x).argmax(axis=1)
    assert ok.tolist() == (want & (d <= 0.2 + 1e-6)).tolist()


@pytest.mark.parametrize(
    ("view", "targeted"),
    [(Scores(), True), (TopK(1), True), (Labels(1), True), (Labels(1), False), (TopK(2), False)],
    ids=["ql", "pi", "lo-targeted", "lo-untargeted", "pi-untargeted"],
)
def test_the_oracle_saw_exactly_the_queries_reported(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
    view: View,
    targeted: bool,
) -> None:
    x, target, start = cases
    oracle = Oracle(digits_torch, view, max_queries=300)
    res = TransferAttack(eps=0.1).run(
        oracle, x[:6], target[:6] if targeted else None, start=start[:6], surrogates=cnn
    )
    assert [r.queries for r in res.images] == oracle.queries().tolist()
    for r in res.images:
        assert sum(r.queries_by_kind.values()) == r.queries <= 300
        assert r.queries_by_kind["transfer"] >= 1  # the surrogates' candidate, checked once
        assert r.queries_by_kind["final"] == 1
    hit = digits_torch(res.x_adv).argmax(axis=1)
    want = hit == target[:6] if targeted else hit != digits_torch(x[:6]).argmax(axis=1)
    d = np.abs(res.x_adv.astype(np.float64) - x[:6]).reshape(6, -1).max(axis=1)
    assert [r.success for r in res.images] == (want & (d <= 0.1 + 1e-6)).tolist()
    assert res.surrogates == [{"name": "digits-cnn", "family": None, "weights": cnn[0].weights_id}]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(budget=st.integers(2, 60), threat=st.sampled_from(["ql", "pi", "lo"]))
def test_the_budget_is_never_exceeded(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
    budget: int,
    threat: str,
) -> None:
    x, target, start = cases
    view = {"ql": Scores(), "pi": TopK(1), "lo": Labels(1)}[threat]
    oracle = Oracle(digits_torch, view, max_queries=budget)
    if budget < 3:  # the clean query, the transfer candidate, the final check
        with pytest.raises(UserInputError):
            TransferAttack(eps=0.05).run(oracle, x[:3], target[:3], surrogates=cnn)
        assert oracle.total_queries == 0
        return
    res = TransferAttack(eps=0.05, iters=5).run(
        oracle, x[:3], target[:3], start=start[:3], surrogates=cnn
    )
    assert all(r.queries <= budget for r in res.images)
    assert oracle.queries().tolist() == [r.queries for r in res.images]


def test_a_batch_equals_single_runs_and_runs_repeat(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
) -> None:
    x, target, _ = cases
    attack = TransferAttack(eps=0.1)

    def run(i: slice) -> object:
        return attack.run(
            Oracle(digits_torch, Scores(), max_queries=200),
            x[i],
            target[i],
            seed=list(range(8))[i],
            surrogates=cnn,
        )

    batch = run(slice(0, 4))
    again = run(slice(0, 4))
    singles = [run(slice(i, i + 1)) for i in range(4)]
    assert np.array_equal(batch.x_adv, again.x_adv)  # type: ignore[attr-defined]
    for i, one in enumerate(singles):
        assert np.array_equal(batch.x_adv[i], one.x_adv[0])  # type: ignore[attr-defined]
        a, b = batch.images[i], one.images[0]  # type: ignore[attr-defined]
        assert (a.success, a.queries, a.queries_by_kind) == (
            b.success,
            b.queries,
            b.queries_by_kind,
        )


def test_the_target_itself_is_refused_as_a_surrogate(digits_torch: TorchClassifier) -> None:
    with pytest.raises(UserInputError, match="target's weights"):
        resolve_surrogates([digits_torch], digits_torch)
    # Another wrapper of the same weights is the same model.
    twin = TorchClassifier(digits_torch.module, (1, 8, 8), 10, mean=0.1, name="twin")
    with pytest.raises(UserInputError, match="target's weights"):
        resolve_surrogates([twin], digits_torch)
    with pytest.raises(UserInputError, match="target's weights"):
        resolve_surrogates(["lite0"], None, "efficientnet-lite0")


def test_surrogates_only_go_to_attacks_that_use_them(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
) -> None:
    x, target, _ = cases
    oracle = Oracle(digits_torch, Scores(), max_queries=100)
    with pytest.raises(UserInputError, match="does not use surrogates"):
        registry.build("square").run(oracle, x[:1], target[:1], surrogates=cnn)
    with pytest.raises(UserInputError, match="surrogate-guided"):
        TransferAttack().run(oracle, x[:1], target[:1])
    assert oracle.total_queries == 0


def test_surrogate_calls_cost_no_queries(
    digits_torch: TorchClassifier,
    digits_cnn: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
) -> None:
    """The surrogate is called many times per candidate; the oracle counts only the target."""
    calls = {"n": 0}

    class Counting(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            out: torch.Tensor = self.inner(z)
            return out

    sur = as_surrogate(Counting(digits_cnn.normalized_module()), "counting")
    x, target, _ = cases
    oracle = Oracle(digits_torch, Scores(), max_queries=50)
    res = TransferAttack(eps=0.1, iters=20).run(oracle, x[:2], target[:2], surrogates=[sur])
    assert calls["n"] >= 20
    assert oracle.total_queries == sum(r.queries for r in res.images) <= 100


def test_results_say_whether_a_surrogate_shares_the_target_family(
    digits_torch: TorchClassifier, digits_cnn: TorchClassifier
) -> None:
    block = surrogate_block(resolve_surrogates([digits_cnn], digits_torch), digits_torch)
    assert block["same_family"] is False
    assert block["surrogates"][0]["name"] == "digits-cnn"


class _Labels:
    """A label API stand-in: nothing is asked of it here."""

    input_shape = (3, 8, 8)

    def annotate(self, x: FloatArray) -> list[list[tuple[str, float]]]:
        raise AssertionError("no query is needed to map labels to classes")


def test_label_api_labels_map_to_the_surrogates_imagenet_classes() -> None:
    from bbattack.attacks.transfer._transfer import class_masks
    from bbattack.targets import LabelTarget

    target = LabelTarget(_Labels())
    oracle = Oracle(target, TopK(5), max_queries=10)
    ids = np.array([target.class_names.resolve(s) for s in ("Crossword", "Dog")] + [-1])
    m = class_masks(oracle, ids, 1000)
    assert np.flatnonzero(m[0]).tolist() == [918]  # crossword puzzle
    assert 100 < m[1].sum() < 200  # every dog breed (ImageNet has 118)
    assert m[1, 207]
    assert not m[1, 281]
    assert not m[2].any()
    with pytest.raises(UserInputError, match="no ImageNet class"):
        class_masks(oracle, np.array([target.class_names.resolve("Qwerty zxcv")]), 1000)
    assert oracle.total_queries == 0


def test_a_surrogate_with_other_classes_is_refused(
    digits_torch: TorchClassifier, cases: tuple[FloatArray, IntArray, FloatArray]
) -> None:
    x, target, _ = cases
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 12))
    oracle = Oracle(digits_torch, Scores(), max_queries=50)
    with pytest.raises(UserInputError, match="12 classes and the target 10"):
        TransferAttack().run(oracle, x[:1], target[:1], surrogates=[as_surrogate(wide, "wide")])
    assert oracle.total_queries == 0


def test_calibration_makes_the_ensemble_agree_with_what_the_target_revealed() -> None:
    from bbattack.attacks.transfer._transfer import calibration
    from bbattack.oracle import LabelsObservation, ScoresObservation, TopKObservation

    rng = np.random.default_rng(0)
    logp = np.log(rng.dirichlet(np.ones(6), size=3)).astype(np.float32)
    probs = rng.dirichlet(np.ones(6), size=3).astype(np.float32)
    target = np.array([0, 1, 2])

    def calibrated(b: FloatArray) -> NDArray[np.float64]:
        z = logp.astype(np.float64) + b
        return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))

    # Scores: the calibrated ensemble is the target's distribution.
    full = calibrated(calibration(ScoresObservation(probs), logp, target))
    np.testing.assert_allclose(np.exp(full), probs, atol=1e-5)
    # Top-k: only the revealed classes move.
    labels = np.array([[3, 1], [2, -1], [5, 0]])
    scores = np.array([[0.5, 0.2], [0.9, 0.0], [0.3, 0.1]], np.float32)
    b = calibration(TopKObservation(labels, scores), logp, target)
    assert np.flatnonzero(b[0]).tolist() == [1, 3]
    assert np.flatnonzero(b[1]).tolist() == [2]
    np.testing.assert_allclose(b[0, 3], np.log(0.5) - logp[0, 3], rtol=1e-6)
    # Labels: the revealed winner leads the ensemble, unless it is the target itself.
    won = np.array([[4], [1], [3]])
    z = logp + calibration(LabelsObservation(won), logp, target)
    assert z[0].argmax() == 4
    assert z[2].argmax() == 3
    np.testing.assert_array_equal(z[1], logp[1])  # the target won: nothing to push down


def test_bases_weight_nudges_change_the_candidates_and_repeat(
    digits: Digits,
    digits_torch: TorchClassifier,
    digits_cnn: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
) -> None:
    torch.manual_seed(2)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(digits.x), torch.from_numpy(digits.y)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(linear(xt), yt).backward()  # type: ignore[no-untyped-call]
        opt.step()
    sur = resolve_surrogates([digits_cnn, as_surrogate(linear.eval(), "linear")], digits_torch)
    x, target, _ = cases

    def run(step: float) -> FloatArray:
        res = TransferAttack(eps=0.05, weight_step=step).run(
            Oracle(digits_torch, Scores(), max_queries=12), x[:6], target[:6], surrogates=sur
        )
        assert all(r.queries <= 12 for r in res.images)
        return res.x_adv

    nudged = run(0.3)
    np.testing.assert_array_equal(nudged, run(0.3))
    assert not np.array_equal(nudged, run(0.0))


def test_a_stuck_label_only_shrink_goes_on_with_hopskipjump_when_asked(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
) -> None:
    x, target, start = cases
    kinds = []
    for stuck in ("stop", "hsj"):
        oracle = Oracle(digits_torch, Labels(1), max_queries=400)
        res = TransferAttack(eps=0.02, give_up=2, stuck=stuck, photo_start="guided").run(
            oracle, x[:4], target[:4], start=start[:4], surrogates=cnn
        )
        assert [r.queries for r in res.images] == oracle.queries().tolist()
        kinds.append([r.queries_by_kind["probe"] for r in res.images])
        if stuck == "stop":
            assert {r.stop_reason for r in res.images} <= {"stalled", "success"}
    assert kinds[0] == [0, 0, 0, 0]
    assert max(kinds[1]) > 0  # HopSkipJump's probes


@pytest.mark.parametrize("view", [TopK(1), Labels(1)], ids=["pi", "lo"])
def test_from_the_start_image_the_query_attack_goes_on_unless_guided(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
    view: View,
) -> None:
    """No start radius (none given): every image that the rounds leave unsolved starts from
    its start image, where PI-Square (radius probes, ``init``) or HopSkipJump (``probe``)
    goes on, or the surrogate-guided shrink (more ``transfer`` candidates) when asked."""
    x, target, start = cases
    spent = {}
    for photo_start in ("query", "guided"):
        oracle = Oracle(digits_torch, view, max_queries=300)
        res = TransferAttack(
            eps=0.02, rounds=2, start_radii=(), give_up=2, photo_start=photo_start
        ).run(oracle, x[:4], target[:4], start=start[:4], surrogates=cnn)
        assert [r.queries for r in res.images] == oracle.queries().tolist()
        assert all(r.queries <= 300 for r in res.images)
        spent[photo_start] = [r.queries_by_kind for r in res.images]
    own = "init" if view.kind == "topk" else "probe"
    floor = 2 if own == "init" else 0  # the clean query and the start image's check
    assert all(q["transfer"] <= 2 for q in spent["query"])  # the rounds' candidates only
    assert max(q[own] for q in spent["query"]) > floor
    assert max(q["transfer"] for q in spent["guided"]) > 2
    assert max(q[own] for q in spent["guided"]) == floor


def test_the_surrogate_work_is_metered(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
) -> None:
    """What a progress bar and the bench report: every iteration, every crafted image."""
    x, target, _ = cases
    seen: list[tuple[int, int]] = []
    meter = SurrogateMeter(on_iteration=lambda m, done, of: seen.append((done, of)))
    oracle = Oracle(digits_torch, Scores(), max_queries=200)
    with metered(meter):
        TransferAttack(eps=0.2, iters=5, round_iters=3).run(
            oracle, x[:2], target[:2], surrogates=cnn
        )
    assert seen[:5] == [(i, 5) for i in range(1, 6)]
    assert meter.iterations == len(seen)
    assert meter.candidates >= 2  # the first candidate of both images at least
    assert meter.per_candidate() is not None
    # Outside the block nothing is counted.
    TransferAttack(eps=0.2, iters=5).run(
        Oracle(digits_torch, Scores(), max_queries=50), x[:1], target[:1], surrogates=cnn
    )
    assert meter.iterations == len(seen)


class _Record(Middleware):
    """Keeps each query's kind and images (the test's record)."""

    name = "record"

    def __init__(self) -> None:
        self.seen: list[tuple[str, FloatArray]] = []

    def handle(self, query: Query, forward: Forward) -> Observation:
        self.seen.append((str(query.kind), np.array(query.x)))
        return forward(query.x)


def test_the_rays_hand_off_starts_from_the_papers_ray_not_a_candidates_signs(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
) -> None:
    """Untargeted under top-1 scores with ``topk_handoff = "rays"``, the rounds' best
    candidate (the lowest clean score) is handed to RayS; its first ray is all +1 about the
    clean image, as RayS's own."""
    x, _, _ = cases
    rec = _Record()
    oracle = Oracle(digits_torch, TopK(1), max_queries=40, middleware=[rec])
    attack = TransferAttack(eps=0.01, rounds=2, iters=3, topk_handoff="rays")
    res = attack.run(oracle, x[:1], None, surrogates=cnn)
    assert not res.images[0].success  # a radius no candidate reaches: RayS takes over
    kinds = [k for k, _ in rec.seen]
    first = kinds.index("probe")
    assert kinds[1:first] == ["transfer"] * (first - 1)
    ray = rec.seen[first][1][0] - x[0]
    assert (ray >= 0).all()  # +1 everywhere, clipped at the top
    assert ray.max() > 0


def test_untargeted_under_top1_scores_the_hand_off_is_square_from_the_best_candidate(
    digits_torch: TorchClassifier,
    cases: tuple[FloatArray, IntArray, FloatArray],
    cnn: list[Surrogate],
) -> None:
    """By default the untargeted PI hand-off is Square on the shown clean score: after the
    candidates come Square's steps (no RayS probes), each a window's change of the iterate."""
    x, _, _ = cases
    rec = _Record()
    oracle = Oracle(digits_torch, TopK(1), max_queries=40, middleware=[rec])
    res = TransferAttack(eps=0.01, rounds=2, iters=3).run(oracle, x[:1], None, surrogates=cnn)
    assert not res.images[0].success  # a radius no candidate reaches: Square takes over
    kinds = [k for k, _ in rec.seen]
    assert "probe" not in kinds
    first = kinds.index("line_search")
    assert kinds[1:first] == ["transfer"] * (first - 1)
    assert kinds[first:-1] == ["line_search"] * (len(kinds) - 1 - first)
    assert kinds[-1] == "final"
    assert np.abs(rec.seen[first][1][0] - x[0]).max() <= 0.01 + 1e-6
