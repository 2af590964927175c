"""The grader of assignment 16 (optimal transport between Markov chains): hidden checks, run outside the
student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs here, in the
grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted). Never released: nbgrader
releases only what is in source/16_markov/.

Every task is written with torch and graded in one Python without ad_lib (ad_lib.markov computes the
distance and its gradient), NumPy, SciPy, POT and ot_markov_distances (the package of Brugere, Wan and
Wang: discounted_wl_infty and its backward), under any name. The set-up defines the notebook's
`converged_potentials` (this module's; the notebook's set-up cell holds the same
source) and ends with ONE_THREAD, so that the operation meter sees everything the answers
compute. Every probe runs the student's functions under watching_autodiff: a part whose run used torch's
automatic differentiation fails.

The definitions (the notebook's "Conventions"): T(D)_ij is the entropic value
OT_eps(PX[i], PY[j], D) = <D, P> + eps KL(P | PX[i] PY[j]^T) at the optimal plan P of the pair (i, j), the
entropic term included, as in ot_markov_distances (its inner value <f, a> + <g, b> in GeomLoss's potentials
is this value at convergence); C^(0) = delta C, C^(k) = delta C + (1 - delta) T(C^(k-1)), stopped at the first
k whose residual max |C^(k) - C^(k-1)| is at most tol (the package starts from delta C too, but returns the
iterate before the one that met its test); the distance OT_eps(mu, nu, C^(k)), mu and nu the stationary
distributions by default (the package's markov_measure).

Task 1 hands the student a copy of converged_potentials that counts its calls (a second call stops the
answer there): all n m inner problems in one call (a batch), at most OPS1 torch operators outside it, whatever n and m (the model runs 37; a Python
loop over the 20 to 56 pairs runs several per pair), and a budget of work outside it (BUDGET1_PER elements
written and multiply-adds per entry of the n m plans, the model 10.5 to 12).
Task 2 hands the student the grader's T (`step`, this module's _bellman, warm-started from the potentials
of its previous call), which records its calls: the count must be the number of iterations reported. Its
stopping-rule part runs at a tol between two consecutive residuals of the grader's own run (their geometric
mean: every residual before is at least 1.4 times above it, the one that meets it 1.4 times below), so that
the first k that meets tol is unambiguous and C^(k) differs from C^(k+1) and C^(k-1) by far more than the
tolerance of the comparison; a fixed number of iterations, or the iterate before, fails it. That run has
max_iter = k, so that a loop that raises at its last allowed application before testing the residual fails it
too (tol is met there), as a second run with max_iter below k must raise RuntimeError after max_iter calls.
Task 3 runs under grading.operation_meter with a budget of work of BUDGET3_PER (n m)^2 t(delta) + BUDGET3_BASE,
t(delta) = log(1e-16) / log(1 - delta) the steps that bring (1 - delta)^t to 1e-16, and refuses complex
numbers: the iteration L <- G + (1 - delta) P^T L needs about (n m)^2 per step (a dense solve much less, as
the meter counts it), so the model uses a fifth of the budget or less (measured: 5.5 to 8.5 times less); the
inverse built by products of (n m) x (n m) matrices, or one solve per entry, does not fit. One of its two
problems has a small delta (0.08 to 0.15), where a fixed number of steps under 200 is off by more than the
tolerance.

Truths, all computed here (the numbers below measured when the grader was written):
- task 1 by this module's converged_potentials (columns to 1e-13), the values by the primal formula
  <D, P> + eps sum P log(P / a b) - P + a b with the logs of the plan's entries taken (the model answer
  writes log P as (f + g - D) / eps). Checked against ot_markov_distances' sinkhorn (its <f, a> + <g, b>,
  5000 iterations, its convergence test at 1e-13) on the inputs of 40 students: to 2.5e-14; the row
  gradients alpha against central float64 finite differences of the values along rows that keep their
  mass: to 1e-10.
- task 2 by this module's iteration (_fixed_point, the step warm-started as the kernel's) to a residual of
  1e-13, whose error is at most (1 - delta) / delta 1e-13; the stationary distributions by
  (I - P^T + 1 1^T) mu = 1. Checked against ot_markov_distances.discounted_wl_infty_cost_matrix (delta,
  sinkhorn_reg = eps, atol 1e-13, rtol 0, its inner Sinkhorn's convergence test tightened from 1e-4 to
  1e-13) and its sinkhorn(muX, muY, C_inf, eps) with 5000 iterations, on the inputs of 12 students: C_inf
  and the distance to 1e-13; the stationary distributions against 5000 steps of the power iteration to
  2e-15 (the package's markov_measure works in float32: 2e-7).
- task 3 by a dense solve here: L = (K^T)^{-1} G with K = I - (1 - delta) P built from the plans given,
  grad_C = delta L, grad_PX[k] = (1 - delta) sum_j L_kj alpha_kj (centered), grad_PY[l] = (1 - delta)
  sum_i L_il beta_il (centered). The plans are those of one application of T at a random cost D (not a
  fixed point: the linear algebra is the same, and one application costs the grader less). The formulas
  were checked at the fixed points of 6 random pairs of chains (3 to 5 states, delta 0.3 to 0.6) against
  central float64 finite differences of <G, C_inf> in C and in mass-preserving directions of PX and PY (to
  5e-8, the differences' own error at h = 1e-5), against torch.autograd through the fixed-point iterations
  with the inner Sinkhorn unrolled to convergence (to 2e-14, the gradients in PX and PY centered), and
  against ot_markov_distances' backward (to 6e-15). That backward fails on dense chains (a TypeError:
  re_project_C is called with the index None, which the sparse path alone sets); verify_a16.py patches
  re_project_C to the identity there, which is what it computes for dense chains.
"""

import math

import torch
from grading import ONE_THREAD, TORCH_ONLY, Part, Restricted, Task, Wrong, close, operation_meter, watching_autodiff

F64 = torch.float64


def converged_potentials(a, b, C, eps, tol=1e-13, max_iter=20000):
    # Sinkhorn's log-domain iteration from f = 0 (g, then f), until the columns of the plan
    # exp((f + g - C) / eps) match b to tol (the sum of the absolute errors); works on batches
    f = torch.zeros_like(a)
    for _ in range(max_iter):
        g = eps * torch.log(b) - eps * torch.logsumexp((f.unsqueeze(-1) - C) / eps, dim=-2)
        f = eps * torch.log(a) - eps * torch.logsumexp((g.unsqueeze(-2) - C) / eps, dim=-1)
        plan = torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - C) / eps)
        if float((plan.sum(-2) - b).abs().sum(-1).max()) <= tol:
            return f, g
    raise RuntimeError(f"converged_potentials: no convergence to {tol} in {max_iter} iterations")


def _source(function):
    import inspect

    return inspect.getsource(function)


SETUP = TORCH_ONLY + "\n\n" + _source(converged_potentials) + ONE_THREAD
WITHOUT = {"setup": SETUP, "without": ["ad_lib", "numpy", "scipy", "ot", "ot_markov_distances"],
           "why": "every task is written with torch, graded in a Python without ad_lib, NumPy, SciPy, POT and "
                  "ot_markov_distances (no library computes the distance or its gradient)"}


class _one_thread:
    """The grader's truths on one torch thread: small tensors, faster and steadier than several."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def _bellman(PX, PY, D, eps, warm=None):
    """The grader's T (sent to the kernel as task 2's step): (T(D), plans, alpha, beta) for all pairs at once;
    `warm`, a dict, keeps the potentials f of the last call and starts the next one from them."""
    import torch

    n, m = D.shape
    a, b = PX.unsqueeze(1).expand(n, m, n), PY.unsqueeze(0).expand(n, m, m)
    f = warm.get("f") if warm is not None else None
    if f is None or tuple(f.shape) != (n, m, n):
        f = torch.zeros_like(a)
    for _ in range(20000):
        g = eps * torch.log(b) - eps * torch.logsumexp((f.unsqueeze(-1) - D) / eps, dim=-2)
        f = eps * torch.log(a) - eps * torch.logsumexp((g.unsqueeze(-2) - D) / eps, dim=-1)
        plans = torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - D) / eps)
        if float((plans.sum(-2) - b).abs().sum(-1).max()) <= 1e-13:
            break
    else:
        raise RuntimeError("the grader's inner Sinkhorn did not converge")
    if warm is not None:
        warm["f"] = f
    log_ratio = (f.unsqueeze(-1) + g.unsqueeze(-2) - D) / eps - torch.log(a).unsqueeze(-1) - torch.log(b).unsqueeze(-2)
    kl = (plans * log_ratio - plans).sum((-2, -1)) + a.sum(-1) * b.sum(-1)  # the generalized KL(P | a b^T)
    values = (plans * D).sum((-2, -1)) + eps * kl
    alpha, beta = f - eps * torch.log(a), g - eps * torch.log(b)
    return values, plans, alpha - alpha.mean(-1, keepdim=True), beta - beta.mean(-1, keepdim=True)


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _chain(generator, n):
    """A transition matrix with positive entries, rows far from uniform (ratios up to 11)."""
    w = 0.1 + torch.rand(n, n, generator=generator, dtype=F64) ** 2
    return w / w.sum(1, keepdim=True)


def _histogram(generator, n):
    w = 0.2 + torch.rand(n, generator=generator, dtype=F64)
    return w / w.sum()


def _value(P, a, b, D, eps):
    """<D, P> + eps KL(P | a b^T) with the logs of the plan's entries (batched over leading dimensions)."""
    ab = a.unsqueeze(-1) * b.unsqueeze(-2)
    return (P * D).sum((-2, -1)) + eps * (P * torch.log(P / ab) - P + ab).sum((-2, -1))


def _no_autodiff(result, name):
    answers, torch_ran, _ = result
    if torch_ran:
        raise Wrong(f"{name} ran torch's automatic differentiation: the tasks are written by hand")
    return answers


def _tuple(got, what, size):
    if type(got) not in (list, tuple) or len(got) != size:
        raise Wrong(f"{what} should return a tuple of {size} tensors")
    return got


def _stationary(P):
    n = P.shape[0]
    return torch.linalg.solve(torch.eye(n, dtype=P.dtype) - P.T + 1, torch.ones(n, dtype=P.dtype))


def _fixed_point(PX, PY, C, delta, eps, tol, max_iter=5000):
    """The grader's iteration: (C^(k), k, [r_1, ..., r_k], the step's output at C^(k-1)), as the kernel's step."""
    warm, cost, residuals = {}, delta * C, []
    with _one_thread():
        for k in range(1, max_iter + 1):
            out = _bellman(PX, PY, cost, eps, warm)
            new = delta * C + (1 - delta) * out[0]
            residuals.append(float((new - cost).abs().max()))
            cost = new
            if residuals[-1] <= tol:
                return cost, k, residuals, out
    raise RuntimeError("the grader's fixed point did not converge")


# ---------------------------------------------------------------------------------------------
# Task 1: one application of T, all the pairs at once
# ---------------------------------------------------------------------------------------------

OPS1 = 150  # torch operators allowed outside solve (the model: 37, whatever n and m)
BUDGET1_PER, BUDGET1_BASE = 60, 5000  # work outside solve per entry of the plans (the model: 10.5 to 12)


def step_probe(cases):
    import torch

    Meter = operation_meter()

    def run():
        answers = []
        for PX, PY, D, eps, budget in cases:
            kept = [t.clone() for t in (PX, PY, D)]
            calls, credit = [0], [0, 0]
            meter, got = Meter(budget=budget, stop_on_complex=True), None

            def solve(a, b, C, eps):
                # the grader's solver: its calls are counted (a second call ends the answer's run there, as
                # the meter's stop does), and its own work is not charged to the answer
                calls[0] += 1
                if calls[0] > 1:
                    meter.stopped = True
                    raise RuntimeError("solve is called once")
                if not all(type(t) is torch.Tensor for t in (a, b, C)):
                    raise TypeError("solve(a, b, C, eps) takes three tensors and a number")
                allowed, work, ops = meter.budget, meter.work, meter.ops
                meter.budget = float("inf")
                try:
                    return converged_potentials(a, b, C, float(eps))
                finally:
                    credit[0] += meter.work - work
                    credit[1] += meter.ops - ops
                    meter.budget = allowed + (meter.work - work)

            with meter:
                got = bellman_step(PX, PY, D, eps, solve)
            unchanged = all(torch.equal(k, t) for k, t in zip(kept, (PX, PY, D)))
            answers.append([None if meter.stopped else list(got) if type(got) in (tuple, list) else got, calls[0],
                            meter.stopped, meter.complex, meter.ops - credit[1], unchanged])
        return answers

    return watching_autodiff(run)


def _step_truth(PX, PY, D, eps):
    n, m = D.shape
    a, b = PX.unsqueeze(1).expand(n, m, n), PY.unsqueeze(0).expand(n, m, m)
    with _one_thread():
        f, g = converged_potentials(a, b, D, eps)
    plans = torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - D) / eps)
    alpha, beta = f - eps * torch.log(a), g - eps * torch.log(b)
    return _value(plans, a, b, D, eps), plans, alpha - alpha.mean(-1, keepdim=True), beta - beta.mean(-1, keepdim=True)


def _step_check(which):
    def check(result, cases):
        answers = _no_autodiff(result, "bellman_step")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, calls, stopped, complex_seen, ops, unchanged), (PX, PY, D, eps, budget) in zip(answers, cases):
            n, m = D.shape
            words = f"{n} states against {m}, eps = {eps:.3g}"
            if complex_seen:
                raise Wrong(f"bellman_step computed with complex numbers ({words})")
            if calls != 1:
                raise Wrong(f"bellman_step called solve {'more than once' if calls else 'not at all'} ({words}): "
                            f"solve all the {n * m} problems in one call, as a batch")
            if stopped:
                raise Wrong(f"bellman_step ran past the grader's budget of work outside solve ({budget} elements "
                            f"written and multiply-adds, {words}), several times what the values, the plans and the "
                            "gradients need")
            if type(ops) is not int or ops > OPS1:
                raise Wrong(f"bellman_step ran {ops} torch operations besides solve ({words}), more than {OPS1}: a "
                            "Python loop over the pairs? Broadcasting does all of them in one set of operations")
            got = _tuple(got, "bellman_step", 4)
            values, plans, alpha, beta = _step_truth(PX, PY, D, eps)
            if which == "values":
                close(got[0], values, rtol=1e-10, atol=1e-11,
                      what=f"T(D), the entropic values with their entropic term ({words}, rows not uniform)")
            elif which == "plans":
                close(got[1], plans, rtol=1e-9, atol=1e-12, what=f"the plans, of shape (n, m, n, m) ({words})")
            else:
                close(got[2], alpha, rtol=1e-9, atol=1e-10, what=f"alpha, centered ({words}, rows not uniform)")
                close(got[3], beta, rtol=1e-9, atol=1e-10, what=f"beta, centered ({words}, rows not uniform)")
            if not unchanged:
                raise Wrong("bellman_step changed its arguments in place")
    return check


def _step_inputs(rng):
    generator, cases = _gen(rng), []
    for _ in range(2):
        n, m = rng.sample(range(4, 9), 2)
        scale = rng.uniform(0.5, 2)
        D = scale * torch.rand(n, m, generator=generator, dtype=F64)
        eps = round(rng.uniform(0.15, 0.4) * scale, 4)
        cases.append((_chain(generator, n), _chain(generator, m), D, eps, BUDGET1_PER * (n * m) ** 2 + BUDGET1_BASE))
    return {"cases": cases}


TASK1 = Task(
    restricted=Restricted(cells=["task1_step"], **WITHOUT),
    parts=[
        Part(1.5, "T(D): the entropic values of all the n m pairs, entropic term included, from one call of solve "
                  "(no Python loop over the pairs), n and m different",
             step_probe, _step_check("values"), _step_inputs),
        Part(1, "the plans of all the pairs, of shape (n, m, n, m), from one call of solve",
             step_probe, _step_check("plans"), _step_inputs),
        Part(1, "alpha and beta: the gradients of T(D)_ij in the rows PX[i] and PY[j], centered, from one call "
                "of solve",
             step_probe, _step_check("rows"), _step_inputs),
    ])
for _part in TASK1.parts:
    _part.helpers = (watching_autodiff, operation_meter, converged_potentials)


# ---------------------------------------------------------------------------------------------
# Task 2: the fixed point, its stopping rule, and the distance
# ---------------------------------------------------------------------------------------------

KEYS = ("cost", "distance", "iterations", "residual", "plans", "alpha", "beta")


def fixed_point_probe(cases):
    import torch

    def run():
        answers = []
        for PX, PY, C, delta, eps, tol, max_iter, mu, nu in cases:
            kept = [t.clone() for t in (PX, PY, C)]
            calls, warm = [0], {}

            def step(PX, PY, D, eps):
                # the grader's T, warm-started from its last call; its calls are counted
                calls[0] += 1
                return _bellman(PX, PY, D, float(eps), warm)

            try:
                got = markov_ot_distance(PX, PY, C, delta, eps, tol=tol, max_iter=max_iter, mu=mu, nu=nu, step=step)
                raised = None
            except Exception as error:
                got, raised = None, type(error).__name__
            if type(got) is dict:
                got = {key: got.get(key) for key in ("cost", "distance", "iterations", "residual", "plans",
                                                     "alpha", "beta")}
            unchanged = all(torch.equal(k, t) for k, t in zip(kept, (PX, PY, C)))
            answers.append([got, calls[0], raised, unchanged])
        return answers

    return watching_autodiff(run)


def _words(PX, PY, delta, eps, tol):
    return f"{PX.shape[0]} states against {PY.shape[0]}, delta = {delta:.3g}, eps = {eps:.3g}, tol = {tol:.3g}"


def _result(got, raised, words):
    if raised is not None:
        shown = raised if raised in ("RuntimeError", "ValueError", "TypeError", "NameError", "IndexError",
                                     "AttributeError", "NotImplementedError", "ZeroDivisionError") else "an exception"
        raise Wrong(f"markov_ot_distance raised {shown} ({words})")
    if type(got) is not dict:
        raise Wrong(f"markov_ot_distance should return a dict with the keys {', '.join(KEYS)} ({words})")
    for key in KEYS:
        if got.get(key) is None:
            raise Wrong(f"markov_ot_distance's result has no {key!r} ({words})")
    return got


def _fixed_point_check(which):
    def check(result, cases):
        answers = _no_autodiff(result, "markov_ot_distance")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for index, ((got, calls, raised, unchanged), (PX, PY, C, delta, eps, tol, max_iter, mu, nu)) in enumerate(
                zip(answers, cases)):
            words = _words(PX, PY, delta, eps, tol)
            if which == "stopping" and index == 1:  # the case that must not converge (see _fixed_point_inputs)
                if raised != "RuntimeError":
                    raise Wrong(f"markov_ot_distance should raise RuntimeError when tol is not met within max_iter "
                                f"iterations ({words}, max_iter = {max_iter})")
                if calls != max_iter:
                    raise Wrong(f"markov_ot_distance called step {calls} times before giving up, not max_iter = "
                                f"{max_iter} ({words})")
                continue
            if which == "stopping":
                words += f", max_iter = {max_iter}"
            got = _result(got, raised, words)
            iterations = got["iterations"]
            if type(iterations) is not int or iterations != calls:
                raise Wrong(f"'iterations' should be the number of applications of T, the calls of step ({words})")
            if which == "stopping":
                cost, k, residuals, (_, plans, alpha, beta) = _fixed_point(PX, PY, C, delta, eps, tol)
                if iterations != k:
                    raise Wrong(f"markov_ot_distance should stop at the first k whose residual max |C^(k) - "
                                f"C^(k-1)| is at most tol, from C^(0) = delta C ({words}): it stopped after "
                                f"{iterations} iterations")
                close(got["cost"], cost, rtol=1e-9, atol=1e-10,
                      what=f"the cost C^(k) at the first k that meets tol ({words})")
                close(got["residual"], residuals[-1], rtol=1e-6, atol=1e-13,
                      what=f"the residual max |C^(k) - C^(k-1)| ({words})", dtype=False)
                close(got["plans"], plans, rtol=1e-9, atol=1e-11, what=f"the plans of the last call of step ({words})")
                close(got["alpha"], alpha, rtol=1e-9, atol=1e-10, what=f"alpha of the last call of step ({words})")
                close(got["beta"], beta, rtol=1e-9, atol=1e-10, what=f"beta of the last call of step ({words})")
            else:
                cost, _, _, _ = _fixed_point(PX, PY, C, delta, eps, 1e-13)
                if which == "cost":
                    close(got["cost"], cost, rtol=1e-9, atol=1e-9, what=f"C_inf, the fixed point ({words})")
                    if type(got["residual"]) is not float or not got["residual"] <= tol:
                        raise Wrong(f"the residual should be a float, at most tol ({words})")
                else:
                    a = _stationary(PX) if mu is None else mu
                    b = _stationary(PY) if nu is None else nu
                    with _one_thread():
                        f, g = converged_potentials(a, b, cost, eps)
                    distance = _value(torch.exp((f[:, None] + g[None, :] - cost) / eps), a, b, cost, eps)
                    kind = "the stationary distributions (mu = nu = None)" if mu is None else "mu and nu given"
                    close(got["distance"], distance, rtol=1e-9, atol=1e-9,
                          what=f"the distance OT_eps(mu, nu, C_inf), with {kind} ({words})")
            if not unchanged:
                raise Wrong("markov_ot_distance changed its arguments in place")
    return check


def _problem(generator, rng, low=3, high=7):
    n, m = rng.sample(range(low, high), 2)
    C = torch.rand(n, m, generator=generator, dtype=F64)
    delta, eps = round(rng.uniform(0.3, 0.6), 3), round(rng.uniform(0.15, 0.4), 3)
    return _chain(generator, n), _chain(generator, m), C, delta, eps


def _fixed_point_inputs(which):
    def make(rng):
        generator, cases = _gen(rng), []
        PX, PY, C, delta, eps = _problem(generator, rng)
        mu, nu = _histogram(generator, PX.shape[0]), _histogram(generator, PY.shape[0])
        if which == "stopping":
            # a tol between two residuals of the grader's run: the first k that meets it is unambiguous
            k = rng.randint(3, 7)
            residuals = _residuals(PX, PY, C, delta, eps, k)
            tol = math.sqrt(residuals[k - 2] * residuals[k - 1])
            # max_iter = k: tol is met at the last application allowed, which must return C^(k), not raise
            cases.append((PX, PY, C, delta, eps, tol, k, mu, nu))
            cases.append((PX, PY, C, delta, eps, 1e-11, rng.randint(2, 5), mu, nu))  # must raise
        elif which == "stationary":
            cases.append((PX, PY, C, delta, eps, 1e-11, 1000, None, None))
        else:
            cases.append((PX, PY, C, delta, eps, 1e-11, 1000, mu, nu))
        return {"cases": cases}
    return make


def _residuals(PX, PY, C, delta, eps, k):
    """The grader's first k residuals r_1, ..., r_k."""
    warm, cost, residuals = {}, delta * C, []
    with _one_thread():
        for _ in range(k):
            new = delta * C + (1 - delta) * _bellman(PX, PY, cost, eps, warm)[0]
            residuals.append(float((new - cost).abs().max()))
            cost = new
    return residuals


TASK2 = Task(
    restricted=Restricted(cells=["task2_fixed_point"], **WITHOUT),
    parts=[
        Part(1.5, "C_inf, the fixed point of C -> delta C + (1 - delta) T(C), at tol = 1e-11, with the residual "
                  "and the number of iterations reported",
             fixed_point_probe, _fixed_point_check("cost"), _fixed_point_inputs("cost")),
        Part(1, "the stopping rule: C^(k) at the first k whose residual is at most tol (a tol between two "
                "residuals, met at max_iter = k: returned, not raised), the plans of the last step, and "
                "RuntimeError when max_iter is too small",
             fixed_point_probe, _fixed_point_check("stopping"), _fixed_point_inputs("stopping")),
        Part(1, "the distance OT_eps(mu, nu, C_inf) with the initial distributions given",
             fixed_point_probe, _fixed_point_check("distance"), _fixed_point_inputs("distance")),
        Part(0.5, "the distance with the stationary distributions of PX and PY (mu = nu = None)",
             fixed_point_probe, _fixed_point_check("distance"), _fixed_point_inputs("stationary")),
    ])
for _part in TASK2.parts:
    _part.helpers = (watching_autodiff, _bellman)


# ---------------------------------------------------------------------------------------------
# Task 3: the gradient of <G, C_inf> by one linear solve with K^T
# ---------------------------------------------------------------------------------------------

BUDGET3_PER, BUDGET3_BASE = 6, 20000  # work per entry of the (n m) x (n m) plans and per step needed (below)


def _steps(delta):
    """The steps of L <- G + (1 - delta) P^T L that bring (1 - delta)^t down to 1e-16."""
    return math.ceil(math.log(1e-16) / math.log(1 - delta))


def gradient_probe(cases):
    import torch

    Meter = operation_meter()

    def run():
        answers = []
        for plans, alpha, beta, G, delta, budget in cases:
            kept = [t.clone() for t in (plans, alpha, beta, G)]
            meter, got = Meter(budget=budget, stop_on_complex=True), None
            with meter:
                got = markov_gradients(plans, alpha, beta, G, delta)
            unchanged = all(torch.equal(k, t) for k, t in zip(kept, (plans, alpha, beta, G)))
            answers.append([None if meter.stopped else list(got) if type(got) in (tuple, list) else got,
                            meter.stopped, meter.complex, meter.work, unchanged])
        return answers

    return watching_autodiff(run)


def _gradient_truth(plans, alpha, beta, G, delta):
    n, m = G.shape
    K = torch.eye(n * m, dtype=F64) - (1 - delta) * plans.reshape(n * m, n * m)
    L = torch.linalg.solve(K.T, G.reshape(n * m)).reshape(n, m)
    grad_PX = (1 - delta) * torch.einsum("kj,kjs->ks", L, alpha)
    grad_PY = (1 - delta) * torch.einsum("il,ils->ls", L, beta)
    return delta * L, grad_PX - grad_PX.mean(-1, keepdim=True), grad_PY - grad_PY.mean(-1, keepdim=True)


def _gradient_check(which):
    def check(result, cases):
        answers = _no_autodiff(result, "markov_gradients")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, stopped, complex_seen, work, unchanged), (plans, alpha, beta, G, delta, budget) in zip(answers,
                                                                                                         cases):
            n, m = G.shape
            words = f"{n} states against {m}, delta = {delta:.3g}"
            if complex_seen:
                raise Wrong(f"markov_gradients computed with complex numbers ({words})")
            if stopped:
                raise Wrong(f"markov_gradients ran past the grader's budget of work ({budget} elements written and "
                            f"multiply-adds, {words}), several times what one linear solve with K^T, or its "
                            "iteration, needs")
            got = _tuple(got, "markov_gradients", 3)
            grad_C, grad_PX, grad_PY = _gradient_truth(plans, alpha, beta, G, delta)
            if which == "C":
                close(got[0], grad_C, rtol=1e-9, atol=1e-11, what=f"grad_C = delta (K^T)^-1 G ({words}, n != m)")
            elif which == "PX":
                close(got[1], grad_PX, rtol=1e-9, atol=1e-11,
                      what=f"grad_PX, each row centered ({words}, alpha shifted by a constant per pair)")
            else:
                close(got[2], grad_PY, rtol=1e-9, atol=1e-11,
                      what=f"grad_PY, each row centered ({words}, beta shifted by a constant per pair)")
            if not unchanged:
                raise Wrong("markov_gradients changed its arguments in place")
    return check


def _gradient_inputs(rng):
    generator, cases = _gen(rng), []
    # a delta of the book's range and a small one, where (1 - delta)^t falls slowly: a fixed number of
    # steps of the iteration (under 200) is off by more than the tolerance there
    for low, high in ((0.3, 0.6), (0.08, 0.15)):
        n, m = rng.sample(range(4, 8), 2)
        PX, PY = _chain(generator, n), _chain(generator, m)
        D = torch.rand(n, m, generator=generator, dtype=F64)
        eps, delta = round(rng.uniform(0.15, 0.4), 3), round(rng.uniform(low, high), 3)
        with _one_thread():
            _, plans, alpha, beta = _bellman(PX, PY, D, eps)
        # the row gradients are defined up to a constant per pair: hand them over shifted
        alpha = alpha + torch.randn(n, m, 1, generator=generator, dtype=F64)
        beta = beta + torch.randn(n, m, 1, generator=generator, dtype=F64)
        G = torch.randn(n, m, generator=generator, dtype=F64)
        cases.append((plans, alpha, beta, G, delta, BUDGET3_PER * (n * m) ** 2 * _steps(delta) + BUDGET3_BASE))
    return {"cases": cases}


TASK3 = Task(
    restricted=Restricted(cells=["task3_gradients"], **WITHOUT),
    parts=[
        Part(1.5, "grad_C = delta (K^T)^-1 G, K = I - (1 - delta) P, n and m different, without automatic "
                  "differentiation and within the budget of work",
             gradient_probe, _gradient_check("C"), _gradient_inputs),
        Part(1, "grad_PX = (1 - delta) sum_j L_kj alpha_kj, each row centered (alpha given up to a constant per pair)",
             gradient_probe, _gradient_check("PX"), _gradient_inputs),
        Part(1, "grad_PY = (1 - delta) sum_i L_il beta_il, each row centered (beta given up to a constant per pair)",
             gradient_probe, _gradient_check("PY"), _gradient_inputs),
    ])
for _part in TASK3.parts:
    _part.helpers = (watching_autodiff, operation_meter)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3}
