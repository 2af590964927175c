"""Deep declarative nodes of chapter 9 (ad_lib.declarative) against independent truths: autograd of Table 1's
penalties, the closed-form solution of an equality-constrained quadratic program, gradcheck in float64,
implicit differentiation with dense autograd Hessians, unrolled gradient descent, POT's ot.sinkhorn, and
autograd through the Sinkhorn sweeps."""

import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from ad_lib.declarative import (
    PENALTIES, OptimalTransport, RobustPool, ddn_jacobian, ddn_vjp, kappa, optimal_transport, ot_backward, penalty,
    robust_pool, robust_pool_info, sinkhorn_info,
)
from ad_lib.implicit import ConvergenceWarning, NotConvergedError
from ad_lib.runtime import TensorMemory

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def simplex(k, seed, batch=()):
    return torch.softmax(torch.randn(*batch, k, dtype=F64, generator=gen(seed)), -1)


class OpLog(TorchDispatchMode):
    """The names of the aten operations run inside the block."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------ eq. (3)


def qp_setup(m=5, n=3, p=2, seed=0):
    g = gen(seed)
    R = torch.randn(m, m, dtype=F64, generator=g)
    Q = R @ R.T + m * torch.eye(m, dtype=F64)
    G = torch.randn(m, n, dtype=F64, generator=g)
    A = torch.randn(p, m, dtype=F64, generator=g)
    C0 = torch.randn(p, n, dtype=F64, generator=g)
    d = torch.randn(p, dtype=F64, generator=g)
    x = torch.randn(n, dtype=F64, generator=g)
    return Q, G, A, C0, d, x


def test_ddn_jacobian_of_an_equality_constrained_quadratic_program():
    # y(x) = argmin_u 1/2 u^T Q u + u^T G x  subject to  A u - C0 x - d = 0, solved in closed form (KKT system)
    Q, G, A, C0, d, x = qp_setup()
    m, p = Q.shape[0], A.shape[0]

    def solve(x):
        K = torch.cat([torch.cat([Q, A.T], 1), torch.cat([A, torch.zeros(p, p, dtype=F64)], 1)], 0)
        return torch.linalg.solve(K, torch.cat([-G @ x, C0 @ x + d]))[:m]

    truth = torch.autograd.functional.jacobian(solve, x)
    # h linear: B = D_XY f = G, H = Q, A = D_Y h, C = D_X h = -C0
    torch.testing.assert_close(ddn_jacobian(Q, G, A, -C0), truth, rtol=1e-12, atol=1e-12)
    v = torch.randn(m, dtype=F64, generator=gen(5))
    torch.testing.assert_close(ddn_vjp(v, Q, G, A, -C0), v @ truth, rtol=1e-12, atol=1e-12)
    # the unconstrained case is -H^{-1} B, the argmin Jacobian of chapter 8
    free = torch.autograd.functional.jacobian(lambda x: torch.linalg.solve(Q, -G @ x), x)
    torch.testing.assert_close(ddn_jacobian(Q, G), free, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ddn_vjp(v, Q, G), v @ free, rtol=1e-12, atol=1e-12)


def test_ddn_jacobian_keeps_batch_dimensions_and_checks_its_input():
    Q, G, A, C0, _, _ = qp_setup()
    batch = ddn_jacobian(torch.stack([Q, 2 * Q]), torch.stack([G, G]), torch.stack([A, A]), torch.stack([-C0, -C0]))
    torch.testing.assert_close(batch[1], ddn_jacobian(2 * Q, G, A, -C0))
    with pytest.raises(ValueError, match="A and C"):
        ddn_jacobian(Q, G, A=A)
    with pytest.raises(ValueError, match="H must be square"):
        ddn_jacobian(Q[:, :3], G)
    with pytest.raises(ValueError, match="NaN"):
        ddn_jacobian(Q, G * float("nan"))


# ------------------------------------------------------------------ Table 1


@pytest.mark.parametrize("name", PENALTIES)
def test_kappas_are_the_derivatives_of_phi(name):
    alpha = 1.3
    z = torch.linspace(0.01, 3.0, 301, dtype=F64)
    z = z[(z - alpha).abs() > 1e-3].requires_grad_(True)     # away from the kinks of huber and trunc-quad
    d1, = torch.autograd.grad(penalty(name, z, alpha).sum(), z, create_graph=True)
    d2, = torch.autograd.grad(d1.sum(), z)
    k1, k2 = kappa(name, z.detach(), alpha)
    z = z.detach()
    torch.testing.assert_close(k1, d1.detach() / z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(k2, (d2 - d1.detach() / z) / z**2, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(torch.stack(kappa(name, torch.zeros(3, dtype=F64), alpha))).all()


def test_table_one_values():
    a = 2.0
    z = torch.tensor([0.0, 1.0, 4.0], dtype=F64)
    torch.testing.assert_close(penalty("pseudo-huber", torch.tensor(a, dtype=F64), a), torch.tensor(a**2 * (math.sqrt(2) - 1), dtype=F64))
    torch.testing.assert_close(penalty("huber", z, a), torch.tensor([0.0, 0.5, a * (4 - a / 2)], dtype=F64))
    torch.testing.assert_close(penalty("trunc-quad", z, a), torch.tensor([0.0, 0.5, a**2 / 2], dtype=F64))
    torch.testing.assert_close(penalty("welsch", z, a), 1 - torch.exp(-z**2 / 8))
    k1, k2 = kappa("huber", z, a)
    torch.testing.assert_close(k1, torch.tensor([1.0, 1.0, a / 4], dtype=F64))
    torch.testing.assert_close(k2, torch.tensor([0.0, 0.0, -a / 64], dtype=F64))
    assert (kappa("quadratic", z)[1] == 0).all() and (kappa("trunc-quad", z, a)[1] == 0).all()


# ------------------------------------------------------------------ robust pooling


def test_quadratic_pooling_is_the_mean_and_four_dimensional_inputs_are_pooled_over_space():
    x = torch.randn(2, 3, 4, 5, dtype=F64, generator=gen(0))
    torch.testing.assert_close(robust_pool(x, "quadratic"), x.mean((2, 3)))
    torch.testing.assert_close(robust_pool(x, "huber", alpha=100.0), x.mean((2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(RobustPool("welsch", 0.7)(x), robust_pool(x.flatten(2), "welsch", 0.7))


def test_robust_pooling_ignores_an_outlier_that_the_mean_follows():
    x = torch.randn(1, 2, 40, dtype=F64, generator=gen(1)) * 0.1
    x[0, :, 0] = torch.tensor([50.0, 50.0], dtype=F64)
    assert robust_pool(x, "quadratic").norm() > 1.0
    for name in ("huber", "welsch", "trunc-quad", "pseudo-huber"):
        assert robust_pool(x, name, alpha=0.5).norm() < 0.2, name


@pytest.mark.parametrize("name", PENALTIES)
def test_robust_pool_gradcheck(name):
    x = (torch.randn(2, 3, 5, dtype=F64, generator=gen(2))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: robust_pool(a, name, 1.0), (x,), fast_mode=True)


@pytest.mark.parametrize("name", PENALTIES)
def test_pool_backward_equals_implicit_differentiation_with_dense_hessians(name):
    # -H^{-1} B with H and B from torch.func.hessian / jacrev of the objective: the (n, m, m) way, on a tiny case
    m, n, alpha = 3, 6, 1.0
    x = torch.randn(m, n, dtype=F64, generator=gen(3))
    y = robust_pool(x.unsqueeze(0), name, alpha)[0]

    def f(x, y):
        return penalty(name, torch.linalg.vector_norm(y.unsqueeze(-1) - x, dim=0), alpha).sum()

    H = torch.func.hessian(f, argnums=1)(x, y)                                   # (m, m)
    B = torch.func.jacrev(torch.func.grad(f, argnums=1), argnums=0)(x, y)        # (m, m, n)
    v = torch.randn(m, dtype=F64, generator=gen(4))
    truth = -torch.einsum("i,ijk->jk", torch.linalg.solve(H, v), B)
    xx = x.unsqueeze(0).requires_grad_(True)
    mine, = torch.autograd.grad(robust_pool(xx, name, alpha) @ v, xx)
    torch.testing.assert_close(mine[0], truth, rtol=1e-9, atol=1e-10)


def test_pool_backward_equals_autograd_through_unrolled_gradient_descent():
    m, n, alpha = 3, 8, 1.0
    x = torch.randn(1, m, n, dtype=F64, generator=gen(5)).requires_grad_(True)
    v = torch.randn(1, m, dtype=F64, generator=gen(6))
    y = x.mean(-1)
    for _ in range(400):   # pseudo-huber's Hessian is at most n I: steps of 1/n contract
        diff = y.unsqueeze(-1) - x
        k1, _ = kappa("pseudo-huber", torch.linalg.vector_norm(diff, dim=1, keepdim=True), alpha)
        y = y - (k1 * diff).sum(-1) / n
    unrolled, = torch.autograd.grad((y * v).sum(), x)
    implicit, = torch.autograd.grad((robust_pool(x, "pseudo-huber", alpha) * v).sum(), x)
    torch.testing.assert_close(implicit, unrolled, rtol=1e-9, atol=1e-10)


def _backward_peak(name, m, n):
    x = (0.1 * torch.randn(1, m, n, dtype=F64, generator=gen(7))).requires_grad_(True)   # distances ~ 0.8
    y = robust_pool(x, name, 1.0)
    with TensorMemory() as memory, OpLog() as ops:
        y.backward(torch.ones_like(y))
    return memory.peak, ops.names


def test_pool_backward_memory_is_order_nm_and_the_kappa2_zero_shortcut_solves_nothing():
    m, n = 32, 128
    for name in ("pseudo-huber", "welsch"):
        peak, ops = _backward_peak(name, m, n)
        assert peak < 8 * (8 * n * m + 4 * m * m), (name, peak)     # a few (m, n) and (m, m) tensors, never (n, m, m)
        assert any("cholesky" in op for op in ops), name
    for name in ("quadratic", "trunc-quad"):
        peak, ops = _backward_peak(name, m, n)
        assert not any("cholesky" in op or "solve" in op for op in ops), name
        assert peak < 8 * 6 * n * m


def test_robust_pool_on_device(device):
    x = torch.randn(2, 4, 3, 3, generator=gen(8)).to(device).requires_grad_(True)
    y = RobustPool("pseudo-huber", 1.0)(x)
    assert y.shape == (2, 4) and y.device.type == device.type and y.dtype == torch.float32
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()


def test_robust_pool_reports_non_convergence():
    x = torch.randn(2, 3, 30, dtype=F64, generator=gen(9)) * 5
    with pytest.warns(ConvergenceWarning, match="residual"):
        robust_pool_info(x, "pseudo-huber", 1.0, tol=1e-300, max_iter=1)
    with pytest.raises(NotConvergedError):
        robust_pool_info(x, "pseudo-huber", 1.0, tol=1e-300, max_iter=1, on_failure="raise")
    _, info = robust_pool_info(x, "welsch", 2.0)
    assert info.converged and info.residual <= info.tol


def test_robust_pool_rejects_bad_input():
    x = torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match="penalty"):
        robust_pool(x, "cauchy")
    with pytest.raises(ValueError, match="alpha"):
        robust_pool(x, "huber", alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        RobustPool("huber", alpha=-1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        robust_pool(torch.randn(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        robust_pool(torch.full((1, 2, 3), float("inf")))
    with pytest.raises(TypeError, match="x must"):
        robust_pool(torch.ones(1, 2, 3, dtype=torch.int64))


# ------------------------------------------------------------------ optimal transport


def ot_problem(b=None, m=4, n=5, seed=10):
    batch = () if b is None else (b,)
    M = torch.rand(*batch, m, n, dtype=F64, generator=gen(seed))
    return M, simplex(m, seed + 1, batch), simplex(n, seed + 2, batch)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 7), n=st.integers(1, 7), gamma=st.floats(0.1, 10.0), seed=st.integers(0, 10**6))
def test_the_plan_has_the_marginals(m, n, gamma, seed):
    M = torch.rand(m, n, dtype=F64, generator=gen(seed)) * 3
    r, c = simplex(m, seed + 1), simplex(n, seed + 2)
    P, info = sinkhorn_info(M, r, c, gamma)
    assert info.converged and (P >= 0).all()
    torch.testing.assert_close(P.sum(1), r, rtol=0, atol=1e-10)
    torch.testing.assert_close(P.sum(0), c, rtol=0, atol=1e-13)      # the last sweep scales the columns


@pytest.mark.parametrize("shift", [0.0, 5.0])
def test_the_plan_agrees_with_pot_with_reg_one_over_gamma(shift):
    M, r, c = ot_problem(m=6, n=4)
    gamma = 3.0
    P = optimal_transport(M + shift, r, c, gamma, tol=1e-13)      # a constant shift of M leaves the plan unchanged
    theirs = ot.sinkhorn(r.numpy(), c.numpy(), M.numpy(), reg=1 / gamma, stopThr=1e-14, numItermax=10000)
    np.testing.assert_allclose(P.numpy(), theirs, rtol=0, atol=1e-12)
    wrong = ot.sinkhorn(r.numpy(), c.numpy(), M.numpy(), reg=gamma, stopThr=1e-14, numItermax=10000)
    assert np.abs(P.numpy() - wrong).max() > 1e-3


def test_a_batch_of_problems_is_the_problems_one_by_one():
    M, r, c = ot_problem(b=3)
    P = optimal_transport(M, r, c, 2.0, tol=1e-13)
    for k in range(3):
        torch.testing.assert_close(P[k], optimal_transport(M[k], r[k], c[k], 2.0, tol=1e-13), rtol=0, atol=1e-13)
    torch.testing.assert_close(optimal_transport(M)[0], optimal_transport(M[0]))     # uniform marginals


@pytest.mark.parametrize("method", ["block", "full", "unrolled"])
def test_optimal_transport_gradcheck(method):
    M, _, _ = ot_problem(b=2, m=3, n=4)
    M = M.requires_grad_(True)
    theta_r = torch.randn(2, 3, dtype=F64, generator=gen(11)).requires_grad_(True)
    theta_c = torch.randn(4, dtype=F64, generator=gen(12)).requires_grad_(True)

    def node(M, theta_r, theta_c):   # marginals on the simplex, so that every perturbation is feasible
        return optimal_transport(M, torch.softmax(theta_r, -1), torch.softmax(theta_c, -1), 2.0, method=method)

    assert torch.autograd.gradcheck(node, (M, theta_r, theta_c))


def test_block_full_and_unrolled_backward_agree_at_convergence():
    M, r, c = ot_problem(b=2, m=5, n=4)
    v = torch.randn(2, 5, 4, dtype=F64, generator=gen(13))
    grads = {}
    for method in ("block", "full", "unrolled"):
        inputs = [t.clone().requires_grad_(True) for t in (M, r, c)]
        P = OptimalTransport(1.5, method, tol=1e-13)(*inputs)
        dM, dr, dc = torch.autograd.grad((P * v).sum(), inputs)
        grads[method] = (dM, dr - dr.mean(-1, keepdim=True), dc - dc.mean(-1, keepdim=True))
    for method in ("full", "unrolled"):
        for mine, theirs in zip(grads["block"], grads[method]):
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-11)
    assert (grads["block"][1].sum(-1).abs() < 1e-13).all()       # returned centred


def test_the_removed_constraint_does_not_matter():
    M, r, c = ot_problem(b=1, m=4, n=3)
    P, _ = sinkhorn_info(M, r, c, 2.0)
    v = torch.randn(1, 4, 3, dtype=F64, generator=gen(14))
    reference = ot_backward(P, v, 2.0, "block")
    for dropped in range(7):
        for mine, theirs in zip(ot_backward(P, v, 2.0, "full", dropped=dropped), reference):
            torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_block_backward_saves_only_the_plan_and_unrolled_saves_every_sweep():
    M, r, c = ot_problem(m=20, n=20)
    M = M.requires_grad_(True)

    def saved_bytes(method, iterations):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            optimal_transport(M, r, c, 1.0, method=method, tol=0, max_iter=iterations)
        return total

    assert saved_bytes("block", 5) == saved_bytes("block", 50) == 20 * 20 * 8
    few, many = saved_bytes("unrolled", 5), saved_bytes("unrolled", 50)
    assert many > 8 * few


def test_optimal_transport_on_device(device):
    M = torch.rand(2, 6, 5, generator=gen(15)).to(device).requires_grad_(True)
    P = optimal_transport(M, gamma=2.0)
    assert P.device.type == device.type and P.dtype == torch.float32
    (P * M).sum().backward()
    assert torch.isfinite(M.grad).all()
    torch.testing.assert_close(P.sum(-1), torch.full((2, 6), 1 / 6, device=device), rtol=0, atol=1e-5)


def test_sinkhorn_reports_non_convergence():
    M, r, c = ot_problem(m=8, n=8)
    with pytest.warns(ConvergenceWarning, match="residual"):
        optimal_transport(M, r, c, gamma=200.0, max_iter=3)
    with pytest.raises(NotConvergedError):
        sinkhorn_info(M, r, c, gamma=200.0, max_iter=3, on_failure="raise")
    with pytest.warns(ConvergenceWarning):
        optimal_transport(M, r, c, gamma=200.0, max_iter=3, method="unrolled")


def test_optimal_transport_rejects_bad_input():
    M, r, c = ot_problem()
    with pytest.raises(ValueError, match="gamma"):
        optimal_transport(M, r, c, gamma=0.0)
    with pytest.raises(ValueError, match="r must be positive"):
        optimal_transport(M, torch.tensor([0.5, 0.7, -0.2, 0.0], dtype=F64), c)
    with pytest.raises(ValueError, match="c must sum to 1"):
        optimal_transport(M, r, 2 * c)
    with pytest.raises(ValueError, match="r must have shape"):
        optimal_transport(M, simplex(5, 0), c)
    with pytest.raises(ValueError, match="M must have 2 or 3"):
        optimal_transport(M.reshape(1, 1, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        optimal_transport(M * float("nan"))
    with pytest.raises(ValueError, match="method"):
        optimal_transport(M, method="sparse")
    with pytest.raises(TypeError, match="dtype"):
        optimal_transport(M, r.float(), c)


# ------------------------------------------------------------------ regressions (review of chapter 9)


def test_a_singular_hessian_in_one_batch_element_is_named_not_a_raw_linalg_error():
    # element 1 is spread so far that Welsch's kappas underflow to 0 at the pool: H = 0 there, only there
    x = torch.randn(2, 3, 10, dtype=F64, generator=gen(20))
    x[1] *= 1000
    xx = x.clone().requires_grad_(True)
    y = robust_pool(xx, "welsch", alpha=0.5)
    with pytest.raises(FloatingPointError, match=r"batch element\(s\) \[1\]"):
        y.sum().backward()
    far = (torch.randn(1, 3, 10, dtype=F64, generator=gen(21)) * 100).requires_grad_(True)
    with pytest.raises(FloatingPointError, match="singular"):
        robust_pool(far, "trunc-quad", alpha=0.1).sum().backward()


def test_the_quadratic_backward_is_the_gradient_of_the_mean_and_allocates_no_point_cloud():
    x = torch.randn(2, 16, 8, 8, dtype=F64, generator=gen(22)).requires_grad_(True)
    y = robust_pool(x, "quadratic")
    v = torch.randn_like(y)
    with TensorMemory() as memory:
        grad, = torch.autograd.grad(y, x, v)
    torch.testing.assert_close(grad, (v / 64)[:, :, None, None].expand_as(x))
    assert memory.peak <= 8 * 2 * 16 * 4          # (b, m) numbers, broadcast over the points


def test_sinkhorn_residual_and_iteration_count_are_those_of_the_returned_plan():
    M, r, c = ot_problem(b=2, m=6, n=5)
    for tol, max_iter in ((1e-9, 1000), (0, 7), (1e-300, 5)):
        P, info = sinkhorn_info(M, r, c, 4.0, tol=tol, max_iter=max_iter, on_failure="ignore")
        truth = (P.sum(-1) - r).abs().sum(-1).max().item()
        assert info.residual == pytest.approx(truth, rel=1e-6, abs=1e-15)
        # the plan after exactly info.iterations plain sweeps (f from g, then g from f), written out here
        log_K, f, g = -4.0 * M, None, torch.zeros_like(c)
        for _ in range(info.iterations):
            f = torch.log(r) - torch.logsumexp(log_K + g.unsqueeze(1), 2)
            g = torch.log(c) - torch.logsumexp(log_K + f.unsqueeze(2), 1)
        torch.testing.assert_close(P, (log_K + f.unsqueeze(2) + g.unsqueeze(1)).exp(), rtol=1e-12, atol=1e-15)
    assert sinkhorn_info(M, r, c, 4.0, tol=0, max_iter=7)[1].iterations == 7
