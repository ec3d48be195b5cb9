"""``bbattack replay DIR``: re-run a finished attack from its query journal, without its
target, and check that the run's files agree with each other: the journal's hash chain holds
from the first row to the last; the replay asks exactly the journal's queries, in order, and
reproduces result.json and trace.jsonl; adv.png (and any ``adv*`` array file) holds the image
of the journal's final, verified query.

That is evidence of consistency, not proof of what the target answered. The chain has no
key: whoever holds the files can edit the journal, recompute every link after the edit and
rewrite result.json from the replay, and the forgery replays like an honest run. What the
replay does rule out is a file swapped or edited on its own (an image, a result, a row).
``--verify`` asks the run's target the final query again (one query, billed by a paid API)
and compares its answer with the journal's: that checks what the target says, for that query.

Exit codes: 0 consistent (with --verify: and the target agrees); 2 one line at the first thing
that does not hold (a journal row, a field of result.json, a file, the target's answer), as
for a user error; 3 --verify could not reach a label API.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from numpy.typing import NDArray

from ..attacks import registry
from ..defenses import from_config
from ..errors import UserInputError
from ..oracle import Labels, Oracle, TopK, View
from ..oracle._rows import digests
from ..oracle.journal import Journal
from ..oracle.replay import ChainCheck, ReplayTarget, check_chain
from ..oracle.views import threat_view
from ..provenance import ENVIRONMENT_KEYS
from ..results import AttackResult
from ..surrogates import resolve_surrogates
from ..targets import Vocabulary
from ._common import Threat, app, finite, guard, out
from ._replay_verify import SCORE_TOLERANCE, Verified, verify_final
from ._rundir import RunRecord, first_difference
from ._session import result_blocks

__all__ = ["NOT_PROOF", "comparable", "replay", "replay_run"]

# What a replay cannot reproduce: how long things took, and the HTTP traffic of the session.
_TIMING = ("wall_time_s",)
_TRANSPORT = ("http_calls", "retries")

NOT_PROOF = (
    "This is evidence of consistency, not proof: the run's files agree with each other and "
    "the journal was not edited without recomputing its hash chain. The chain has no key, so "
    "whoever holds these files can recompute it; what the target answered is not shown. "
    "--verify asks the target the final query again (one query)."
)


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """result.json without its timings, the HTTP transport counters and the description of
    the machine and packages it ran on."""
    d = {k: v for k, v in doc.items() if k not in _TIMING}
    if isinstance(d.get("remote"), dict):
        d["remote"] = {k: v for k, v in d["remote"].items() if k not in _TRANSPORT}
    if isinstance(d.get("provenance"), dict):
        d["provenance"] = {k: v for k, v in d["provenance"].items() if k not in ENVIRONMENT_KEYS}
    return d


@dataclass(frozen=True)
class Replayed:
    """A run played back from its journal, and what a check of its files needs."""

    result: AttackResult
    doc: dict[str, Any]
    chain: ChainCheck
    view: View
    eight_bit: bool
    vocabulary: list[str] | None  # a label API's label strings, by the journal's ids


def _view(cfg: dict[str, Any]) -> View:
    """The view the run was made through."""
    threat, k = Threat(cfg["threat"]), cfg["k"]
    if cfg.get("remote") is not None and threat is not Threat.ql:  # ql: every class's score
        return TopK(k) if threat is Threat.pi else Labels(k or 10)
    return threat_view(threat.value, k or 1)


def _rerun(
    run_dir: Path,
    rec: RunRecord,
    x: NDArray[np.float32],
    start: NDArray[np.float32] | None,
    transport: dict[str, int],
) -> Replayed:
    """Walk the chain, then run the attack again with the journal answering every query."""
    cfg = rec.config
    attack = registry.build(str(cfg["attack"]), **cfg["attack_config"])
    view = _view(cfg)
    journal = Journal(rec.journal_path(run_dir), read_only=True)
    try:
        chain = check_chain(str(journal.path), rec.journal_run)
        journal.replay_run(rec.journal_run)
        info = journal.run_info(rec.journal_run)
        layers = from_config(cfg.get("defense"))  # fresh: they see the run again from its start
        oracle = Oracle(
            ReplayTarget(journal, rec.journal_run),
            view,
            max_queries=int(cfg["max_queries"]),
            journal=journal,
            middleware=layers,
        )
        if isinstance(oracle.class_names, Vocabulary):  # whether a label's ancestors count
            oracle.class_names.count_ancestors = bool((cfg.get("remote") or {}).get("ancestors"))
        surrogates = resolve_surrogates(cfg["surrogates"], None, cfg.get("model"))
        result = attack.run(
            oracle,
            x,
            rec.target_class,
            seed=int(cfg["seed"]),
            start=start,
            success=cfg["success"],
            surrogates=surrogates,
        )
        stats, last, head = journal.stats(), journal.position, journal.chain_head()
        vocabulary = journal.labels() if info.get("vocabulary") else None
    finally:
        journal.close()
    if last != stats.last_seq:
        raise UserInputError(
            f"replay of {run_dir} asked {last} queries; the journal holds {stats.last_seq}"
        )
    blocks = result_blocks(rec, stats, last, head, surrogates, transport, layers)
    doc = {**result.image_json(0), **blocks}
    eight_bit = bool(info.get("eight_bit", False))
    return Replayed(result, doc, chain, view, eight_bit, vocabulary)


def _png_digest(path: Path, eight_bit: bool) -> str:
    """The journal's digest of the image a PNG holds, pixel for pixel (no resizing)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserInputError(f"{path}: cannot be read as an image ({e})") from None
    chw = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if chw.dtype != np.uint8:
        return f"a {a.dtype} image, not 8-bit"
    return digests((chw.astype(np.float32) / np.float32(255.0))[None], eight_bit)[0]


def _array_digests(path: Path, eight_bit: bool) -> list[tuple[str, list[str]]]:
    """An ``adv*.npy`` file's images, or those of each array of an .npz named ``*adv*``: (where,
    the digest of each image)."""
    try:
        if path.suffix == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {f"[{k}]": z[k] for k in z.files if "adv" in k}
    except (OSError, ValueError) as e:
        raise UserInputError(f"{path}: cannot be read ({e})") from None
    found = []
    for key, arr in arrays.items():
        a = np.asarray(arr)
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / np.float32(255.0)
        a = a[None] if a.ndim == 3 else a
        found.append((f"{path.name}{key}", digests(a, eight_bit) if a.ndim == 4 else []))
    return found


def check_files(run_dir: Path, rp: Replayed) -> str:
    """adv.png (and any ``adv*`` .npy/.npz array) must hold, image for image, the image of
    the journal's final query (where the run made none: the replayed image), and trace.jsonl
    the replayed trace. UserInputError (one line) names the first file that does not."""
    replayed = digests(rp.result.x_adv, rp.eight_bit)
    want = [f.digest if (f := rp.chain.finals.get(i)) else d for i, d in enumerate(replayed)]
    if want != replayed:  # the replay checked every digest: a bug, not a forgery
        raise UserInputError(f"replay of {run_dir}: its image is not the final query's")
    if not (run_dir / "adv.png").is_file():
        raise UserInputError(f"{run_dir}/adv.png is missing")
    files = [("adv.png", [_png_digest(run_dir / "adv.png", rp.eight_bit)])]
    for p in sorted(run_dir.glob("adv*.np[yz]")):
        files += _array_digests(p, rp.eight_bit)
    for name, got in files:
        if got != want:
            i = next((j for j, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), 0)
            held = short(got[i]) if len(got) == len(want) else f"{len(got)} images"
            raise UserInputError(
                f"{run_dir}/{name} does not match {_source(rp, i)}: it holds {held}, "
                f"not {short(want[i])}"
            )
    trace = run_dir / "trace.jsonl"
    if not trace.is_file() or trace.read_text() != rp.result.trace_jsonl(0):
        raise UserInputError(f"{trace} does not match the replayed trace")
    return f"adv.png is {_source(rp, 0)}: {short(want[0])}"


def _source(rp: Replayed, i: int) -> str:
    """Where image ``i``'s digest comes from: its final query, or (none made) the replay."""
    final = rp.chain.finals.get(i)
    if final is None:
        return "the replayed image (the run made no final query)"
    return f"the image of the journal's final query (row {final.seq})"


def short(digest: str) -> str:
    """``u8:6ecbab12…``: enough of a digest to tell two apart in a message."""
    kind, sep, hexa = digest.partition(":")
    return f"{kind}:{hexa[:12]}…" if sep else digest


def replay_run(
    run_dir: Path,
    as_json: bool = False,
    verify: bool = False,
    api_key: str | None = None,
    tolerance: float = SCORE_TOLERANCE,
) -> None:
    """Replay ``run_dir`` and check its files; with ``verify``, ask the target once."""
    finite("--tolerance", tolerance)
    if tolerance < 0:
        raise UserInputError(f"--tolerance must be >= 0, got {tolerance}")
    rec, x, start = RunRecord.read(run_dir)
    try:
        original = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        raise UserInputError(
            f"{run_dir}: no finished result to replay (result.json); resume the run first"
        ) from None
    transport = {k: original.get("remote", {}).get(k, 0) for k in _TRANSPORT}
    rp = _rerun(run_dir, rec, x, start, transport)
    where = first_difference(comparable(original), comparable(rp.doc))
    if where is not None:
        raise UserInputError(f"replay of {run_dir} differs from its result.json at {where}")
    files = check_files(run_dir, rp)
    checked: Verified | None = None
    if verify:
        final = rp.chain.finals.get(0)
        if final is None:
            raise UserInputError(
                f"--verify: {run_dir} made no final query ({rp.result.images[0].stop_reason}): "
                "the journal holds no answer to compare with; nothing was sent"
            )
        x_final = rp.result.x_adv[0]
        checked = verify_final(rec, rp.view, final, x_final, rp.vocabulary, api_key, tolerance)
    _report(run_dir, rec, rp, files, checked, as_json)


def _report(
    run_dir: Path,
    rec: RunRecord,
    rp: Replayed,
    files: str,
    checked: Verified | None,
    as_json: bool,
) -> None:
    n, head = rp.chain.rows, rp.chain.head
    if as_json:
        block = {
            "consistent": True,
            "proof": False,
            "chain": {"rows": n, "head": head},
            "files": files,
            "note": NOT_PROOF,
            "verify": None if checked is None else asdict(checked),
        }
        out.print_json(json.dumps({**rp.doc, "replay": block}))
        return
    lines = [
        f"replayed {run_dir}: {n:,} queries answered from {rec.journal_path(run_dir)}, none "
        "sent; result.json and trace.jsonl reproduced (timings aside)",
        f"{files}; the hash chain holds from row 1 to row {n:,} (head {head[:16]}…)",
        NOT_PROOF,
    ]
    if checked is not None:
        lines.append(checked.line())
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def replay(
    run_dir: Annotated[Path, typer.Argument(help="the --out directory of a finished attack")],
    as_json: Annotated[
        bool, typer.Option("--json", help="print the replayed result.json and a replay block")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            help="ask the run's target the final query again (one query; a label API bills "
            "it) and compare its answer with the journal's"
        ),
    ] = False,
    api_key: Annotated[
        str | None, typer.Option(help="--verify of a label API run: its key (env BBATTACK_API_KEY)")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="--verify: the largest score difference that still agrees")
    ] = SCORE_TOLERANCE,
) -> None:
    """Re-run a finished attack from its journal without the target, and check that its files
    agree: the hash chain, result.json, trace.jsonl, and adv.png against the final query's
    digest. Evidence of consistency, not proof of what the target answered: the chain has no
    key, so whoever holds the files can recompute it. --verify asks the target the final
    query again (one query, paid where the target bills). Exit 0: consistent (and the target
    agrees); 2 (one line): the first row, field, file or answer that differs; 3: --verify
    could not reach a label API."""
    key = api_key or os.environ.get("BBATTACK_API_KEY") or None
    guard(
        replay_run,
        run_dir=run_dir,
        as_json=as_json,
        verify=verify,
        api_key=key,
        tolerance=tolerance,
    )
