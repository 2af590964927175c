"""ad_lib.implicit (chapter 8) against closed forms (the linear fixed point, ridge regression and its
derivatives), torch.autograd, torch.linalg.solve, gradcheck in float64 and finite differences."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ad_lib.implicit import (BACKWARD_MODES, ConvergenceWarning, NotConvergedError, SolverInfo, argmin,
                             conjugate_gradient, fixed_point, minimum, report, ridge_energy, ridge_regression,
                             sinkhorn_energy, sinkhorn_map, sinkhorn_map_adjoints)
from ad_lib.reversible import saved_tensor_bytes

F64 = torch.float64


def random(*shape, seed=0, device="cpu"):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed)).to(device)


def contraction(n, L, seed=0, device="cpu"):
    """A random n x n matrix of spectral norm L."""
    A = random(n, n, seed=seed)
    return (L * A / torch.linalg.matrix_norm(A, ord=2)).to(device)


def ridge_problem(device, m=8, n=5, seed=0):
    A, b = random(m, n, seed=seed, device=device), random(m, seed=seed + 1, device=device)
    lam = torch.tensor(0.5, dtype=F64, device=device)
    tau = 1 / (torch.linalg.matrix_norm(A, ord=2).item() ** 2 + 0.5)
    return A, b, lam, tau


# ----------------------------------------------------------------------------- fixed points


@pytest.mark.parametrize("backward", BACKWARD_MODES)
def test_linear_fixed_point_has_the_closed_form_solution(device, backward):
    A, theta = contraction(6, 0.6, device=device), random(6, seed=1, device=device).requires_grad_()
    x, info = fixed_point(lambda x, t: A @ x + t, torch.zeros(6, dtype=F64, device=device), theta, tol=1e-14,
                          backward=backward, return_info=True)
    eye = torch.eye(6, dtype=F64, device=device)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(eye - A, theta.detach()), rtol=1e-12, atol=1e-12)
    assert info.converged and info.iterations < 100 and x.device == theta.device
    g = random(6, seed=2, device=device)
    (grad,) = torch.autograd.grad(x, theta, g)
    exact = torch.linalg.solve(eye - A.T, g)  # d x*/d theta = (I - A)^{-1}, so the gradient is (I - A^T)^{-1} g
    if backward == "one_step":
        # one application of h: (d_theta h)^T g = g; the error (I - A^T)^{-1} g - g = A^T (I - A^T)^{-1} g is
        # bounded by L / (1 - L) |g| with L = |A| = 0.6
        error = (grad - exact).norm().item()
        torch.testing.assert_close(grad, g)
        assert 0.05 * g.norm().item() < error <= 0.6 / 0.4 * g.norm().item()
    else:
        torch.testing.assert_close(grad, exact, rtol=1e-11, atol=1e-11)


def test_implicit_equals_unrolled_at_convergence_on_a_nonlinear_contraction(device):
    W = contraction(5, 0.8, seed=3, device=device)
    theta = random(5, seed=4, device=device).requires_grad_()

    def h(x, t):
        return torch.tanh(W @ x + t)  # |tanh'| <= 1: a contraction of constant 0.8

    grads = {}
    for backward in BACKWARD_MODES:
        x = fixed_point(h, torch.zeros(5, dtype=F64, device=device), theta, tol=1e-14, backward=backward)
        (grads[backward],) = torch.autograd.grad((x**2).sum(), theta)
    torch.testing.assert_close(grads["implicit"], grads["unrolled"], rtol=1e-9, atol=1e-9)
    assert (grads["one_step"] - grads["implicit"]).norm() > 1e-3 * grads["implicit"].norm()


def test_gradcheck_of_the_implicit_backward():
    W = contraction(4, 0.5, seed=5)
    theta = random(4, seed=6).requires_grad_()
    scale = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def layer(t, s):
        return fixed_point(lambda x, t, s: s * torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), t, s, tol=1e-14)

    assert torch.autograd.gradcheck(layer, (theta, scale), eps=1e-6, atol=1e-8)


def test_parameters_without_grad_and_nn_parameters():
    W = nn.Parameter(contraction(4, 0.5, seed=7))
    theta = random(4, seed=8)  # no gradient wanted
    x = fixed_point(lambda x, W, t: torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), W, theta, tol=1e-14)
    x.sum().backward()
    assert W.grad is not None and theta.grad is None
    W_copy = W.detach().clone().requires_grad_()
    x_u = fixed_point(lambda x, W, t: torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), W_copy, theta, tol=1e-14,
                      backward="unrolled")
    (reference,) = torch.autograd.grad(x_u.sum(), W_copy)
    torch.testing.assert_close(W.grad, reference, rtol=1e-9, atol=1e-9)
    # nothing requires a gradient: a plain tensor comes back
    assert not fixed_point(lambda x, t: 0.5 * x + t, torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)).requires_grad


def test_the_implicit_mode_saves_the_same_bytes_whatever_the_iterations():
    A = contraction(32, 0.9, seed=9)
    theta = random(32, seed=10).requires_grad_()
    saved = {}
    for backward in ("implicit", "unrolled"):
        for iterations in (10, 20, 40):  # tol = 1e-30: every iteration runs
            _, saved[backward, iterations] = saved_tensor_bytes(
                fixed_point, lambda x, t: torch.tanh(A @ x + t), torch.zeros(32, dtype=F64), theta,
                tol=1e-30, max_iter=iterations, backward=backward, on_failure="ignore")
    assert saved["implicit", 10] == saved["implicit", 20] == saved["implicit", 40]
    per_step = (saved["unrolled", 20] - saved["unrolled", 10]) / 10
    assert per_step == 32 * 8  # each step keeps tanh's output, one state (A needs no gradient, so x is not kept)
    assert saved["unrolled", 40] - saved["unrolled", 20] == 20 * per_step


# ----------------------------------------------------------------------------- ridge regression


def ridge_truth(A, b, lam, w):
    """The gradients of <w, x*> in b and lam from the closed forms of the chapter."""
    M = A.T @ A + lam * torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
    x = torch.linalg.solve(M, A.T @ b)
    y = torch.linalg.solve(M, w)  # M is symmetric
    return x, A @ y, -(x @ y)  # d<w,x>/db = A M^{-1} w, d<w,x>/dlam = -<w, M^{-1} x>


def test_ridge_regression_closed_form_and_its_derivatives(device):
    A, b, lam, _ = ridge_problem(device)
    # the truth of the closed form: least squares on the augmented system [A; sqrt(lam) I] x = [b; 0]
    augmented = torch.cat([A, lam.sqrt() * torch.eye(5, dtype=F64, device=device)])
    lstsq = torch.linalg.lstsq(augmented.cpu(), torch.cat([b, torch.zeros(5, dtype=F64, device=device)]).cpu()).solution
    bb, ll = b.clone().requires_grad_(), lam.clone().requires_grad_()
    x = ridge_regression(A, bb, ll)
    torch.testing.assert_close(x.detach().cpu(), lstsq, rtol=1e-12, atol=1e-12)
    w = random(5, seed=3, device=device)
    _, grad_b, grad_lam = ridge_truth(A, b, lam, w)
    torch.testing.assert_close(torch.autograd.grad(x @ w, (bb, ll)), (grad_b, grad_lam), rtol=1e-12, atol=1e-12)
    # the gradient of the energy vanishes at x*
    xr = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(ridge_energy(xr, A, b, lam), xr)
    assert g.norm() < 1e-12


def test_ridge_regression_is_batched():
    A, b = random(3, 6, 4, seed=11), random(3, 6, seed=12)
    lam = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    x = ridge_regression(A, b, lam)
    for i in range(3):
        torch.testing.assert_close(x[i], ridge_regression(A[i], b[i], float(lam[i])), rtol=1e-13, atol=1e-13)
    assert ridge_energy(x, A, b, lam).shape == (3,)


@pytest.mark.parametrize("backward", BACKWARD_MODES)
def test_fixed_point_of_a_gradient_step_gives_the_ridge_derivatives(device, backward):
    A, b, lam, tau = ridge_problem(device)
    bb, ll = b.clone().requires_grad_(), lam.clone().requires_grad_()
    w = random(5, seed=3, device=device)
    x_true, grad_b, grad_lam = ridge_truth(A, b, lam, w)

    def step(x, b, lam):  # h = a gradient step on the ridge energy, whose fixed point is x*
        return x - tau * (A.T @ (A @ x - b) + lam * x)

    x = fixed_point(step, torch.zeros(5, dtype=F64, device=device), bb, ll, tol=1e-14, backward=backward)
    torch.testing.assert_close(x.detach(), x_true, rtol=1e-11, atol=1e-11)
    g_b, g_lam = torch.autograd.grad(x @ w, (bb, ll))
    if backward == "one_step":
        torch.testing.assert_close(g_b, tau * A @ w)  # the first term of the Neumann series only
        torch.testing.assert_close(g_lam, -tau * (x_true @ w))
    else:
        torch.testing.assert_close((g_b, g_lam), (grad_b, grad_lam), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("method, backward", [("lbfgs", "implicit"), ("gradient_descent", "implicit"),
                                              ("gradient_descent", "unrolled"), ("gradient_descent", "one_step")])
def test_argmin_gives_the_ridge_derivatives(device, method, backward):
    A, b, lam, tau = ridge_problem(device)
    bb, ll = b.clone().requires_grad_(), lam.clone().requires_grad_()
    w = random(5, seed=3, device=device)
    x_true, grad_b, grad_lam = ridge_truth(A, b, lam, w)
    x, info = argmin(lambda x, b, lam: ridge_energy(x, A, b, lam), torch.zeros(5, dtype=F64, device=device), bb, ll,
                     method=method, step=tau, tol=1e-12, backward=backward, return_info=True)
    assert info.converged and info.residual <= 1e-12
    torch.testing.assert_close(x.detach(), x_true, rtol=1e-10, atol=1e-10)
    g_b, g_lam = torch.autograd.grad(x @ w, (bb, ll))
    if backward == "one_step":
        torch.testing.assert_close(g_b, tau * A @ w)
    else:
        torch.testing.assert_close((g_b, g_lam), (grad_b, grad_lam), rtol=1e-9, atol=1e-9)


def test_gradcheck_of_the_hessian_backward():
    W = random(6, 3, seed=13)

    def energy(x, t):
        return 0.5 * (x**2).sum() + torch.log(torch.cosh(W @ x - t)).sum()  # strongly convex, not quadratic

    def layer(t):
        return argmin(energy, torch.zeros(3, dtype=F64), t, tol=1e-12)

    assert torch.autograd.gradcheck(layer, (random(6, seed=14).requires_grad_(),), eps=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- the envelope theorem


@pytest.mark.parametrize("method", ["lbfgs", "gradient_descent"])
def test_envelope_gradient_equals_the_full_gradient(method):
    A, b, lam, tau = ridge_problem("cpu")
    bb, ll = b.clone().requires_grad_(), lam.clone().requires_grad_()
    energy = lambda x, b, lam: ridge_energy(x, A, b, lam)  # noqa: E731
    value = minimum(energy, torch.zeros(5, dtype=F64), bb, ll, method=method, step=tau, tol=1e-12)
    envelope = torch.autograd.grad(value, (bb, ll))
    # the full gradient of E(x*(theta), theta), x* differentiated by the Hessian formula
    b2, l2 = b.clone().requires_grad_(), lam.clone().requires_grad_()
    x = argmin(energy, torch.zeros(5, dtype=F64), b2, l2, tol=1e-12)
    full = torch.autograd.grad(energy(x, b2, l2), (b2, l2))
    torch.testing.assert_close(envelope, full, rtol=1e-10, atol=1e-10)
    # and the closed forms: d/db = -(A x* - b) ... = b - A x*, d/dlam = |x*|^2 / 2
    x_true = ridge_regression(A, b, lam)
    torch.testing.assert_close(envelope, (b - A @ x_true, 0.5 * (x_true**2).sum()), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- conjugate gradients


def test_conjugate_gradient_against_torch_solve(device):
    B = random(20, 20, seed=15, device=device)
    M = B @ B.T + 0.5 * torch.eye(20, dtype=F64, device=device)
    b = random(20, seed=16, device=device)
    x, info = conjugate_gradient(lambda v: M @ v, b, tol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(M, b), rtol=1e-9, atol=1e-9)
    assert info.converged and info.iterations <= 2 * 20 + 10 and (M @ x - b).norm() <= 1e-10 * b.norm()
    x1, info1 = conjugate_gradient(lambda v: M @ v, b, x0=x, tol=1e-12)
    assert info1.iterations <= 2
    zero, info0 = conjugate_gradient(lambda v: M @ v, torch.zeros_like(b))
    assert info0.iterations == 0 and not zero.any()
    # too few iterations: not converged, reported in the info (the caller reports it)
    _, short = conjugate_gradient(lambda v: M @ v, b, max_iter=2)
    assert not short.converged and short.residual > 1e-12


def test_conjugate_gradient_rejects_an_indefinite_operator():
    D = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=F64))
    with pytest.raises(ValueError, match="not positive definite"):
        conjugate_gradient(lambda v: D @ v, torch.ones(3, dtype=F64))


# ----------------------------------------------------------------------------- Sinkhorn as a fixed point


def sinkhorn_problem(n=4, m=5, eps=0.5, seed=17, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    K = torch.exp(-torch.rand(n, m, dtype=F64, generator=g) / eps)
    a = torch.rand(n, dtype=F64, generator=g) + 0.5
    b = torch.rand(m, dtype=F64, generator=g) + 0.5
    return K.to(device), torch.cat([a / a.sum(), b / b.sum()]).to(device)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(1, 4))
def test_sinkhorn_map_adjoints_match_autograd(seed, n, m):
    K, theta = sinkhorn_problem(n, m, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(n + m, dtype=F64, generator=g) + 0.5).requires_grad_()
    th = theta.clone().requires_grad_()
    w = torch.randn(n + m, dtype=F64, generator=g)
    by_autograd = torch.autograd.grad(sinkhorn_map(x, th, K), (x, th), w)
    by_hand = sinkhorn_map_adjoints(x.detach(), theta, K, w)
    torch.testing.assert_close(by_hand, by_autograd, rtol=1e-12, atol=1e-12)


def test_the_sinkhorn_fixed_point_has_the_marginals(device):
    K, theta = sinkhorn_problem(device=device)
    n = K.shape[0]
    # start with v = b / K^T 1: the Jacobi iterates are then Sinkhorn's own, shifted by half a step
    x0 = torch.cat([torch.ones(n, dtype=F64, device=device), theta[n:] / K.sum(0)])
    x, info = fixed_point(sinkhorn_map, x0, theta, K, tol=1e-13, return_info=True)
    plan = x[:n, None] * K * x[None, n:]
    torch.testing.assert_close(plan.sum(1), theta[:n], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(plan.sum(0), theta[n:], rtol=1e-12, atol=1e-12)
    assert info.converged
    # from x0 = 1, the two interleaved Sinkhorn sequences reach different scalings: a 2-cycle, reported
    with pytest.warns(ConvergenceWarning, match="residual"):
        fixed_point(sinkhorn_map, torch.ones(K.shape[0] + K.shape[1], dtype=F64, device=device), theta, K,
                    max_iter=300)


def test_the_sinkhorn_value_has_the_envelope_gradient_log_x():
    K, theta = sinkhorn_problem()
    n = K.shape[0]

    def value(th):
        x0 = torch.cat([torch.ones(n, dtype=F64), th[n:] / K.sum(0)])
        x = fixed_point(sinkhorn_map, x0, th, K, tol=1e-14)
        return sinkhorn_energy(x, th, K), x

    f, x = value(theta)
    # a direction that keeps sum a = sum b (without it there is no fixed point)
    d = random(theta.numel(), seed=18)
    d[:n] -= d[:n].mean()
    d[n:] -= d[n:].mean()
    delta = 1e-5
    difference = (value(theta + delta * d)[0] - value(theta - delta * d)[0]) / (2 * delta)
    torch.testing.assert_close(difference, torch.log(x) @ d, rtol=1e-7, atol=1e-9)
    # x* is a stationary point of the energy
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(sinkhorn_energy(xr, theta, K), xr)
    assert g.norm() < 1e-10


# ----------------------------------------------------------------------------- failures, reported


def test_non_convergence_warns_raises_or_stays_silent_with_the_residual():
    A = contraction(4, 0.99, seed=19)
    h = lambda x, t: A @ x + t  # noqa: E731
    theta = torch.ones(4, dtype=F64)
    with pytest.warns(ConvergenceWarning, match=r"did NOT converge: 5 iterations, residual [0-9.e+-]+"):
        x = fixed_point(h, torch.zeros(4, dtype=F64), theta, max_iter=5)
    assert torch.isfinite(x).all()
    with pytest.raises(NotConvergedError, match="residual") as caught:
        fixed_point(h, torch.zeros(4, dtype=F64), theta, max_iter=5, on_failure="raise")
    assert isinstance(caught.value.info, SolverInfo) and caught.value.info.iterations == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = fixed_point(h, torch.zeros(4, dtype=F64), theta, max_iter=5, on_failure="ignore", return_info=True)
    assert not info.converged and info.residual > 1e-10
    with pytest.warns(ConvergenceWarning, match="gradient descent"):
        argmin(lambda x: ((x - 1) ** 2).sum(), torch.zeros(3, dtype=F64), method="gradient_descent", step=0.01,
               max_iter=3)


def test_backward_non_convergence_is_reported():
    A = contraction(4, 0.9, seed=20)
    theta = torch.ones(4, dtype=F64, requires_grad=True)
    x = fixed_point(lambda x, t: A @ x + t, torch.zeros(4, dtype=F64), theta, tol=1e-13, backward_max_iter=3)
    with pytest.warns(ConvergenceWarning, match=r"backward \(Neumann\) did NOT converge: 3 iterations"):
        x.sum().backward()
    assert torch.isfinite(theta.grad).all()
    x = fixed_point(lambda x, t: A @ x + t, torch.zeros(4, dtype=F64), theta, tol=1e-13, backward_max_iter=3,
                    on_failure="raise")
    with pytest.raises(NotConvergedError):
        x.sum().backward()


def test_a_diverging_iteration_is_an_error_naming_the_iteration_not_a_nan():
    with pytest.raises(FloatingPointError, match=r"at iteration \d+ \(the last finite residual"):
        fixed_point(lambda x, t: 2 * x + t, torch.ones(2, dtype=F64), torch.ones(2, dtype=F64), max_iter=5000)
    with pytest.raises(FloatingPointError, match="iteration"):
        argmin(lambda x: ((x - 1) ** 2).sum(), torch.zeros(3, dtype=F64), method="gradient_descent", step=5.0,
               max_iter=5000)


def test_report_passes_a_converged_info_silently():
    info = SolverInfo("s", 3, 1e-12, 1e-10, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert report(info, "raise") is info


# ----------------------------------------------------------------------------- bad input

X0, T = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
H = lambda x, t: 0.5 * x + t  # noqa: E731
E = lambda x, t: ((x - t) ** 2).sum()  # noqa: E731
NAN = torch.tensor([1.0, float("nan"), 0.0], dtype=F64)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fixed_point(H, X0, T, backward="adjoint"), ValueError, "backward"),
    (lambda: fixed_point(H, X0, T, tol=0), ValueError, "tol"),
    (lambda: fixed_point(H, X0, T, tol=-1e-3), ValueError, "tol"),
    (lambda: fixed_point(H, X0, T, max_iter=0), ValueError, "max_iter"),
    (lambda: fixed_point(H, X0, T, max_iter=2.5), TypeError, "max_iter"),
    (lambda: fixed_point(H, X0, T, backward_tol=0.0), ValueError, "backward_tol"),
    (lambda: fixed_point(H, X0, T, backward_max_iter=0), ValueError, "backward_max_iter"),
    (lambda: fixed_point(H, X0, T, on_failure="shout"), ValueError, "on_failure"),
    (lambda: fixed_point(lambda x, t: torch.cat([x, t]), X0, T), ValueError, "shape"),
    (lambda: fixed_point(lambda x, t: 1.0, X0, T), TypeError, "tensor"),
    (lambda: fixed_point(H, NAN, T), ValueError, "x0"),
    (lambda: fixed_point(H, X0, NAN), ValueError, r"params\[0\]"),
    (lambda: fixed_point(H, X0, 3.0), TypeError, r"params\[0\]"),
    (lambda: fixed_point("h", X0, T), TypeError, "h must be"),
    (lambda: fixed_point(H, [0.0, 0.0, 0.0], T), TypeError, "x0"),
    (lambda: argmin(E, X0, T, method="newton"), ValueError, "method"),
    (lambda: argmin(E, X0, T, method="gradient_descent"), ValueError, "step"),
    (lambda: argmin(E, X0, T, method="gradient_descent", step=-0.1), ValueError, "step"),
    (lambda: argmin(E, X0, T, backward="unrolled"), ValueError, "gradient_descent"),
    (lambda: argmin(E, X0, T, backward="sideways"), ValueError, "backward"),
    (lambda: argmin(E, X0, T, tol=0.0), ValueError, "tol"),
    (lambda: argmin(E, X0, T, max_iter=0), ValueError, "max_iter"),
    (lambda: argmin(lambda x, t: x - t, X0, T), ValueError, "scalar"),
    (lambda: argmin(E, X0, NAN), ValueError, r"params\[0\]"),
    (lambda: minimum(E, NAN, T), ValueError, "x0"),
    (lambda: minimum(E, X0, T, method="gradient_descent"), ValueError, "step"),
    (lambda: conjugate_gradient(lambda v: v, torch.ones(3, dtype=F64), tol=0), ValueError, "tol"),
    (lambda: conjugate_gradient(lambda v: v[:2], torch.ones(3, dtype=F64)), ValueError, "shape"),
    (lambda: conjugate_gradient(lambda v: v, NAN), ValueError, "b holds"),
    (lambda: ridge_regression(torch.ones(4, 3, dtype=F64), torch.ones(4, dtype=F64), 0.0), ValueError, "lam"),
    (lambda: ridge_regression(torch.ones(4, 3, dtype=F64), torch.ones(4, dtype=F64), torch.tensor(-1.0, dtype=F64)),
     ValueError, "lam"),
    (lambda: ridge_regression(torch.ones(4, 3, dtype=F64), torch.ones(3, dtype=F64), 1.0), ValueError, "b must"),
    (lambda: ridge_regression(torch.ones(4, dtype=F64), torch.ones(4, dtype=F64), 1.0), ValueError, "A must"),
    (lambda: ridge_regression(torch.ones(4, 3, dtype=F64), NAN.repeat(2)[:4], 1.0), ValueError, "b holds"),
    (lambda: sinkhorn_map(torch.ones(6, dtype=F64), torch.ones(5, dtype=F64), torch.ones(2, 3, dtype=F64)),
     ValueError, "x must"),
    (lambda: sinkhorn_map(torch.ones(5, dtype=F64), torch.ones(4, dtype=F64), torch.ones(2, 3, dtype=F64)),
     ValueError, "theta must"),
    (lambda: sinkhorn_map_adjoints(torch.ones(5, dtype=F64), torch.ones(5, dtype=F64), torch.ones(2, 3, dtype=F64),
                                   torch.ones(4, dtype=F64)), ValueError, "w must"),
])
def test_bad_input_is_an_error_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- review 8: regressions


def test_a_tensor_requiring_grad_hidden_in_a_closure_is_an_error_not_a_silent_zero():
    W = nn.Parameter(contraction(4, 0.5, seed=20))
    theta = random(4, seed=21).requires_grad_()
    with pytest.raises(ValueError, match="h reads a tensor that requires a gradient but is not among params"):
        fixed_point(lambda x, t: torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), theta, tol=1e-14)
    with pytest.raises(ValueError, match="energy reads a tensor that requires a gradient"):
        argmin(lambda x, t: ((x - t) ** 2).sum() + (W.sum() * x).sum(), torch.zeros(4, dtype=F64), theta, tol=1e-12)
    # the modes that record a graph see the closure, and without grad mode nothing is checked
    x = fixed_point(lambda x, t: torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), theta, tol=1e-14,
                    backward="unrolled")
    assert torch.autograd.grad(x.sum(), W)[0].abs().sum() > 0
    with torch.no_grad():
        fixed_point(lambda x, t: torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), theta, tol=1e-14)


def test_h_returning_another_dtype_is_an_error_naming_h():
    with pytest.raises(TypeError, match="h must return a tensor of x's dtype"):
        fixed_point(lambda x, t: (0.5 * x + t).float(), torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))


def test_integer_params_pass_through_and_complex_ones_are_refused():
    theta = random(4, seed=22).requires_grad_()
    index = torch.tensor([2, 0, 3, 1])
    x = fixed_point(lambda x, t, i: 0.5 * x[i] + t, torch.zeros(4, dtype=F64), theta, index, tol=1e-14)
    x_u = fixed_point(lambda x, t, i: 0.5 * x[i] + t, torch.zeros(4, dtype=F64), theta, index, tol=1e-14,
                      backward="unrolled")
    torch.testing.assert_close(torch.autograd.grad(x.sum(), theta)[0], torch.autograd.grad(x_u.sum(), theta)[0])
    with pytest.raises(TypeError, match=r"params\[0\] must be a floating-point tensor"):
        fixed_point(lambda x, t: x, torch.zeros(2, dtype=F64), torch.ones(2, dtype=torch.complex128))


def test_a_diverging_backward_neumann_iteration_is_an_error_even_when_the_forward_converged():
    # x* = -t is a repelling fixed point of 2x + t, reached exactly from x0 = x*: the forward converges at once,
    # but the Neumann series of (1 - 2)^{-1} diverges; it must not come back as a huge number with a warning
    t = torch.tensor([1.0], dtype=F64, requires_grad=True)
    x, info = fixed_point(lambda x, t: 2 * x + t, -t.detach().clone(), t, return_info=True)
    assert info.converged
    with pytest.raises(FloatingPointError, match="diverges"):
        torch.autograd.grad(x.sum(), t)


def test_params_used_twice_and_float32_agree_with_the_closed_form():
    A = contraction(5, 0.6, seed=23)
    theta = random(5, seed=24).requires_grad_()
    x = fixed_point(lambda x, a, b: A @ x + a + b, torch.zeros(5, dtype=F64), theta, theta, tol=1e-14)
    g = random(5, seed=25)
    exact = 2 * torch.linalg.solve(torch.eye(5, dtype=F64) - A.T, g)
    torch.testing.assert_close(torch.autograd.grad(x, theta, g)[0], exact, rtol=1e-11, atol=1e-11)
    t32 = theta.detach().float().requires_grad_()
    x32, info = fixed_point(lambda x, t: A.float() @ x + t, torch.zeros(5), t32, tol=1e-6, return_info=True)
    assert info.converged and x32.dtype == torch.float32
    torch.testing.assert_close(torch.autograd.grad(x32, t32, g.float())[0], exact.float() / 2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backward", BACKWARD_MODES)
def test_the_three_modes_against_jacrev_of_the_closed_form(backward):
    A = contraction(4, 0.7, seed=26)
    theta = random(4, seed=27)
    truth = torch.func.jacrev(lambda t: torch.linalg.solve(torch.eye(4, dtype=F64) - A, t))(theta)
    jac = torch.autograd.functional.jacobian(
        lambda t: fixed_point(lambda x, t: A @ x + t, torch.zeros(4, dtype=F64), t, tol=1e-15, backward=backward),
        theta)
    if backward == "one_step":
        torch.testing.assert_close(jac, torch.eye(4, dtype=F64))  # d_theta h only
    else:
        torch.testing.assert_close(jac, truth, rtol=1e-10, atol=1e-10)


def test_double_backward_through_the_implicit_modes_is_a_clear_error():
    theta = random(4, seed=28).requires_grad_()
    W = contraction(4, 0.5, seed=29)
    x = fixed_point(lambda x, t: torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), theta, tol=1e-14)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(x.sum(), theta, create_graph=True)
    x = argmin(lambda x, t: ((x - t) ** 4).sum() + (x**2).sum(), torch.zeros(4, dtype=F64), theta, tol=1e-12)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(x.sum(), theta, create_graph=True)
    # the unrolled mode supports it
    x = fixed_point(lambda x, t: torch.tanh(W @ x + t), torch.zeros(4, dtype=F64), theta, tol=1e-14,
                    backward="unrolled")
    (g,) = torch.autograd.grad(x.sum(), theta, create_graph=True)
    assert g.requires_grad


@pytest.mark.parametrize("method", ["lbfgs", "gradient_descent"])
def test_argmin_of_an_energy_that_is_not_strictly_convex_is_reported_in_the_backward(method):
    t = torch.tensor(1.0, dtype=F64, requires_grad=True)
    x = argmin(lambda x, t: (x[0] - t) ** 2, torch.zeros(2, dtype=F64), t, method=method, step=0.25, tol=1e-12)
    with pytest.raises(ValueError, match="argmin backward: the Hessian of the energy at x\\* is not positive definite"):
        torch.autograd.grad(x.sum(), t)


def test_a_float32_tolerance_below_rounding_is_named_in_the_report():
    t = torch.ones(3, requires_grad=True)
    with pytest.warns(ConvergenceWarning, match="below the rounding of torch.float32"):
        argmin(lambda x, t: ((x - t) ** 2).sum() * 1e6 + (x**4).sum(), torch.zeros(3), t, max_iter=3)
