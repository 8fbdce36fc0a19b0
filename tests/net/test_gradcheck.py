"""The numeric-gradient helpers themselves, on functions with known derivatives."""

from __future__ import annotations

import numpy as np
import pytest

from model.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error


def test_numeric_gradient_of_known_function_and_x_restored():
    x = np.random.default_rng(0).standard_normal((3, 4))
    before = x.copy()
    grad = eval_numerical_gradient(lambda a: float(np.sum(np.sin(a) * a)), x)
    np.testing.assert_allclose(grad, np.cos(x) * x + np.sin(x), rtol=1e-8, atol=1e-10)
    assert np.array_equal(x, before)


def test_fourth_order_stencil_is_more_accurate():
    x = np.linspace(0.5, 2.0, 7)
    exact = 5 * x**4

    def f(a):
        return float(np.sum(a**5))

    err2 = np.abs(eval_numerical_gradient(f, x, h=1e-3, order=2) - exact).max()
    err4 = np.abs(eval_numerical_gradient(f, x, h=1e-3, order=4) - exact).max()
    assert err4 < err2 / 1000


def test_array_version_is_a_vector_jacobian_product():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5)
    m = rng.standard_normal((4, 5))
    df = rng.standard_normal(4)
    for order in (2, 4):
        grad = eval_numerical_gradient_array(lambda a: m @ a, x, df, order=order)
        np.testing.assert_allclose(grad, m.T @ df, rtol=1e-8)


def test_array_version_copes_with_f_returning_x_itself():
    x = np.arange(4.0)
    grad = eval_numerical_gradient_array(lambda a: a, x, np.ones(4))
    np.testing.assert_allclose(grad, np.ones(4))


def test_bad_order_rejected():
    with pytest.raises(ValueError, match="order must be 2 or 4"):
        eval_numerical_gradient(lambda a: 0.0, np.zeros(2), order=3)


def test_rel_error_and_its_floor():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([1.1])) == pytest.approx(0.1 / 2.1)
    # An exact zero against 1e-11 of noise: large with cs231n's floor, small with a resolution floor.
    assert rel_error(np.array([0.0]), np.array([1e-11])) == pytest.approx(1e-3)
    assert rel_error(np.array([0.0]), np.array([1e-11]), floor=1e-4) == pytest.approx(1e-7)
