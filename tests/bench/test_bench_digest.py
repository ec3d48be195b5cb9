"""A grid's config hash is its identity in the database: fields added to the config later
leave the hash of a grid that does not use them unchanged, so its database still opens."""

from __future__ import annotations

from pathlib import Path

from bbattack.bench import load_config

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_grids_from_before_photo_sets_and_defences_keep_their_hash() -> None:
    # Hashes as computed at ff457e7, before [images] sets/min_confidence and attack defences.
    cfg, _ = load_config(BENCHMARKS / "transfer.toml")
    assert cfg.digest() == "80de79ee0609a27e"
    cfg, _ = load_config(BENCHMARKS / "table1.toml")
    assert cfg.digest() == "d989688b635a98e6"


def test_the_new_fields_change_the_hash_when_used(tmp_path: Path) -> None:
    base = (BENCHMARKS / "score.toml").read_text()
    plain = tmp_path / "plain.toml"
    plain.write_text(base)
    defended = tmp_path / "defended.toml"
    defended.write_text(
        base.replace('name = "square"\n', 'name = "square"\ndefense = ["rnd"]\n', 1)
    )
    assert load_config(plain)[0].digest() != load_config(defended)[0].digest()
