"""The regularizers besides L2 and dropout as settings: domains, refusals, search space, --vary, training."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from sweep.config.domains import ConfigError
from sweep.config.factors import level_text, level_value, parse_vary_args
from sweep.config.space import Choice, Fixed, Range, SearchSpace, TrainParams
from sweep.config.sweep_file import AblationConfig, SweepConfig, config_from_dict
from sweep.training import RunSeeds, build_net, train

BASE = dict(keep_prob=1.0, hidden_dims=(32,), learning_rate=3e-3, normalization="none")


def test_train_params_take_the_regularizers_and_leave_them_out_of_to_flat_when_off() -> None:
    p = TrainParams(**BASE, input_keep_prob=0.8, max_norm=3, augment_flip=False, augment_shift=2)
    assert (p.input_keep_prob, p.max_norm, p.augment_shift) == (0.8, 3.0, 2)
    flat = p.to_flat()
    assert flat["input_keep_prob"] == 0.8 and flat["max_norm"] == 3.0 and flat["augment_shift"] == 2
    assert "augment_flip" not in flat  # off: absent, as in every run recorded before it existed
    assert not {"input_keep_prob", "max_norm", "augment_flip", "augment_shift"} & set(TrainParams(**BASE).to_flat())
    # MLflow's text params read back
    again = TrainParams.from_flat({**{k: str(v) for k, v in flat.items()}, "augment_flip": "True"})
    assert again.augment_flip is True and again.max_norm == 3.0 and again.input_keep_prob == 0.8


@pytest.mark.parametrize(("key", "value", "says"), [
    ("input_keep_prob", 0.0, "KEEPING an input feature"),
    ("input_keep_prob", 1.5, "(0, 1]"),
    ("max_norm", -1.0, "0 = no constraint"),
    ("augment_flip", 1, "true or false"),
    ("augment_flip", "yes", "true or false"),
    ("augment_shift", -1, "pixels of random translation"),
    ("augment_shift", 1.5, "an integer"),
])
def test_bad_values_are_refused_in_one_line_naming_the_key(key: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainParams(**BASE, **{key: value})
    msg = str(err.value)
    assert msg.startswith(key + ":") and says in msg and "\n" not in msg


def test_search_space_searches_them_and_old_studies_keep_their_identity() -> None:
    assert set(SearchSpace().to_dict()) == set(SearchSpace.KEYS) - {
        "input_keep_prob", "max_norm", "augment_flip", "augment_shift"}
    space = SearchSpace.from_dict({"input_keep_prob": {"low": 0.5, "high": 1.0}, "max_norm": {"low": 0.5, "high": 8,
                                   "log": True}, "augment_flip": [True, False], "augment_shift": {"low": 0, "high": 4}})
    assert space.augment_flip == Choice((True, False)) and space.max_norm == Range(0.5, 8, None, True)
    assert SearchSpace.from_dict(space.to_dict()) == space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    drawn = [space.suggest(study.ask()) for _ in range(6)]
    assert all(0.5 <= p.input_keep_prob <= 1.0 and 0.5 <= p.max_norm <= 8 and 0 <= p.augment_shift <= 4 for p in drawn)
    assert len({p.max_norm for p in drawn}) == 6
    # off values are not suggested: a trial's params are what they were before these settings existed
    plain = optuna.create_study().ask()
    SearchSpace().suggest(plain)
    assert not {"input_keep_prob", "max_norm", "augment_flip", "augment_shift"} & set(plain.params)
    with pytest.raises(ConfigError, match=r"space.augment_flip: is categorical"):
        SearchSpace.from_dict({"augment_flip": {"low": 0, "high": 1}})


def test_augmentation_is_refused_where_the_data_are_not_images_that_allow_it() -> None:
    with pytest.raises(ConfigError, match=r"space.augment_flip: digits are 8x8 grayscale.*augment_shift 0..2"):
        config_from_dict({"space": {"augment_flip": True}})
    with pytest.raises(ConfigError, match=r"space.augment_shift: must be at most 2 pixels for digits"):
        config_from_dict({"space": {"augment_shift": {"low": 0, "high": 3}}})
    with pytest.raises(ConfigError, match=r"ablation.vary.augment_flip"):
        SweepConfig(ablation=AblationConfig(vary=(("augment_flip", (True, False)),)))
    ok = config_from_dict({"sweep": {"dataset": "cifar10"}, "space": {"augment_flip": [True, False],
                                                                    "augment_shift": {"low": 0, "high": 4}}})
    assert ok.space.augment_shift == Range(0, 4, 1, False)
    assert config_from_dict({"space": {"augment_shift": 1}}).space.augment_shift == Fixed(1)


def test_they_can_be_varied_in_an_ablation() -> None:
    factors = parse_vary_args(["max_norm=0,3", "augment_flip=true,false", "input_keep_prob=1,0.8",
                               "augment_shift=0,2"])
    assert dict(factors) == {"max_norm": (0.0, 3.0), "augment_flip": (True, False), "input_keep_prob": (1.0, 0.8),
                             "augment_shift": (0, 2)}
    assert level_value("augment_flip", level_text("augment_flip", True)) is True
    with pytest.raises(ConfigError, match=r"vary.augment_flip\[0\]: must be true or false"):
        parse_vary_args(["augment_flip=maybe"])


def test_training_passes_them_to_the_model() -> None:
    net = build_net(TrainParams(**BASE, input_keep_prob=0.8, max_norm=2.0), 64, 10, seed=0)
    assert net.input_keep_prob == 0.8 and net.max_norm == 2.0
    assert build_net(TrainParams(**BASE), 64, 10, seed=0).max_norm is None  # 0 = no constraint
    rng = np.random.default_rng(0)
    data = {"X_train": rng.normal(size=(200, 64)).astype(np.float32), "y_train": rng.integers(0, 10, 200),
            "X_val": rng.normal(size=(50, 64)).astype(np.float32), "y_val": rng.integers(0, 10, 50)}
    params = TrainParams(**{**BASE, "epochs": 2}, max_norm=0.3, augment_shift=1)
    a, b = train(params, data, RunSeeds(1, 2), keep_best_weights=True), train(params, data, RunSeeds(1, 2))
    assert [e["train_loss"] for e in a.epochs] == [e["train_loss"] for e in b.epochs]  # seeded: repeatable
    plain = train(TrainParams(**{**BASE, "epochs": 2}, max_norm=0.3), data, RunSeeds(1, 2))
    assert [e["train_loss"] for e in a.epochs] != [e["train_loss"] for e in plain.epochs]  # shifts were applied
    from sweep.config.display import readable_params, run_note

    note = run_note(readable_params(params.to_flat()), "COMPLETE", {})
    assert "max-norm 0.3, shift 1" in note and "flip" not in note  # a run's description names what is on
    assert a.best_weights is not None
    hidden_norms = np.linalg.norm(a.best_weights["W1"], axis=0)
    assert hidden_norms.max() <= 0.3 + 1e-6  # the max-norm constraint held in training


def test_the_best_trial_line_names_the_regularizers_that_are_on() -> None:
    from sweep.search.progress import format_params

    base = {"keep_prob": 0.5, "depth": 1, "hidden_1": 64, "learning_rate": 1e-3, "normalization": "none"}
    assert format_params(SearchSpace(), base) == "keep=0.5 hidden=64 norm=none lr=1e-3"
    on = format_params(SearchSpace(), {**base, "max_norm": 3.0, "augment_shift": 2, "input_keep_prob": 0.9})
    assert on == "keep=0.5 hidden=64 norm=none lr=1e-3 input_keep=0.9 max_norm=3.0 shift=2"
