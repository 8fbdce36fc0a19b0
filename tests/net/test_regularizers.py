"""Max-norm, input dropout and image augmentation (issue 20, model side).

Each regularizer: what it does checked against an independent reference,
its refusal of bad values, and that it shifts no other random draw (the
seed-paired comparison needs every arm of one seed to start from the same
weights and see the same batches).
"""

from __future__ import annotations

import numpy as np
import pytest

from model import FullyConnectedNet, Solver, layers
from model.augment import apply_augmentation, augment_batch, draw_augmentation, epoch_rng
from model.gradcheck import eval_numerical_gradient, rel_error
from model.net import project_max_norm

D, C = 12, 4


def make_data(n_train: int = 60, n_val: int = 20, dim: int = D, seed: int = 2020, dtype=np.float32):
    """Separable-ish classes (the golden histories below were recorded on exactly these)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((C, dim)) * 2

    def split(n):
        y = rng.integers(0, C, n)
        return (centers[y] + rng.standard_normal((n, dim))).astype(dtype), y

    X_train, y_train = split(n_train)
    X_val, y_val = split(n_val)
    return {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val}


def reference_project(w: np.ndarray, c: float) -> np.ndarray:
    """Column by column, in float64: w_j * min(1, c / ||w_j||)."""
    out = np.array(w, dtype=np.float64)
    for j in range(out.shape[1]):
        norm = np.sqrt(sum(float(v) ** 2 for v in out[:, j]))
        if norm > c:
            out[:, j] *= c / norm
    return out


def column_norms(w: np.ndarray) -> np.ndarray:
    return np.linalg.norm(w.astype(np.float64), axis=0)


# --------------------------------------------------------------------------- max-norm
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_projection_matches_reference(dtype):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((300, 40)) * rng.uniform(0.01, 0.2, 40)).astype(dtype)
    c = 1.0
    norms = column_norms(w)
    assert (norms > c).any() and (norms < c).any()  # both cases present
    before = w.copy()
    out = project_max_norm(w, c)
    assert out is w  # in place
    ref = reference_project(before, c)
    tol = 1e-13 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(w, ref, rtol=tol, atol=0)
    inside = norms <= c
    assert np.array_equal(w[:, inside], before[:, inside])  # untouched bit for bit
    assert column_norms(w).max() <= c + 1e-6


def test_projection_of_a_cifar_sized_float32_layer_is_within_1e_6():
    # A float32 sum of squares down 3072 rows is off by ~3e-6 relative: at
    # c = 4 the projected norms would exceed c by up to 5e-6.
    w = (np.random.default_rng(1).standard_normal((3072, 256)) * 0.1).astype(np.float32)
    project_max_norm(w, 4.0)
    norms = column_norms(w)
    assert norms.max() <= 4.0 + 1e-6
    assert norms.min() >= 4.0 - 1e-6  # every column was over: all end on the bound


class NormWatchingNet(FullyConnectedNet):
    """A real net that, at every training call, records each W's largest column norm.

    A training call comes right after the previous step's update and
    constraint, so the records see the weights every step leaves behind.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norms: list[list[float]] = []

    def loss(self, X, y=None):
        if y is not None:
            self.norms.append([column_norms(self.params[f"W{i}"]).max() for i in range(1, self.num_layers + 1)])
        return super().loss(X, y)


@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_max_norm_holds_after_every_step(normalization):
    c = 0.5
    data = make_data()

    def run(max_norm):
        net = NormWatchingNet([16, 16], input_dim=D, num_classes=C, keep_prob=0.8, normalization=normalization,
                              weight_scale=0.1, seed=1, max_norm=max_norm)
        solver = Solver(net, data, optim_config={"learning_rate": 3e-2}, batch_size=10, num_epochs=3, seed=2)
        solver.train()
        net.norms.append([column_norms(net.params[f"W{i}"]).max() for i in range(1, 4)])  # after the last step
        return np.array(net.norms)

    free, constrained = run(None), run(c)
    assert free[0, :2].max() < c  # the initial weights are inside the ball ...
    assert (free[1:, :2] > c + 0.1).any()  # ... and without the constraint training leaves it
    hidden = constrained[1:, :2]  # W1, W2 after each of the 18 steps
    assert hidden.max() <= c + 1e-6
    assert (hidden > c - 1e-6).sum() > len(hidden)  # the bound is reached, i.e. it binds
    assert constrained[1:, 2].max() > c + 0.1  # the output layer is not constrained


def test_one_step_with_max_norm_is_the_step_then_the_reference_projection():
    c = 0.3
    data = make_data(dtype=np.float64)
    X, y = data["X_train"][:10], data["y_train"][:10]

    def one_step(max_norm):
        net = FullyConnectedNet([16, 16], input_dim=D, num_classes=C, weight_scale=0.1, dtype=np.float64,
                                seed=5, max_norm=max_norm)
        Solver(net, data, optim_config={"learning_rate": 5e-2}, seed=0).train_step(X, y)
        return net.params

    free, constrained = one_step(None), one_step(c)
    for name in free:
        expected = reference_project(free[name], c) if name in ("W1", "W2") else free[name]
        np.testing.assert_allclose(constrained[name], expected, rtol=1e-13, atol=0, err_msg=name)
    assert not np.allclose(constrained["W1"], free["W1"])  # the projection did something


# --------------------------------------------------------------------------- input dropout
def test_input_dropout_keeps_the_fraction_and_scales_by_its_inverse():
    # Softmax regression with W = 0, b = 0 and one row: scores are 0 whatever the
    # input, so dscores = [-1/2, 1/2] for label 0 and dW1[:, 1] = X_dropped / 2.
    # The net's own backward pass reports the dropped input exactly.
    keep, n_features = 0.7, 40_000
    net = FullyConnectedNet([], input_dim=n_features, num_classes=2, dtype=np.float64, seed=3, input_keep_prob=keep)
    net.params["W1"][:] = 0
    X, y = np.ones((1, n_features)), np.array([0])
    seen = []
    for _ in range(3):
        _, grads = net.loss(X, y)
        seen.append(2 * grads["W1"][:, 1])
    for x_dropped in seen:
        kept = x_dropped != 0
        assert abs(kept.mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / n_features)
        np.testing.assert_allclose(x_dropped[kept], 1 / keep, rtol=1e-15)
    assert not np.array_equal(seen[0], seen[1])  # a fresh mask per training call
    # Same seed, same masks: drawn from the net's seeded stream.
    again = FullyConnectedNet([], input_dim=n_features, num_classes=2, dtype=np.float64, seed=3, input_keep_prob=keep)
    again.params["W1"][:] = 0
    assert np.array_equal(2 * again.loss(X, y)[1]["W1"][:, 1], seen[0])


def test_input_dropout_is_off_at_test_time():
    X = np.random.default_rng(0).standard_normal((5, D))
    plain = FullyConnectedNet([16], input_dim=D, num_classes=C, weight_scale=0.3, seed=4)
    dropped = FullyConnectedNet([16], input_dim=D, num_classes=C, weight_scale=0.3, seed=4, input_keep_prob=0.5)
    assert np.array_equal(plain.loss(X), dropped.loss(X))


def _relu_inputs(net: FullyConnectedNet, X: np.ndarray) -> list[np.ndarray]:
    """Every hidden ReLU input in train mode, recomputed from model.layers (fixed masks)."""
    h, out = layers.dropout_forward(X, net.input_dropout_param)[0], []
    for i in range(1, net.num_layers):
        z, _ = layers.affine_forward(h, net.params[f"W{i}"], net.params[f"b{i}"])
        out.append(z)
        h = np.maximum(z, 0)
        if net.use_dropout:
            h, _ = layers.dropout_forward(h, net.dropout_params[i - 1])
    return out


@pytest.mark.parametrize("keep_prob", [1.0, 0.6])
def test_gradients_with_input_dropout(keep_prob):
    # As tests/net/test_net.py: float64, fourth-order differences, a point with every
    # ReLU input at least 2e-2 from the kink and jittered biases.
    rng = np.random.default_rng(int(keep_prob * 10))
    while True:
        X, y = rng.standard_normal((4, 5)), rng.integers(0, 3, 4)
        net = FullyConnectedNet([6, 7], input_dim=5, num_classes=3, keep_prob=keep_prob, input_keep_prob=0.5,
                                weight_scale=0.3, dtype=np.float64, seed=int(rng.integers(2**31)),
                                dropout_seed=int(rng.integers(2**31)))
        for name, p in net.params.items():
            if name.startswith("b"):
                p += 0.1 * rng.standard_normal(p.shape)
        if min(np.abs(z).min() for z in _relu_inputs(net, X)) > 2e-2:
            break
    loss, grads = net.loss(X, y)
    assert loss == net.loss(X, y)[0]  # dropout_seed fixes the input mask too
    mask = layers.dropout_forward(np.ones_like(X), net.input_dropout_param)[0]
    assert (mask == 0).any()  # some inputs really are dropped at this point
    for name in sorted(grads):
        num = eval_numerical_gradient(lambda _: net.loss(X, y)[0], net.params[name], h=1e-4, order=4)
        assert rel_error(num, grads[name], floor=5e-5 * max(1.0, abs(loss))) < 1e-7, name


# --------------------------------------------------------------------------- no shifted draws
# Loss histories recorded with the code before input dropout / max-norm /
# augmentation existed (commit f3df949), float64: a regularizer left at its
# default must not change a single draw (init, masks, batch order).
GOLDEN = {
    None: [1.400763081643, 1.35780901822, 1.360893807053, 1.320753585152, 1.259721413646, 1.216388213148],
    "batchnorm": [1.492916451039, 1.296506622385, 1.247047091438, 1.172921682925, 1.052354654021, 1.128861239298],
}


@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_defaults_train_exactly_as_before(normalization):
    data = make_data(dtype=np.float64)
    net = FullyConnectedNet([16, 16], input_dim=D, num_classes=C, keep_prob=0.5, normalization=normalization,
                            weight_scale=0.1, dtype=np.float64, seed=7, input_keep_prob=1.0, max_norm=None)
    solver = Solver(net, data, optim_config={"learning_rate": 1e-2}, batch_size=20, num_epochs=2, seed=3,
                    augment_flip=False, augment_shift=0)
    solver.train()
    # 1e-10: float64 BLAS may round differently across CPUs; a shifted draw changes the first digit.
    np.testing.assert_allclose(solver.loss_history, GOLDEN[normalization], rtol=1e-10)


def test_input_dropout_shifts_no_hidden_mask():
    X, y = np.random.default_rng(1).standard_normal((8, D)), np.arange(8) % C
    a = FullyConnectedNet([16, 16], input_dim=D, num_classes=C, keep_prob=0.5, seed=9)
    b = FullyConnectedNet([16, 16], input_dim=D, num_classes=C, keep_prob=0.5, seed=9, input_keep_prob=0.5, max_norm=1.0)
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    for _ in range(2):
        a.loss(X, y), b.loss(X, y)
    for pa, pb in zip(a.dropout_params, b.dropout_params, strict=True):
        assert pa["rng"].bit_generator.state == pb["rng"].bit_generator.state


# --------------------------------------------------------------------------- augmentation
def reference_transform(image: np.ndarray, flip: bool, dy: int, dx: int) -> np.ndarray:
    """One (C, H, W) image: mirror, then out[:, i, j] = x[:, i - dy, j - dx] or 0, pixel by pixel."""
    x = image[:, :, ::-1] if flip else image
    _, h, w = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[:, i, j] = x[:, i - dy, j - dx]
    return out


def images(n: int, shape=(3, 32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, int(np.prod(shape)))).astype(np.float32)


def test_apply_matches_a_pixel_by_pixel_reference():
    shape = (3, 9, 7)
    X = images(40, shape)
    flips, dy, dx = draw_augmentation(40, np.random.default_rng(1), flip=True, max_shift=3)
    assert flips.any() and (~flips).any() and (dy != 0).any() and (dx != 0).any()
    out = apply_augmentation(X, shape, flips, dy, dx)
    assert out.dtype == X.dtype and out.shape == X.shape
    for k in range(40):
        expected = reference_transform(X[k].reshape(shape), flips[k], dy[k], dx[k]).ravel()
        assert np.array_equal(out[k], expected), (k, flips[k], dy[k], dx[k])


def test_a_flipped_image_is_its_mirror_exactly():
    X = images(5)
    out = apply_augmentation(X, (3, 32, 32), np.ones(5, bool), np.zeros(5, int), np.zeros(5, int))
    assert np.array_equal(out, X.reshape(5, 3, 32, 32)[..., ::-1].reshape(5, -1))


def test_a_shift_moves_pixels_by_what_it_says_with_zero_padding():
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[0, :, 10, 20] = [1, 2, 3]  # one coloured pixel
    x[0, 1, 31, 31] = 7  # a corner pixel: shifted out of the image
    out = apply_augmentation(x.reshape(1, -1), (3, 32, 32), np.array([False]), np.array([2]), np.array([-3]))
    out = out.reshape(3, 32, 32)
    assert out[:, 12, 17].tolist() == [1, 2, 3]  # 2 down, 3 left
    assert np.count_nonzero(out) == 3  # the corner pixel left the image
    full = apply_augmentation(np.ones((1, 3 * 32 * 32), np.float32), (3, 32, 32), np.array([False]),
                              np.array([-4]), np.array([3])).reshape(3, 32, 32)
    assert (full[:, :, :3] == 0).all() and (full[:, -4:, :] == 0).all()  # zeros enter on the left and bottom
    assert (full[:, :-4, 3:] == 1).all()


def test_augment_batch_is_deterministic_per_seed_and_epoch():
    X = images(200)
    first = augment_batch(X, epoch_rng(11, 1))
    assert np.array_equal(first, augment_batch(X, epoch_rng(11, 1)))
    assert not np.array_equal(first, augment_batch(X, epoch_rng(11, 2)))
    assert not np.array_equal(first, augment_batch(X, epoch_rng(12, 1)))
    # It does what its draws say: the same Generator state, drawn then applied.
    flips, dy, dx = draw_augmentation(200, epoch_rng(11, 1), flip=True, max_shift=4)
    assert np.array_equal(first, apply_augmentation(X, (3, 32, 32), flips, dy, dx))
    assert 0.35 < flips.mean() < 0.65
    assert set(np.unique(dy)) == set(range(-4, 5)) and set(np.unique(dx)) == set(range(-4, 5))


def test_flip_only_and_shift_only():
    X = images(50)
    mirrored = X.reshape(50, 3, 32, 32)[..., ::-1].reshape(50, -1)
    out = augment_batch(X, np.random.default_rng(0), flip=True, max_shift=0)
    is_flip = np.all(out == mirrored, axis=1)
    assert np.all(is_flip | np.all(out == X, axis=1)) and 0 < is_flip.sum() < 50
    assert augment_batch(X, np.random.default_rng(0), flip=False, max_shift=0) is X  # nothing to do


class RecordingNet(FullyConnectedNet):
    """A real net that records every X it sees, by mode."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_X: list[np.ndarray] = []
        self.test_X: list[np.ndarray] = []

    def loss(self, X, y=None):
        (self.test_X if y is None else self.train_X).append(np.array(X))
        return super().loss(X, y)


class RecordingSolver(Solver):
    """A real Solver that records each epoch's minibatch indices."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_ids: list[np.ndarray] = []

    def _batches(self):
        batches = super()._batches()
        self.batch_ids.extend(b.copy() for b in batches)
        return batches


def image_data(n_train=30, n_val=10, shape=(1, 8, 8)):
    dim = int(np.prod(shape))
    data = make_data(n_train, n_val, dim=dim)
    return data, dim


def test_solver_augments_training_batches_only_from_seed_and_epoch():
    data, dim = image_data()
    net = RecordingNet([8], input_dim=dim, num_classes=C, seed=0)
    solver = RecordingSolver(net, data, batch_size=10, num_epochs=2, seed=4, num_train_samples=20,
                             augment_flip=True, augment_shift=2, image_shape=(1, 8, 8))
    solver.train()
    assert len(net.train_X) == 6
    k = 0
    for epoch in (1, 2):
        rng = epoch_rng(4, epoch)
        for _ in range(3):
            idx = solver.batch_ids[k]
            expected = augment_batch(data["X_train"][idx], rng, image_shape=(1, 8, 8), flip=True, max_shift=2)
            assert np.array_equal(net.train_X[k], expected)
            k += 1
    assert not np.array_equal(net.train_X[0], data["X_train"][solver.batch_ids[0]])
    # Evaluation (train accuracy, validation, evaluate/check_accuracy) sees the rows as they are.
    raw_rows = {r.tobytes() for r in np.concatenate([data["X_train"], data["X_val"]])}
    solver.check_accuracy(data["X_val"], data["y_val"])
    solver.evaluate(data["X_train"], data["y_train"], num_samples=7)
    assert net.test_X and all(r.tobytes() in raw_rows for X in net.test_X for r in X)


def test_arms_of_one_seed_start_equal_and_see_the_same_batches():
    data, dim = image_data(n_train=45)
    arms = [
        ({}, {}),
        ({"max_norm": 0.5}, {}),
        ({"input_keep_prob": 0.8, "keep_prob": 0.5}, {}),
        ({}, {"augment_flip": True, "augment_shift": 1, "image_shape": (1, 8, 8)}),
    ]
    initial, orders = [], []
    for net_kwargs, solver_kwargs in arms:
        net = FullyConnectedNet([8], input_dim=dim, num_classes=C, weight_scale=0.1, seed=21, **net_kwargs)
        initial.append({k: v.copy() for k, v in net.params.items()})
        solver = RecordingSolver(net, data, batch_size=10, num_epochs=3, seed=22, **solver_kwargs)
        solver.train()
        orders.append(np.concatenate(solver.batch_ids))
    for params, order in zip(initial[1:], orders[1:], strict=True):
        assert all(np.array_equal(params[k], initial[0][k]) for k in params)
        assert np.array_equal(order, orders[0])


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"input_keep_prob": 0.0}, r"^input_keep_prob must be in \(0, 1\]"),
        ({"input_keep_prob": 1.5}, r"^input_keep_prob must be in \(0, 1\]"),
        ({"input_keep_prob": True}, r"^input_keep_prob must be in \(0, 1\]"),
        ({"input_keep_prob": "0.5"}, r"^input_keep_prob must be in \(0, 1\]"),
        ({"max_norm": 0}, r"^max_norm must be None or a finite number > 0"),
        ({"max_norm": -1.0}, r"^max_norm must be None or a finite number > 0"),
        ({"max_norm": float("inf")}, r"^max_norm must be None or a finite number > 0"),
        ({"max_norm": float("nan")}, r"^max_norm must be None or a finite number > 0"),
        ({"max_norm": True}, r"^max_norm must be None or a finite number > 0"),
    ],
)
def test_net_refuses_bad_values(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        FullyConnectedNet([8], input_dim=D, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "dim", "pattern"),
    [
        ({"augment_shift": -1}, 3072, r"^augment_shift must be an int in 0\.\.31"),
        ({"augment_shift": 32}, 3072, r"^augment_shift must be an int in 0\.\.31"),
        ({"augment_shift": 2.0}, 3072, r"^augment_shift must be an int"),
        ({"augment_shift": True}, 3072, r"^augment_shift must be an int"),
        ({"augment_flip": "yes"}, 3072, r"^augment_flip must be True or False"),
        ({"augment_flip": True, "image_shape": (32, 32)}, 3072, r"^image_shape must be three positive ints"),
        ({"augment_flip": True, "image_shape": (0, 32, 32)}, 3072, r"^image_shape must be three positive ints"),
        ({"augment_shift": 8, "image_shape": (1, 8, 8)}, 64, r"^augment_shift must be an int in 0\.\.7"),
        ({"augment_flip": True}, 64, r"^augmentation needs image rows of image_shape=\(3, 32, 32\) \(3072 features"
                                     r".*got 64 features; digits rows are 8x8 grayscale: pass image_shape=\(1, 8, 8\)"),
        ({"augment_shift": 4}, 100, r"^augmentation needs image rows .*got 100 features$"),
    ],
)
def test_solver_refuses_bad_augmentation(kwargs, dim, pattern):
    data = make_data(n_train=10, n_val=5, dim=dim)
    net = FullyConnectedNet([4], input_dim=dim, num_classes=C, seed=0)
    with pytest.raises(ValueError, match=pattern) as info:
        Solver(net, data, **kwargs)
    assert "\n" not in str(info.value)


def test_augmentation_off_needs_no_image_shape():
    data = make_data(n_train=10, n_val=5, dim=64)  # digits-sized rows, default image_shape (3, 32, 32)
    Solver(FullyConnectedNet([4], input_dim=64, num_classes=C, seed=0), data, num_epochs=1).train()
