"""Sinkhorn's algorithm of chapter 13 (ad_lib.sinkhorn) against independent truths: POT's ot.sinkhorn
(method="sinkhorn_log"), ot.emd2 and ot.solve, the closed-form duality bounds of entropic transport,
chapter 8's fixed_point on the Sinkhorn map, torch.logsumexp, and laws checked by hypothesis (marginals,
positivity, invariance of the plan under C -> C + u 1^T + 1 v^T)."""

import math
import warnings

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib.runtime import cpu_threads
from ad_lib.implicit import ConvergenceWarning, NotConvergedError, fixed_point, sinkhorn_map
from ad_lib.sinkhorn import (
    DOMAINS, SinkhornResult, birkhoff_rate, cost_matrix, dual_value, entropic_value, gibbs_kernel, log_step,
    log_update_f, log_update_g, plan_from_potentials, plan_from_scalings, scaling_step, sinkhorn,
    sinkhorn_eps_scaling, soft_min,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """The problems are small: one intra-op thread runs them faster than two, which on a busy machine wait
    for each other at every one of the thousands of small operations of a Sinkhorn run."""
    with cpu_threads(1):
        yield


def gen(seed):
    return torch.Generator().manual_seed(seed)


def problem(n=6, m=7, seed=0, batch=(), device="cpu", dtype=F64):
    """Random points in the unit square, squared distances, positive histograms summing to one."""
    g = gen(seed)
    x = torch.rand(*batch, n, 2, dtype=dtype, generator=g)
    y = torch.rand(*batch, m, 2, dtype=dtype, generator=g)
    a = torch.softmax(torch.randn(*batch, n, dtype=dtype, generator=g), -1)
    b = torch.softmax(torch.randn(*batch, m, dtype=dtype, generator=g), -1)
    return a.to(device), b.to(device), cost_matrix(x, y).to(device)


def pot_log(a, b, C, eps, **kwargs):
    kwargs.setdefault("stopThr", 1e-14)
    kwargs.setdefault("numItermax", 100000)
    return ot.sinkhorn(a.cpu().numpy(), b.cpu().numpy(), C.cpu().numpy(), eps, method="sinkhorn_log", log=True,
                       **kwargs)


# ------------------------------------------------------------------ against POT


@pytest.mark.parametrize("domain", DOMAINS)
def test_plan_potentials_and_value_equal_pot_at_convergence(device, domain):
    a, b, C = problem(device=device)
    eps = 0.05
    result = sinkhorn(a, b, C, eps, domain=domain, tol=1e-13, max_iter=20000)
    assert isinstance(result, SinkhornResult) and result.converged
    for t in (result.plan, result.f, result.g, result.value, result.marginal_error):
        assert t.device == C.device and t.dtype == F64
    P, log = pot_log(a, b, C, eps)
    np.testing.assert_allclose(result.plan.cpu().numpy(), P, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.f.cpu().numpy(), eps * log["log_u"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.g.cpu().numpy(), eps * log["log_v"], rtol=0, atol=1e-9)
    # POT's value with the KL term: ot.solve; ot.sinkhorn2 is <C, P> alone
    solved = ot.solve(C.cpu().numpy(), a.cpu().numpy(), b.cpu().numpy(), reg=eps, method="sinkhorn_log",
                      max_iter=100000, tol=1e-14)
    assert abs(result.value.item() - float(solved.value)) < 1e-9
    linear = ot.sinkhorn2(a.cpu().numpy(), b.cpu().numpy(), C.cpu().numpy(), eps, method="sinkhorn_log",
                          stopThr=1e-14, numItermax=100000)
    assert abs(float(linear) - (C * result.plan).sum().item()) < 1e-9
    assert result.value.item() > float(linear) + 1e-3  # the entropic term is not in sinkhorn2's value


def test_same_iterates_as_pot_iteration_for_iteration():
    a, b, C = problem(seed=3)
    for iterations in (1, 2, 7):
        result = sinkhorn(a, b, C, 0.1, max_iter=iterations, on_failure="ignore")
        P, log = pot_log(a, b, C, 0.1, stopThr=0.0, numItermax=iterations, warn=False)
        assert result.iterations == iterations
        np.testing.assert_allclose(result.plan.numpy(), P, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(result.f.numpy() / 0.1, log["log_u"], rtol=1e-12, atol=1e-12)


def test_value_tends_to_the_exact_cost_within_the_entropy_bound():
    """0 <= value_eps - W <= eps min(H(a), H(b)): KL(P | a b^T) is a mutual information."""
    a, b, C = problem(n=8, m=8, seed=4)
    exact = ot.emd2(a.numpy(), b.numpy(), C.numpy())
    entropy = min(-(a * a.log()).sum().item(), -(b * b.log()).sum().item())
    gaps = []
    for eps in (0.3, 0.1, 0.03, 0.01):
        result = sinkhorn(a, b, C, eps, max_iter=100000)
        gap = result.value.item() - exact
        assert -1e-9 <= gap <= eps * entropy + 1e-9
        assert (C * result.plan).sum().item() >= exact - 1e-9
        gaps.append(gap)
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:]))


def test_primal_and_dual_values_agree_at_convergence_and_weak_duality_holds():
    a, b, C = problem(seed=5)
    eps = 0.07
    result = sinkhorn(a, b, C, eps, tol=1e-13, max_iter=10000)
    torch.testing.assert_close(entropic_value(result.plan, a, b, C, eps), result.value, rtol=0, atol=1e-12)
    torch.testing.assert_close(dual_value(result.f, result.g, a, b, C, eps), result.value, rtol=0, atol=1e-12)
    g = gen(6)
    for _ in range(5):  # any other potentials give less
        df, dg = 0.05 * torch.randn(6, dtype=F64, generator=g), 0.05 * torch.randn(7, dtype=F64, generator=g)
        assert dual_value(result.f + df, result.g + dg, a, b, C, eps) < result.value


# ------------------------------------------------------------------ the two domains and the one-step maps


def test_one_step_maps_of_both_domains_agree():
    a, b, C = problem(seed=7)
    eps = 0.2
    K = gibbs_kernel(C, eps)
    f = 0.1 * torch.randn(6, dtype=F64, generator=gen(8))
    f_next, g = log_step(f, a, b, C, eps)
    u_next, v = scaling_step(torch.exp(f / eps), a, b, K)
    torch.testing.assert_close(f_next, eps * torch.log(u_next), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, eps * torch.log(v), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plan_from_potentials(f_next, g, C, eps), plan_from_scalings(u_next, v, K))
    # after the f update the rows are exact, after the g update the columns
    torch.testing.assert_close(plan_from_potentials(f_next, g, C, eps).sum(-1), a, rtol=1e-12, atol=1e-15)
    g_new = log_update_g(f_next, b, C, eps)
    torch.testing.assert_close(plan_from_potentials(f_next, g_new, C, eps).sum(-2), b, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(log_update_f(g, a, C, eps), f_next)


def test_soft_min_equals_torch_logsumexp_in_value_and_gradient():
    Z = (torch.rand(5, 40, dtype=F64, generator=gen(9)) * 3).requires_grad_()
    for eps in (1.0, 1e-2, 1e-4):
        mine = soft_min(Z, eps, dim=-1)
        theirs = -eps * torch.logsumexp(-Z / eps, dim=-1)
        torch.testing.assert_close(mine, theirs, rtol=1e-14, atol=1e-15)
        w = torch.randn(5, dtype=F64, generator=gen(10))
        g1, = torch.autograd.grad(mine, Z, w)
        g2, = torch.autograd.grad(theirs, Z, w)
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)
        assert (mine <= Z.min(-1).values + 1e-15).all() and (mine >= Z.min(-1).values - eps * math.log(40)).all()


def test_fixed_point_of_chapter_8_gives_the_same_plan():
    a, b, C = problem(seed=11)
    eps = 0.1
    K = gibbs_kernel(C, eps)
    theta = torch.cat([a, b])
    x0 = torch.cat([torch.ones(6, dtype=F64), b / K.sum(0)])
    x = fixed_point(sinkhorn_map, x0, theta, K, tol=1e-14, max_iter=20000)
    plan = plan_from_scalings(x[:6], x[6:], K)
    torch.testing.assert_close(plan, sinkhorn(a, b, C, eps, tol=1e-13, max_iter=20000).plan, rtol=0, atol=1e-12)


def test_birkhoff_rate_bounds_the_measured_rate():
    a, b, C = problem(n=5, m=5, seed=12)
    for eps in (0.5, 1.0, 2.0):
        errors = sinkhorn(a, b, C, eps, tol=1e-14, max_iter=1000).errors
        measured = (errors[-1] / errors[2]) ** (1 / (len(errors) - 3)) if len(errors) > 4 else 0.0
        bound = birkhoff_rate(C, eps).item()
        assert 0 < bound < 1 and measured <= bound
    # Delta by brute force over (i, j, k, l)
    delta = C[:, :, None, None] + C[None, None, :, :] - C[:, None, None, :] - C.T[None, :, :, None]  # [i, j, k, l]
    brute = delta.max()
    torch.testing.assert_close(birkhoff_rate(C, 0.7), torch.tanh(brute / 2.8) ** 2)


# ------------------------------------------------------------------ batched


def test_batched_equals_the_loop_over_problems(device):
    a, b, C = problem(n=5, m=4, seed=13, batch=(3,), device=device)
    eps = 0.1
    batched = sinkhorn(a, b, C, eps, tol=1e-12, max_iter=5000)
    assert batched.plan.shape == (3, 5, 4) and batched.value.shape == (3,) and batched.marginal_error.shape == (3,)
    for k in range(3):
        single = sinkhorn(a[k], b[k], C[k], eps, tol=1e-12, max_iter=5000)
        torch.testing.assert_close(batched.plan[k], single.plan, rtol=0, atol=1e-11)
        torch.testing.assert_close(batched.value[k], single.value, rtol=0, atol=1e-11)


def test_batched_broadcasting_shared_cost_and_shared_histogram(device):
    a, b, C = problem(n=5, m=4, seed=14, batch=(3,), device=device)
    shared = sinkhorn(a, b[0], C[0], 0.1, tol=1e-12, max_iter=5000)   # a (3, n), b (m,), C (n, m)
    assert shared.plan.shape == (3, 5, 4)
    for k in range(3):
        torch.testing.assert_close(shared.plan[k], sinkhorn(a[k], b[0], C[0], 0.1, tol=1e-12, max_iter=5000).plan,
                                   rtol=0, atol=1e-11)
    scaling = sinkhorn(a[0], b[0], C, 0.1, domain="scaling", tol=1e-12, max_iter=5000)  # C (3, n, m)
    assert scaling.plan.shape == (3, 5, 4)
    torch.testing.assert_close(scaling.plan[1], sinkhorn(a[0], b[0], C[1], 0.1, tol=1e-12, max_iter=5000).plan,
                               rtol=0, atol=1e-11)


@pytest.mark.parametrize("shapes", [((), (), ()), ((3,), (), ()), ((), (2,), (2,)), ((), (), (4,))],
                         ids=["single", "batched a", "batched b and C", "batched C"])
def test_the_iteration_without_a_graph_is_the_public_maps_to_rounding(device, shapes):
    """Where no graph is recorded the loop computes each half-step in one workspace from C / eps (no new
    (n, m) tensor per step); recorded, it calls log_update_f and log_update_g. Same iterates to rounding, for
    every broadcast pattern, and the same number of iterations."""
    sa, sb, sc = shapes
    a, _, _ = problem(n=6, m=5, seed=21, batch=sa, device=device)
    _, b, C = problem(n=6, m=5, seed=22, batch=sb or sc, device=device)
    if sc and not sb:
        b = b[0]
    plain = sinkhorn(a, b, C, 0.05, tol=1e-11, max_iter=3000)
    recorded = sinkhorn(a, b, C.clone().requires_grad_(True), 0.05, tol=1e-11, max_iter=3000)
    assert plain.iterations == recorded.iterations
    for mine, theirs in ((plain.plan, recorded.plan), (plain.f, recorded.f), (plain.g, recorded.g)):
        torch.testing.assert_close(mine, theirs.detach(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("ratio", [0.2, 0.45, 0.55], ids=["kernel, far from the limit", "kernel, near it",
                                                         "past it: the maximum-shifted log-sum-exp"])
def test_the_shifted_kernel_path_equals_the_public_maps_up_to_its_limit(device, dtype, ratio):
    """Without a graph, while 2 spread(C / eps) + spread(log a, log b) stays about 700 (float64; 85 in float32)
    clear of the subnormal range, the loop's half-steps are products with the kernel exp((min C - C) / eps)
    (sinkhorn._shifted_kernel); past that, the log-sum-exp shifted by each row's maximum. On either side of
    the limit, the same iterates as log_update_f and log_update_g (the recorded path) to rounding."""
    from ad_lib.sinkhorn import _shifted_kernel

    a, b, C = problem(n=6, m=5, seed=23, device=device, dtype=dtype)
    C = (C - C.min()) / (C.max() - C.min())  # spread 1: eps sets the spread of C / eps
    margin = -math.log(torch.finfo(dtype).tiny) - 2
    eps = 1 / (ratio * margin)
    assert (_shifted_kernel(a, b, C / eps, torch.zeros_like(a), eps) is None) == (ratio > 0.5)
    plain = sinkhorn(a, b, C, eps, tol=1e-300, max_iter=50, on_failure="ignore")
    recorded = sinkhorn(a, b, C.clone().requires_grad_(True), eps, tol=1e-300, max_iter=50, on_failure="ignore")
    rtol = 1e-12 if dtype == F64 else 1e-5
    for mine, theirs in ((plain.plan, recorded.plan), (plain.f, recorded.f), (plain.g, recorded.g)):
        assert bool(torch.isfinite(mine).all())
        torch.testing.assert_close(mine, theirs.detach(), rtol=rtol, atol=rtol * float(theirs.detach().abs().max()))


def test_float32_on_the_inputs_device(device):
    a, b, C = problem(seed=15, device=device, dtype=torch.float32)
    result = sinkhorn(a, b, C, 0.1, tol=1e-6)
    assert result.converged and result.plan.dtype == torch.float32 and result.plan.device == C.device
    a64, b64 = a.double() / a.double().sum(), b.double() / b.double().sum()  # one mass to float64's rounding
    reference = sinkhorn(a64, b64, C.double(), 0.1, tol=1e-12, max_iter=20000)
    torch.testing.assert_close(result.plan.double(), reference.plan, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ laws (hypothesis)


@st.composite
def problems(draw):
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    eps = draw(st.sampled_from([0.05, 0.2, 1.0]))
    return (*problem(n, m, seed), eps, seed)


@settings(max_examples=25, deadline=None)
@given(problems(), st.sampled_from(DOMAINS))
def test_marginals_and_positivity(p, domain):
    a, b, C, eps, _ = p
    result = sinkhorn(a, b, C, eps, domain=domain, tol=1e-11, max_iter=20000)
    assert result.converged and (result.plan > 0).all()
    torch.testing.assert_close(result.plan.sum(-1), a, rtol=0, atol=1e-13)
    torch.testing.assert_close(result.plan.sum(-2), b, rtol=0, atol=1e-11)
    assert result.marginal_error.item() == pytest.approx((result.plan.sum(-2) - b).abs().sum().item(), abs=1e-14)


@settings(max_examples=25, deadline=None)
@given(problems())
def test_plan_is_invariant_under_adding_row_and_column_constants(p):
    a, b, C, eps, seed = p
    g = gen(seed + 1)
    u, v = torch.randn(C.shape[0], dtype=F64, generator=g), torch.randn(C.shape[1], dtype=F64, generator=g)
    shifted = C + u[:, None] + v[None, :]
    P = sinkhorn(a, b, C, eps, tol=1e-12, max_iter=20000).plan
    Q = sinkhorn(a, b, shifted, eps, tol=1e-12, max_iter=20000).plan
    torch.testing.assert_close(P, Q, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ small eps and eps-scaling


def grid_problem(n=60):
    t = torch.linspace(0, 1, n, dtype=F64)
    a = torch.exp(-(t - 0.3) ** 2 / 0.01) + 1e-2
    b = torch.exp(-(t - 0.7) ** 2 / 0.02) + 1e-2
    return a / a.sum(), b / b.sum(), (t[:, None] - t[None, :]) ** 2


def test_small_eps_log_domain_converges_scaling_domain_raises_naming_eps():
    """The issue's setting: C scaled to [0, 1], eps = 1e-4, 200 x 200 (chapter 13 shows it)."""
    a, b, C = grid_problem(200)
    eps = 1e-4
    result = sinkhorn(a, b, C, eps, max_iter=20000)
    assert result.converged and torch.isfinite(result.plan).all() and torch.isfinite(result.f).all()
    with pytest.raises(FloatingPointError, match=r"eps = 0\.0001.*domain='log'"):
        sinkhorn(a, b, C, eps, domain="scaling", max_iter=20000)


def test_scaling_domain_raises_when_a_row_of_the_kernel_underflows():
    a, b, C = problem(seed=16)
    C = C.clone()
    C[0] += 10.0
    with pytest.raises(FloatingPointError, match="row of K underflows.*eps = 0.01"):
        sinkhorn(a, b, C, 0.01, domain="scaling")
    assert sinkhorn(a, b, C, 0.01, max_iter=20000).converged


def test_eps_scaling_reaches_the_same_plan_in_fewer_iterations():
    a, b, C = grid_problem()
    eps = 1e-3
    direct = sinkhorn(a, b, C, eps, max_iter=20000)
    scaled = sinkhorn_eps_scaling(a, b, C, eps, max_iter=20000)
    assert scaled.converged and scaled.eps == eps and scaled.stages[-1][0] == eps
    assert scaled.iterations == sum(k for _, k in scaled.stages) < direct.iterations
    assert [e for e, _ in scaled.stages] == sorted((e for e, _ in scaled.stages), reverse=True)
    torch.testing.assert_close(scaled.plan, direct.plan, rtol=0, atol=1e-9)


# ------------------------------------------------------------------ gradients pass through (unrolled)


def test_result_carries_autograd_history_unless_detached():
    a, b, C = problem(n=4, m=3, seed=17)
    C = C.requires_grad_()
    result = sinkhorn(a, b, C, 0.5, tol=1e-12)
    assert result.plan.requires_grad and result.value.requires_grad and not result.marginal_error.requires_grad
    grad, = torch.autograd.grad(result.value, C)
    torch.testing.assert_close(grad, result.plan.detach(), rtol=0, atol=1e-9)  # the envelope theorem
    with torch.no_grad():
        assert not sinkhorn(a, b, C, 0.5).plan.requires_grad


# ------------------------------------------------------------------ bad input and non-convergence


@pytest.mark.parametrize("change, error, pattern", [
    (dict(a=-1), ValueError, r"^a has negative entries"),
    (dict(b=-1), ValueError, r"^b has negative entries"),
    (dict(a=0), ValueError, r"^a has zero entries"),
    (dict(a_scale=2.0), ValueError, r"^a must sum to one"),
    (dict(b_scale=0.5), ValueError, r"^b must sum to one"),
    (dict(a_len=5), ValueError, r"^a must have shape \(\.\.\., 6\)"),
    (dict(b_len=3), ValueError, r"^b must have shape \(\.\.\., 7\)"),
    (dict(eps=0.0), ValueError, r"^eps must be a positive"),
    (dict(eps=-1.0), ValueError, r"^eps must be a positive"),
    (dict(eps=float("nan")), ValueError, r"^eps must be a positive"),
    (dict(eps="big"), TypeError, r"^eps must be a positive real"),
    (dict(C_nan=True), ValueError, r"^C holds NaN or infinite"),
    (dict(C_inf=True), ValueError, r"^C holds NaN or infinite"),
    (dict(a_dtype=torch.float32), TypeError, r"^a must have C's dtype"),
    (dict(b_dtype=torch.float32), TypeError, r"^b must have C's dtype"),
    (dict(a_device="meta"), TypeError, r"^a must be on C's device"),
    (dict(domain="exp"), ValueError, r"^domain must be one of"),
    (dict(max_iter=0), ValueError, r"^max_iter must be"),
    (dict(tol=-1.0), ValueError, r"^tol must be"),
    (dict(C_int=True), TypeError, r"^C must be a floating-point"),
    (dict(batch=True), ValueError, r"batch dimensions .* do not broadcast"),
])
def test_bad_input_names_the_argument(change, error, pattern):
    a, b, C = problem()
    eps, kwargs = change.get("eps", 0.1), {}
    if "a" in change:
        a = a.clone()
        a[0] = change["a"]
    if "b" in change:
        b = b.clone()
        b[0] = change["b"]
    a = a * change.get("a_scale", 1.0)
    b = b * change.get("b_scale", 1.0)
    if "a_len" in change:
        a = torch.full((change["a_len"],), 1 / change["a_len"], dtype=F64)
    if "b_len" in change:
        b = torch.full((change["b_len"],), 1 / change["b_len"], dtype=F64)
    if change.get("C_nan") or change.get("C_inf"):
        C = C.clone()
        C[1, 2] = math.nan if change.get("C_nan") else math.inf
    if "a_dtype" in change:
        a = a.to(change["a_dtype"])
    if "b_dtype" in change:
        b = b.to(change["b_dtype"])
    if "a_device" in change:
        a = torch.empty(6, dtype=F64, device="meta")
    if change.get("C_int"):
        C = C.long()
    if change.get("batch"):
        a, b, C = a.expand(2, 6), b.expand(3, 7), C
    for key in ("domain", "max_iter", "tol"):
        if key in change:
            kwargs[key] = change[key]
    with pytest.raises(error, match=pattern):
        sinkhorn(a, b, C, eps, **kwargs)


def test_device_mismatch_names_the_argument(device):
    if device.type == "cpu":
        pytest.skip("needs a second device")
    a, b, C = problem(device=device)
    with pytest.raises(TypeError, match="^b must be on C's device"):
        sinkhorn(a, b.cpu(), C, 0.1)


def test_non_convergence_is_reported_with_the_marginal_error():
    a, b, C = problem(seed=18)
    with pytest.warns(ConvergenceWarning, match=r"sinkhorn \(log domain\) did NOT converge: 3 iterations, residual "
                                                 r"[0-9.e-]+ .*marginal error"):
        result = sinkhorn(a, b, C, 0.01, max_iter=3)
    assert not result.converged and result.iterations == 3
    assert result.marginal_error.item() == pytest.approx(result.errors[-1]) and result.errors[-1] > 1e-9
    with pytest.raises(NotConvergedError, match="marginal error"):
        sinkhorn(a, b, C, 0.01, max_iter=3, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn(a, b, C, 0.01, max_iter=3, on_failure="ignore")
    with pytest.warns(ConvergenceWarning, match="below the rounding of torch.float32"):
        sinkhorn(a.float(), b.float(), C.float(), 0.01, max_iter=3)


def test_a_mass_gap_is_named_when_it_stops_convergence():
    a, b, C = problem(seed=20)
    a = a * (1 + 3e-6)                                   # within the accepted tolerance, above tol
    with pytest.warns(ConvergenceWarning, match="a and b differ in mass by 3.0e-06"):
        result = sinkhorn(a, b, C, 0.1, max_iter=500)
    assert result.marginal_error.item() == pytest.approx(3e-6, rel=0.05)
    assert result.info.residual == result.errors[-1] and result.info.tol == 1e-9 and not result.info.converged


def test_cost_matrix_matches_pot_and_checks_its_inputs():
    g = gen(19)
    x, y = torch.randn(5, 3, dtype=F64, generator=g), torch.randn(4, 3, dtype=F64, generator=g)
    np.testing.assert_allclose(cost_matrix(x, y).numpy(), ot.dist(x.numpy(), y.numpy()), rtol=1e-12)
    np.testing.assert_allclose(cost_matrix(x, y, p=1).numpy(), ot.dist(x.numpy(), y.numpy(), metric="euclidean"),
                               rtol=1e-12)
    assert (cost_matrix(x, x).diagonal() == 0).all()
    with pytest.raises(ValueError, match="same d"):
        cost_matrix(x, y[:, :2])
    with pytest.raises(ValueError, match="^p must be"):
        cost_matrix(x, y, p=0)


def test_scaling_domain_names_the_offset_of_the_cost_and_the_log_domain_ignores_it():
    """A constant added to C leaves the plan unchanged; exp(-C / eps) underflows for the scaling domain, whose
    error says to shift the cost; the log domain gives the same plan."""
    a, b, C = problem(seed=21)
    with pytest.raises(FloatingPointError, match=r"eps = 0\.1.*shift the cost"):
        sinkhorn(a, b, C + 1000.0, 0.1, domain="scaling")
    torch.testing.assert_close(sinkhorn(a, b, C + 1000.0, 0.1).plan, sinkhorn(a, b, C, 0.1).plan,
                               rtol=0, atol=1e-10)
