"""Update rules: textbook formulas as the reference, in-place contract, defaults, errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from model import optim


def reference(
    rule: str,
    w: np.ndarray,
    grads: list[np.ndarray],
    state1: np.ndarray | None = None,
    state2: np.ndarray | None = None,
    t0: int = 0,
    **cfg: float,
) -> np.ndarray:
    """The cs231n formulas, written plainly (new arrays every step), in float64.

    ``state1`` is velocity / cache / adam's m, ``state2`` adam's v, ``t0``
    adam's steps already taken (t is incremented before the bias correction).
    """
    w = w.astype(np.float64)
    state1 = np.zeros_like(w) if state1 is None else np.asarray(state1, dtype=np.float64)
    state2 = np.zeros_like(w) if state2 is None else np.asarray(state2, dtype=np.float64)
    for t, g in enumerate(grads, start=t0 + 1):
        g = g.astype(np.float64)
        if rule == "sgd":
            w = w - cfg.get("learning_rate", 1e-2) * g
        elif rule == "sgd_momentum":
            state1 = cfg.get("momentum", 0.9) * state1 - cfg.get("learning_rate", 1e-2) * g
            w = w + state1
        elif rule == "rmsprop":
            decay = cfg.get("decay_rate", 0.99)
            state1 = decay * state1 + (1 - decay) * g**2
            w = w - cfg.get("learning_rate", 1e-2) * g / (np.sqrt(state1) + cfg.get("epsilon", 1e-8))
        elif rule == "adam":
            b1, b2 = cfg.get("beta1", 0.9), cfg.get("beta2", 0.999)
            state1 = b1 * state1 + (1 - b1) * g
            state2 = b2 * state2 + (1 - b2) * g**2
            m_hat = state1 / (1 - b1**t)
            v_hat = state2 / (1 - b2**t)
            w = w - cfg.get("learning_rate", 1e-3) * m_hat / (np.sqrt(v_hat) + cfg.get("epsilon", 1e-8))
    return w, state1, state2


RULES = ["sgd", "sgd_momentum", "rmsprop", "adam"]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("shape", [(7,), (30, 11), (300, 700)])  # the last spans several blocks
def test_rule_matches_reference(rule, shape):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(4)]
    w = w0.copy()
    config: dict = {}
    for g in grads:
        next_w, config = optim.UPDATE_RULES[rule](w, g, config)
        assert next_w is w  # in place
    np.testing.assert_allclose(w, reference(rule, w0, grads)[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", RULES)
def test_rule_with_explicit_config_and_float32(rule):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((50, 40)).astype(np.float32)
    grads = [rng.standard_normal((50, 40)).astype(np.float32) for _ in range(3)]
    cfg = {"learning_rate": 0.05}
    if rule == "sgd_momentum":
        cfg["momentum"] = 0.5
    if rule == "rmsprop":
        cfg["decay_rate"] = 0.9
    if rule == "adam":
        cfg.update(beta1=0.8, beta2=0.99)
    w = w0.copy()
    config = dict(cfg)
    for g in grads:
        w, config = optim.UPDATE_RULES[rule](w, g, config)
    assert w.dtype == np.float32
    for key in ("velocity", "cache", "m_sum", "v_sum"):
        if key in config:
            assert config[key].dtype == np.float32
    np.testing.assert_allclose(w, reference(rule, w0, grads, **cfg)[0], rtol=1e-5, atol=1e-6)


def test_defaults_are_cs231n():
    w, g = np.ones(3), np.ones(3)
    assert optim.sgd(w.copy(), g)[1]["learning_rate"] == 1e-2
    c = optim.sgd_momentum(w.copy(), g)[1]
    assert (c["learning_rate"], c["momentum"]) == (1e-2, 0.9)
    c = optim.rmsprop(w.copy(), g)[1]
    assert (c["learning_rate"], c["decay_rate"], c["epsilon"]) == (1e-2, 0.99, 1e-8)
    c = optim.adam(w.copy(), g)[1]
    assert (c["learning_rate"], c["beta1"], c["beta2"], c["epsilon"], c["t"]) == (1e-3, 0.9, 0.999, 1e-8, 1)


def test_adam_first_step_is_bias_corrected():
    """t is incremented before use: the first step moves every weight by ~lr * sign(g)."""
    g = np.array([1e-4, -3.0, 50.0])
    w, config = optim.adam(np.zeros(3), g, {"learning_rate": 0.01})
    np.testing.assert_allclose(w, -0.01 * np.sign(g), rtol=1e-3)
    assert config["t"] == 1


def test_get_update_rule():
    assert optim.get_update_rule("adam") is optim.adam
    with pytest.raises(ValueError, match=r"update_rule must be one of \['adam', 'rmsprop', 'sgd', 'sgd_momentum'\]"):
        optim.get_update_rule("adagrad")


def test_rules_refuse_what_they_cannot_update_in_place():
    w = np.ones((4, 6))[:, ::2]  # a strided view
    with pytest.raises(ValueError, match="C-contiguous"):
        optim.adam(w, np.ones_like(w))
    with pytest.raises(ValueError, match="dw must have w's shape"):
        optim.sgd(np.ones(4), np.ones(5))


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((20, 9))
    grads = [rng.standard_normal((20, 9)) for _ in range(5)]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.Adam([p], lr=3e-3, betas=(0.9, 0.999), eps=1e-8)
    w, config = w0.copy(), {"learning_rate": 3e-3}
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        w, config = optim.adam(w, g, config)
    np.testing.assert_allclose(w, p.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert math.isclose(config["t"], 5)



# The assignment's state keys: (rule, key of state1, key of state2).
ASSIGNMENT_STATE = [("sgd_momentum", "velocity", None), ("rmsprop", "cache", None), ("adam", "m", "v")]


@pytest.mark.parametrize(("rule", "key1", "key2"), ASSIGNMENT_STATE)
@pytest.mark.parametrize("shape", [(4, 5), (300, 700)])  # the second spans several blocks
def test_assignment_config_starts_from_the_given_state(rule, key1, key2, shape):
    """A config written as in cs231n assignment 2 (given velocity / cache / m, v, t) gives its results."""
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(3)]
    s1 = rng.uniform(0.1, 0.9, shape)
    s2 = rng.uniform(0.1, 0.9, shape) if key2 else None
    config: dict = {"learning_rate": 1e-2, key1: s1}
    t0 = 0
    if key2:
        config[key2] = s2
        config["t"] = t0 = 5
    given = {k: config[k].copy() for k in (key1, key2) if k}
    w = w0.copy()
    for g in grads:
        w, config = optim.UPDATE_RULES[rule](w, g, config)
    ref_w, ref1, ref2 = reference(rule, w0, grads, s1, s2, t0, learning_rate=1e-2)
    np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(config[key1], ref1, rtol=1e-12, atol=1e-14)
    if key2:
        np.testing.assert_allclose(config[key2], ref2, rtol=1e-12, atol=1e-14)
        assert config["t"] == t0 + len(grads)
    # The caller's arrays are the starting state, not updated behind their back.
    np.testing.assert_array_equal(s1, given[key1])
    if key2:
        np.testing.assert_array_equal(s2, given[key2])


def test_assignment_notebook_check_values():
    """The assignment notebook's own checks (a few of its printed expected values, 8 digits)."""
    n, d = 4, 5
    w = np.linspace(-0.4, 0.6, num=n * d).reshape(n, d)
    dw = np.linspace(-0.6, 0.4, num=n * d).reshape(n, d)
    state = np.linspace(0.6, 0.9, num=n * d).reshape(n, d)

    next_w, config = optim.sgd_momentum(w.copy(), dw, {"learning_rate": 1e-3, "velocity": state})
    np.testing.assert_allclose(next_w[0, :2], [0.1406, 0.20738947], rtol=1e-7)
    np.testing.assert_allclose(config["velocity"][-1, -2:], [0.79544211, 0.8096], rtol=1e-7)

    next_w, config = optim.rmsprop(w.copy(), dw, {"learning_rate": 1e-2, "cache": state})
    np.testing.assert_allclose(next_w[0, :2], [-0.39223849, -0.34037513], rtol=1e-7)
    np.testing.assert_allclose(config["cache"][-1, -2:], [0.87657507, 0.8926], rtol=1e-7)

    v = np.linspace(0.7, 0.5, num=n * d).reshape(n, d)
    next_w, config = optim.adam(w.copy(), dw, {"learning_rate": 1e-2, "m": state, "v": v, "t": 5})
    np.testing.assert_allclose(next_w[0, :2], [-0.40094747, -0.34836187], rtol=1e-7)
    np.testing.assert_allclose(next_w[-1, -1], 0.59801459, rtol=1e-7)
    np.testing.assert_allclose(config["m"][0, :2], [0.48, 0.49947368], rtol=1e-7)
    np.testing.assert_allclose(config["v"][0, :2], [0.69966, 0.68908382], rtol=1e-7)
    assert config["t"] == 6


def test_given_state_strided_float64_or_scalar_is_adopted():
    """A strided or float64 state for a float32 w still starts the rule (copied once, then owned)."""
    rng = np.random.default_rng(4)
    w0 = rng.standard_normal((6, 8)).astype(np.float32)
    g = rng.standard_normal((6, 8)).astype(np.float32)
    big = rng.uniform(0.1, 0.9, (8, 6))
    w, config = optim.sgd_momentum(w0.copy(), g, {"velocity": big.T})  # a transposed view
    ref_w, _, _ = reference("sgd_momentum", w0, [g], big.T)
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)
    assert config["velocity"].dtype == np.float32 and config["velocity"].flags.c_contiguous
    v = config["velocity"]
    w, config = optim.sgd_momentum(w, g, config)
    assert config["velocity"] is v  # owned from the first call on: updated in place
    w, config = optim.rmsprop(w0.copy(), g, {"cache": 0.5})  # broadcast, as numpy would in the assignment
    np.testing.assert_allclose(w, reference("rmsprop", w0, [g], np.full(w0.shape, 0.5))[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"config\['velocity'\] must be an array of w's shape \(6, 8\), got \(3,\)"):
        optim.sgd_momentum(w0.copy(), g, {"velocity": np.zeros(3)})


@pytest.mark.parametrize(
    ("rule", "config", "message"),
    [
        ("adam", {"lr": 1e-3}, "adam config has unknown key 'lr': adam takes learning_rate, beta1"),
        ("adam", {"beta_1": 0.9}, "unknown key 'beta_1': did you mean 'beta1'? adam takes"),
        ("sgd_momentum", {"v": np.zeros(3)}, "unknown key 'v': it is adam's; sgd_momentum takes learning_rate, momentum, velocity"),
        ("rmsprop", {"decay": 0.9}, "unknown key 'decay': did you mean 'decay_rate'?"),
        ("sgd", {"momentum": 0.9}, "unknown key 'momentum': it is sgd_momentum's; sgd takes learning_rate"),
        ("adam", {"t": -1}, "adam config['t'] is the number of steps already taken, an integer >= 0; got -1"),
        ("adam", {"t": 2.5}, "an integer >= 0; got 2.5"),
        ("adam", {"t": "5"}, "an integer >= 0; got '5'"),
        ("adam", {"m": np.zeros(3), "m_sum": np.zeros(3)}, "both the moments 'm'/'v' and the sums"),
    ],
)
def test_assignment_style_mistakes_are_refused(rule, config, message):
    w = np.ones(3)
    with pytest.raises(ValueError, match=re.escape(message)):
        optim.UPDATE_RULES[rule](w, np.ones(3), config)
    np.testing.assert_array_equal(w, 1.0)  # nothing updated


def test_adam_given_t_without_moments_is_the_assignment_start():
    """t=5 with no m, v: zeros moments (the assignment's setdefault) and bias correction for step 6."""
    rng = np.random.default_rng(5)
    w0, g = rng.standard_normal(10), rng.standard_normal(10)
    w, config = optim.adam(w0.copy(), g, {"t": 5, "learning_rate": 1e-2})
    np.testing.assert_allclose(w, reference("adam", w0, [g], t0=5, learning_rate=1e-2)[0], rtol=1e-12)
    assert config["t"] == 6
