"""The discounted distance between Markov chains of chapter 16 (ad_lib.markov) against independent truths: the
package of its authors (ot_markov_distances.discounted_wl_infty, its forward pass and its backward pass, run to
convergence), chapter 13's sinkhorn for each inner problem, chapter 8's fixed_point with its own implicit backward
pass, torch.autograd unrolled through the iterations, torch.autograd.gradcheck and central finite differences in
float64, the dense linear solve of the authors' notes, power iteration for stationary distributions, and laws
(symmetry, the contraction rate, monotone iterates, the bound on the distance of a chain to itself)."""

import math
import warnings

import pytest
import torch
from ot_markov_distances import discounted_wl_infty, markov_measure
from ot_markov_distances.discounted_wl import discounted_wl_infty_cost_matrix
from ot_markov_distances.sinkhorn import sinkhorn as package_sinkhorn

import ad_lib.markov as markov
from ad_lib.implicit import ConvergenceWarning, NotConvergedError, fixed_point
from ad_lib.markov import (GRADS, MarkovOTResult, factored_limit, fit_transition_matrix, markov_ot_distance,
                           pair_plans, random_walk, small_graphs, stationary_distribution, transport_values)
from ad_lib.runtime import TensorMemory, cpu_threads
from ad_lib.sinkhorn import sinkhorn
from ad_lib.sinkhorn_gradients import centered

F64 = torch.float64
EXACT = dict(tol=1e-12)
# the package run to convergence: no relative tolerance, every inner Sinkhorn given 200 iterations at each step
PACKAGE_EXACT = dict(max_iter=500, convergence_threshold_rtol=0.0, convergence_threshold_atol=1e-13,
                     sinkhorn_iter=200, sinkhorn_iter_schedule=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Small problems, thousands of small operations: one intra-op thread runs them faster than two."""
    with cpu_threads(1):
        yield


def chains(n=4, m=5, seed=0, batch=(), device="cpu", dtype=F64):
    """Two random dense transition matrices and a cost in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    PX = torch.softmax(torch.randn(*batch, n, n, dtype=dtype, generator=g), -1)
    PY = torch.softmax(torch.randn(*batch, m, m, dtype=dtype, generator=g), -1)
    C = torch.rand(*batch, n, m, dtype=dtype, generator=g)
    return PX.to(device), PY.to(device), C.to(device)


def graph_chains(n=6):
    """Random walks on a path and on a star (transition matrices with zeros) and the cost |deg_k - deg_l| / n."""
    graphs = small_graphs(n)
    A, B = graphs["path"], graphs["star"]
    return random_walk(A), random_walk(B), (A.sum(-1)[:, None] - B.sum(-1)[None, :]).abs() / n


def package_cost(PX, PY, C, delta, eps, **options):
    """The package's C_inf for one problem (its batch dimension added and removed)."""
    torch.manual_seed(0)  # its inner Sinkhorn starts from random potentials
    return discounted_wl_infty_cost_matrix(PX[None], PY[None], C[None], delta=delta, sinkhorn_reg=eps,
                                           **options)[0]


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def loss_of(result, W):
    """A loss that reads both outputs: the distance and a weighted sum of C_inf."""
    return result.distance + (W * result.cost).sum()


def gradients(PX, PY, C, grad, W, **options):
    args = leaves(PX, PY, C)
    loss_of(markov_ot_distance(*args, grad=grad, **options), W).backward()
    return [a.grad for a in args]


def weights(n, m, seed=5, dtype=F64, device="cpu"):
    return torch.randn(n, m, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(device)


# ------------------------------------------------------------------ values against the authors' package


def test_values_equal_the_package_run_to_convergence_in_its_conventions():
    PX, PY, C = chains(3, 4)
    delta, eps = 0.4, 0.1
    ours = markov_ot_distance(PX, PY, C, delta, eps, **EXACT)
    assert isinstance(ours, MarkovOTResult) and ours.converged
    # the package's conventions: batched (1, n, n) inputs, sinkhorn_reg = eps, C^(inf) from
    # discounted_wl_infty_cost_matrix, the distance = its sinkhorn (with the entropic term) between mu_X and mu_Y
    theirs = package_cost(PX, PY, C, delta, eps, **PACKAGE_EXACT)
    torch.testing.assert_close(ours.cost, theirs, rtol=0, atol=1e-11)
    torch.manual_seed(0)
    distance = package_sinkhorn(ours.mu_X[None], ours.mu_Y[None], theirs[None], eps, max_iter=5000)
    assert abs(float(distance) - float(ours.distance)) < 1e-11
    torch.manual_seed(0)
    public = discounted_wl_infty(PX[None], PY[None], C[None], ours.mu_X[None], ours.mu_Y[None], delta=delta,
                                 sinkhorn_reg=eps, **PACKAGE_EXACT)
    assert abs(float(public) - float(ours.distance)) < 1e-9   # its last Sinkhorn stops at 100 iterations


def test_values_on_graphs_with_zero_transitions_equal_the_package():
    PX, PY, C = graph_chains(6)                     # the package densifies these sparse rows; we mask log 0
    ours = markov_ot_distance(PX, PY, C, 0.5, 0.2, **EXACT)
    theirs = package_cost(PX, PY, C, 0.5, 0.2, **PACKAGE_EXACT)
    torch.testing.assert_close(ours.cost, theirs, rtol=0, atol=1e-11)
    assert bool(torch.isfinite(ours.cost).all()) and ours.converged


def test_package_defaults_stop_early_and_its_stationary_distribution_is_float32_only():
    PX, PY, C = chains(3, 4, seed=1)
    ours = markov_ot_distance(PX, PY, C, 0.4, 0.1, **EXACT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = package_cost(PX, PY, C, 0.4, 0.1)        # rtol 0.005, inner Sinkhorn from 1 to 100 iterations
    gap = float((default - ours.cost).abs().max())
    assert 1e-5 < gap < 0.005 * float(ours.cost.abs().max())
    with pytest.raises(RuntimeError, match="same dtype"):
        markov_measure(PX[None])                           # a float32 right-hand side against float64 equations
    torch.testing.assert_close(markov_measure(PX[None].float())[0].double(), ours.mu_X, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ the inner problems


def test_inner_values_and_plans_equal_chapter_13_sinkhorn_for_each_pair():
    PX, PY, C = chains(3, 4, seed=2)
    eps = 0.2
    inner = transport_values(PX, PY, C, eps, tol=1e-13)
    plans = pair_plans(PX, PY, C, inner.f, inner.g, eps)
    for i in range(3):
        for j in range(4):
            reference = sinkhorn(PX[i], PY[j], C, eps, tol=1e-13, max_iter=10000)
            assert abs(float(inner.values[i, j] - reference.value)) < 1e-12
            torch.testing.assert_close(plans[i, j], reference.plan, rtol=0, atol=1e-12)
    torch.testing.assert_close(plans.sum((-2, -1)), torch.ones(3, 4, dtype=F64), rtol=0, atol=1e-12)


def test_inner_problems_accept_zero_weights_which_chapter_13_refuses():
    PX, PY, C = graph_chains(6)
    inner = transport_values(PX, PY, C, 0.2, tol=1e-12)
    assert bool(torch.isfinite(inner.f).all()) and bool(torch.isfinite(inner.g).all())
    plans = pair_plans(PX, PY, C, inner.f, inner.g, 0.2)
    torch.testing.assert_close(plans.sum(-1), PX.unsqueeze(-2).expand(6, 6, 6), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="zero entries"):
        sinkhorn(PX[0], PY[0], C, 0.2)


def test_log_domain_path_and_blocks_give_the_same_results(monkeypatch):
    PX, PY, C = chains(4, 3, seed=3)
    W = weights(4, 3)
    factored = markov_ot_distance(PX, PY, C, 0.4, 0.1, **EXACT)
    grads = gradients(PX, PY, C, "implicit", W, delta=0.4, eps=0.1, **EXACT)
    monkeypatch.setattr(markov, "factored_limit", lambda dtype: -1.0)   # every half-step in the log domain
    for block_rows in (None, 1):
        logdomain = markov_ot_distance(PX, PY, C, 0.4, 0.1, block_rows=block_rows, **EXACT)
        torch.testing.assert_close(logdomain.cost, factored.cost, rtol=0, atol=1e-13)
        assert abs(float(logdomain.distance - factored.distance)) < 1e-13
        for ours, reference in zip(gradients(PX, PY, C, "implicit", W, delta=0.4, eps=0.1, block_rows=block_rows,
                                             **EXACT), grads):
            torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)


def test_a_small_eps_takes_the_log_domain_and_agrees_with_the_matrix_products(monkeypatch):
    PX, PY, C = chains(2, 3, seed=4)
    eps = 5e-4                       # delta spread(C) / eps = 378, above factored_limit(float64) = 354
    assert 0.4 * float(C.max() - C.min()) / eps > factored_limit(F64)
    logdomain = markov_ot_distance(PX, PY, C, 0.4, eps, inner_max_iter=100000, tol=1e-9)
    assert logdomain.converged and bool(torch.isfinite(logdomain.cost).all())
    monkeypatch.setattr(markov, "factored_limit", lambda dtype: math.inf)  # e^-400 is still a float64
    products = markov_ot_distance(PX, PY, C, 0.4, eps, inner_max_iter=100000, tol=1e-9)
    torch.testing.assert_close(logdomain.cost, products.cost, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ gradients


def test_implicit_dense_and_unrolled_gradients_agree(device):
    PX, PY, C = chains(4, 5, seed=6, device=device)
    W = weights(4, 5, device=device)
    options = dict(delta=0.4, eps=0.1, **EXACT)
    results = {grad: gradients(PX, PY, C, grad, W, **options) for grad in GRADS}
    for grad in GRADS:
        for ours, reference in zip(results[grad], results["implicit"]):
            assert ours.device == PX.device
            torch.testing.assert_close(ours, reference, rtol=0, atol=1e-10)
    for g in results["implicit"][:2]:
        torch.testing.assert_close(g.sum(-1), torch.zeros_like(g.sum(-1)), rtol=0, atol=1e-13)  # rows centered


def test_gradients_match_central_finite_differences():
    PX, PY, C = chains(3, 4, seed=7)
    W = weights(3, 4)
    options = dict(delta=0.3, eps=0.15, tol=1e-13)
    grads = gradients(PX, PY, C, "implicit", W, **options)
    g = torch.Generator().manual_seed(8)
    h = 1e-5
    for k, grad in enumerate(grads):
        d = torch.randn(grad.shape, dtype=F64, generator=g)
        d = centered(d) if k < 2 else d                           # stay on the simplex (rows of PX, PY)
        plus, minus = [PX, PY, C], [PX, PY, C]
        plus[k], minus[k] = plus[k] + h * d, minus[k] - h * d
        with torch.no_grad():
            fd = float(loss_of(markov_ot_distance(*plus, **options), W)
                       - loss_of(markov_ot_distance(*minus, **options), W)) / (2 * h)
        assert abs(fd - float((grad * d).sum())) < 1e-8, k


def test_gradients_in_explicit_initial_distributions_are_centered_and_match_finite_differences():
    PX, PY, C = chains(3, 4, seed=22)
    g = torch.Generator().manual_seed(23)
    mus = [torch.softmax(torch.randn(k, dtype=F64, generator=g), -1) for k in (3, 4)]
    options = dict(delta=0.4, eps=0.1, tol=1e-12)
    grads = {}
    for grad in GRADS:
        args = leaves(*mus)
        markov_ot_distance(PX, PY, C, mu_X=args[0], mu_Y=args[1], grad=grad, **options).distance.backward()
        grads[grad] = [a.grad for a in args]
    h = 1e-5
    for k in range(2):
        d = centered(torch.randn(mus[k].shape, dtype=F64, generator=g))
        plus, minus = list(mus), list(mus)
        plus[k], minus[k] = mus[k] + h * d, mus[k] - h * d
        with torch.no_grad():
            fd = float(markov_ot_distance(PX, PY, C, mu_X=plus[0], mu_Y=plus[1], **options).distance
                       - markov_ot_distance(PX, PY, C, mu_X=minus[0], mu_Y=minus[1], **options).distance) / (2 * h)
        for grad in GRADS:
            assert abs(float(grads[grad][k].sum())) < 1e-12, (grad, k)          # centered: on the simplex
            assert abs(fd - float((grads[grad][k] * d).sum())) < 1e-8, (grad, k)


@pytest.mark.parametrize("grad", ["implicit", "unrolled"])   # implicit_dense equals implicit to 1e-10, above
def test_gradcheck_through_row_softmax_parametrizations(grad):
    g = torch.Generator().manual_seed(9)
    thetaX, thetaY = torch.randn(2, 2, dtype=F64, generator=g), torch.randn(2, 2, dtype=F64, generator=g)
    C = torch.rand(2, 2, dtype=F64, generator=g)
    W = weights(2, 2)

    def f(tX, tY, C_):   # the stationary distributions depend on the chains: their gradient is included
        return loss_of(markov_ot_distance(torch.softmax(tX, -1), torch.softmax(tY, -1), C_, 0.5, 0.2, grad=grad,
                                          tol=1e-12), W)

    assert torch.autograd.gradcheck(f, leaves(thetaX, thetaY, C), eps=1e-6, atol=1e-7)


def test_chapter_8_fixed_point_with_its_own_implicit_backward_agrees():
    PX, PY, C = chains(3, 3, seed=10)
    delta, eps = 0.4, 0.2
    W = weights(3, 3)
    args = leaves(PX, PY, C)

    def h(M, PX_, PY_, C_):   # the map of the fixed point, its inner problems differentiated by autograd
        return delta * C_ + (1 - delta) * transport_values(PX_, PY_, M, eps, tol=1e-13, max_iter=10000).values

    cost = fixed_point(h, delta * C, *args, tol=1e-12)
    (W * cost).sum().backward()
    ours = leaves(PX, PY, C)
    result = markov_ot_distance(*ours, delta, eps, mu_X=torch.full((3,), 1 / 3, dtype=F64),
                                mu_Y=torch.full((3,), 1 / 3, dtype=F64), **EXACT)
    (W * result.cost).sum().backward()
    torch.testing.assert_close(result.cost, cost.detach(), rtol=0, atol=1e-11)
    for a, b, k in zip(ours, args, range(3)):
        torch.testing.assert_close(a.grad, centered(b.grad) if k < 2 else b.grad, rtol=0, atol=1e-9)


def test_package_backward_fails_on_dense_inputs_and_agrees_with_the_sparse_flag():
    PX, PY, C = chains(3, 4, seed=11)
    delta, eps = 0.4, 0.1
    W = weights(3, 4)
    args = leaves(PX, PY, C)
    cost = package_cost(*args, delta, eps)
    with pytest.raises(TypeError, match="NoneType"):   # re_project_C(P, None, None) for dense chains
        (W * cost).sum().backward()
    ours = leaves(PX, PY, C)
    (W * markov_ot_distance(*ours, delta, eps, **EXACT).cost).sum().backward()
    for x_sparse in (True, False):  # marking one chain "sparse" builds the index the backward pass needs
        args = leaves(PX, PY, C)
        args[0 if x_sparse else 1].requires_grad_(False)   # no gradient for the sparse one: an assertion
        cost = package_cost(*args, delta, eps, x_is_sparse=x_sparse, y_is_sparse=not x_sparse, **PACKAGE_EXACT)
        (W * cost).sum().backward()
        for a, b in zip(ours, args):
            if b.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-11)
        with pytest.raises(AssertionError, match="sparse kernel"):
            args = leaves(PX, PY, C)
            package_cost(*args, delta, eps, x_is_sparse=x_sparse, y_is_sparse=not x_sparse).sum().backward()


# ------------------------------------------------------------------ laws


def test_contraction_rate_monotone_iterates_and_error_bound():
    PX, PY, C = chains(4, 4, seed=12)
    delta = 0.3
    full = markov_ot_distance(PX, PY, C, delta, 0.1, **EXACT)
    steps = [r for r in full.residuals if r > 1e-9]
    ratios = [b / a for a, b in zip(steps[:-1], steps[1:])]
    # the step shrinks by at most 1 - delta, and by exactly that in the end: (1 - delta) P, P stochastic, has
    # the eigenvalue 1 - delta
    assert all(r <= (1 - delta) * (1 + 1e-6) for r in ratios) and abs(ratios[-1] - (1 - delta)) < 1e-4
    previous = None
    for k in (1, 2, 4, 8):
        partial = markov_ot_distance(PX, PY, C, delta, 0.1, max_iter=k, on_failure="ignore")
        assert partial.iterations == k and not partial.converged
        if previous is not None:      # from C^(0) = delta C <= C_inf the iterates increase (T is monotone)
            assert bool((partial.cost >= previous - 1e-9).all())
        step = partial.residual * max(1.0, float(partial.cost.abs().max()))
        assert float((partial.cost - full.cost).abs().max()) <= (1 - delta) / delta * step + 1e-9
        previous = partial.cost


def test_symmetry_when_the_cost_is_transposed_and_chain_to_itself():
    PX, PY, C = chains(4, 3, seed=13)
    forward = markov_ot_distance(PX, PY, C, 0.4, 0.1, **EXACT)
    backward = markov_ot_distance(PY, PX, C.T, 0.4, 0.1, **EXACT)
    assert abs(float(forward.distance - backward.distance)) < 1e-11
    torch.testing.assert_close(forward.cost, backward.cost.T, rtol=0, atol=1e-11)
    S = torch.rand(4, 4, dtype=F64, generator=torch.Generator().manual_seed(14))
    S = S + S.T
    S.fill_diagonal_(0)
    self_cost = markov_ot_distance(PX, PX, S, 0.4, 0.1, **EXACT).cost
    torch.testing.assert_close(self_cost, self_cost.T, rtol=0, atol=1e-11)


def entropy(p):
    return -(torch.xlogy(p, p)).sum(-1)


def test_distance_of_a_chain_to_itself_is_at_most_its_entropic_bound():
    PX, _, _ = chains(5, 5, seed=15)
    S = torch.rand(5, 5, dtype=F64, generator=torch.Generator().manual_seed(16))
    S = S + S.T
    S.fill_diagonal_(0)
    delta = 0.4
    values = []
    for eps in (0.4, 0.2, 0.1):
        result = markov_ot_distance(PX, PX, S, delta, eps, tol=1e-10)
        bound = eps * ((1 - delta) / delta * float(entropy(PX).max()) + float(entropy(result.mu_X)))
        assert 0 <= float(result.distance) <= bound
        values.append(float(result.distance))
    assert values[0] > values[1] > values[2]
    zero = markov_ot_distance(PX, PX, torch.zeros(5, 5, dtype=F64), delta, 0.1, **EXACT)
    assert float(zero.distance.abs()) < 1e-15 and float(zero.cost.abs().max()) < 1e-15


def test_batched_equals_the_loop_and_broadcasts(device):
    PX, PY, C = chains(3, 4, seed=17, batch=(3,), device=device)
    batched = markov_ot_distance(PX, PY, C, 0.4, 0.1, **EXACT)
    assert batched.distance.shape == (3,) and batched.cost.shape == (3, 3, 4)
    for k in range(3):
        single = markov_ot_distance(PX[k], PY[k], C[k], 0.4, 0.1, **EXACT)
        torch.testing.assert_close(batched.cost[k], single.cost, rtol=0, atol=1e-12)
    shared = markov_ot_distance(PX, PY[0], C[0], 0.4, 0.1, **EXACT)       # one PY and one C for all
    assert shared.distance.shape == (3,)
    args = leaves(PX, PY[0], C[0])
    markov_ot_distance(*args, 0.4, 0.1, **EXACT).distance.sum().backward()
    assert args[1].grad.shape == (4, 4) and args[2].grad.shape == (3, 4)


def test_float32_is_close_to_float64():
    PX, PY, C = chains(4, 4, seed=18)
    double = markov_ot_distance(PX, PY, C, 0.4, 0.1, **EXACT)
    single = markov_ot_distance(PX.float(), PY.float(), C.float(), 0.4, 0.1, tol=1e-6)
    assert single.distance.dtype == torch.float32 and single.converged
    assert abs(float(single.distance) - float(double.distance)) < 1e-5


# ------------------------------------------------------------------ memory


def peak(fn):
    with TensorMemory() as memory:
        fn()
    return memory.peak


def test_implicit_never_forms_the_dense_system_whose_memory_grows_as_n_to_the_4():
    peaks = {}
    for n in (6, 12):
        PX, PY, C = chains(n, n, seed=19)
        for grad in ("implicit", "implicit_dense"):
            def run():
                args = leaves(PX, PY, C)
                markov_ot_distance(*args, 0.4, 0.2, grad=grad, tol=1e-6).distance.backward()
            peaks[grad, n] = peak(run)
    assert peaks["implicit_dense", 12] / peaks["implicit_dense", 6] > 12       # about (12 / 6)^4 = 16
    assert peaks["implicit", 12] / peaks["implicit", 6] < 10                   # about (12 / 6)^3 = 8
    dense_bytes = (12 * 12) ** 2 * 8                                            # the matrix K alone
    assert peaks["implicit", 12] < dense_bytes < peaks["implicit_dense", 12] / 3


# ------------------------------------------------------------------ chains and graphs


def test_stationary_distribution_is_power_iteration_and_is_checked():
    PX, _, _ = chains(5, 2, seed=20)
    mu = stationary_distribution(PX)
    power = torch.full((5,), 0.2, dtype=F64)
    for _ in range(2000):
        power = power @ PX
    torch.testing.assert_close(mu, power, rtol=0, atol=1e-12)
    path = small_graphs(6)["path"]
    degrees = path.sum(-1)
    torch.testing.assert_close(stationary_distribution(random_walk(path)), degrees / degrees.sum(), rtol=0,
                               atol=1e-13)   # a walk on an undirected graph: proportional to the degree
    two_classes = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="^P has no unique stationary distribution"):
        stationary_distribution(two_classes)
    with pytest.raises(ValueError, match="^PX has no unique stationary distribution.*mu_X"):
        markov_ot_distance(two_classes, PX, torch.rand(3, 5, dtype=F64), 0.4, 0.1)
    transient = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]], dtype=F64)
    torch.testing.assert_close(stationary_distribution(transient), torch.tensor([0.0, 0.5, 0.5], dtype=F64),
                               rtol=0, atol=1e-14)


def test_random_walks_on_the_small_graphs():
    graphs = small_graphs(8)
    assert set(graphs) == {"path", "cycle", "star", "two communities", "complete"}
    for name, A in graphs.items():
        assert bool((A == A.T).all()) and bool((A.diagonal() == 0).all()), name
        P = random_walk(A, laziness=0.25)
        torch.testing.assert_close(P.sum(-1), torch.ones(8, dtype=F64), rtol=0, atol=1e-14)
        assert bool((P.diagonal() == 0.25).all())
    assert graphs["two communities"].sum() == 2 * (2 * 6 + 1)
    isolated = random_walk(torch.zeros(3, 3, dtype=F64))
    assert bool((isolated == torch.eye(3, dtype=F64)).all())


def test_fit_transition_matrix_moves_a_chain_towards_the_target():
    graphs = small_graphs(4)
    PY = random_walk(graphs["two communities"])
    positions = torch.arange(4, dtype=F64)
    C = (positions[:, None] - positions[None, :]).abs() / 3
    history = fit_transition_matrix(PY, C, torch.zeros(4, 4, dtype=F64), 12, lr=0.5, tol=1e-6, snapshot_every=6,
                                    progress=False)
    assert history["loss"][-1] < 0.05 * history["loss"][0] and history["gap"][-1] < 0.1 * history["gap"][0]
    assert [step for step, _ in history["snapshots"]] == [0, 6, 12]
    torch.testing.assert_close(history["PX"].sum(-1), torch.ones(4, dtype=F64), rtol=0, atol=1e-14)


# ------------------------------------------------------------------ bad input and non-convergence


def _bad(change):
    PX, PY, C = chains(3, 4)
    kwargs, args = {}, dict(delta=0.4, eps=0.1)
    if change == "PX negative":
        PX = PX.clone()
        PX[0, 0], PX[0, 1] = -0.1, PX[0, 1] + PX[0, 0] + 0.1
    elif change == "PY rows":
        PY = PY * 1.1
    elif change == "PX not square":
        PX = PX[:, :2]
    elif change == "C shape":
        C = C[:, :3]
    elif change == "PY dtype":
        PY = PY.float()
    elif change == "C device":
        C = torch.empty(3, 4, dtype=F64, device="meta")
    elif change == "PX device":
        PX = torch.empty(3, 3, dtype=F64, device="meta")
    elif change == "C nan":
        C = C.clone()
        C[0, 0] = math.nan
    elif change == "C int":
        C = C.long()
    elif change == "PX batch":
        PX, PY = PX.expand(2, 3, 3), PY.expand(3, 4, 4)
    elif change.startswith("mu_X"):
        kwargs["mu_X"] = {"mu_X sum": torch.full((3,), 0.5, dtype=F64),
                          "mu_X negative": torch.tensor([1.5, -0.5, 0.0], dtype=F64),
                          "mu_X shape": torch.full((4,), 0.25, dtype=F64)}[change]
    elif change == "mu_Y dtype":
        kwargs["mu_Y"] = torch.full((4,), 0.25)
    else:
        name, value = change.split("=", 1)
        target = args if name in args else kwargs
        target[name] = eval(value)
    return PX, PY, C, args, kwargs


@pytest.mark.parametrize("change, error, pattern", [
    ("PX negative", ValueError, r"^PX has negative entries"),
    ("PY rows", ValueError, r"^the rows of PY must sum to one"),
    ("PX not square", ValueError, r"^PX must be a transition matrix of shape \(\.\.\., k, k\)"),
    ("C shape", ValueError, r"^C must have shape \(\.\.\., 3, 4\) to match PX"),
    ("PY dtype", TypeError, r"^PY must have C's dtype"),
    ("PX device", TypeError, r"^PX must be on C's device"),
    ("C nan", ValueError, r"^C holds NaN or infinite entries"),
    ("C int", TypeError, r"^C must be a floating-point tensor"),
    ("PX batch", ValueError, r"batch dimensions of PX .* do not broadcast"),
    ("mu_X sum", ValueError, r"^mu_X must sum to one"),
    ("mu_X negative", ValueError, r"^mu_X has negative entries"),
    ("mu_X shape", ValueError, r"^mu_X must have shape \(\.\.\., 3\)"),
    ("mu_Y dtype", TypeError, r"^mu_Y must have C's dtype"),
    ("delta=0.0", ValueError, r"^delta must lie in the open interval \(0, 1\)"),
    ("delta=1.0", ValueError, r"^delta must lie in the open interval \(0, 1\)"),
    ("delta=-0.5", ValueError, r"^delta must lie in the open interval"),
    ("delta='half'", TypeError, r"^delta must be a real number"),
    ("delta=torch.tensor(0.4, dtype=F64, requires_grad=True)", TypeError, r"^delta is a tensor that requires grad"),
    ("eps=0.0", ValueError, r"^eps must be a positive"),
    ("eps=-1.0", ValueError, r"^eps must be a positive"),
    ("eps=float('nan')", ValueError, r"^eps must be a positive"),
    ("grad='envelope'", ValueError, r"^grad must be one of \('implicit', 'implicit_dense', 'unrolled'\)"),
    ("tol=0.0", ValueError, r"^tol must be a positive"),
    ("max_iter=0", ValueError, r"^max_iter must be an integer >= 1"),
    ("block_rows=0", ValueError, r"^block_rows must be an integer >= 1"),
    ("on_failure='loud'", ValueError, r"^on_failure must be one of"),
])
def test_bad_input_names_the_argument(change, error, pattern):
    PX, PY, C, args, kwargs = _bad(change)
    with pytest.raises(error, match=pattern):
        markov_ot_distance(PX, PY, C, args["delta"], args["eps"], **kwargs)


def test_device_mismatch_names_the_argument(device):
    if device.type == "cpu":
        pytest.skip("needs a second device")
    PX, PY, C = chains(3, 4, device=device)
    with pytest.raises(TypeError, match="^PY must be on C's device"):
        markov_ot_distance(PX, PY.cpu(), C, 0.4, 0.1)


def test_bad_input_of_the_helpers_names_the_argument():
    PX, PY, C = chains(3, 4)
    with pytest.raises(ValueError, match="^M must have shape"):
        transport_values(PX, PY, C.T, 0.1)
    with pytest.raises(ValueError, match="^n must be an even integer >= 4"):
        small_graphs(5)
    with pytest.raises(ValueError, match="^laziness must be a number in"):
        random_walk(small_graphs(4)["path"], laziness=1.0)
    with pytest.raises(ValueError, match="^adjacency has negative entries"):
        random_walk(-small_graphs(4)["path"])
    with pytest.raises(ValueError, match="^the rows of P must sum to one"):
        stationary_distribution(PX * 2)
    with pytest.raises(ValueError, match="^debias=True needs"):
        fit_transition_matrix(PY, C, torch.zeros(3, 3, dtype=F64), 1, progress=False)


def test_non_convergence_is_reported_with_the_residual():
    PX, PY, C = chains(3, 4, seed=21)
    with pytest.warns(ConvergenceWarning, match=r"markov_ot_distance .* did NOT converge: 3 iterations, residual "
                                                r"[0-9.e-]+ .*1 - delta = 0.6"):
        result = markov_ot_distance(PX, PY, C, 0.4, 0.1, max_iter=3)
    assert not result.converged and result.iterations == 3 and result.residual == result.residuals[-1] > 1e-9
    with pytest.raises(NotConvergedError, match="raise max_iter"):
        markov_ot_distance(PX, PY, C, 0.4, 0.1, max_iter=3, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        markov_ot_distance(PX, PY, C, 0.4, 0.1, max_iter=3, on_failure="ignore")
    with pytest.warns(ConvergenceWarning, match="inner problems reached a marginal error"):
        markov_ot_distance(PX, PY, C, 0.4, 0.01, inner_max_iter=2)
    with pytest.warns(ConvergenceWarning, match="below the rounding of torch.float32"):
        markov_ot_distance(PX.float(), PY.float(), C.float(), 0.4, 0.1, max_iter=3)
    args = leaves(PX, PY, C)
    result = markov_ot_distance(*args, 0.4, 0.1, backward_max_iter=2)
    with pytest.warns(ConvergenceWarning, match=r"backward \(Neumann iteration for K\^T L = G\) did NOT converge"):
        result.distance.backward()
