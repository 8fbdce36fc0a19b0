"""The sweep file, overrides, TrainParams and SearchSpace.suggest on real Optuna studies."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from sweep.config.sweep_file import (
    AblationConfig,
    Choice,
    ConfigError,
    Fixed,
    Range,
    SearchSpace,
    SweepConfig,
    TrainParams,
    load_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
optuna.logging.set_verbosity(optuna.logging.WARNING)
# TPESampler(group=True) is "experimental" in Optuna 5.0; the sweep uses it for the conditional hidden_i.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def base_params(**changes: object) -> TrainParams:
    kw: dict[str, object] = dict(keep_prob=0.5, hidden_dims=(64, 32), learning_rate=1e-3, normalization="none")
    kw.update(changes)
    return TrainParams(**kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- examples and defaults


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_loads_and_round_trips_through_toml(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    json.dumps(cfg.to_dict())  # JSON-able, for MLflow / Optuna attrs
    again = load_config(write(tmp_path, cfg.to_toml()))
    assert again == cfg


def test_the_three_examples_exist() -> None:
    assert {p.name for p in EXAMPLES.glob("*.toml")} >= {"digits.toml", "cifar10.toml", "cs231n-dropout.toml"}


def test_defaults_are_examples_digits_toml() -> None:
    assert load_config(None) == load_config(EXAMPLES / "digits.toml") == SweepConfig()


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == SweepConfig()


def test_cifar10_example_is_cs231n_style() -> None:
    cfg = load_config(EXAMPLES / "cifar10.toml")
    assert cfg.dataset == "cifar10" and cfg.study_name == "dropout-cifar10"
    assert cfg.space.width == Range(32, 1024, log=True)
    assert cfg.space.learning_rate == Range(1e-5, 1e-2, log=True)
    assert cfg.space.keep_prob == Range(0.2, 1.0, step=0.05)


def test_cs231n_dropout_example_is_the_notebook_experiment() -> None:
    cfg = load_config(EXAMPLES / "cs231n-dropout.toml")
    assert cfg.dataset == "cifar10" and cfg.num_train == 500
    abl = cfg.ablation
    assert abl is not None
    assert abl.keep_probs == (1.0, 0.25) and abl.resolved_sizes(cfg.dataset) == (500,) and abl.seeds == 5
    p = abl.base_params()
    assert (p.hidden_dims, p.update_rule, p.learning_rate, p.epochs, p.batch_size) == ((500,), "adam", 5e-4, 25, 100)
    assert p.model_normalization is None and p.lr_decay == 1.0


def test_a_partial_space_keeps_the_other_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[space]\nepochs = 3\nnormalization = 'batchnorm'\n"))
    assert cfg.space == replace(SearchSpace(), epochs=Fixed(3), normalization=Fixed("batchnorm"))


# --------------------------------------------------------------------------- overrides


def test_overrides_apply_and_none_is_ignored() -> None:
    cfg = load_config(
        EXAMPLES / "digits.toml",
        {"dataset": "cifar10", "trials": 8, "jobs": 2, "epochs": 5, "num_train": 1000, "seed": None, "pruner": "median"},
    )
    assert (cfg.dataset, cfg.trials, cfg.jobs, cfg.num_train, cfg.pruner) == ("cifar10", 8, 2, 1000, "median")
    assert cfg.seed == 0  # None = not given
    assert cfg.space.epochs == Fixed(5)
    assert cfg.study_name == "dropout-cifar10"  # derived from the overridden dataset
    assert cfg.space.keep_prob == SearchSpace().keep_prob  # untouched


def test_overrides_take_cli_text_and_fill_the_ablation() -> None:
    cfg = load_config(None, {"trials": "12", "keep_probs": "1, 0.75,0.5", "sizes": "100,300", "seeds": "3"})
    assert cfg.trials == 12
    assert cfg.ablation == AblationConfig(keep_probs=(1.0, 0.75, 0.5), sizes=(100, 300), seeds=3)


def test_subsets_default_fixed_then_from_the_file_then_the_command_line(tmp_path: Path) -> None:
    assert AblationConfig().subsets == "fixed"
    path = write(tmp_path, "[ablation]\nsubsets = 'per-seed'\nseeds = 4\n")
    cfg = load_config(path)
    assert cfg.ablation == AblationConfig(seeds=4, subsets="per-seed")
    assert load_config(write(tmp_path, cfg.to_toml(), "again.toml")) == cfg  # round trip
    assert "subsets" not in load_config(None, {"seeds": 3}).to_toml()  # the default stays implicit
    assert load_config(path, {"subsets": "fixed"}).ablation == AblationConfig(seeds=4)


def test_epochs_override_fixes_a_searched_epochs_and_the_ablation_epochs(tmp_path: Path) -> None:
    path = write(tmp_path, "[space]\nepochs = {low = 5, high = 20}\n[ablation]\nseeds = 2\n")
    assert load_config(path).space.max_epochs == 20
    cfg = load_config(path, {"epochs": 3})
    assert cfg.space.epochs == Fixed(3) and cfg.space.max_epochs == 3 and cfg.space.epochs_override == 3
    assert "epochs_override" not in cfg.space.to_dict() and load_config(path).space.epochs_override is None
    assert cfg.ablation is not None and cfg.ablation.base_params(base_params(epochs=40)).epochs == 3


def test_storage_study_and_tracking_overrides() -> None:
    cfg = load_config(None, {"study": "mine", "storage": "sqlite:///o.db", "tracking_uri": "http://127.0.0.1:5000"})
    assert (cfg.study_name, cfg.storage, cfg.tracking_uri) == ("mine", "sqlite:///o.db", "http://127.0.0.1:5000")


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ({"trails": 8}, ["unknown key 'trails'", "did you mean 'trials'?"]),
        ({"trials": 0}, ["trials: must be an integer >= 1"]),
        ({"trials": "eight"}, ["trials: must be an integer >= 1", "'eight'"]),
        ({"jobs": -1}, ["jobs: must be an integer >= 0"]),
        ({"dataset": "mnist"}, ["dataset: must be one of 'digits', 'cifar10'"]),
        ({"epochs": 0}, ["epochs: must be an integer >= 1"]),
        ({"keep_probs": "0.5,0.25"}, ["keep_probs: must include 1.0"]),
        ({"keep_probs": "1,1.5"}, ["keep_probs[1]: must be a number in (0, 1]"]),
        ({"sizes": "500,500"}, ["sizes: repeats a value"]),
        ({"seeds": 0}, ["seeds: must be an integer >= 1"]),
        ({"subsets": "random"}, ["subsets: must be one of 'fixed', 'per-seed'", "'random'"]),
        ({"study": " "}, ["study: must be a non-empty string"]),
    ],
)
def test_bad_overrides_name_the_key(overrides: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value).startswith("command line: ")
    for fragment in fragments:
        assert fragment in str(info.value)


# --------------------------------------------------------------------------- validation of the file

BAD_FILES = [
    # (file text, key path named, fragment saying what is allowed)
    ("[space]\nkeep_prob = {low = 0.0, high = 1.0}", "space.keep_prob.low", "a number in (0, 1]"),
    ("[space]\nkeep_prob = {low = 0.2, high = 1.2}", "space.keep_prob.high", "a number in (0, 1]"),
    ("[space]\nkeep_prob = 0", "space.keep_prob", "KEEPING a unit"),
    ("[space]\nkeep_prob = {low = 0.2, high = 1.0, step = 0.03}", "space.keep_prob.step", "could never be drawn"),
    ("[space]\nkeep_prob = {low = 0.2, hgh = 1.0}", "space.keep_prob.hgh", "did you mean 'high'?"),
    ("[space]\nkeep_prob = {high = 1.0}", "space.keep_prob", "missing low"),
    ("[space]\nkeep_prob = {low = 0.2, high = 1.0, log = 'yes'}", "space.keep_prob.log", "true or false"),
    ("[space]\nkeep_prob = [0.5, 0.5]", "space.keep_prob", "repeats a choice"),
    ("[space]\ndepth = {low = 1, high = 9}", "space.depth.high", "an integer in [1, 8]"),
    ("[space]\ndepth = 0", "space.depth", "an integer in [1, 8]"),
    ("[space]\ndepth = {low = 1, high = 2.5}", "space.depth.high", "an integer"),
    ("[space]\nwidth = {low = 0, high = 64}", "space.width.low", "an integer >= 1"),
    ("[space]\nwidth = {low = 64, high = 32}", "space.width", "low (64) must be <= high (32)"),
    ("[space]\nwidth = {low = 32, high = 512, log = true, step = 2}", "space.width.step", "log"),
    ("[space]\nlearning_rate = {low = 0.0, high = 1e-2, log = true}", "space.learning_rate.low", "a number > 0"),
    ("[space]\nlearning_rate = nan", "space.learning_rate", "a number > 0"),
    ("[space]\nlearning_rate = '1e-3'", "space.learning_rate", "a number > 0"),
    ("[space]\nreg = {low = 0.0, high = 1e-2, log = true}", "space.reg.low", "log-scale range needs low > 0"),
    ("[space]\nreg = -1.0", "space.reg", "a number >= 0"),
    ("[space]\nnormalization = ['none', 'groupnorm']", "space.normalization[1]", "'batchnorm'"),
    ("[space]\nnormalization = {low = 1, high = 2}", "space.normalization", "categorical"),
    ("[space]\nupdate_rule = 'nesterov'", "space.update_rule", "'sgd_momentum'"),
    ("[space]\nbatch_size = 0", "space.batch_size", "an integer >= 1"),
    ("[space]\nbatch_size = 64.0", "space.batch_size", "an integer >= 1"),
    ("[space]\nbatch_size = true", "space.batch_size", "an integer >= 1"),
    ("[space]\nepochs = []", "space.epochs", "empty list"),
    ("[space]\nlr_decay = 1.5", "space.lr_decay", "a number in (0, 1]"),
    ("[space]\nweight_scale = 0.0", "space.weight_scale", "a number > 0"),
    ("[space]\nhidden_dims = [256]", "space.hidden_dims", "depth and width"),
    ("[space]\ntrials = 5", "space.trials", "belongs in [sweep]"),
    ("[sweep]\ntrials = 0", "sweep.trials", "an integer >= 1"),
    ("[sweep]\ntrials = '30'", "sweep.trials", "an integer >= 1"),
    ("[sweep]\njobs = -1", "sweep.jobs", "an integer >= 0"),
    ("[sweep]\nseed = -1", "sweep.seed", "an integer in [0, 4294967295]"),
    ("[sweep]\ndataset = 'mnist'", "sweep.dataset", "'digits', 'cifar10'"),
    ("[sweep]\npruner = 'asha'", "sweep.pruner", "'hyperband', 'median', 'none'"),
    ("[sweep]\nnum_train = 0", "sweep.num_train", "an integer >= 1"),
    ("[sweep]\nstudy = ''", "sweep.study", "non-empty string"),
    ("[sweep]\ndata_dir = 5", "sweep.data_dir", "non-empty string"),
    ("[sweep]\nepochs = 5", "sweep.epochs", "belongs in [space]"),
    ("[ablation]\nkeep_probs = [0.5, 0.25]", "ablation.keep_probs", "must include 1.0"),
    ("[ablation]\nkeep_probs = [1.0, 1.5]", "ablation.keep_probs[1]", "a number in (0, 1]"),
    ("[ablation]\nkeep_probs = 0.5", "ablation.keep_probs", "non-empty list"),
    ("[ablation]\nsizes = [500, 500]", "ablation.sizes", "repeats a value"),
    ("[ablation]\nsizes = [0]", "ablation.sizes[0]", "an integer >= 1"),
    ("[ablation]\nseeds = 0", "ablation.seeds", "an integer >= 1"),
    ("[ablation]\nsubsets = 'per_seed'", "ablation.subsets", "one of 'fixed', 'per-seed'"),
    ("[ablation]\nseed = 3", "ablation.seed", "did you mean 'seeds'?"),
    ("[ablation.params]\nhidden_dims = [500]\nnormalization = 'none'", "ablation.params", "missing learning_rate"),
    (
        "[ablation.params]\nhidden_dims = []\nnormalization = 'none'\nlearning_rate = 1e-3",
        "ablation.params.hidden_dims",
        "non-empty list",
    ),
    (
        "[ablation.params]\nhidden_dims = [500]\nnormalization = 'none'\nlearning_rate = 1e-3\nkeep_prob = 0",
        "ablation.params.keep_prob",
        "(0, 1]",
    ),
    (
        "[ablation.params]\nhidden_dims = [500]\nnormalization = 'none'\nlearning_rte = 1e-3",
        "ablation.params.learning_rte",
        "did you mean 'learning_rate'?",
    ),
    ("dataset = 'digits'", "dataset", "put 'dataset' under [sweep]"),
    ("[spaces]\nepochs = 3", "spaces", "did you mean 'space'?"),
    ("space = 5", "space", "must be a table"),
]


@pytest.mark.parametrize("text, key, allowed", BAD_FILES, ids=[f"{i:02d}-{b[1]}" for i, b in enumerate(BAD_FILES)])
def test_each_bad_value_names_file_key_and_what_is_allowed(tmp_path: Path, text: str, key: str, allowed: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert msg.startswith(f"{path}: {key}: "), msg
    assert allowed in msg, msg


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "[space]\nkeep_prop = {low = 0.2, high = 1.0}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'keep_prop' in \[space\]; did you mean 'keep_prob'\?") as info:
        load_config(path)
    assert str(path) in str(info.value) and info.value.key == "space.keep_prop"


@pytest.mark.parametrize("typo, meant", [("learnig_rate", "learning_rate"), ("normalisation", "normalization")])
def test_other_typos_suggest_the_closest(tmp_path: Path, typo: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        load_config(write(tmp_path, f"[space]\n{typo} = 1\n"))


def test_an_unknown_key_with_no_close_match_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="known keys: keep_prob, depth, width"):
        load_config(write(tmp_path, "[space]\nbanana = 1\n"))


def test_toml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[sweep]\ntrials = = 3\n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2") as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such sweep file") as info:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)


# --------------------------------------------------------------------------- no `dropout` key


DROPOUT_SPELLINGS = ["dropout", "dropout_p", "p_drop", "drop_prob", "Dropout_Rate"]


def assert_keep_prob_explained(err: BaseException) -> None:
    msg = str(err)
    assert "ambiguous" in msg and "keep_prob" in msg and "KEEPING a unit" in msg and "1 - drop probability" in msg


@pytest.mark.parametrize("key", DROPOUT_SPELLINGS)
@pytest.mark.parametrize("section", ["sweep", "space", "ablation", "ablation.params"])
def test_a_dropout_key_is_refused_everywhere_in_the_file(tmp_path: Path, key: str, section: str) -> None:
    path = write(tmp_path, f"[{section}]\n{key} = 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {section}.{key}: ")
    assert_keep_prob_explained(info.value)


def test_a_dropout_key_is_refused_in_overrides_and_from_flat() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"dropout": 0.5})
    assert_keep_prob_explained(info.value)
    flat = {**base_params().to_flat(), "p_drop": 0.5}
    for strict in (True, False):  # even when unknown keys are ignored
        with pytest.raises(ConfigError) as info:
            TrainParams.from_flat(flat, strict=strict)
        assert_keep_prob_explained(info.value)


# --------------------------------------------------------------------------- TrainParams


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("keep_prob", 0.0, "(0, 1]"),
        ("keep_prob", 1.01, "(0, 1]"),
        ("keep_prob", float("nan"), "(0, 1]"),
        ("hidden_dims", (), "non-empty"),
        ("hidden_dims", (64, 0), "hidden_dims[1]: must be an integer >= 1"),
        ("hidden_dims", (64.5,), "integer"),
        ("learning_rate", 0.0, "> 0"),
        ("normalization", "batch", "'none', 'batchnorm', 'layernorm'"),
        ("normalization", None, "'none', 'batchnorm', 'layernorm'"),
        ("reg", -0.1, ">= 0"),
        ("weight_scale", 0.0, "> 0"),
        ("batch_size", 0, ">= 1"),
        ("batch_size", 100.0, "integer"),
        ("update_rule", "nesterov", "'sgd', 'sgd_momentum', 'rmsprop', 'adam'"),
        ("epochs", 0, ">= 1"),
        ("lr_decay", 0.0, "(0, 1]"),
    ],
)
def test_train_params_validates_every_field(field: str, value: object, allowed: str) -> None:
    with pytest.raises(ValueError) as info:
        base_params(**{field: value})
    assert str(info.value).startswith(field) and allowed in str(info.value)


def test_train_params_normalises_types_and_gives_the_model_normalization() -> None:
    p = base_params(keep_prob=1, hidden_dims=[64, 32], learning_rate=1)
    assert p == base_params(keep_prob=1.0, hidden_dims=(64, 32), learning_rate=1.0)
    assert isinstance(p.keep_prob, float) and p.hidden_dims == (64, 32)
    assert hash(p) == hash(base_params(keep_prob=1.0, learning_rate=1.0))
    assert p.model_normalization is None and base_params(normalization="layernorm").model_normalization == "layernorm"


ROUND_TRIP = [
    base_params(),
    base_params(keep_prob=1.0, hidden_dims=(1024,), normalization="batchnorm", update_rule="sgd_momentum"),
    base_params(keep_prob=0.30000000000000004, hidden_dims=(512, 256, 128, 64), learning_rate=1.2345678901234567e-05,
                reg=3.14, weight_scale=0.05, batch_size=7, epochs=3, lr_decay=0.9),
]


@pytest.mark.parametrize("p", ROUND_TRIP)
def test_to_flat_from_flat_round_trips_exactly(p: TrainParams) -> None:
    flat = p.to_flat()
    assert flat["hidden_dims"] == "-".join(map(str, p.hidden_dims)) and flat["depth"] == len(p.hidden_dims)
    assert all(isinstance(v, (str, int, float)) for v in flat.values())
    assert TrainParams.from_flat(flat) == p
    assert TrainParams.from_flat(json.loads(json.dumps(flat))) == p  # Optuna user attrs
    assert TrainParams.from_flat({k: str(v) for k, v in flat.items()}) == p  # MLflow stores text


def test_from_flat_takes_hidden_dims_alone_or_depth_and_layers() -> None:
    p = base_params(hidden_dims=(512, 256))
    core = {k: v for k, v in p.to_flat().items() if k not in ("hidden_dims", "depth", "hidden_1", "hidden_2")}
    assert TrainParams.from_flat({**core, "hidden_dims": "512-256"}) == p
    assert TrainParams.from_flat({**core, "hidden_dims": [512, 256]}) == p
    assert TrainParams.from_flat({**core, "depth": 2, "hidden_1": 512, "hidden_2": 256}) == p


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"depth": 3}, "hidden_3"),  # depth says 3 layers, only 2 given
        ({"hidden_dims": "512"}, "hidden_dims"),  # disagrees with depth/hidden_i
        ({"hidden_3": 64}, "hidden_3"),  # beyond depth
        ({"hidden_dims": "512-abc"}, "hidden_dims"),
        ({"batch_size": "lots"}, "batch_size"),
        ({"learning_rte": 1e-3}, "learning_rte"),
    ],
)
def test_from_flat_refuses_inconsistent_input(changes: dict[str, object], key: str) -> None:
    flat = {**base_params(hidden_dims=(512, 256)).to_flat(), **changes}
    with pytest.raises(ConfigError) as info:
        TrainParams.from_flat(flat)
    assert info.value.key == key


def test_from_flat_non_strict_ignores_unknown_keys_and_requires_the_core() -> None:
    p = base_params()
    assert TrainParams.from_flat({**p.to_flat(), "dataset": "digits"}, strict=False) == p
    flat = p.to_flat()
    del flat["learning_rate"]
    with pytest.raises(ConfigError, match="missing learning_rate"):
        TrainParams.from_flat(flat)


def test_config_error_survives_pickling() -> None:  # loky workers send exceptions back pickled
    err = ConfigError("must be 1", key="space.depth", source="x.toml")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.key, back.source) == (str(err), "space.depth", "x.toml")


# --------------------------------------------------------------------------- SearchSpace.suggest


def tpe_study(seed: int = 0) -> optuna.Study:
    # The sampler the sweep uses: seeded multivariate TPE, grouped for the conditional hidden_i.
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    return optuna.create_study(direction="maximize", sampler=sampler)


def test_suggest_on_a_real_study_stays_in_the_space_and_matches_trial_params() -> None:
    space = SearchSpace()
    study = tpe_study()
    seen_depths = set()
    for _ in range(30):
        trial = study.ask()
        p = space.suggest(trial)
        assert space.contains(p)
        assert 0.2 <= p.keep_prob <= 1.0 and 1 <= p.depth <= 4 and all(32 <= w <= 512 for w in p.hidden_dims)
        assert 1e-4 <= p.learning_rate <= 1e-2 and p.normalization in ("none", "batchnorm", "layernorm")
        assert (p.reg, p.batch_size, p.update_rule, p.epochs, p.lr_decay) == (0.0, 100, "adam", 15, 0.95)
        # trial.params holds the searched settings, hidden_i only up to depth; the space fills in the rest ...
        assert set(trial.params) == {"keep_prob", "depth", "learning_rate", "normalization", "weight_scale"} | {
            f"hidden_{i}" for i in range(1, p.depth + 1)}  # fmt: skip
        assert space.params_from_trial(trial.params) == p
        # ... and to_flat carries every Optuna name with Optuna's value (MLflow params == Optuna's).
        flat = p.to_flat()
        assert {k: flat[k] for k in trial.params} == trial.params
        seen_depths.add(p.depth)
        study.tell(trial, p.keep_prob * p.learning_rate)
    assert len(seen_depths) >= 3


def test_fixed_values_are_not_hyperparameters() -> None:
    study = tpe_study()
    trial = study.ask()
    SearchSpace().suggest(trial)
    assert "epochs" not in trial.distributions and "update_rule" not in trial.distributions
    assert not trial.distributions["keep_prob"].single()


def test_keep_prob_exactly_one_is_reachable() -> None:
    space = SearchSpace()
    # 1. by sampling: a seeded random sampler draws exactly 1.0, and every draw is on the 0.05 grid
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    draws = []
    for _ in range(100):
        trial = study.ask()
        draws.append(space.suggest(trial).keep_prob)
        study.tell(trial, 0.0)
    assert max(draws) == 1.0 and min(draws) >= 0.2
    assert all(abs((k - 0.2) / 0.05 - round((k - 0.2) / 0.05)) < 1e-9 for k in draws)
    assert trial.distributions["keep_prob"].high == 1.0  # Optuna did not trim the range
    # 2. by enqueueing a no-dropout baseline
    study = tpe_study()
    study.enqueue_trial({"keep_prob": 1.0})
    trial = study.ask()
    assert space.suggest(trial).keep_prob == 1.0
    # 3. through a FixedTrial with a whole configuration
    params = base_params(keep_prob=1.0, hidden_dims=(64,), weight_scale=0.05, epochs=15, lr_decay=0.95)
    fixed = optuna.trial.FixedTrial({k: v for k, v in params.to_flat().items() if k != "hidden_dims"})
    assert space.suggest(fixed) == params


def test_searched_extras_and_numeric_choices() -> None:
    space = SearchSpace(
        epochs=Range(2, 4), batch_size=[50, 100, 200], update_rule=Choice(("sgd", "adam")),
        reg={"low": 1e-5, "high": 1e-2, "log": True}, depth=2, width=Range(16, 64, step=16),
    )  # fmt: skip
    study = tpe_study(seed=3)
    for _ in range(10):
        trial = study.ask()
        p = space.suggest(trial)
        assert space.contains(p) and p.depth == 2 and all(w in (16, 32, 48, 64) for w in p.hidden_dims)
        assert space.params_from_trial(trial.params) == p
        study.tell(trial, 0.0)
    assert not space.contains(base_params(hidden_dims=(16, 20), batch_size=50, epochs=2, reg=1e-3))


def test_a_fixed_value_can_later_be_searched_in_the_same_study() -> None:
    # Optuna refuses a name whose log flag changes within a study; a fixed learning rate is
    # suggested on the log scale a search of it uses, so a resumed study can widen it.
    study = tpe_study()
    for space in (SearchSpace(learning_rate=1e-3, width=64, weight_scale=0.05), SearchSpace()):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.5)
    assert len(study.trials) == 2


def test_params_from_trial_fills_what_the_space_fixes() -> None:
    space = SearchSpace(depth=2, width=64, weight_scale=0.05)
    study = tpe_study()
    trial = study.ask()
    p = space.suggest(trial)
    assert space.params_from_trial(trial.params) == p
    assert "depth" not in trial.params and "hidden_1" not in trial.params  # fixed: not hyperparameters
    partial = {"keep_prob": 0.5, "learning_rate": 1e-3, "normalization": "none"}  # e.g. an older trial
    assert space.params_from_trial(partial) == replace(p, **partial)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="missing"):
        SearchSpace().params_from_trial(partial)  # hidden sizes are searched there: nothing to fill


def test_max_epochs_is_the_largest_drawable() -> None:
    assert SearchSpace().max_epochs == 15
    assert SearchSpace(epochs=[3, 9, 5]).max_epochs == 9 and SearchSpace(epochs=Range(2, 7)).max_epochs == 7


def test_space_to_dict_is_json_and_from_dict_inverts_it() -> None:
    for space in (SearchSpace(), load_config(EXAMPLES / "cifar10.toml").space, SearchSpace(epochs=[5, 10])):
        d = json.loads(json.dumps(space.to_dict()))
        assert SearchSpace.from_dict(d) == space
    assert SearchSpace().to_dict() != SearchSpace(epochs=5).to_dict()  # a changed space is detectable


# --------------------------------------------------------------------------- AblationConfig and SweepConfig


def test_ablation_sizes_default_per_dataset() -> None:
    abl = AblationConfig()
    assert abl.resolved_sizes("cifar10") == (500, 2000, 10000, 49000)
    assert abl.resolved_sizes("digits") == (100, 300, 1000)
    assert AblationConfig(sizes=(50,)).resolved_sizes("cifar10") == (50,)
    with pytest.raises(ValueError, match="'digits', 'cifar10'"):
        abl.resolved_sizes("mnist")


def test_ablation_params_explicit_then_best_then_error() -> None:
    explicit, best = base_params(hidden_dims=(500,)), base_params(hidden_dims=(64,))
    assert AblationConfig(params=explicit).base_params(best) == explicit
    assert AblationConfig().base_params(best) == best
    assert AblationConfig(epochs=2).base_params(best) == replace(best, epochs=2)
    with pytest.raises(ValueError, match=r"ablation.params"):
        AblationConfig().base_params(None)


def test_sweep_config_jobs_and_study_name() -> None:
    assert SweepConfig().resolved_jobs() == len(os.sched_getaffinity(0))
    assert SweepConfig(jobs=3).resolved_jobs() == 3
    assert SweepConfig().study_name == "dropout-digits" and SweepConfig(study="s").study_name == "s"
    with pytest.raises(ValueError, match=r"sweep.trials: must be an integer >= 1"):
        SweepConfig(trials=0)
