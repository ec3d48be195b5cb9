"""``bbattack replay`` vouches for consistency, not for what the target answered.

A swapped adv.png fails the replay and names the file. A journal whose last row was forged
(its scores edited, its chain link recomputed: the chain has no key) with result.json
rewritten to claim success replays as consistent, and says that this is no proof;
``replay --verify`` asks the real model once and catches it. An honest run replays and
verifies, paying exactly one query. All on the fake ImageNet-shaped colour model of
crash_driver (its classes follow the mean colour)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

import bbattack.cli._replay_verify as cli_verify
import bbattack.cli.attack as cli_attack
from bbattack import CallableClassifier, imagenet_classes
from bbattack.attacks import registry
from bbattack.cli import main
from bbattack.cli._rundir import RunRecord
from bbattack.cli._session import result_blocks
from bbattack.oracle import Oracle, Scores
from bbattack.oracle._rows import Answer, chain_next
from bbattack.oracle.journal import Journal
from bbattack.oracle.replay import ReplayTarget, disagreement
from bbattack.service import create_app
from bbattack.service.runner import serve_in_thread
from crash_driver import colour_logits, colour_model

TENCH = 0
KEY = "replay-proof-key-01"

# A targeted score attack (Square): espresso is in reach of grey; tench (class 0, score 0) never is.
ATTACK = ["--eps", "0.05", "--max-queries", "200", "--seed", "0"]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


Here = Callable[[list[str]], Ran]


@pytest.fixture
def calls() -> list[int]:
    """How many images the colour model was asked about, all told."""
    return [0]


@pytest.fixture
def here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], calls: list[int]
) -> Here:
    """``bbattack`` in this process; the attack and ``replay --verify`` load the colour model."""

    def counted(x: NDArray[np.float32]) -> NDArray[np.float32]:
        calls[0] += len(x)
        return colour_logits(x)

    model = CallableClassifier(
        counted, (3, 224, 224), 1000, class_names=imagenet_classes(), name="colour"
    )
    monkeypatch.setattr(cli_attack, "load_model", lambda name="lite0", backend="auto": model)
    monkeypatch.setattr(cli_verify, "load_model", lambda name="lite0", backend="auto": model)

    def run(args: list[str]) -> Ran:
        capsys.readouterr()
        rc = main(args)
        got = capsys.readouterr()
        return Ran(rc, got.out, got.err)

    return run


@pytest.fixture
def grey(tmp_path: Path) -> str:
    """A grey image: a golden retriever, just (espresso is a close second)."""
    path = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (130, 128, 128)).save(path)
    return str(path)


def attacked(here: Here, grey: str, out: Path, target: str = "espresso") -> dict[str, Any]:
    done = here(["attack", grey, *ATTACK, "--target", target, "--out", str(out)])
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads((out / "result.json").read_text())
    return doc


def one_line(ran: Ran) -> str:
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    return lines[0]


def journal_rows(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])


def forge_last_row(journal: Path, cls: int) -> None:
    """What a forger with the files can do: make ``cls`` the top score of the last (final)
    row, and recompute that row's chain link (the chain has no key)."""
    with sqlite3.connect(journal) as db:
        row = db.execute(
            "SELECT seq, example, kind, digest, labels, scores, status, error FROM queries "
            "ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, ex, kind, digest, labels, scores, status, error = row
        assert kind == "final"
        (prev,) = db.execute("SELECT chain FROM queries WHERE seq = ?", (seq - 1,)).fetchone()
        p = np.frombuffer(scores, "<f4").copy()
        top = int(p.argmax())
        p[[top, cls]] = p[[cls, top]]
        forged = Answer(labels, p.tobytes())
        link = chain_next(prev, seq, ex, kind, digest, status, forged, error)
        db.execute(
            "UPDATE queries SET scores = ?, chain = ? WHERE seq = ?", (p.tobytes(), link, seq)
        )


def replayed_doc(run: Path) -> dict[str, Any]:
    """result.json as the package builds it from a replay of ``run``'s journal: what a forger
    who holds the files (and the package) writes after editing the journal."""
    rec, x, start = RunRecord.read(run)
    cfg = rec.config
    journal = Journal(rec.journal_path(run), read_only=True)
    try:
        journal.replay_run(rec.journal_run)
        target = ReplayTarget(journal, rec.journal_run)
        oracle = Oracle(target, Scores(), max_queries=cfg["max_queries"], journal=journal)
        attack = registry.build(cfg["attack"], **cfg["attack_config"])
        result = attack.run(
            oracle, x, rec.target_class, seed=cfg["seed"], start=start, success=cfg["success"]
        )
        last, head = journal.position, journal.chain_head()
        blocks = result_blocks(rec, journal.stats(), last, head, [], None)
    finally:
        journal.close()
    return {**result.image_json(0), **blocks, "wall_time_s": 1.0}


def test_a_swapped_adv_png_fails_the_replay_and_names_the_file(
    here: Here, grey: str, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    attacked(here, grey, run)
    assert here(["replay", str(run)]).returncode == 0
    honest = (run / "adv.png").read_bytes()
    # Another photo of the same size, and the same image one pixel off.
    Image.new("RGB", (224, 224), (100, 160, 100)).save(run / "adv.png")
    swapped = here(["replay", str(run)])
    assert swapped.returncode == 2
    line = one_line(swapped)
    assert line.startswith(
        f"error: {run}/adv.png does not match the image of the journal's final query (row"
    )
    assert "u8:" in line
    (run / "adv.png").write_bytes(honest)
    a = np.asarray(Image.open(run / "adv.png")).copy()
    a[0, 0, 0] ^= 1
    Image.fromarray(a).save(run / "adv.png")
    assert "adv.png does not match" in one_line(here(["replay", str(run)]))


def test_an_adv_array_file_is_checked_like_adv_png(here: Here, grey: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    attacked(here, grey, run)
    adv = np.asarray(Image.open(run / "adv.png")).transpose(2, 0, 1)[None]
    np.savez(run / "adv.npz", x_adv=adv.astype(np.float32) / np.float32(255.0), x0=adv * 0)
    assert here(["replay", str(run)]).returncode == 0  # x0 is not an adversarial image
    np.savez(run / "adv.npz", x_adv=(adv // 2).astype(np.float32) / np.float32(255.0))
    bad = here(["replay", str(run)])
    assert bad.returncode == 2
    assert one_line(bad).startswith(f"error: {run}/adv.npz[x_adv] does not match")


def test_a_forged_journal_is_consistent_but_not_proof_and_verify_catches_it(
    here: Here, grey: str, tmp_path: Path, calls: list[int]
) -> None:
    run = tmp_path / "run"
    honest = attacked(here, grey, run, "tench")
    assert honest["success"] is False
    forge_last_row(run / "journal.sqlite", TENCH)
    stale = here(["replay", str(run)])  # result.json still says what the journal did
    assert stale.returncode == 2
    assert "differs from its result.json" in one_line(stale)
    doc = replayed_doc(run)  # the forger rewrites result.json to match
    (run / "result.json").write_text(json.dumps(doc, indent=2) + "\n")
    assert doc["success"] is True, {k: doc[k] for k in ("stop_reason", "final_topk", "linf")}
    assert doc["final_topk"][0]["id"] == TENCH
    before = calls[0]
    plain = here(["replay", str(run)])
    assert plain.returncode == 0, plain.stderr
    text = " ".join(plain.stdout.split())
    assert "consistency, not proof" in text
    assert "the chain has no key" in text.lower()
    assert calls[0] == before  # a replay asks nothing
    verified = here(["replay", str(run), "--verify"])
    assert verified.returncode == 2
    line = one_line(verified)
    assert line.startswith("error: --verify: the target does not answer the final query")
    assert "tench" in line
    assert "golden retriever" in line.casefold()
    assert calls[0] == before + 1


def test_an_honest_run_replays_and_verifies_with_one_query(
    here: Here, grey: str, tmp_path: Path, calls: list[int]
) -> None:
    run = tmp_path / "run"
    doc = attacked(here, grey, run)
    assert doc["success"] is True, {k: doc[k] for k in ("stop_reason", "final_topk", "linf")}
    rows = journal_rows(run / "journal.sqlite")
    before = calls[0]
    plain = here(["replay", str(run)])
    assert plain.returncode == 0, plain.stderr
    assert "reproduced" in plain.stdout
    assert "adv.png is the image of the journal's final query (row" in " ".join(
        plain.stdout.split()
    )
    assert calls[0] == before
    verified = here(["replay", str(run), "--verify"])
    assert verified.returncode == 0, verified.stderr
    text = " ".join(verified.stdout.split())
    assert "verified: colour answered the final query again as the journal says" in text
    assert "1 query sent" in text
    assert calls[0] == before + 1  # exactly one query, paid to the model
    assert journal_rows(run / "journal.sqlite") == rows  # and the journal is left as it was
    as_json = json.loads(here(["replay", str(run), "--verify", "--json"]).stdout)
    assert as_json["replay"]["proof"] is False
    assert as_json["replay"]["verify"]["queries"] == 1


def test_verify_asks_the_label_api_once_with_the_journals_label_ids(
    here: Here, grey: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    green = tmp_path / "green.png"
    Image.new("RGB", (32, 32), (100, 160, 100)).save(green)
    app = create_app(colour_model(), api_keys=[KEY])
    run = tmp_path / "run"
    with serve_in_thread(app) as url:
        done = here(
            [
                *["attack", grey, "--threat", "pi", "--target", "Cat", "--success", "topk"],
                *["--start-image", str(green), "--max-queries", "100", "--seed", "0"],
                *["--endpoint", f"{url}/v1/images:annotate", "--api-key", KEY, "--out", str(run)],
            ]
        )
        assert done.returncode == 0, done.stderr
        billed = int(app.state.usage.get(KEY, 0))
        assert here(["replay", str(run)]).returncode == 0
        assert int(app.state.usage.get(KEY, 0)) == billed  # a replay sends nothing
        monkeypatch.setenv("BBATTACK_API_KEY", KEY)
        verified = here(["replay", str(run), "--verify"])
        assert verified.returncode == 0, verified.stderr
        assert int(app.state.usage.get(KEY, 0)) == billed + 1
        assert "1 query sent, $0.0015 at $1.50/1000" in " ".join(verified.stdout.split())
        monkeypatch.setenv("BBATTACK_API_KEY", "wrong-key")
        refused = here(["replay", str(run), "--verify"])
        assert refused.returncode == 2
        assert int(app.state.usage.get(KEY, 0)) == billed + 1


def ranked(labels: list[int], scores: list[float] | None) -> Answer:
    """A top-k (or, without scores, a label list) answer as the journal stores it."""
    sc = None if scores is None else np.asarray(scores, "<f4").tobytes()
    return Answer(np.asarray(labels, "<i8").tobytes(), sc)


def test_answers_agree_within_the_tolerance_and_at_a_top_k_edge() -> None:
    def differ(said: Answer, now: Answer, kind: str = "topk") -> str | None:
        return disagreement(kind, said, now, 1e-3, str)

    said = ranked([5, 7, 9], [0.5, 0.3, 0.1])
    assert differ(said, ranked([5, 7, 9], [0.5004, 0.3, 0.1])) is None
    assert differ(said, ranked([5, 7, 2], [0.5, 0.3, 0.1])) is None  # 9 and 2 tie at the edge
    tie = ranked([5, 7], [0.5, 0.4995])
    assert differ(tie, ranked([7, 5], [0.5, 0.4995])) is None  # a tie at the top
    assert (
        differ(said, ranked([7, 5, 9], [0.6, 0.3, 0.1]))
        == "its top-1 is 7 (0.6), the journal's 5 (0.5)"
    )
    assert (
        differ(said, ranked([5, 7, 2], [0.5, 0.3, 0.2])) == "it shows 2 (0.2), the journal does not"
    )
    assert differ(said, ranked([5, 7, 9], [0.5, 0.3, 0.12])) == "it scores 9 0.12, the journal 0.1"
    labels = ranked([5, 7, 9], None)
    assert differ(labels, ranked([5, 9, 7], None), "labels") is None
    assert differ(labels, ranked([5, 7, 3], None), "labels") == "the labels differ (3, 9)"
    probs = np.asarray([0.2, 0.7, 0.1], "<f4")
    moved = np.asarray([0.21, 0.67, 0.12], "<f4")
    full, other = Answer(None, probs.tobytes()), Answer(None, moved.tobytes())
    assert differ(full, full, "scores") is None
    assert differ(full, other, "scores") == "it scores 1 0.67, the journal 0.7"
