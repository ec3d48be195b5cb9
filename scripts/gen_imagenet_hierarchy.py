"""Generate ``src/bbattack/data/imagenet_hierarchy.json``: WordNet ancestors of ImageNet classes.

Needs WordNet 3.0's noun database (Debian: ``apt-get install wordnet-base``, which puts it at
/usr/share/wordnet/data.noun). Run: ``python scripts/gen_imagenet_hierarchy.py [--data-noun PATH]``.
The output is committed, so the runtime needs neither WordNet nor this script.

ImageNet wnids are WordNet 3.0 noun offsets ("n02123045" is the synset at offset 02123045).
For every class the script walks the hypernym graph ('@' and instance '@i' pointers) up to
``entity`` and lists each ancestor once, nearest first (breadth-first distance from the class).

Which ancestors are kept (the rule, applied to every class alike):

1. Too abstract to be a label, dropped: a synset whose shortest hypernym path to the root is
   shorter than ``MIN_DEPTH`` (entity, physical entity, abstraction, object, whole, matter,
   causal agent, substance, ...), and the upper-ontology synsets in ``ABSTRACT`` that sit deeper
   (artifact, living thing, organism, instrumentality, ...).
2. A class that rule 1 would leave with no ancestor keeps its direct hypernyms (traffic sign ->
   sign, cliff -> geological formation), so every class has at least one coarser label.

Names are the synset's first lemma with underscores as spaces ("domestic_animal" -> "domestic
animal"). Two synsets can share a name ("cap", "shield"); their wnids stay distinct.
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ROOT / "src" / "bbattack" / "data" / "imagenet_classes.json"
OUT = ROOT / "src" / "bbattack" / "data" / "imagenet_hierarchy.json"
DATA_NOUN = Path("/usr/share/wordnet/data.noun")

# Shortest distance from ``entity`` (depth 0) below which a synset is too abstract to be a label.
# Depth 4 is the first level with concrete categories (food, natural elevation, person's kin).
MIN_DEPTH = 4

# Upper-ontology synsets at depth >= MIN_DEPTH that still say nothing about what is in a photo.
ABSTRACT: dict[str, str] = {
    "00021939": "artifact",
    "00004258": "living thing",
    "00004475": "organism",
    "03575240": "instrumentality",
    "00019128": "natural object",
    "03076708": "commodity",
    "00022903": "article",
    "03129123": "creation",
    "03932203": "piece",
    "14580897": "material",
    "08620061": "point",
}

# WordNet pointer symbols that lead to a more general synset.
HYPERNYM_POINTERS = ("@", "@i")


class ClassRow(TypedDict):
    id: int
    wnid: str
    name: str
    synonyms: list[str]


class Ancestor(TypedDict):
    wnid: str
    name: str


class HierarchyRow(TypedDict):
    id: int
    wnid: str
    ancestors: list[Ancestor]


@dataclass(frozen=True)
class Synset:
    offset: str
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.lemmas[0].replace("_", " ")


def parse_data_noun(path: Path) -> dict[str, Synset]:
    """Parse a WordNet 3.0 ``data.noun`` file into offset -> Synset.

    Line format (wndb(5)): ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt
    [ptr...] | gloss`` with w_cnt in hex and each pointer ``symbol offset pos source/target``.
    License header lines start with two spaces.
    """
    synsets: dict[str, Synset] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, w_cnt = fields[0], int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * i] for i in range(w_cnt))
            i = 4 + 2 * w_cnt
            p_cnt = int(fields[i])
            i += 1
            hypernyms: list[str] = []
            for _ in range(p_cnt):
                symbol, target, pos = fields[i], fields[i + 1], fields[i + 2]
                i += 4
                if symbol in HYPERNYM_POINTERS and pos == "n":
                    hypernyms.append(target)
            synsets[offset] = Synset(offset, lemmas, tuple(hypernyms))
    return synsets


def ancestors_by_distance(synsets: dict[str, Synset], offset: str) -> list[str]:
    """All hypernym ancestors of a synset, each once, nearest first (ties in WordNet order)."""
    seen = {offset}
    order: list[str] = []
    queue = deque(synsets[offset].hypernyms)
    while queue:
        o = queue.popleft()
        if o in seen:
            continue
        seen.add(o)
        order.append(o)
        queue.extend(synsets[o].hypernyms)
    return order


def build(synsets: dict[str, Synset], classes: list[ClassRow]) -> list[HierarchyRow]:
    """Per class: its id, wnid and the kept ancestors as {wnid, name}, nearest first."""

    @cache
    def depth(offset: str) -> int:
        hyp = synsets[offset].hypernyms
        return 0 if not hyp else 1 + min(depth(h) for h in hyp)

    def abstract(offset: str) -> bool:
        return depth(offset) < MIN_DEPTH or offset in ABSTRACT

    out: list[HierarchyRow] = []
    for c in classes:
        wnid = c["wnid"]
        offset = wnid.removeprefix("n")
        if offset not in synsets:
            raise SystemExit(f"class {c['id']} ({wnid}) is not a WordNet 3.0 noun synset")
        chain = [o for o in ancestors_by_distance(synsets, offset) if not abstract(o)]
        if not chain:
            chain = list(synsets[offset].hypernyms)  # rule 2: keep the direct hypernyms
        ancestors = [Ancestor(wnid=f"n{o}", name=synsets[o].name) for o in chain]
        out.append(HierarchyRow(id=c["id"], wnid=wnid, ancestors=ancestors))
    return out


def check_version(synsets: dict[str, Synset], classes: list[ClassRow]) -> None:
    """Offsets change between WordNet versions: a class's synset must carry its own name."""
    wrong = []
    for c in classes:
        syn = synsets.get(c["wnid"].removeprefix("n"))
        names = {s.lower() for s in c["synonyms"]}
        if syn is None or not {lemma.replace("_", " ").lower() for lemma in syn.lemmas} & names:
            wrong.append(c["id"])
    if wrong:
        raise SystemExit(
            f"{len(wrong)} classes do not match their synsets (first: {wrong[:5]}); "
            "is this WordNet 3.0's data.noun?"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-noun", type=Path, default=DATA_NOUN, help="WordNet 3.0 data.noun")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not args.data_noun.is_file():
        raise SystemExit(f"{args.data_noun} not found: apt-get install wordnet-base")
    synsets = parse_data_noun(args.data_noun)
    classes: list[ClassRow] = json.loads(CLASSES.read_text("utf-8"))
    check_version(synsets, classes)
    rows = build(synsets, classes)
    doc = {
        "source": "WordNet 3.0 data.noun, hypernym pointers @ and @i",
        "generator": "scripts/gen_imagenet_hierarchy.py",
        "rule": (
            f"ancestors nearest first; dropped: depth from entity < {MIN_DEPTH} and "
            f"{sorted(ABSTRACT.values())}; a class left with none keeps its direct hypernyms"
        ),
        "classes": rows,
    }
    # One class per line: small, and diffs stay readable when the rule changes.
    lines = ",\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in rows)
    head = json.dumps({k: v for k, v in doc.items() if k != "classes"}, ensure_ascii=False)
    args.out.write_text(head[:-1] + ',\n"classes":[\n' + lines + "\n]}\n", encoding="utf-8")
    labels = {a["wnid"] for r in rows for a in r["ancestors"]}
    print(f"wrote {len(rows)} classes, {len(labels)} distinct ancestors to {args.out}")


if __name__ == "__main__":
    main()
