"""What decides an attack's next query does not depend on the thread count: a surrogate's
gradient, a torch model's scores and a whole surrogate-guided run give the same bits under one
torch thread and under two (they differed in the last bits before: issue "results a user can
trust")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch

from bbattack import AttackResult, Oracle, Scores, load_image
from bbattack.attacks import registry
from bbattack.attacks.checkpoint import Checkpointer, Every
from bbattack.attacks.transfer.gfcs import surrogate_directions
from bbattack.images import bundled_photos
from bbattack.models import builtin_classifier, load_model
from bbattack.oracle.journal import Journal
from bbattack.surrogates import load_surrogate

pytestmark = pytest.mark.imagenet
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _under(threads: int, fn: Callable[[], T]) -> T:
    torch.set_num_threads(threads)
    return fn()


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    p = bundled_photos()
    return np.stack([load_image(p["chelsea"]), load_image(p["coffee"])])


def test_a_surrogate_gradient_is_the_same_under_one_and_two_threads(photos: np.ndarray) -> None:
    s = [load_surrogate("lite1")]
    n = len(photos)
    targets = np.zeros((n, 1000), bool)
    targets[:, 3] = True

    def directions() -> np.ndarray:
        return surrogate_directions(
            s,
            photos,
            np.zeros(n, np.int64),
            np.zeros(n, bool),
            np.zeros((n, 1000)),
            targets,
            np.full(n, 3, np.int64),
            np.array([285, 967], np.int64),
        )

    assert np.array_equal(_under(2, directions), _under(1, directions))


def test_torch_backend_scores_are_the_same_under_one_and_two_threads(photos: np.ndarray) -> None:
    model = builtin_classifier("efficientnet-lite0")
    assert np.array_equal(_under(2, lambda: model(photos)), _under(1, lambda: model(photos)))


def test_a_transfer_run_is_the_same_under_one_and_two_threads(photos: np.ndarray) -> None:
    target = load_model()
    surrogates = [load_surrogate("lite1")]

    def run() -> tuple[bytes, int]:
        res = registry.build("transfer", eps=0.05).run(
            Oracle(target, Scores(), max_queries=4), photos[:1], 3, seed=0, surrogates=surrogates
        )
        return res.x_adv.tobytes(), res.images[0].queries

    assert _under(2, run) == _under(1, run)


class _Killed(Exception):  # noqa: N818 - a stand-in for SIGKILL
    pass


def test_a_run_killed_under_two_threads_resumes_under_one(
    photos: np.ndarray, tmp_path: Path
) -> None:
    """The journal checks every re-asked query against what was paid: before, the resumed run
    asked another image at query 4 ("differs from the journal") and stopped."""
    target = load_model()
    surrogates = [load_surrogate("lite1")]

    def attempt(d: Path, kill: int | None, resume: bool) -> AttackResult | None:
        journal = Journal(d / "journal.sqlite")
        journal.resume_run(1) if resume else journal.new_run()
        oracle = Oracle(target, Scores(), max_queries=6, journal=journal)
        attack = registry.build("transfer", eps=0.05, round_iters=5)

        def on_step(info: Any) -> None:
            if info.step == kill:
                raise _Killed

        go = attack.resume if resume else attack.run
        try:
            return go(
                oracle, photos[:1], 3, seed=0, surrogates=surrogates, on_step=on_step,
                checkpoints=Checkpointer(d / "ckpt", Every(steps=1)),
            )  # fmt: skip
        except _Killed:
            return None
        finally:
            journal.close()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = _under(1, lambda: attempt(tmp_path / "a", None, False))
    assert _under(2, lambda: attempt(tmp_path / "b", 2, False)) is None
    resumed = _under(1, lambda: attempt(tmp_path / "b", None, True))
    assert whole is not None
    assert resumed is not None
    assert resumed.x_adv.tobytes() == whole.x_adv.tobytes()
    assert resumed.images[0].queries == whole.images[0].queries


def test_onnx_runtime_scores_are_the_same_under_one_and_two_threads(
    photos: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bench worker runs ONNX Runtime on one thread, a single process on all cores: the
    target's answers (and so a case's result) must not depend on it."""
    answers = []
    for threads in ("1", "2"):
        monkeypatch.setenv("BBATTACK_THREADS", threads)
        answers.append(load_model()(photos))
    assert np.array_equal(answers[0], answers[1])
