"""Wasserstein barycenters and dictionary learning of chapter 15 (ad_lib.barycenter) against independent truths:
POT's ot.bregman.barycenter (methods "sinkhorn_log" and "sinkhorn", iteration for iteration) and
ot.bregman.convolutional_barycenter2d, chapter 13's sinkhorn (the barycenter's optimality condition and its
objective), closed forms (one histogram is its blur by the Gibbs kernel; the entropic barycenter of 1-D Gaussians),
torch.autograd unrolled through the iterations and torch.autograd.gradcheck in float64, and laws checked by
hypothesis (the barycenter is a histogram, invariant under a permutation of the histograms with their weights)."""

import math
import warnings

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib.barycenter import (
    DOMAINS, GRADS, BarycenterResult, SeparableCost, barycenter, barycenter_backward, barycenter_iterates,
    gaussian_barycenter, grid_cost, wasserstein_dictionary_learning,
)
from ad_lib.implicit import ConvergenceWarning, NotConvergedError
from ad_lib.runtime import TensorMemory, cpu_threads
from ad_lib.sinkhorn import cost_matrix, gibbs_kernel, plan_from_potentials, sinkhorn
from ad_lib.sinkhorn_gradients import centered

F64 = torch.float64
FIXED = dict(tol=0)                                  # exactly max_iter iterations, nothing reported
EXACT = dict(tol=1e-13, max_iter=20000)


@pytest.fixture(autouse=True)
def one_thread():
    """Small problems: one intra-op thread is faster and steadier than two on a busy machine."""
    with cpu_threads(1):
        yield


def gen(seed):
    return torch.Generator().manual_seed(seed)


def problem(n=8, K=3, seed=0, batch=(), device="cpu", dtype=F64, symmetric=True):
    """K random histograms (columns) on n random points of the unit square, their squared distances, weights."""
    g = gen(seed)
    x = torch.rand(n, 2, dtype=dtype, generator=g)
    C = cost_matrix(x, x)
    if not symmetric:
        C = C + 0.3 * torch.rand(n, n, dtype=dtype, generator=g)
    A = torch.softmax(2 * torch.randn(*batch, n, K, dtype=dtype, generator=g), -2)
    w = torch.softmax(torch.randn(*batch, K, dtype=dtype, generator=g), -1)
    return A.to(device), C.to(device), w.to(device)


def pot_barycenter(A, C, w, eps, method, iterations, stop=0.0):
    return ot.bregman.barycenter(A.cpu().numpy(), C.cpu().numpy(), eps, w.cpu().numpy(), method=method,
                                 numItermax=iterations, stopThr=stop, warn=False)


def objective(p, A, C, w, eps):
    """sum_k w_k W_eps(a_k, p) with the regularization eps sum P log P, from chapter 13's sinkhorn (whose value is
    regularized by KL(P | a p^T) = sum P log P - <a, log a> - <p, log p>), and sum_k w_k g_k centered (zero at
    the barycenter: the gradient of the objective on the simplex)."""
    total, potential = 0.0, 0.0
    for k in range(A.shape[-1]):
        result = sinkhorn(A[:, k], p, C, eps, tol=1e-13, max_iter=100000)
        entropy = (A[:, k] * torch.log(A[:, k])).sum() + (p * torch.log(p)).sum()
        total = total + w[k] * (result.value + eps * entropy)
        potential = potential + w[k] * result.g
    return float(total), centered(potential)


# ------------------------------------------------------------------ against POT


@pytest.mark.parametrize("domain", DOMAINS)
def test_equals_pot_sinkhorn_log_iteration_for_iteration(device, domain):
    A, C, w = problem(n=10, K=3, seed=1, device=device, symmetric=False)
    for iterations in (1, 2, 7, 40):
        result = barycenter(A, C, w, 0.05, domain=domain, max_iter=iterations, **FIXED)
        assert isinstance(result, BarycenterResult) and result.iterations == iterations
        assert result.barycenter.device == C.device and result.barycenter.dtype == F64
        theirs = pot_barycenter(A, C, w, 0.05, "sinkhorn_log", iterations)
        np.testing.assert_allclose(result.barycenter.cpu().numpy(), theirs, rtol=0, atol=1e-12)


def pot_scaling_start(A, C, eps):
    """POT's barycenter_sinkhorn before its loop: one step from v = 1 whose geometric mean weighs the histograms
    uniformly, with K and K^T exchanged (read in ot/bregman/_barycenter.py): its u is our v."""
    K = np.exp(-C / eps)
    UKv = K @ (A / K.sum(0)[:, None])
    return np.exp(np.log(UKv).mean(1))[:, None] / UKv


def test_equals_pot_sinkhorn_from_its_starting_point():
    A, C, w = problem(n=9, K=4, seed=2, symmetric=False)
    eps = 0.1
    g_init = eps * torch.log(torch.tensor(pot_scaling_start(A.numpy(), C.numpy(), eps)))
    for iterations in (1, 5, 30):
        theirs = pot_barycenter(A, C, w, eps, "sinkhorn", iterations)
        for domain in DOMAINS:
            ours = barycenter(A, C, w, eps, domain=domain, max_iter=iterations, g_init=g_init, **FIXED)
            np.testing.assert_allclose(ours.barycenter.numpy(), theirs, rtol=0, atol=1e-12)


def test_uniform_weights_pot_sinkhorn_runs_one_iteration_more():
    """With uniform weights and a symmetric cost, POT's starting step is our first iteration."""
    A, C, _ = problem(n=9, K=3, seed=3)
    w = torch.full((3,), 1 / 3, dtype=F64)
    for iterations in (1, 4, 25):
        theirs = pot_barycenter(A, C, w, 0.1, "sinkhorn", iterations)
        ours = barycenter(A, C, w, 0.1, domain="scaling", max_iter=iterations + 1, **FIXED).barycenter
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-12)


def test_uniform_weights_pot_sinkhorn_converges_to_ours_for_any_cost():
    """With a non-symmetric cost POT's start applies K where our first iteration applies K^T, so it is not one
    iteration ahead; with uniform weights its start keeps sum_k w_k log v_k = 0, and it converges to our barycenter."""
    A, C, _ = problem(n=9, K=3, seed=3, symmetric=False)
    w = torch.full((3,), 1 / 3, dtype=F64)
    ahead = barycenter(A, C, w, 0.1, domain="scaling", max_iter=5, **FIXED).barycenter
    assert float((ahead - torch.tensor(pot_barycenter(A, C, w, 0.1, "sinkhorn", 4))).abs().max()) > 1e-6
    ours = barycenter(A, C, w, 0.1, **EXACT)
    theirs = pot_barycenter(A, C, w, 0.1, "sinkhorn", 5000, stop=1e-15)
    np.testing.assert_allclose(ours.barycenter.numpy(), theirs, rtol=0, atol=1e-12)


def test_pot_sinkhorn_with_unequal_weights_converges_off_the_minimizer():
    """POT's scaling barycenter keeps sum_k w_k log v_k at the value of its uniform start: converged, it has plans
    with a common column marginal that violate the optimality condition sum_k w_k g_k = constant, and a larger
    objective than ours and than its own log-domain method (both optimal)."""
    A, C, w = problem(n=8, K=3, seed=4)
    eps = 0.05
    ours = barycenter(A, C, w, eps, **EXACT)
    assert ours.converged
    scaling = torch.tensor(pot_barycenter(A, C, w, eps, "sinkhorn", 5000, stop=1e-15))
    log = torch.tensor(pot_barycenter(A, C, w, eps, "sinkhorn_log", 5000, stop=1e-15))
    np.testing.assert_allclose(log.numpy(), ours.barycenter.numpy(), rtol=0, atol=1e-12)
    value_ours, kkt_ours = objective(ours.barycenter / ours.barycenter.sum(), A, C, w, eps)
    value_pot, kkt_pot = objective(scaling / scaling.sum(), A, C, w, eps)
    assert kkt_ours.abs().max() < 1e-10 < 1e-3 < kkt_pot.abs().max()
    assert value_ours < value_pot - 1e-5
    assert float((scaling - ours.barycenter).abs().sum()) > 1e-3
    # the same verdict from POT's own Sinkhorn plans, sharing no code with ad_lib: <C, P> + eps sum P log P
    def pot_objective(p):
        p = (p / p.sum()).numpy()
        total = 0.0
        for k in range(A.shape[1]):
            plan = ot.sinkhorn(A[:, k].numpy(), p, C.numpy(), eps, method="sinkhorn_log", numItermax=100000,
                               stopThr=1e-14)
            total += float(w[k]) * float((plan * C.numpy()).sum() + eps * (plan * np.log(plan)).sum())
        return total
    assert pot_objective(ours.barycenter) == pytest.approx(value_ours, abs=1e-9)
    assert pot_objective(ours.barycenter) < pot_objective(scaling) - 1e-5


def test_separable_cost_equals_dense_and_pot_convolutional(device):
    cost = grid_cost((5, 7), device=device)
    dense = cost.dense()
    t1, t2 = torch.linspace(0, 1, 5, dtype=F64), torch.linspace(0, 1, 7, dtype=F64)
    points = torch.stack(torch.meshgrid(t1, t2, indexing="ij"), -1).reshape(-1, 2).to(device)
    torch.testing.assert_close(dense, cost_matrix(points, points), rtol=0, atol=1e-15)
    g = gen(5)
    A = torch.softmax(3 * torch.randn(35, 3, dtype=F64, generator=g), 0).to(device)
    A[:7, 1] = 0                                          # an empty first row of the second image
    A = A / A.sum(0)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=F64, device=device)
    for domain in DOMAINS:
        sep = barycenter(A, cost, w, 0.02, domain=domain, max_iter=30, **FIXED)
        den = barycenter(A, dense, w, 0.02, domain=domain, max_iter=30, **FIXED)
        torch.testing.assert_close(sep.barycenter, den.barycenter, rtol=0, atol=1e-14)
        torch.testing.assert_close(sep.g, den.g, rtol=1e-12, atol=1e-13)
    images = A.T.reshape(3, 5, 7).cpu().numpy()
    theirs = ot.bregman.convolutional_barycenter2d(images, 0.02, w.cpu().numpy(), method="sinkhorn_log",
                                                   numItermax=30, stopThr=0.0, warn=False)
    np.testing.assert_allclose(sep.barycenter.reshape(5, 7).cpu().numpy(), theirs, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ what the barycenter is


def test_the_barycenter_satisfies_its_optimality_condition_and_minimizes_the_objective():
    A, C, w = problem(n=7, K=3, seed=6)
    eps = 0.08
    p = barycenter(A, C, w, eps, **EXACT).barycenter
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-12)
    value, kkt = objective(p, A, C, w, eps)
    assert kkt.abs().max() < 1e-10
    for seed in range(2):
        d = centered(torch.randn(7, dtype=F64, generator=gen(10 + seed))) * float(p.min())   # keeps the mass
        for t in (0.1, -0.1):
            assert objective(p + t * d, A, C, w, eps)[0] > value


def test_the_plans_have_the_rows_and_the_marginal_error_says_how_far_their_columns_are():
    A, C, w = problem(n=6, K=3, seed=7)
    for domain in DOMAINS:
        result = barycenter(A, C, w, 0.1, domain=domain, max_iter=4, **FIXED)
        plans = plan_from_potentials(result.f.T, result.g.T, C, 0.1)       # (K, n, n)
        torch.testing.assert_close(plans.sum(-1), A.T, rtol=0, atol=1e-14)
        columns = plans.sum(-2)
        gap = (w[:, None] * (columns - result.barycenter).abs()).sum()
        assert float(gap) == pytest.approx(result.errors[-1], rel=1e-10) and result.errors[-1] > 1e-6
        assert float(result.marginal_error) == result.errors[-1] and not result.converged


def test_one_histogram_is_its_blur_by_the_gibbs_kernel():
    """K = 1: the barycenter is K^T (a / K 1), the rows of the plan fitted and nothing else, after one iteration;
    it tends to a as eps -> 0."""
    A, C, _ = problem(n=10, K=1, seed=8)
    w = torch.ones(1, dtype=F64)
    gaps = []
    for eps in (0.3, 0.1, 0.03, 0.01, 0.003, 3e-4):
        result = barycenter(A, C, w, eps)
        K = gibbs_kernel(C, eps)
        torch.testing.assert_close(result.barycenter, K.T @ (A[:, 0] / K.sum(1)), rtol=1e-12, atol=1e-15)
        assert result.iterations == 1 and result.converged
        gaps.append(float((result.barycenter - A[:, 0]).abs().sum()))
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:])) and gaps[-1] < 1e-3


def gaussian(t, m, s):
    q = torch.exp(-(t - m) ** 2 / (2 * s * s))
    return q / q.sum()


@pytest.mark.parametrize("domain", DOMAINS)
def test_two_gaussians_move_their_mean_along_the_weights_and_match_the_closed_form(domain):
    t = torch.linspace(-0.5, 1.5, 200, dtype=F64)
    C = (t[:, None] - t[None, :]) ** 2
    A = torch.stack([gaussian(t, 0.2, 0.05), gaussian(t, 0.8, 0.1)], 1)
    eps = 4e-3
    for s in (0.0, 0.25, 0.5, 0.9):
        p = barycenter(A, C, torch.tensor([1 - s, s], dtype=F64), eps, domain=domain, tol=1e-12,
                       max_iter=5000).barycenter
        mean, std = gaussian_barycenter([0.2, 0.8], [0.05, 0.1], [1 - s, s], eps)
        assert abs(float((p * t).sum()) - (0.2 + 0.6 * s)) < 1e-10
        torch.testing.assert_close(p, gaussian(t, mean, std), rtol=0, atol=1e-11)


def test_gaussian_closed_form_limits_and_checks():
    mean, std = gaussian_barycenter([0.0, 1.0], [0.1, 0.3], [0.5, 0.5], 1e-9)
    assert mean == pytest.approx(0.5) and std == pytest.approx(0.2, abs=1e-6)        # McCann: the stds average
    _, one = gaussian_barycenter([0.3], [0.1], [1.0], 0.02)
    assert one == pytest.approx(math.sqrt(0.01 + 0.01), rel=1e-10)                   # s^2 + eps / 2
    assert gaussian_barycenter([0, 1], [0.1, 0.3], [0.5, 0.5], 0.05)[1] > 0.2         # the entropic blur
    with pytest.raises(ValueError, match="^weights must"):
        gaussian_barycenter([0, 1], [0.1, 0.3], [0.5, 0.6], 0.05)
    with pytest.raises(ValueError, match="^stds must"):
        gaussian_barycenter([0, 1], [0.1, 0.0], [0.5, 0.5], 0.05)
    with pytest.raises(ValueError, match="same length"):
        gaussian_barycenter([0, 1], [0.1], [0.5, 0.5], 0.05)
    with pytest.raises(ValueError, match="^means must be finite"):                  # not a NaN mean
        gaussian_barycenter([float("nan"), 1], [0.1, 0.3], [0.5, 0.5], 0.05)
    with pytest.raises(ValueError, match="^weights must"):                          # not a ZeroDivisionError
        gaussian_barycenter([0, 1], [0.1, 0.3], [float("nan"), 0.5], 0.05)
    with pytest.raises(ValueError, match="^stds must"):
        gaussian_barycenter([0, 1], [float("nan"), 0.3], [0.5, 0.5], 0.05)


# ------------------------------------------------------------------ batched, devices, dtypes


def test_batched_equals_the_loop_and_shared_histograms_broadcast(device):
    A, C, w = problem(n=6, K=3, seed=9, batch=(4,), device=device)
    batched = barycenter(A, C, w, 0.1, tol=1e-12)
    assert batched.barycenter.shape == (4, 6) and batched.marginal_error.shape == (4,) and batched.g.shape == (4, 6, 3)
    shared = barycenter(A[0], C, w, 0.1, tol=1e-12)                     # A (n, K), weights (B, K)
    assert shared.barycenter.shape == (4, 6)
    for b in range(4):
        torch.testing.assert_close(batched.barycenter[b], barycenter(A[b], C, w[b], 0.1, tol=1e-12).barycenter,
                                   rtol=0, atol=1e-11)
        torch.testing.assert_close(shared.barycenter[b], barycenter(A[0], C, w[b], 0.1, tol=1e-12).barycenter,
                                   rtol=0, atol=1e-11)


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_zero_weight_is_allowed_and_its_histogram_has_no_influence(domain):
    """The simplex includes its faces: a histogram of weight 0 changes neither the barycenter (its factor in the
    geometric mean is 1) nor, therefore, anything downstream, so its gradient is zero while the others' are not."""
    A, C, w = problem(n=7, K=3, seed=23)
    w0 = torch.cat([w[:2] / w[:2].sum(), torch.zeros(1, dtype=F64)])
    two = barycenter(A[:, :2], C, w0[:2], 0.1, domain=domain, tol=1e-12).barycenter
    for other in (A[:, 2], torch.softmax(5 * torch.randn(7, dtype=F64, generator=gen(24)), 0)):
        three = torch.stack([A[:, 0], A[:, 1], other], -1).requires_grad_()
        p = barycenter(three, C, w0, 0.1, domain=domain, tol=1e-12).barycenter
        torch.testing.assert_close(p, two, rtol=0, atol=1e-12)
        (grad,) = torch.autograd.grad((p * torch.arange(7, dtype=F64)).sum(), three)
        assert grad[:, 2].abs().max() < 1e-13 and grad[:, :2].abs().max() > 1e-3


def test_float32_on_the_inputs_device(device):
    A, C, w = problem(n=8, K=3, seed=10, device=device, dtype=torch.float32)
    for domain in DOMAINS:
        result = barycenter(A, C, w, 0.1, domain=domain, tol=1e-5)
        assert result.converged and result.barycenter.dtype == torch.float32 and result.barycenter.device == C.device
        A64, w64 = A.double() / A.double().sum(0), w.double() / w.double().sum()
        reference = barycenter(A64, C.double(), w64, 0.1, tol=1e-13, max_iter=5000)
        torch.testing.assert_close(result.barycenter.double(), reference.barycenter, rtol=0, atol=1e-5)


def test_small_eps_log_domain_converges_and_scaling_domain_raises_naming_eps():
    t = torch.linspace(0, 1, 60, dtype=F64)
    C = (t[:, None] - t[None, :]) ** 2
    A = torch.stack([gaussian(t, 0.2, 0.03), gaussian(t, 0.8, 0.05)], 1)
    result = barycenter(A, C, None, 1e-4, max_iter=20000, tol=1e-9)
    assert result.converged and torch.isfinite(result.barycenter).all()
    assert abs(float((result.barycenter * t).sum()) - 0.5) < 1e-5       # on a grid of spacing 0.017, eps << h^2
    with pytest.raises(FloatingPointError, match=r"eps = 0\.0001.*domain='log'"):
        barycenter(A, C, None, 1e-4, domain="scaling", max_iter=20000)


def test_empty_bins_are_fine_without_a_gradient_in_A_and_refused_with_one():
    A, C, w = problem(n=8, K=3, seed=11)
    A = A.clone()
    A[:3, 0] = 0
    A = A / A.sum(0)
    cost = grid_cost((2, 4))
    reference = torch.tensor(pot_barycenter(A, C, w, 0.1, "sinkhorn_log", 20))
    for C_ in (C, cost):
        for domain in DOMAINS:
            for grad in GRADS:
                ww = w.clone().requires_grad_()
                p = barycenter(A, C_, ww, 0.1, domain=domain, grad=grad, max_iter=20, **FIXED).barycenter
                p[0].backward()
                assert torch.isfinite(p).all() and torch.isfinite(ww.grad).all()
                if C_ is C:
                    torch.testing.assert_close(p.detach(), reference, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="^A has zero entries and requires a gradient"):
        barycenter(A.clone().requires_grad_(), C, w, 0.1)


# ------------------------------------------------------------------ gradients


def gradients(A, C, w, eps, grad, domain, iterations, cotangent):
    A, w = A.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    p = barycenter(A, C, w, eps, grad=grad, domain=domain, max_iter=iterations, **FIXED).barycenter
    (p * cotangent).sum().backward()
    return p.detach(), A.grad, w.grad


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("separable", [False, True], ids=["dense", "separable"])
def test_manual_equals_unrolled_for_the_same_iterations(device, domain, separable):
    cost = grid_cost((3, 4), device=device)
    C = cost if separable else cost.dense()
    g = gen(12)
    for batch in ((), (2,)):
        A = torch.softmax(2 * torch.randn(*batch, 12, 3, dtype=F64, generator=g), -2).to(device)
        w = torch.softmax(torch.randn(*batch, 3, dtype=F64, generator=g), -1).to(device)
        cotangent = torch.randn(*batch, 12, dtype=F64, generator=g).to(device)
        for iterations in (1, 4, 25):
            manual = gradients(A, C, w, 0.05, "manual", domain, iterations, cotangent)
            unrolled = gradients(A, C, w, 0.05, "unrolled", domain, iterations, cotangent)
            for m, u in zip(manual, unrolled):
                torch.testing.assert_close(m, u, rtol=0, atol=1e-12)
            assert manual[1].sum(-2).abs().max() < 1e-14 and manual[2].sum(-1).abs().max() < 1e-14  # centered


def test_manual_gradient_of_shared_histograms_sums_over_the_batch():
    A, C, _ = problem(n=6, K=3, seed=13)
    w = torch.softmax(torch.randn(5, 3, dtype=F64, generator=gen(14)), -1)
    cotangent = torch.randn(5, 6, dtype=F64, generator=gen(15))
    for domain in DOMAINS:
        manual = gradients(A, C, w, 0.1, "manual", domain, 12, cotangent)
        unrolled = gradients(A, C, w, 0.1, "unrolled", domain, 12, cotangent)
        assert manual[1].shape == (6, 3)
        for m, u in zip(manual, unrolled):
            torch.testing.assert_close(m, u, rtol=0, atol=1e-12)


def test_barycenter_backward_is_the_function_s_backward():
    A, C, w = problem(n=6, K=3, seed=16)
    cotangent = torch.randn(6, dtype=F64, generator=gen(17))
    for domain in DOMAINS:
        result, iterates = barycenter_iterates(A, C, w, 0.1, domain=domain, max_iter=9, **FIXED)
        assert len(iterates) == 3 and all(t.shape == (9, 3, 6) for t in iterates)
        grad_A, grad_w = barycenter_backward(iterates, A, C, w, 0.1, cotangent, domain)
        _, unrolled_A, unrolled_w = gradients(A, C, w, 0.1, "unrolled", domain, 9, cotangent)
        torch.testing.assert_close(centered(grad_A.T).T, unrolled_A, rtol=0, atol=1e-12)
        torch.testing.assert_close(centered(grad_w), unrolled_w, rtol=0, atol=1e-12)
        torch.testing.assert_close(result.barycenter, barycenter(A, C, w, 0.1, domain=domain, max_iter=9,
                                                                 **FIXED).barycenter, rtol=0, atol=0)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("separable", [False, True], ids=["dense", "separable"])
def test_gradcheck_manual(domain, separable):
    """In float64, on the simplex (A = A0 + centered(dA), w = w0 + centered(dw)), against finite differences."""
    cost = grid_cost((2, 3))
    C = cost if separable else cost.dense()
    g = gen(18)
    A0 = torch.softmax(torch.randn(6, 2, dtype=F64, generator=g), 0)
    w0 = torch.tensor([0.4, 0.6], dtype=F64)

    def fn(dA, dw):
        return barycenter(A0 + centered(dA.T).T, C, w0 + centered(dw), 0.2, domain=domain, max_iter=6,
                          **FIXED).barycenter

    inputs = (torch.zeros(6, 2, dtype=F64, requires_grad=True), torch.zeros(2, dtype=F64, requires_grad=True))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8)


def test_unrolled_differentiates_the_cost_and_manual_refuses_to():
    A, C, w = problem(n=5, K=2, seed=19)
    Cg = C.clone().requires_grad_()
    barycenter(A, Cg, w, 0.2, grad="unrolled", max_iter=5, **FIXED).barycenter[0].backward()
    assert Cg.grad is not None and torch.isfinite(Cg.grad).all()
    with pytest.raises(ValueError, match="C requires a gradient.*grad='unrolled'"):
        barycenter(A, Cg, w, 0.2)


def test_manual_stores_vectors_unrolled_stores_matrices():
    A, C, w = problem(n=20, K=3, seed=20)

    def peak(grad, iterations):
        Ag = A.clone().requires_grad_()
        with TensorMemory() as memory:
            barycenter(Ag, C, w, 0.05, grad=grad, max_iter=iterations, **FIXED).barycenter.sum().backward()
        return memory.peak

    matrices, vectors = 3 * 20 * 20 * 8, 3 * 20 * 8                  # K matrices (n, n), K vectors (n,)
    assert peak("unrolled", 20) - peak("unrolled", 5) > 15 * matrices    # at least K matrices per iteration
    # three vectors per histogram and iteration, held twice while the forward pass stacks them
    assert peak("manual", 20) - peak("manual", 5) < 15 * 2 * 3 * vectors + 4096


# ------------------------------------------------------------------ stopping and reporting


def test_non_convergence_is_reported_with_the_residual():
    A, C, w = problem(n=8, K=3, seed=21)
    with pytest.warns(ConvergenceWarning, match=r"barycenter \(log domain\) did NOT converge: 3 iterations, residual "
                                                 r"[0-9.e-]+ .*column marginal"):
        result = barycenter(A, C, w, 0.01, max_iter=3)
    assert not result.converged and result.iterations == 3 and result.info.residual == result.errors[-1]
    with pytest.raises(NotConvergedError, match="column marginal"):
        barycenter(A, C, w, 0.01, max_iter=3, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        barycenter(A, C, w, 0.01, max_iter=3, on_failure="ignore")
        fixed = barycenter(A, C, w, 0.01, max_iter=3, tol=0)                  # tol = 0: exactly 3 iterations, silent
    assert fixed.iterations == 3 and len(fixed.errors) == 3
    converged = barycenter(A, C, w, 0.1, tol=1e-10)
    assert converged.converged and converged.errors[-1] <= 1e-10 < converged.errors[-2]
    assert all(e2 < e1 for e1, e2 in zip(converged.errors[5:], converged.errors[6:]))    # linear convergence
    with pytest.warns(ConvergenceWarning, match="below the rounding of torch.float32"):
        barycenter(A.float(), C.float(), w.float(), 0.01, max_iter=3)


# ------------------------------------------------------------------ laws (hypothesis)


@st.composite
def problems(draw):
    n, K = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    eps = draw(st.sampled_from([0.05, 0.2, 1.0]))
    return (*problem(n, K, seed), eps, seed)


@settings(max_examples=20, deadline=None)
@given(problems(), st.sampled_from(DOMAINS))
def test_the_barycenter_is_a_histogram_invariant_under_a_permutation(p, domain):
    A, C, w, eps, seed = p
    result = barycenter(A, C, w, eps, domain=domain, tol=1e-12, max_iter=20000)
    assert result.converged and (result.barycenter > 0).all()
    assert abs(float(result.barycenter.sum()) - 1) < 1e-10
    order = torch.randperm(A.shape[1], generator=gen(seed))
    permuted = barycenter(A[:, order], C, w[order], eps, domain=domain, tol=1e-12, max_iter=20000)
    torch.testing.assert_close(permuted.barycenter, result.barycenter, rtol=0, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(problems(), st.sampled_from(DOMAINS), st.integers(1, 8))
def test_manual_equals_unrolled_for_any_problem(p, domain, iterations):
    A, C, w, eps, seed = p
    cotangent = torch.randn(A.shape[0], dtype=F64, generator=gen(seed + 1))
    manual = gradients(A, C, w, eps, "manual", domain, iterations, cotangent)
    unrolled = gradients(A, C, w, eps, "unrolled", domain, iterations, cotangent)
    for m, u in zip(manual, unrolled):
        torch.testing.assert_close(m, u, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("change, error, pattern", [
    (dict(A_negative=True), ValueError, r"^A has negative entries"),
    (dict(A_scale=2.0), ValueError, r"^A's columns must each sum to one"),
    (dict(A_rows=5), ValueError, r"^A must have shape \(\.\.\., n, K\) = \(\.\.\., 6, K\)"),
    (dict(A_vector=True), ValueError, r"^A must have shape"),
    (dict(w_negative=True), ValueError, r"^weights has negative entries"),
    (dict(w_scale=1.5), ValueError, r"^weights must sum to one"),
    (dict(w_length=2), ValueError, r"^weights must have shape \(\.\.\., K\) = \(\.\.\., 3\)"),
    (dict(eps=0.0), ValueError, r"^eps must be a positive"),
    (dict(eps=-1.0), ValueError, r"^eps must be a positive"),
    (dict(eps=float("nan")), ValueError, r"^eps must be a positive"),
    (dict(eps="big"), TypeError, r"^eps must be a positive real"),
    (dict(C_nan=True), ValueError, r"^C holds NaN or infinite"),
    (dict(C_inf=True), ValueError, r"^C holds NaN or infinite"),
    (dict(C_rect=True), ValueError, r"^C must be a square cost matrix"),
    (dict(C_int=True), TypeError, r"^C must be a floating-point"),
    (dict(A_dtype=torch.float32), TypeError, r"^A must have C's dtype"),
    (dict(w_dtype=torch.float32), TypeError, r"^weights must have C's dtype"),
    (dict(A_device="meta"), TypeError, r"^A must be on C's device"),
    (dict(A_list=True), TypeError, r"^A must be a torch.Tensor"),
    (dict(batch=True), ValueError, r"batch dimensions of A .* do not broadcast"),
    (dict(domain="exp"), ValueError, r"^domain must be one of"),
    (dict(grad="envelope"), ValueError, r"^grad must be one of"),
    (dict(max_iter=0), ValueError, r"^max_iter must be"),
    (dict(tol=-1.0), ValueError, r"^tol must be"),
    (dict(g_init=(5, 3)), ValueError, r"^g_init must have shape"),
    (dict(separable_size=True), ValueError, r"^A must have shape .*6"),
    (dict(separable_nan=True), ValueError, r"^C.C2 holds NaN"),
])
def test_bad_input_names_the_argument(change, error, pattern):
    A, C, w = problem(n=6, K=3)
    eps, kwargs = change.get("eps", 0.1), {}
    if change.get("A_negative"):
        A = A.clone()
        A[0, 0] = -A[0, 0]
    A = A * change.get("A_scale", 1.0)
    if "A_rows" in change:
        A = torch.full((change["A_rows"], 3), 1 / change["A_rows"], dtype=F64)
    if change.get("A_vector"):
        A = A[:, 0]
    if change.get("w_negative"):
        w = torch.tensor([1.2, -0.2, 0.0], dtype=F64)
    w = w * change.get("w_scale", 1.0)
    if "w_length" in change:
        w = torch.full((change["w_length"],), 1 / change["w_length"], dtype=F64)
    if change.get("C_nan") or change.get("C_inf"):
        C = C.clone()
        C[1, 2] = math.nan if change.get("C_nan") else math.inf
    if change.get("C_rect"):
        C = C[:, :5]
    if change.get("C_int"):
        C = C.long()
    if "A_dtype" in change:
        A = A.to(change["A_dtype"])
    if "w_dtype" in change:
        w = w.to(change["w_dtype"])
    if "A_device" in change:
        A = torch.empty(6, 3, dtype=F64, device="meta")
    if change.get("A_list"):
        A = A.tolist()
    if change.get("batch"):
        A, w = A.expand(2, 6, 3), w.expand(3, 3)
    if "g_init" in change:
        kwargs["g_init"] = torch.zeros(change["g_init"], dtype=F64)
    if change.get("separable_size"):
        C = grid_cost((2, 2))
    if change.get("separable_nan"):
        C2 = torch.zeros(3, 3, dtype=F64)
        C2[0, 1] = math.nan
        C = SeparableCost(torch.zeros(2, 2, dtype=F64), C2)
    for key in ("domain", "grad", "max_iter", "tol"):
        if key in change:
            kwargs[key] = change[key]
    with pytest.raises(error, match=pattern):
        barycenter(A, C, w, eps, **kwargs)


def test_device_mismatch_names_the_argument(device):
    if device.type == "cpu":
        pytest.skip("needs a second device")
    A, C, w = problem(device=device)
    with pytest.raises(TypeError, match="^weights must be on C's device"):
        barycenter(A, C, w.cpu(), 0.1)


def test_grid_cost_checks_its_shape():
    assert grid_cost(5).shape == (5, 5)
    assert isinstance(grid_cost((3, 4)), SeparableCost) and grid_cost((3, 4), separable=False).shape == (12, 12)
    for bad in (1, (2, 3, 4), (0, 3), 2.5):
        with pytest.raises(ValueError, match="^shape must be"):
            grid_cost(bad)


# ------------------------------------------------------------------ dictionary learning


def translated(t, shifts):
    """Two-bump histograms translated by each shift: a family that the barycenters of its two ends reproduce."""
    return torch.stack([0.6 * gaussian(t, 0.15 + s, 0.03) + 0.4 * gaussian(t, 0.35 + s, 0.03) for s in shifts], 1)


def test_dictionary_learning_recovers_a_translated_family():
    t = torch.linspace(0, 1, 40, dtype=F64)
    C = (t[:, None] - t[None, :]) ** 2
    X = translated(t, torch.linspace(0.0, 0.5, 10, dtype=F64))
    X = X / X.sum(0)
    result = wasserstein_dictionary_learning(X, 2, C, 2e-3, steps=80, lr=0.1, domain="scaling", max_iter=30, seed=0,
                                             progress=False)
    assert result.atoms.shape == (40, 2) and result.weights.shape == (2, 10) and result.reconstruction.shape == (40, 10)
    torch.testing.assert_close(result.atoms.sum(0), torch.ones(2, dtype=F64))
    torch.testing.assert_close(result.weights.sum(0), torch.ones(10, dtype=F64))
    assert len(result.loss) == 80 and result.loss[-1] < result.loss[0] / 4
    first = result.weights[0]
    steps = torch.sign(first[-1] - first[0]) * torch.diff(first)
    assert (steps >= -1e-3).all()                                    # the weights order the data by their shift
    reconstruction = barycenter(result.atoms, C, result.weights.T, 2e-3, domain="scaling", max_iter=30, tol=0)
    torch.testing.assert_close(reconstruction.barycenter.T, result.reconstruction, rtol=0, atol=1e-14)
    again = wasserstein_dictionary_learning(X, 2, C, 2e-3, steps=3, lr=0.1, max_iter=5, seed=0, progress=False)
    once = wasserstein_dictionary_learning(X, 2, C, 2e-3, steps=3, lr=0.1, max_iter=5, seed=0, progress=False)
    assert again.loss == once.loss                                                       # seeded
    with pytest.raises(ValueError, match="^n_atoms must be"):
        wasserstein_dictionary_learning(X, 0, C, 2e-3, steps=1, progress=False)
    with pytest.raises(ValueError, match="^n_atoms must be"):
        wasserstein_dictionary_learning(X, 11, C, 2e-3, steps=1, progress=False)
    with pytest.raises(ValueError, match="^loss must be one of"):
        wasserstein_dictionary_learning(X, 2, C, 2e-3, steps=1, loss="w2", progress=False)
    with pytest.raises(ValueError, match="^X's columns must each sum to one"):
        wasserstein_dictionary_learning(2 * X, 2, C, 2e-3, steps=1, progress=False)
    with pytest.raises(ValueError, match="^steps must be"):
        wasserstein_dictionary_learning(X, 2, C, 2e-3, steps=-1, progress=False)
    with pytest.raises(TypeError, match="^seed must be an integer"):
        wasserstein_dictionary_learning(X, 2, C, 2e-3, steps=1, seed="a", progress=False)

