"""An ablation's parent run in MLflow: the grid it varies, not one keep_prob of it."""

from __future__ import annotations

from pathlib import Path

from tests.sweep_helpers import mlflow_runs, run_cli

CONFIG = """[sweep]
dataset = "digits"
study = "parent-params"

[ablation]
keep_probs = [1.0, 0.5]
sizes = [100]
seeds = 1

[ablation.params]
keep_prob = 0.7
hidden_dims = [32]
normalization = "none"
learning_rate = 1e-3
epochs = 1
"""


def test_the_ablation_parent_has_no_keep_prob_param_but_says_which_it_started_from(tmp_path: Path) -> None:
    (tmp_path / "abl.toml").write_text(CONFIG)
    run_cli(tmp_path, "ablate", "abl.toml", "--jobs", "1")
    _, parents, children = mlflow_runs(tmp_path, "parent-params")
    [parent] = [r for k, r in parents.items() if k.startswith("ablation:")]
    # The runs table's keep_prob column stays empty for the parent: the ablation varies keep_prob.
    assert "keep_prob" not in parent.data.params and parent.data.params["keep_probs"] == "1,0.5"
    assert parent.data.tags["base_keep_prob"] == "0.7"
    assert parent.data.params["hidden_dims"] == "32" and "hidden_1" not in parent.data.params
    assert sorted(r.data.params["keep_prob"] for r in children) == ["0.5", "1.0"]  # the cells carry theirs
