"""[ablation] until / precision / max_seeds and their command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.config.domains import ConfigError
from sweep.config.sweep_file import load_config


def test_the_file_keys_round_trip_and_the_flags_override_them(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[ablation]\nkeep_probs = [1.0, 0.5]\nuntil = "decided"\nprecision = 2\nmax_seeds = 12\n')
    grid = load_config(path).grid
    assert (grid.until, grid.precision, grid.max_seeds) == ("decided", 2.0, 12)
    again = tmp_path / "b.toml"
    again.write_text(load_config(path).to_toml())
    assert load_config(again).grid == grid
    # --precision alone is fine when the file already says until = "decided"; text numbers from the CLI parse.
    assert load_config(path, {"precision": "0.5", "max_seeds": "8"}).grid.precision == 0.5


@pytest.mark.parametrize("table, key", [
    ("precision = 1.0", "ablation.precision"),
    ("max_seeds = 10", "ablation.max_seeds"),
    ('until = "decided"\nprecision = -1', "ablation.precision"),
    ('until = "decided"\nmax_seeds = 2.5', "ablation.max_seeds"),
])
def test_bad_or_useless_settings_name_the_key(tmp_path: Path, table: str, key: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(f"[ablation]\n{table}\n")
    with pytest.raises(ConfigError, match=rf"a\.toml: {key}: "):
        load_config(path)
