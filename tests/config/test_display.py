"""Numbers as a person reads them: one rule (sweep.config.display.format_number) for MLflow params,
progress lines and the report, on the float noise Optuna really produces."""

from __future__ import annotations

from decimal import Decimal

import optuna
import pytest

from sweep.config.display import format_number, readable_params
from sweep.config.space import SearchSpace
from sweep.search.progress import format_params


@pytest.mark.parametrize(("value", "kwargs", "text"), [
    (0.8500000000000001, {"step": 0.05}, "0.85"),
    (0.30000000000000004, {"step": 0.05}, "0.3"),
    (1.0, {"step": 0.05}, "1.0"),
    (0.125, {"step": 0.025}, "0.125"),
    (0.000683671984871003, {"log": True}, "6.837e-4"),
    (0.0036, {"log": True}, "3.6e-3"),
    (0.01, {"log": True}, "1e-2"),
    (0.012345678, {"log": True}, "1.235e-2"),
    (0.30000000000000004, {}, "0.3"),
    (0.95, {}, "0.95"),
    (1e-05, {}, "1e-05"),
    (128, {"log": True}, "128"),
    ("batchnorm", {}, "batchnorm"),
    (True, {}, "True"),
])
def test_format_number(value: object, kwargs: dict, text: str) -> None:
    assert format_number(value, **kwargs) == text


def test_every_value_optuna_draws_on_the_default_grid_reads_as_the_grid_value() -> None:
    """Optuna's stepped floats carry noise (0.8500000000000001); the text is the grid value."""
    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [space.suggest(study.ask()) for _ in range(200)]
    keeps = {p.keep_prob for p in drawn}
    noisy = [k for k in keeps if repr(k) != str(Decimal(repr(k)).quantize(Decimal("0.01")).normalize())]
    assert noisy, "expected Optuna to produce float noise on a 0.05 grid"
    for p in drawn:
        text = readable_params(p.to_flat(), space)
        keep = Decimal(text["keep_prob"])
        assert (keep - Decimal("0.2")) % Decimal("0.05") == 0 and float(keep) == pytest.approx(p.keep_prob)
        lr = text["learning_rate"]
        assert float(lr) == pytest.approx(p.learning_rate, rel=5e-4) and len(lr.split("e")[0].replace(".", "")) <= 4
        assert text["hidden_dims"] == "-".join(map(str, p.hidden_dims))


def test_progress_lines_print_params_the_same_way() -> None:
    space = SearchSpace()
    params = {"keep_prob": 0.8500000000000001, "depth": 2, "hidden_1": 64, "hidden_2": 32,
              "learning_rate": 0.000683671984871003, "normalization": "batchnorm", "weight_scale": 0.05}
    assert format_params(space, params) == "keep=0.85 hidden=64-32 norm=batchnorm lr=6.837e-4"
    mlflow = readable_params(params, space)
    assert mlflow["keep_prob"] == "0.85" and mlflow["learning_rate"] == "6.837e-4"
