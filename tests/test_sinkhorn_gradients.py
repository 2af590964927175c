"""The gradients of Sinkhorn of chapter 14 (ad_lib.sinkhorn_gradients) against independent truths:
torch.autograd unrolled through the iterations, torch.autograd.gradcheck in float64, float64 central finite
differences of the value along mass-preserving directions, POT's ot.solve (grad="autodiff" and "envelope"),
GeomLoss's SamplesLoss("sinkhorn", debias=True), chapter 8's sinkhorn_map_adjoints, and laws checked by
hypothesis (centered gradients, manual = unrolled)."""

import math
import warnings

import ot
import pytest
import torch
from geomloss import SamplesLoss
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib.generative import mlp, ring_of_gaussians
from ad_lib.implicit import ConvergenceWarning, NotConvergedError, sinkhorn_map_adjoints
from ad_lib.runtime import TensorMemory, cpu_threads
from ad_lib.sinkhorn import DOMAINS, cost_matrix, gibbs_kernel, sinkhorn
from ad_lib.sinkhorn_gradients import (
    GRADS, centered, envelope_gradients, geomloss_blur, sinkhorn_backward, sinkhorn_divergence,
    sinkhorn_iterates, sinkhorn_loss, sinkhorn_plan, train_sinkhorn_generator,
)

F64 = torch.float64
EXACT = dict(tol=1e-13, max_iter=20000)            # "at convergence" in float64
FIXED = dict(tol=1e-300, on_failure="ignore")       # run exactly max_iter iterations


@pytest.fixture(autouse=True)
def one_thread():
    """Small problems: one intra-op thread is faster and steadier than two on a busy machine."""
    with cpu_threads(1):
        yield


def problem(n=5, m=4, seed=0, batch=(), device="cpu", dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, n, 2, dtype=dtype, generator=g)
    y = torch.rand(*batch, m, 2, dtype=dtype, generator=g)
    a = torch.softmax(torch.randn(*batch, n, dtype=dtype, generator=g), -1)
    b = torch.softmax(torch.randn(*batch, m, dtype=dtype, generator=g), -1)
    return a.to(device), b.to(device), cost_matrix(x, y).to(device)


def gradients(a, b, C, eps, grad, **kwargs):
    """(value, grad_a, grad_b, grad_C) of sinkhorn_loss with the given mode."""
    leaves = [t.detach().clone().requires_grad_() for t in (a, b, C)]
    value = sinkhorn_loss(*leaves, eps, grad=grad, **kwargs)
    value.sum().backward()
    return (value.detach(),) + tuple(t.grad for t in leaves)


def value_of(a, b, C, eps):
    with torch.no_grad():
        return sinkhorn(a, b, C, eps, tol=1e-14, max_iter=50000).value


def mass_direction(shape, seed, dtype=F64, device="cpu"):
    d = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(device)
    return centered(d)


# ------------------------------------------------------------------ manual = unrolled


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("iterations", [1, 7, 40])
def test_manual_equals_unrolled_for_the_same_iterations(device, domain, iterations):
    a, b, C = problem(device=device)
    unrolled = gradients(a, b, C, 0.2, "unrolled", domain=domain, max_iter=iterations, **FIXED)
    manual = gradients(a, b, C, 0.2, "manual", domain=domain, max_iter=iterations, **FIXED)
    for u, m in zip(unrolled, manual):
        torch.testing.assert_close(m, u, rtol=0, atol=1e-12)


@pytest.mark.parametrize("domain", DOMAINS)
def test_manual_equals_unrolled_batched_and_broadcast(domain):
    a, b, C = problem(n=4, m=6, batch=(3,), seed=1)
    for a_, b_ in ((a, b), (a[0], b)):                 # a shared by the batch: its gradient sums over it
        unrolled = gradients(a_, b_, C, 0.3, "unrolled", domain=domain, max_iter=12, **FIXED)
        manual = gradients(a_, b_, C, 0.3, "manual", domain=domain, max_iter=12, **FIXED)
        assert unrolled[0].shape == (3,)
        for u, m in zip(unrolled, manual):
            assert u.shape == m.shape
            torch.testing.assert_close(m, u, rtol=0, atol=1e-12)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 5), m=st.integers(1, 5), iterations=st.integers(1, 15),
       eps=st.floats(0.05, 2.0), domain=st.sampled_from(DOMAINS))
def test_manual_equals_unrolled_law(seed, n, m, iterations, eps, domain):
    a, b, C = problem(n, m, seed)
    unrolled = gradients(a, b, C, eps, "unrolled", domain=domain, max_iter=iterations, **FIXED)
    manual = gradients(a, b, C, eps, "manual", domain=domain, max_iter=iterations, **FIXED)
    for u, mm in zip(unrolled, manual):
        torch.testing.assert_close(mm, u, rtol=1e-10, atol=1e-12)


def test_scaling_half_steps_are_chapter_8_adjoints():
    """The scaling recursion's two half-steps are blocks of the notes' [d_x h]^T and [d_theta h]^T."""
    a, b, C = problem(n=4, m=3, seed=2)
    K = gibbs_kernel(C, 0.5)
    u, v = torch.rand(4, dtype=F64) + 0.5, torch.rand(3, dtype=F64) + 0.5
    bar_u = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(3))
    x, theta = torch.cat([u, v]), torch.cat([a, b])
    adj_x, adj_theta = sinkhorn_map_adjoints(x, theta, K, torch.cat([bar_u, torch.zeros(3, dtype=F64)]))
    u_new = a / (K @ v)                                  # h's u-part at x = (u, v)
    s = bar_u * u_new ** 2 / a                           # what sinkhorn_backward uses
    torch.testing.assert_close(adj_x[4:], -(K * s.unsqueeze(-1)).sum(-2))
    torch.testing.assert_close(adj_theta[:4], bar_u * u_new / a)


# ------------------------------------------------------------------ gradcheck


def _through_simplex(mode, eps, a0, b0, **kwargs):
    """A function of (da, db, C) with a = a0 + centered(da), so that finite differences stay on the simplex."""
    def fn(da, db, C):
        return sinkhorn_loss(a0 + centered(da), b0 + centered(db), C, eps, grad=mode, **kwargs)
    return fn


@pytest.mark.parametrize("mode", GRADS)
def test_gradcheck_every_mode(mode):
    a, b, C = problem(n=3, m=4, seed=4)
    options = dict(max_iter=9, **FIXED) if mode in ("unrolled", "manual") else EXACT
    inputs = (torch.zeros(3, dtype=F64, requires_grad=True), torch.zeros(4, dtype=F64, requires_grad=True),
              C.clone().requires_grad_())
    assert torch.autograd.gradcheck(_through_simplex(mode, 0.3, a, b, **options), inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["implicit", "unrolled"])
def test_gradcheck_plan(mode):
    a, b, C = problem(n=3, m=3, seed=5)
    options = EXACT if mode == "implicit" else dict(max_iter=6, **FIXED)

    def fn(da, db, C):
        return sinkhorn_plan(a + centered(da), b + centered(db), C, 0.4, grad=mode, **options)

    inputs = (torch.zeros(3, dtype=F64, requires_grad=True), torch.zeros(3, dtype=F64, requires_grad=True),
              C.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------ at convergence, against finite differences


@pytest.mark.parametrize("domain", DOMAINS)
def test_all_modes_agree_at_convergence(device, domain):
    a, b, C = problem(n=6, m=5, seed=6, device=device)
    results = {mode: gradients(a, b, C, 0.15, mode, domain=domain, **EXACT) for mode in GRADS}
    for mode in GRADS:
        for r, e in zip(results[mode], results["envelope"]):
            torch.testing.assert_close(r, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", GRADS)
def test_every_gradient_matches_finite_differences_of_the_value(mode):
    a, b, C = problem(n=5, m=6, seed=7)
    eps, h = 0.2, 1e-5
    _, grad_a, grad_b, grad_C = gradients(a, b, C, eps, mode, **EXACT)
    for k, (grad, shape) in enumerate(((grad_a, a.shape), (grad_b, b.shape), (grad_C, C.shape))):
        d = mass_direction(shape, 10 + k) if k < 2 else torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(20))
        plus = [a, b, C]
        minus = [a, b, C]
        plus[k], minus[k] = plus[k] + h * d, minus[k] - h * d
        fd = (value_of(*plus, eps) - value_of(*minus, eps)) / (2 * h)
        assert abs(float(fd) - float((grad * d).sum())) < 1e-8


def test_gradients_in_a_and_b_are_centered():
    a, b, C = problem(n=4, m=7, seed=8, batch=(2,))
    for mode in GRADS:
        _, grad_a, grad_b, _ = gradients(a, b, C, 0.3, mode, max_iter=50, tol=1e-6, on_failure="ignore")
        torch.testing.assert_close(grad_a.sum(-1), torch.zeros(2, dtype=F64), rtol=0, atol=1e-13)
        torch.testing.assert_close(grad_b.sum(-1), torch.zeros(2, dtype=F64), rtol=0, atol=1e-13)


def test_envelope_gradients_of_a_result_and_the_dual_potentials():
    a, b, C = problem(seed=9)
    result = sinkhorn(a, b, C, 0.3, **EXACT)
    grad_a, grad_b, grad_C = envelope_gradients(result, a, b)
    _, ga, gb, gC = gradients(a, b, C, 0.3, "envelope", **EXACT)
    torch.testing.assert_close(grad_a, ga)
    torch.testing.assert_close(grad_b, gb)
    torch.testing.assert_close(grad_C, gC)


def test_envelope_error_shrinks_with_the_marginal_error():
    a, b, C = problem(n=8, m=8, seed=10)
    exact = gradients(a, b, C, 0.05, "envelope", **EXACT)
    previous = math.inf
    for iterations in (2, 8, 32, 128):
        result = sinkhorn(a, b, C, 0.05, max_iter=iterations, **FIXED)
        approx = gradients(a, b, C, 0.05, "envelope", max_iter=iterations, **FIXED)
        error = float((approx[3] - exact[3]).abs().sum())
        assert error < previous
        assert error <= 2 * result.errors[-1] + 1e-12    # |P_K - P| in l1 within twice the marginal error here
        previous = error


# ------------------------------------------------------------------ the plan


def test_implicit_plan_gradient_equals_autograd_through_many_iterations(device):
    a, b, C = problem(n=5, m=4, seed=11, batch=(2,), device=device)
    weight = torch.randn(2, 5, 4, dtype=F64, generator=torch.Generator().manual_seed(12)).to(device)
    grads = {}
    for mode, options in (("implicit", EXACT), ("unrolled", dict(max_iter=2000, **FIXED))):
        leaves = [t.clone().requires_grad_() for t in (a, b, C)]
        P = sinkhorn_plan(*leaves, 0.2, grad=mode, **options)
        (P * weight).sum().backward()
        grads[mode] = [t.grad for t in leaves]
    for i, u in zip(grads["implicit"], grads["unrolled"]):
        torch.testing.assert_close(i, u, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ POT


def test_pot_autodiff_agrees_and_pot_envelope_misses_eps_log_a():
    """POT's ot.solve(grad="autodiff") agrees with ours (once centered). POT's grad="envelope" returns
    reg * log_u for a: for its default KL(P | a b^T) regularization the multiplier is f - eps log a, so its
    gradient in a is off by eps * centered(log a), and finite differences side with us."""
    a, b, C = problem(n=6, m=5, seed=13)
    eps = 0.25
    _, ga, gb, gC = gradients(a, b, C, eps, "envelope", **EXACT)
    pot = {}
    for mode in ("autodiff", "envelope"):
        leaves = [t.clone().requires_grad_() for t in (a, b, C)]
        result = ot.solve(leaves[2], leaves[0], leaves[1], reg=eps, grad=mode, tol=1e-13, max_iter=20000)
        torch.testing.assert_close(result.value.detach(), value_of(a, b, C, eps), rtol=0, atol=1e-12)
        result.value.backward()
        pot[mode] = [centered(leaves[0].grad), centered(leaves[1].grad), leaves[2].grad]
    for ours, theirs in zip((ga, gb, gC), pot["autodiff"]):
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-10)
    torch.testing.assert_close(pot["envelope"][2], gC, rtol=0, atol=1e-10)
    torch.testing.assert_close(pot["envelope"][0] - ga, eps * centered(torch.log(a)), rtol=0, atol=1e-10)
    torch.testing.assert_close(pot["envelope"][1] - gb, eps * centered(torch.log(b)), rtol=0, atol=1e-10)
    d = mass_direction(a.shape, 14)
    fd = float((value_of(a + 1e-5 * d, b, C, eps) - value_of(a - 1e-5 * d, b, C, eps)) / 2e-5)
    assert abs(fd - float((ga * d).sum())) < 1e-8
    assert abs(fd - float((pot["envelope"][0] * d).sum())) > 1e-3


# ------------------------------------------------------------------ memory


def peak_bytes(mode, iterations, n=30):
    a, b, C = problem(n=n, m=n, seed=15)
    leaves = [t.clone().requires_grad_() for t in (a, b, C)]
    with TensorMemory() as memory:
        value = sinkhorn_loss(*leaves, 0.1, grad=mode, max_iter=iterations, **FIXED)
        value.backward()
    return memory.peak


def test_memory_unrolled_grows_with_iterations_the_others_do_not():
    n = 30
    peaks = {mode: (peak_bytes(mode, 10), peak_bytes(mode, 80)) for mode in GRADS}
    short, long = peaks["unrolled"]
    assert long > 4 * short and long > 70 * n * n * 8          # a matrix (n, n) kept per iteration
    for mode in ("envelope", "implicit"):
        assert peaks[mode][1] <= 1.05 * peaks[mode][0]
    manual_short, manual_long = peaks["manual"]
    assert manual_long - manual_short < 2 * 70 * 2 * n * 8 + 4096   # only vectors per iteration
    assert manual_long < long / 5


# ------------------------------------------------------------------ Sinkhorn divergence


def test_sinkhorn_divergence_equals_twice_geomloss():
    """GeomLoss: cost |x - y|^2 / 2, temperature blur^2, eps-scaling from `diameter`. With the diameter just above
    the blur and a scaling just below one, it runs ~1000 iterations at (almost) our eps: then it converges."""
    g = torch.Generator().manual_seed(16)
    x = torch.randn(12, 2, dtype=F64, generator=g)
    y = torch.randn(9, 2, dtype=F64, generator=g) + 1
    eps = 0.5
    blur = geomloss_blur(eps)
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, debias=True, scaling=1 - 1e-9, diameter=blur * (1 + 1e-6),
                       backend="tensorized")
    xg, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    theirs = loss(xg, y)
    theirs.backward()
    ours = sinkhorn_divergence(xo, y, eps, **EXACT)
    ours.backward()
    assert abs(float(ours.detach()) - 2 * float(theirs.detach())) < 1e-10
    torch.testing.assert_close(xo.grad, 2 * xg.grad, rtol=0, atol=1e-8)


def test_sinkhorn_divergence_is_zero_on_the_diagonal_positive_elsewhere_and_batched():
    g = torch.Generator().manual_seed(17)
    x = torch.rand(3, 10, 2, dtype=F64, generator=g)
    y = torch.rand(3, 8, 2, dtype=F64, generator=g)
    s = sinkhorn_divergence(x, y, 0.3, **EXACT)
    assert s.shape == (3,) and bool((s > 0).all())
    assert float(sinkhorn_divergence(x[0], x[0], 0.3, **EXACT).abs()) < 1e-12
    for k in range(3):
        torch.testing.assert_close(sinkhorn_divergence(x[k], y[k], 0.3, **EXACT), s[k])


def test_train_sinkhorn_generator_reduces_the_divergence():
    torch.manual_seed(0)
    net = mlp([2, 16, 2]).double()

    def sample(n, rng):
        return ring_of_gaussians(n, modes=4, radius=1.0, std=0.05, generator=rng, dtype=F64)[0]

    history = train_sinkhorn_generator(net, sample, 2, 30, 0.1, batch_size=32, lr=1e-2, progress=False,
                                       snapshot_z=torch.randn(5, 2, dtype=F64), snapshot_every=10)
    assert len(history["loss"]) == 30 and len(history["snapshots"]) == 4
    assert sum(history["loss"][-5:]) < 0.7 * sum(history["loss"][:5])


# ------------------------------------------------------------------ bad input and non-convergence


@pytest.mark.parametrize("fn", [sinkhorn_loss, sinkhorn_plan])
def test_bad_input_names_the_argument(fn):
    a, b, C = problem()
    cases = [
        (dict(a=-a), ValueError, "a has negative"),
        (dict(b=b * 2), ValueError, "b must sum to one"),
        (dict(a=torch.full((3,), 1 / 3, dtype=F64)), ValueError, "a must have shape"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(C=C.clone().fill_(math.nan)), ValueError, "C holds NaN"),
        (dict(C=C.clone().fill_(math.inf)), ValueError, "C holds NaN or infinite"),
        (dict(a=a.float()), TypeError, "a must have C's dtype"),
        (dict(a=a.to("meta")), TypeError, "a must be on C's device"),
        (dict(grad="magic"), ValueError, "grad must be one of"),
        (dict(domain="fourier"), ValueError, "domain must be one of"),
    ]
    for change, error, message in cases:
        args = dict(a=a, b=b, C=C, eps=0.1)
        args.update(change)
        with pytest.raises(error, match=message):
            fn(args["a"], args["b"], args["C"], args["eps"], **{k: v for k, v in change.items()
                                                               if k in ("grad", "domain")})


@pytest.mark.parametrize("mode", GRADS)
def test_non_convergence_is_reported_with_the_marginal_error(mode):
    a, b, C = problem(n=8, m=8, seed=18)
    with pytest.warns(ConvergenceWarning, match="residual"):
        sinkhorn_loss(a, b, C, 0.01, grad=mode, max_iter=3)
    with pytest.raises(NotConvergedError, match="marginal error"):
        sinkhorn_loss(a, b, C, 0.01, grad=mode, max_iter=3, on_failure="raise")


def test_sinkhorn_backward_and_iterates_shapes():
    a, b, C = problem(n=4, m=3, seed=19)
    result, (F, G) = sinkhorn_iterates(a, b, C, 0.3, max_iter=5, **FIXED)
    assert F.shape == (6, 4) and G.shape == (5, 3) and result.iterations == 5
    reference = sinkhorn(a, b, C, 0.3, max_iter=5, **FIXED)
    torch.testing.assert_close(result.value, reference.value, rtol=0, atol=1e-15)
    grad_a, grad_b, grad_C = sinkhorn_backward((F, G), a, b, C, 0.3, torch.tensor(1.0, dtype=F64))
    assert grad_a.shape == a.shape and grad_b.shape == b.shape and grad_C.shape == C.shape
    with pytest.raises(ValueError, match="domain"):
        sinkhorn_backward((F, G), a, b, C, 0.3, torch.tensor(1.0, dtype=F64), domain="x")


@pytest.mark.parametrize("mode", GRADS)
@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (1, 1), (30, 2)])
def test_degenerate_and_unequal_sizes_give_finite_gradients(mode, shape):
    """n = 1 or m = 1 (the plan is a or b, the value <C, P>) and very unequal n, m; C alone requiring a gradient."""
    a, b, C = problem(n=shape[0], m=shape[1], seed=22)
    value, grad_a, grad_b, grad_C = gradients(a, b, C, 0.1, mode)
    assert all(torch.isfinite(t).all() for t in (value, grad_a, grad_b, grad_C))
    if shape[0] == 1:
        torch.testing.assert_close(grad_C, b.unsqueeze(0), rtol=0, atol=1e-12)   # the plan is a b^T = b
    C_leaf = C.clone().requires_grad_()
    sinkhorn_loss(a, b, C_leaf, 0.1, grad=mode).backward()
    torch.testing.assert_close(C_leaf.grad, grad_C, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", GRADS)
def test_float32_gradients_are_finite_and_close_to_float64(mode):
    a, b, C = problem(seed=23)
    reference = gradients(a, b, C, 0.1, mode)
    single = gradients(a.float(), b.float(), C.float(), 0.1, mode, tol=1e-6)
    for s, r in zip(single, reference):
        assert s.dtype == torch.float32 and torch.isfinite(s).all()
        torch.testing.assert_close(s.double(), r, rtol=0, atol=1e-4)


def test_implicit_backward_at_a_tiny_eps_names_eps_and_point_clouds_are_checked():
    a, b, C = problem(seed=24)
    C_leaf = C.clone().requires_grad_()
    with pytest.raises(FloatingPointError, match=r"grad='implicit'.*eps = 1e-06.*larger eps"):
        sinkhorn_loss(a, b, C_leaf, 1e-6, grad="implicit", on_failure="ignore").backward()
    with pytest.raises(ValueError, match="^x and y must be point clouds"):
        sinkhorn_divergence(torch.rand(5, dtype=F64), torch.rand(4, 2, dtype=F64), 0.1)
