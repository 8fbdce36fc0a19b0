"""Solver: epochs as permutations, metrics and callback contract, divergence, best params, inputs."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from model import FullyConnectedNet, Solver, TrainingDiverged
from model.solver import METRIC_KEYS

D, C = 12, 4


def make_data(n_train: int = 60, n_val: int = 30, seed: int = 0, dim: int = D) -> dict[str, np.ndarray]:
    """Linearly separable-ish classes so that training makes progress."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((C, dim)) * 2
    def split(n):
        y = rng.integers(0, C, n)
        return (centers[y] + rng.standard_normal((n, dim))).astype(np.float32), y
    X_train, y_train = split(n_train)
    X_val, y_val = split(n_val)
    return {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val}


def make_net(**kwargs) -> FullyConnectedNet:
    args = dict(input_dim=D, num_classes=C, weight_scale=0.1, seed=0)
    args.update(kwargs)
    return FullyConnectedNet([16, 16], **args)


class RecordingNet(FullyConnectedNet):
    """A real net that also records the first feature of every training row it sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[np.ndarray] = []

    def loss(self, X, y=None):
        if y is not None:
            self.seen.append(np.asarray(X)[:, 0].copy())
        return super().loss(X, y)


def ids_data(n: int) -> dict[str, np.ndarray]:
    """Feature 0 holds the row number, so recorded batches name their rows."""
    data = make_data(n_train=n)
    data["X_train"][:, 0] = np.arange(n)
    return data


# --------------------------------------------------------------------------- epochs
def test_each_epoch_is_a_fresh_permutation():
    net = RecordingNet([8], input_dim=D, num_classes=C, seed=0)
    solver = Solver(net, ids_data(60), batch_size=20, num_epochs=3, seed=1)
    solver.train()
    assert len(net.seen) == 9 and all(len(b) == 20 for b in net.seen)
    epochs = [np.concatenate(net.seen[3 * e: 3 * e + 3]) for e in range(3)]
    for rows in epochs:
        assert sorted(rows.astype(int)) == list(range(60))  # every row exactly once
    assert not np.array_equal(epochs[0], epochs[1])
    assert len(solver.loss_history) == 9


def test_leftover_rows_rotate_between_epochs():
    net = RecordingNet([8], input_dim=D, num_classes=C, seed=0)
    Solver(net, ids_data(65), batch_size=20, num_epochs=4, seed=2).train()
    epochs = [set(np.concatenate(net.seen[3 * e: 3 * e + 3]).astype(int)) for e in range(4)]
    assert all(len(rows) == 60 for rows in epochs)  # 3 full batches, 5 rows left out ...
    assert len(set.union(*epochs)) > 60  # ... not always the same 5


def test_batch_order_depends_on_solver_seed_only():
    def batches(keep_prob, norm, solver_seed):
        net = RecordingNet([8], input_dim=D, num_classes=C, keep_prob=keep_prob, normalization=norm, seed=5)
        Solver(net, ids_data(60), batch_size=15, num_epochs=3, num_train_samples=20, seed=solver_seed).train()
        return np.concatenate(net.seen)

    ref = batches(1.0, None, 3)
    assert np.array_equal(batches(0.5, "batchnorm", 3), ref)
    assert not np.array_equal(batches(1.0, None, 4), ref)


def test_small_training_set_is_one_batch():
    net = RecordingNet([8], input_dim=D, num_classes=C, seed=0)
    Solver(net, ids_data(7), batch_size=20, num_epochs=2, seed=0).train()
    assert [len(b) for b in net.seen] == [7, 7]


# --------------------------------------------------------------------------- metrics and callback
def test_on_epoch_gets_documented_metrics():
    data = make_data()
    calls = []
    solver = Solver(make_net(), data, optim_config={"learning_rate": 1e-2}, lr_decay=0.5, batch_size=20,
                    num_epochs=3, num_train_samples=None, seed=0,
                    on_epoch=lambda epoch, metrics: calls.append((epoch, dict(metrics))))
    solver.train()
    assert [e for e, _ in calls] == [1, 2, 3]
    for (epoch, m), stored in zip(calls, solver.epoch_metrics, strict=True):
        assert set(m) == set(METRIC_KEYS) and m == stored
        assert all(type(v) is float for v in m.values())
        assert m["gap"] == pytest.approx(m["train_acc"] - m["val_acc"])
        assert m["lr"] == pytest.approx(1e-2 * 0.5 ** (epoch - 1))
        assert m["epoch_seconds"] > 0
        assert m["train_loss"] == pytest.approx(np.mean(solver.loss_history[3 * (epoch - 1): 3 * epoch]))
    assert solver.train_acc_history == [m["train_acc"] for _, m in calls]
    assert solver.val_acc_history == [m["val_acc"] for _, m in calls]
    # The last epoch's numbers are the model's (test mode) on the whole splits.
    last = calls[-1][1]
    assert (last["val_acc"], last["val_loss"]) == pytest.approx(solver.evaluate(data["X_val"], data["y_val"]))
    assert last["train_acc"] == pytest.approx(solver.check_accuracy(data["X_train"], data["y_train"]))


def test_callback_returning_false_stops_training():
    solver = Solver(make_net(), make_data(), batch_size=20, num_epochs=5, seed=0,
                    on_epoch=lambda epoch, metrics: epoch < 2 and None)  # None, then False
    solver.train()
    assert solver.stopped_epoch == 2 and len(solver.epoch_metrics) == 2
    keep_going = Solver(make_net(), make_data(), batch_size=20, num_epochs=3, seed=0, on_epoch=lambda e, m: None)
    keep_going.train()
    assert keep_going.stopped_epoch is None and len(keep_going.epoch_metrics) == 3


# --------------------------------------------------------------------------- divergence
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_huge_learning_rate_raises_training_diverged():
    solver = Solver(make_net(), make_data(), update_rule="sgd", optim_config={"learning_rate": 1e30},
                    batch_size=20, num_epochs=5, seed=0)
    with pytest.raises(TrainingDiverged) as info:
        solver.train()
    err = info.value
    assert isinstance(err, ArithmeticError)
    assert solver.diverged_epoch == err.epoch >= 1
    assert err.iteration == solver.iteration
    assert not math.isfinite(err.loss) or "gradient" in str(err)
    assert str(err).startswith(f"diverged at epoch {err.epoch} (iteration {err.iteration}, loss=")
    # No update was made with the bad step: params and recorded losses are still finite.
    assert all(np.isfinite(p).all() for p in solver.model.params.values())
    assert all(math.isfinite(v) for v in solver.loss_history)
    assert len(solver.loss_history) == err.iteration - 1
    again = pickle.loads(pickle.dumps(err))  # crosses process boundaries (joblib)
    assert (again.epoch, again.iteration, str(again)) == (err.epoch, err.iteration, str(err))


class NaNGradientNet(FullyConnectedNet):
    """A real net whose third training call returns a finite loss but a NaN in dW1."""

    calls = 0

    def loss(self, X, y=None):
        out = super().loss(X, y)
        if y is not None:
            self.calls += 1
            if self.calls == 3:
                out[1]["W1"][0, 0] = np.nan
        return out


def test_non_finite_gradient_is_divergence_too():
    net = NaNGradientNet([8], input_dim=D, num_classes=C, seed=0)
    solver = Solver(net, make_data(), batch_size=20, num_epochs=2, seed=0)
    with pytest.raises(TrainingDiverged, match=r"iteration 3, loss=.*non-finite gradient W1"):
        solver.train()
    # Applying that step would have put a NaN into W1 (adam propagates it).
    assert solver.diverged_epoch == 1 and np.isfinite(net.params["W1"]).all()
    assert len(solver.loss_history) == 2


def test_nan_loss_message():
    err = TrainingDiverged(3, 41, float("nan"))
    assert str(err) == "diverged at epoch 3 (iteration 41, loss=nan)"
    assert (err.epoch, err.iteration) == (3, 41) and math.isnan(err.loss)


# --------------------------------------------------------------------------- best params
def test_best_params_are_copies_and_reload_with_running_stats():
    data = make_data(seed=3)
    net = make_net(normalization="batchnorm", keep_prob=0.7)
    solver = Solver(net, data, optim_config={"learning_rate": 3e-2}, batch_size=10, num_epochs=6, seed=0)
    solver.train()
    hist = solver.val_acc_history
    assert solver.best_val_acc == max(hist)
    assert solver.best_epoch == hist.index(max(hist)) + 1
    assert all(solver.best_params[k] is not v for k, v in net.params.items())
    net.params["W1"] += 1.0  # must not leak into the saved copy
    assert not np.array_equal(solver.best_params["W1"], net.params["W1"])
    for p in net.bn_params:  # later training would move these too
        p["running_mean"] = p["running_mean"] + 100.0
    solver.load_best_params()
    acc, _ = solver.evaluate(data["X_val"], data["y_val"])
    assert acc == solver.best_val_acc  # params AND batchnorm statistics of that epoch


def test_load_best_params_before_training():
    with pytest.raises(ValueError, match="train"):
        Solver(make_net(), make_data(), seed=0).load_best_params()


# --------------------------------------------------------------------------- learning and reproducibility
def test_overfits_fifty_examples():
    rng = np.random.default_rng(0)
    data = {"X_train": rng.standard_normal((50, 3 * 32 * 32), dtype=np.float32), "y_train": rng.integers(0, 10, 50),
            "X_val": rng.standard_normal((20, 3 * 32 * 32), dtype=np.float32), "y_val": rng.integers(0, 10, 20)}
    net = FullyConnectedNet([100, 100], weight_scale=1e-2, seed=0)
    solver = Solver(net, data, update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=25,
                    num_epochs=20, num_train_samples=None, seed=0)
    solver.train()
    assert max(solver.train_acc_history) == 1.0


def test_same_seeds_same_params_after_two_epochs():
    data = make_data()

    def trained(model_seed, solver_seed):
        net = make_net(keep_prob=0.6, normalization="batchnorm", seed=model_seed)
        Solver(net, data, batch_size=10, num_epochs=2, seed=solver_seed).train()
        return net.params

    a, b = trained(1, 1), trained(1, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    for other in (trained(2, 1), trained(1, 2)):
        assert not np.array_equal(a["W1"], other["W1"])


def test_read_only_memmap_data(tmp_path):
    data = make_data()
    maps = {}
    for key, arr in data.items():
        np.save(tmp_path / f"{key}.npy", arr)
        maps[key] = np.load(tmp_path / f"{key}.npy", mmap_mode="r")
    solver = Solver(make_net(), maps, batch_size=20, num_epochs=2, num_val_samples=10, seed=0)
    solver.train()
    for key, arr in data.items():
        assert np.array_equal(np.load(tmp_path / f"{key}.npy"), arr)
    assert len(solver.val_acc_history) == 2


def test_evaluate_is_batch_size_independent():
    data = make_data(n_val=37)
    solver = Solver(make_net(normalization="batchnorm"), data, batch_size=20, num_epochs=1, seed=0)
    solver.train()
    full = solver.evaluate(data["X_val"], data["y_val"], batch_size=1000)
    small = solver.evaluate(data["X_val"], data["y_val"], batch_size=4)
    assert full[0] == small[0] and full[1] == pytest.approx(small[1], rel=1e-6)
    scores = solver.model.loss(data["X_val"])
    assert full[0] == np.mean(scores.argmax(axis=1) == data["y_val"])
    assert 0 <= solver.check_accuracy(data["X_val"], data["y_val"], num_samples=10) <= 1


# --------------------------------------------------------------------------- validation
def bad(data: dict, key: str, value) -> dict:
    out = dict(data)
    out[key] = value
    return out


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda d: ({k: v for k, v in d.items() if k != "y_val"}, {}), r"missing 'y_val'"),
        (lambda d: (bad(d, "X_train", d["X_train"][:, :5]), {}), r"data\['X_train'\] rows must have 12 features"),
        (lambda d: (bad(d, "y_train", d["y_train"][:-1]), {}), r"data\['y_train'\] must have shape \(60,\)"),
        (lambda d: (bad(d, "y_val", d["y_val"] + C), {}), r"data\['y_val'\] labels must be in 0\.\.3"),
        (lambda d: (bad(d, "y_train", d["y_train"].astype(float)), {}), r"integer labels"),
        (lambda d: (bad(d, "X_val", np.where(np.arange(30)[:, None] == 17, np.nan, d["X_val"])), {}),
         r"data\['X_val'\] must be finite: found NaN or inf in rows"),
        (lambda d: (bad(d, "X_train", np.where(np.arange(60)[:, None] == 3, np.inf, d["X_train"])), {}),
         r"data\['X_train'\] must be finite"),
        (lambda d: (d, {"update_rule": "adagrad"}), r"update_rule must be one of \['adam', 'rmsprop', 'sgd', 'sgd_momentum'\]"),
        (lambda d: (d, {"batch_size": 0}), r"batch_size must be an int >= 1"),
        (lambda d: (d, {"num_epochs": 0}), r"num_epochs must be an int >= 1"),
        (lambda d: (d, {"lr_decay": 0.0}), r"lr_decay must be in \(0, 1\]"),
        (lambda d: (d, {"optim_config": {"learning_rate": -1}}), r"learning_rate'\] must be a finite number > 0"),
        (lambda d: (d, {"optim_config": {"lr": 1e-3}}), r"adam config has unknown key 'lr': adam takes learning_rate"),
        (lambda d: (d, {"num_train_samples": 0}), r"num_train_samples must be None or an int >= 1"),
        (lambda d: (d, {"seed": -1}), r"seed must be None or a non-negative int"),
    ],
)
def test_solver_rejects_bad_setup(change, pattern):
    data, kwargs = change(make_data())
    with pytest.raises(ValueError, match=pattern):
        Solver(make_net(), data, **kwargs)


def test_finite_check_does_not_misfire_on_large_values():
    """The chunked scan sums rows; a float overflow of that sum is not mistaken for inf."""
    data = make_data()
    data["X_train"] = np.full((60, D), 1e308)  # float64: the row sums overflow to inf
    Solver(make_net(), data, seed=0)  # no ValueError: every element is finite


def test_evaluate_rejects_bad_inputs():
    solver = Solver(make_net(), make_data(), seed=0)
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"):
        solver.evaluate(np.zeros((5, D), np.float32), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="batch_size"):
        solver.evaluate(np.zeros((5, D), np.float32), np.zeros(5, dtype=int), batch_size=0)
