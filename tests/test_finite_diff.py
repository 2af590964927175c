"""ad_lib.finite_diff checked against truths that do not share its code.

Closed-form derivatives, high-precision derivatives from sympy/mpmath,
torch.autograd and torch.func, and the error laws of chapter 1 (slopes 1 and 2,
optimal steps near eps^(1/2) and eps^(1/3)).
"""

import math

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib.finite_diff import (
    EvaluationCounter,
    GradientCheckError,
    accepts_batch,
    central_difference,
    check_gradient,
    complex_step,
    default_step,
    derivative_estimates,
    measured_optimal_step,
    predicted_optimal_step,
    finite_difference_jacobian,
    forward_difference,
)

F64 = torch.float64


def smooth(x):
    """A smooth test function R^p -> R with a known gradient."""
    return (torch.exp(x) * torch.sin(x)).sum() + x.prod()


def smooth_gradient(x):
    prod_without = torch.stack([torch.cat([x[:i], x[i + 1 :]]).prod() for i in range(x.numel())])
    return torch.exp(x) * (torch.sin(x) + torch.cos(x)) + prod_without


def squire_trapp(x):
    """The test function of Squire & Trapp (1998): e^x / sqrt(sin^3 x + cos^3 x)."""
    return torch.exp(x) / torch.sqrt(torch.sin(x) ** 3 + torch.cos(x) ** 3)


def squire_trapp_derivative_exact(x0: float) -> float:
    """d/dx of squire_trapp at x0, computed symbolically by sympy to 30 digits."""
    s = sympy.Symbol("s")
    expr = sympy.exp(s) / sympy.sqrt(sympy.sin(s) ** 3 + sympy.cos(s) ** 3)
    return float(sympy.diff(expr, s).evalf(30, subs={s: sympy.Rational(str(x0))}))


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


# --------------------------------------------------------------------------- accuracy


def test_each_method_matches_the_closed_form_gradient(device):
    x = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64, device=device)
    exact = smooth_gradient(x)
    assert relative_error(forward_difference(smooth, x), exact) < 1e-7
    # rounding error eps |f| / h with h = eps^(1/3): "about 1e-10" relative
    assert relative_error(central_difference(smooth, x), exact) < 2e-10
    assert relative_error(complex_step(smooth, x), exact) < 4 * torch.finfo(F64).eps


def test_central_difference_default_step_reaches_1e_10_relative_on_many_functions():
    x = torch.linspace(-1.5, 1.5, 7, dtype=F64)
    functions = {
        "logsumexp": (lambda v: torch.logsumexp(v, 0), lambda v: torch.softmax(v, 0)),
        "sum of cubes": (lambda v: (v**3).sum(), lambda v: 3 * v**2),
        "tanh energy": (lambda v: torch.tanh(v).pow(2).sum(), lambda v: 2 * torch.tanh(v) / torch.cosh(v) ** 2),
    }
    for name, (f, grad) in functions.items():
        assert relative_error(central_difference(f, x), grad(x)) < 1e-10, name


def test_complex_step_is_exact_to_machine_precision_on_squire_trapp():
    x0 = 1.5
    exact = squire_trapp_derivative_exact(x0)
    estimate = complex_step(lambda v: squire_trapp(v).sum(), torch.tensor([x0], dtype=F64)).item()
    assert abs(estimate - exact) / abs(exact) < 2 * torch.finfo(F64).eps
    # The step can be absurdly small: there is no subtraction to cancel digits.
    for h in (1e-8, 1e-50, 1e-300):
        estimate = complex_step(lambda v: squire_trapp(v).sum(), torch.tensor([x0], dtype=F64), h=h).item()
        assert abs(estimate - exact) / abs(exact) < 2 * torch.finfo(F64).eps


def test_complex_step_in_float32_is_exact_to_float32_precision():
    x = torch.tensor([0.4, 1.1], dtype=torch.float32)
    exact = smooth_gradient(x.double())
    assert relative_error(complex_step(smooth, x).double(), exact) < 4 * torch.finfo(torch.float32).eps


def test_results_keep_shape_dtype_and_device(device):
    x = torch.rand(2, 3, dtype=torch.float32, device=device) + 0.5
    # in float32: forward differences give about 3 digits, central about 4 to 5, the complex step 7
    for method, tolerance in ((forward_difference, 2e-3), (central_difference, 2e-4), (complex_step, 1e-6)):
        g = method(lambda m: (m**2).sum(), x)
        assert g.shape == x.shape and g.dtype == x.dtype and g.device == x.device
        torch.testing.assert_close(g, 2 * x, rtol=tolerance, atol=tolerance)


def test_a_function_returning_a_python_number_is_computed_in_x_dtype():
    x = torch.tensor([0.3, 1.1], dtype=F64)
    f = lambda z: math.exp(float(z[0])) * math.sin(float(z[1]))  # noqa: E731
    exact = torch.tensor([math.exp(0.3) * math.sin(1.1), math.exp(0.3) * math.cos(1.1)], dtype=F64)
    assert relative_error(forward_difference(f, x), exact) < 1e-7
    assert relative_error(central_difference(f, x), exact) < 1e-10
    assert check_gradient(f, x, exact).passed
    with pytest.raises(ValueError, match="real Python number"):
        complex_step(lambda z: 2.0, x)


# --------------------------------------------------------------------------- error laws


def _slope(steps, errors):
    return float(np.polyfit(np.log10(steps), np.log10(errors), 1)[0])


@pytest.mark.parametrize(
    "method, window, expected",
    [("forward", (1e-5, 1e-2), 1.0), ("central", (1e-3, 1e-1), 2.0), ("complex", (1e-3, 1e-1), 2.0)],
)
def test_truncation_error_slopes(method, window, expected):
    steps = torch.logspace(math.log10(window[0]), math.log10(window[1]), 30, dtype=F64)
    errors = (derivative_estimates(torch.exp, 1.0, steps, method) - math.e).abs()
    assert abs(_slope(steps.numpy(), errors.numpy()) - expected) < 0.05


@pytest.mark.parametrize("x0", [0.3, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["forward", "central"])
def test_measured_optimal_step_is_within_a_decade_of_the_prediction(method, dtype, x0):
    # For f = exp, f = f'' = f''' = e^x0, so the predicted optimum is about
    # 2 sqrt(eps) (forward) and (3 eps)^(1/3) (central).
    eps = torch.finfo(dtype).eps
    predicted_h, bound = predicted_optimal_step(method, eps, math.exp(x0), math.exp(x0))
    assert predicted_h == pytest.approx(2 * math.sqrt(eps) if method == "forward" else (3 * eps) ** (1 / 3))
    steps = torch.logspace(-12, -0.5, 600, dtype=dtype)
    errors = (derivative_estimates(torch.exp, x0, steps, method).double() - math.exp(x0)).abs()
    measured_h, measured_error = measured_optimal_step(steps, errors)
    assert predicted_h / 10 < measured_h < predicted_h * 10
    # the bound is a worst case: rounding errors partly cancel in practice
    assert bound / 30 < measured_error < bound
    # The default step of the library sits at the bottom of the V as well.
    default = default_step(torch.tensor([x0], dtype=dtype), method).item()
    assert predicted_h / 10 < default < predicted_h * 10


def test_measured_optimal_step_ignores_lucky_cancellations():
    steps = torch.logspace(-6, 0, 61, dtype=F64)
    errors = steps + 1e-6 / steps  # a V with its bottom at h = 1e-3
    errors[10] = 1e-20  # one lucky point far from the bottom
    h, e = measured_optimal_step(steps, errors)
    assert h == pytest.approx(1e-3) and e == pytest.approx(2e-3, rel=0.15)  # the median window biases it up a little


def test_rounding_error_grows_as_the_step_shrinks():
    steps = torch.logspace(-14, -10, 30, dtype=F64)
    errors = (derivative_estimates(torch.exp, 1.0, steps, "forward") - math.e).abs()
    assert _slope(steps.numpy(), errors.numpy()) < -0.6  # about -1, noisily


# --------------------------------------------------------------------------- Jacobians


def test_jacobian_matches_torch_autograd(device):
    A = torch.randn(3, 4, dtype=F64, device=device, generator=None)

    def f(x):  # R^{2x2} -> R^3
        return torch.tanh(A.to(x.dtype) @ x.reshape(4)) * x.sum()  # complex-safe: A cast to x's dtype

    x = torch.randn(2, 2, dtype=F64, device=device)
    reference = torch.autograd.functional.jacobian(f, x)
    for method, rtol in (("forward", 1e-6), ("central", 1e-9), ("complex", 1e-13)):
        J = finite_difference_jacobian(f, x, method=method)
        assert J.shape == (3, 2, 2)
        torch.testing.assert_close(J, reference, rtol=rtol, atol=rtol)


def test_jacobian_of_a_batched_function_matches_the_loop():
    W = torch.randn(5, 6, dtype=F64)
    f = lambda x: torch.sin(W @ x)  # noqa: E731
    fb = accepts_batch(lambda X: torch.sin(X @ W.T))
    x = torch.randn(6, dtype=F64)
    torch.testing.assert_close(finite_difference_jacobian(fb, x), finite_difference_jacobian(f, x))
    torch.testing.assert_close(finite_difference_jacobian(fb, x, chunk_size=4), finite_difference_jacobian(f, x))


# --------------------------------------------------------------------------- cost and batching


@pytest.mark.parametrize("p", [1, 5, 40])
def test_cost_in_evaluations(p):
    x = torch.rand(p, dtype=F64)
    for method, expected in ((forward_difference, p + 1), (central_difference, 2 * p), (complex_step, p)):
        counted = EvaluationCounter(lambda v: (v**2).sum())
        method(counted, x)
        assert counted.calls == counted.points == expected
        batched = EvaluationCounter(accepts_batch(lambda V: (V**2).sum(dim=-1)))
        method(batched, x)
        assert batched.calls == 1 and batched.points == expected


def test_batched_chunked_and_looped_agree(device):
    x = torch.randn(3, 4, dtype=F64, device=device)
    f = lambda v: torch.logsumexp(v.reshape(-1), 0)  # noqa: E731
    fb = accepts_batch(torch.func.vmap(f))
    for method in (forward_difference, central_difference, complex_step):
        loop = method(f, x)
        torch.testing.assert_close(method(fb, x), loop)
        torch.testing.assert_close(method(fb, x, chunk_size=5), loop)
        torch.testing.assert_close(method(f, x, batched=False), loop)


def test_a_looped_gradient_builds_its_points_a_chunk_at_a_time():
    # p = 3000 central differences: 6000 rows of 3000 float64 would be 144 MB at once
    x = torch.linspace(-1, 1, 3000, dtype=F64)
    seen = []

    def f(v):
        seen.append(v.data_ptr())
        return (v * v).sum()

    # |f| is about 1000 here: the rounding error eps |f| / h is about 4e-8
    torch.testing.assert_close(central_difference(f, x), 2 * x, rtol=0, atol=2e-7)
    assert len(seen) == 6000


def test_large_batched_gradient(device):
    p = 10_000 if device.type == "cuda" else 2_000
    x = torch.linspace(-1, 1, p, dtype=F64, device=device)
    f = accepts_batch(lambda X: (torch.cos(X) * X).sum(dim=-1))
    g = central_difference(f, x, chunk_size=None if device.type == "cuda" else 500)
    torch.testing.assert_close(g, torch.cos(x) - x * torch.sin(x), rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------- the gradient checker


def test_check_gradient_passes_a_right_gradient_and_catches_a_wrong_one(device):
    x = torch.tensor([0.5, -0.25, 1.5], dtype=torch.float32, device=device)
    right = check_gradient(smooth, x, smooth_gradient)  # claimed in float32, checked in float64
    assert right.passed and right.max_relative_error < 1e-6
    wrong = smooth_gradient(x.double()).clone()
    wrong[1] += 1e-3
    result = check_gradient(smooth, x, wrong)
    assert not result.passed and result.worst_index == (1,)
    assert "FAILED" in str(result) and "(1,)" in str(result)
    with pytest.raises(GradientCheckError, match="index"):
        check_gradient(smooth, x, wrong, raise_on_failure=True)


def test_check_gradient_with_the_complex_step_sees_tiny_errors():
    x = torch.tensor([0.2, 0.9], dtype=F64)
    exact = smooth_gradient(x)
    assert check_gradient(smooth, x, exact, method="complex", rtol=1e-13, atol=1e-15).passed
    assert check_gradient(smooth, x, exact * (1 + 1e-10)).passed  # central differences cannot see it
    assert not check_gradient(smooth, x, exact * (1 + 1e-10), method="complex", rtol=1e-13, atol=1e-15).passed


def test_check_gradient_against_autograd():
    x = torch.randn(6, dtype=F64)
    f = lambda v: torch.tanh(v).sum() * v.norm()  # noqa: E731
    assert check_gradient(f, x, torch.func.grad(f)(x)).passed


# --------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p=st.integers(1, 8),
    scale=st.floats(0.1, 10.0),
)
def test_central_difference_is_exact_for_quadratics_up_to_rounding(seed, p, scale):
    """Central differences have no truncation error on quadratics (f''' = 0)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(p, p, dtype=F64, generator=g) * scale
    b = torch.randn(p, dtype=F64, generator=g)
    x = torch.randn(p, dtype=F64, generator=g)
    f = lambda v: 0.5 * v @ (A @ v) + b @ v  # noqa: E731
    exact = 0.5 * (A + A.T) @ x + b
    h = 1e-3
    # no truncation error: only rounding, a few eps |f| / h, where |f| is bounded by the sizes of its terms
    size = float(0.5 * (A.abs().sum() * (x.abs().max() + h) ** 2) + b.abs().sum() * (x.abs().max() + h))
    tolerance = 50 * torch.finfo(F64).eps * (1 + size) / h
    assert float((central_difference(f, x, h=h) - exact).abs().max()) < tolerance


@settings(max_examples=40, deadline=None)
@given(coefficients=st.lists(st.floats(-5, 5), min_size=1, max_size=7), x0=st.floats(-2, 2))
def test_complex_step_equals_autograd_on_polynomials(coefficients, x0):
    def poly(v):
        out = torch.zeros((), dtype=v.dtype)
        for c in coefficients:  # Horner's rule
            out = out * v.sum() + c
        return out

    x = torch.tensor([x0], dtype=F64)
    exact = torch.func.grad(poly)(x)
    torch.testing.assert_close(complex_step(poly, x), exact, rtol=1e-13, atol=1e-12)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("h", [0.0, -1e-3, float("nan"), float("inf")])
def test_bad_steps_are_rejected(h):
    x = torch.ones(2, dtype=F64)
    for method in (forward_difference, central_difference, complex_step):
        with pytest.raises(ValueError, match="h must be positive and finite"):
            method(smooth, x, h=h)


@pytest.mark.parametrize("h", [1e-6j, torch.tensor([1e-6 + 0j, 1e-6 + 0j])])
def test_complex_steps_are_rejected_rather_than_cut_to_their_real_part(h):
    x = torch.ones(2, dtype=F64)
    for method in (forward_difference, central_difference, complex_step):
        with pytest.raises(TypeError, match="h must be"):
            method(smooth, x, h=h)


def test_a_counter_of_a_batched_f_refuses_to_be_called_point_by_point():
    counted = EvaluationCounter(accepts_batch(lambda v: (v**2).sum(-1)))
    with pytest.raises(ValueError, match="batched=False with an EvaluationCounter"):
        forward_difference(counted, torch.ones(3, dtype=F64), batched=False)


def test_a_step_below_the_floating_point_spacing_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        forward_difference(smooth, torch.ones(2, dtype=torch.float32), h=1e-9)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_x_is_rejected(bad):
    x = torch.tensor([1.0, bad], dtype=F64)
    with pytest.raises(ValueError, match=r"x must be finite.*\(1,\)"):
        central_difference(smooth, x)


def test_x_must_be_a_real_floating_tensor():
    with pytest.raises(TypeError, match="torch.Tensor"):
        central_difference(smooth, [1.0, 2.0])
    with pytest.raises(TypeError, match="floating"):
        central_difference(smooth, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="empty"):
        central_difference(smooth, torch.zeros(0, dtype=F64))


def test_a_vector_output_is_rejected_for_a_gradient():
    x = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match="scalar.*finite_difference_jacobian"):
        central_difference(lambda v: v**2, x)
    with pytest.raises(ValueError, match="scalar"):
        central_difference(accepts_batch(lambda V: V**2), x)


@pytest.mark.parametrize("method", [forward_difference, central_difference, complex_step])
def test_a_function_that_rounds_below_x_precision_is_rejected(method):
    # f computes in float32 (complex64) for a float64 x: the differences would
    # carry float32's rounding error, silently (0.2658 for an exact 0.27).
    x = torch.tensor([0.3, 1.2], dtype=torch.float64)
    lowered = torch.complex64 if method is complex_step else torch.float32
    with pytest.raises(ValueError, match=f"f returned {lowered}"):
        method(lambda v: (v.to(lowered) ** 3).sum(), x)


def test_a_batched_function_with_the_wrong_output_length_is_rejected():
    with pytest.raises(ValueError, match="first dimension"):
        central_difference(accepts_batch(lambda V: V.sum()), torch.ones(3, dtype=F64))


def test_complex_step_on_a_dtype_without_complex_counterpart():
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match="float32 or float64"):
            complex_step(smooth, torch.ones(2, dtype=dtype))


def test_complex_step_through_abs_is_reported():
    with pytest.raises(ValueError, match="complex"):
        complex_step(lambda v: v.abs().sum(), torch.ones(2, dtype=F64))


def test_leaving_the_domain_is_reported_not_returned_as_nan():
    # log is undefined left of 0: the central difference at x = 0.5 e-9 steps out.
    x = torch.tensor([5e-10, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"not finite at x - h e_0"):
        central_difference(lambda v: torch.log(v).sum(), x)
    with pytest.raises(ValueError, match=r"not finite at x\b"):
        forward_difference(lambda v: torch.log(v - 2).sum(), x)


def test_other_bad_arguments():
    x = torch.ones(2, dtype=F64)
    with pytest.raises(TypeError, match="callable"):
        central_difference("not a function", x)
    with pytest.raises(ValueError, match="method"):
        finite_difference_jacobian(smooth, x, method="backward")
    with pytest.raises(ValueError, match="chunk_size"):
        central_difference(accepts_batch(lambda V: V.sum(-1)), x, chunk_size=0)
    with pytest.raises(TypeError, match="torch.Tensor or a number"):
        central_difference(lambda v: "one", x)
    with pytest.raises(ValueError, match="shape"):
        check_gradient(smooth, x, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="rtol"):
        check_gradient(smooth, x, torch.ones(2, dtype=F64), rtol=0)
    with pytest.raises(ValueError, match="method"):
        predicted_optimal_step("complex", 1e-16, 1.0, 1.0)
    with pytest.raises(ValueError, match="derivative"):
        predicted_optimal_step("central", 1e-16, 1.0, 0.0)
    with pytest.raises(ValueError, match="increasing"):
        measured_optimal_step(torch.tensor([1.0, 0.5, 0.1]), torch.ones(3))
    with pytest.raises(ValueError, match="elementwise"):
        derivative_estimates(lambda v: v.sum(), 1.0, torch.tensor([1e-3], dtype=F64), "forward")
