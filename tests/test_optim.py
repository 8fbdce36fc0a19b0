"""Update rules: textbook formulas as the reference, in-place contract, defaults, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model import optim


def reference(rule: str, w: np.ndarray, grads: list[np.ndarray], **cfg: float) -> np.ndarray:
    """The cs231n formulas, written plainly (new arrays every step), in float64."""
    w = w.astype(np.float64)
    state1 = np.zeros_like(w)
    state2 = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
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
    return w


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
    np.testing.assert_allclose(w, reference(rule, w0, grads), rtol=1e-12, atol=1e-14)


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
    np.testing.assert_allclose(w, reference(rule, w0, grads, **cfg), rtol=1e-5, atol=1e-6)


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
