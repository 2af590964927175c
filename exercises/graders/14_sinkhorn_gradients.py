"""The grader of assignment 14 (differentiating Sinkhorn): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/14_sinkhorn_gradients/.

Every task is written with torch and graded in one Python without ad_lib (ad_lib.sinkhorn_gradients has
these functions), NumPy, SciPy, POT and GeomLoss: `ot.solve(..., grad="envelope")`, GeomLoss's SamplesLoss
and the book's sinkhorn_loss, sinkhorn_backward and sinkhorn_divergence cannot run there, under any name.
The set-up defines the notebook's `converged_potentials` (this module's; the notebook's set-up cell
holds the same source) and ends with ONE_THREAD, so that the
operation meter sees everything the answers compute.

Every gradient is written by hand: each probe runs the student's functions under watching_autodiff, and a
part whose run used torch's automatic differentiation (reverse or forward mode, torch.func) fails. Task 2's
probe also runs each call under grading.operation_meter with a budget of work (BUDGET_PER, about four times
the model answer's 21 K n m, measured when the grader was written, plus a constant) and refuses complex
numbers: a difference quotient needs one K-iteration forward pass (about 8 K n m of work) per entry of C,
so on the grader's 8 to 12 by 8 to 12 costs central differences batched over every entry of C, a and b
(the case file's) do 13 to 40 times the budget, and the complex step is stopped at its first complex tensor.
The model answer uses about a quarter of the budget (measured: 3.6 to 4.2 times less).
Task 1's probe runs each call under a budget too (BUDGET1_PER per entry of C plus BUDGET1_BASE) and refuses
complex numbers: the formulas need about 5 per entry (the model answer uses 12 to 32 times less than the
budget, 9 to 17 times less on batches), and differentiating the solver needs a Sinkhorn run per entry (the
complex step through converged_potentials, batched over every entry of a, b and C, the case file's, had full
marks without the meter).
Task 3's probe hands the student a copy of converged_potentials that counts its calls (three problems, at
most three calls: finite differences of S re-solve), and puts the same copy in the place of the notebook's
converged_potentials while it runs (called by name, the set-up's solver is counted too); it runs each call
under a budget of work, (BUDGET3_N + BUDGET3_ND d) (nm + n^2 + m^2) plus BUDGET3_BASE, which does not
count the work of the solver's calls, and refuses complex numbers. Central differences in x of the three
values <C, P> + eps KL(P | a b^T) at the plans held fixed (quadratic in x, so a difference quotient is
exact up to rounding, and no extra solve; full marks without the meter) take 2 n d evaluations, each some
(nm + n^2) work: on the first of the three problems (44 to 56 points in dimension 3 or 4), measured when the
grader was written, the case file's form does 20 to 30 times the budget and a lean one (only the cost terms
re-evaluated, with torch.cdist, whose products the meter counts as one write per entry) 4.5 to 8 times,
while right answers stay under it: the model answer 6 times, with the gradients by broadcasting over
(n, m, d) 3.6 times, with a Python loop over the points 6 times, over the pairs of points 2.9 times (and 12 s
a call). The complex step through the set-up's solver (full marks without the meter) is stopped at its
first complex tensor.

Truths, all computed here, none with the student's formula:
- task 1 by Danskin's theorem in its own form: torch.autograd of the dual objective
  <alpha, a> + <beta, b> - eps sum_ij a_i b_j (exp((alpha_i + beta_j - C_ij) / eps) - 1) in (a, b, C) at the
  multipliers alpha = f - eps log a, beta = g - eps log b held fixed, then centered; the potentials are this
  module's converged_potentials (columns to 1e-13), shifted by a random constant (f + c, g - c) before they
  are handed over. Checked when the grader was written, on the inputs of 40 students, against ad_lib's
  sinkhorn_loss(grad="envelope") and POT's ot.solve(grad="autodiff") (centered) to 4e-12; POT's
  grad="envelope" differs in a by eps centered(log a), 0.07 or more there;
- task 2 by torch.autograd through this module's own K log-domain iterations (_unrolled), the value by the
  chapter's formula without a log of a plan entry; K is 1 to 20 and eps 0.05 to 0.2 on costs in [0, 1],
  where the iterations are far from converged (on the inputs of 40 students, the converged plan is off from
  grad_C by 2.7e-7 or more and one iteration less by 1.6e-7 or more, against a tolerance of about 1e-12);
  ad_lib's sinkhorn_iterates and sinkhorn_backward agree with _unrolled to 4e-15 there;
- task 3 by torch.autograd in x of the envelope objective <C(x, y), P_xy> - 1/2 <C(x, x), P_xx> at the
  plans held fixed (the derivative of each minimum is the partial derivative at its minimizer; the autograd
  counts both places where x enters C(x, x), which is what the task is about), the values by the chapter's
  formula (ad_lib's sinkhorn_divergence, with its autograd gradient in x, agrees to 1e-15 on the inputs
  of 40 students, POT's ot.solve values to 1.2e-13 on those of 10); the points lie in the unit cube and eps
  is d/4 to d/2 (at least a quarter of the largest cost), so that each problem converges fast, the symmetric
  ones included (on the inputs of 100 students: 29 iterations at most, 8 in the median; task 1's problems 82
  at most).
Not caught: difference quotients of each point's own terms, row by row (x_i enters only row i of C(x, y)
and, through the symmetry of P_xx, row i of C(x, x)), all points at once: 2 d evaluations of O(nm) work,
the order of the chain rule's, so no budget can tell them apart; such an answer has derived the envelope
gradient and both places of x, and only the derivative of |x_i - y_j|^2 is left to the quotient.
"""

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
WITHOUT = {"setup": SETUP, "without": ["ad_lib", "numpy", "scipy", "ot", "geomloss"],
           "why": "every gradient is written by hand with torch, graded in a Python without ad_lib, NumPy, SciPy, "
                  "POT and GeomLoss (no library computes it)"}


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _weights(generator, n):
    """Positive weights summing to 1, far from uniform (ratios up to 6)."""
    w = 0.2 + torch.rand(n, generator=generator, dtype=F64)
    return w / w.sum()


def _value(f, g, a, b, C, eps):
    """<C, P> + eps KL(P | a b^T) at P = exp((f + g - C) / eps), written without a log of a plan entry."""
    P = torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - C) / eps)
    phi = (f - eps * torch.log(a)).unsqueeze(-1) + (g - eps * torch.log(b)).unsqueeze(-2) - eps
    return (P * phi).sum((-2, -1)) + eps * a.sum(-1) * b.sum(-1)


def _no_autodiff(result, name):
    answers, torch_ran, _ = result
    if torch_ran:
        raise Wrong(f"{name} ran torch's automatic differentiation: write the gradient by hand")
    return answers


def _triple(got, what, size):
    if type(got) not in (list, tuple) or len(got) != size:
        raise Wrong(f"{what} should return a tuple of {size} tensors")
    return got


# ---------------------------------------------------------------------------------------------
# Task 1: the envelope gradient at converged potentials
# ---------------------------------------------------------------------------------------------

BUDGET1_PER = 40  # elements written and multiply-adds allowed per entry of C (the model: about 5)
BUDGET1_BASE = 2000


def envelope_probe(cases):
    import torch

    Meter = operation_meter()

    def run():
        answers = []
        for f, g, a, b, C, eps, budget in cases:
            kept = [t.clone() for t in (f, g, a, b, C)]
            meter, got = Meter(budget=budget, stop_on_complex=True), None
            with meter:
                got = envelope_gradients(f, g, a, b, C, eps)
            unchanged = all(torch.equal(k, t) for k, t in zip(kept, (f, g, a, b, C)))
            answers.append([None if meter.stopped else list(got) if type(got) in (tuple, list) else got,
                            meter.stopped, meter.complex, meter.work, unchanged])
        return answers

    return watching_autodiff(run)


def _danskin(f, g, a, b, C, eps):
    """The envelope gradient by Danskin's theorem: autograd of the dual objective in (a, b, C) at the
    multipliers held fixed, the gradients in a and b centered."""
    alpha, beta = f - eps * torch.log(a), g - eps * torch.log(b)
    leaves = [t.clone().requires_grad_(True) for t in (a, b, C)]
    la, lb, lC = leaves
    dual = ((alpha * la).sum() + (beta * lb).sum()
            - eps * (la.unsqueeze(-1) * lb.unsqueeze(-2)
                     * torch.expm1((alpha.unsqueeze(-1) + beta.unsqueeze(-2) - lC) / eps)).sum())
    grad_a, grad_b, grad_C = torch.autograd.grad(dual, leaves)
    return grad_a - grad_a.mean(-1, keepdim=True), grad_b - grad_b.mean(-1, keepdim=True), grad_C


def _envelope_check(which):
    def check(result, cases):
        answers = _no_autodiff(result, "envelope_gradients")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, stopped, complex_seen, work, unchanged), (f, g, a, b, C, eps, budget) in zip(answers, cases):
            shape = "x".join(str(s) for s in C.shape)
            words = f"{'a batch of problems' if C.dim() > 2 else 'one problem'}, C of shape {shape}, eps = {eps:.3g}"
            if complex_seen:
                raise Wrong(f"envelope_gradients computed with complex numbers ({words}): the complex step through "
                            "the solver is not the envelope theorem; write the gradients from the potentials")
            if stopped:
                raise Wrong(f"envelope_gradients ran past the grader's budget of work ({budget} elements written and "
                            f"multiply-adds, {words}), several times what the formulas need: differentiating the "
                            "solver is not the envelope theorem; write the gradients from the potentials")
            got = _triple(got, "envelope_gradients", 3)
            grad_a, grad_b, grad_C = _danskin(f, g, a, b, C, eps)
            if which in ("C", "all"):
                close(got[2], grad_C, rtol=1e-10, atol=1e-13, what=f"grad_C ({words})")
            if which in ("ab", "all"):
                close(got[0], grad_a, rtol=1e-10, atol=1e-11, what=f"grad_a ({words}, weights not uniform)")
                close(got[1], grad_b, rtol=1e-10, atol=1e-11, what=f"grad_b ({words}, weights not uniform)")
            if not unchanged:
                raise Wrong("envelope_gradients changed its arguments in place")
    return check


def _envelope_inputs(batch):
    def make(rng):
        generator, cases = _gen(rng), []
        for _ in range(2):
            n, m = rng.sample(range(3, 13), 2)
            lead = (rng.randint(2, 4),) if batch else ()
            a = torch.stack([_weights(generator, n) for _ in range(lead[0])]) if batch else _weights(generator, n)
            b = torch.stack([_weights(generator, m) for _ in range(lead[0])]) if batch else _weights(generator, m)
            C = rng.uniform(0.5, 3) * torch.rand(*lead, n, m, generator=generator, dtype=F64)
            eps = round(rng.uniform(0.15, 0.4) * float(C.max()), 4)
            f, g = converged_potentials(a, b, C, eps)
            # the potentials' free constant, one per problem: it changes neither the plan nor the gradients
            shift = 3 * torch.randn(*lead, 1, generator=generator, dtype=F64)
            budget = BUDGET1_PER * C.numel() + BUDGET1_BASE
            cases.append((f + shift, g - shift, a, b, C, eps, budget))
        return {"cases": cases}
    return make


TASK1 = Task(
    restricted=Restricted(cells=["task1_envelope"], **WITHOUT),
    parts=[
        Part(1, "grad_C = the plan exp((f + g - C) / eps), at converged potentials, n and m different, within the "
                "budget of work (no differentiation of the solver) and without complex numbers",
             envelope_probe, _envelope_check("C"), _envelope_inputs(False)),
        Part(1.5, "grad_a and grad_b: the multipliers f - eps log a and g - eps log b, centered, with weights "
                  "far from uniform and the potentials shifted by a constant, within the budget of work",
             envelope_probe, _envelope_check("ab"), _envelope_inputs(False)),
        Part(1, "a batch of problems (leading dimension): all three gradients, each problem centered on its own, "
                "within the budget of work",
             envelope_probe, _envelope_check("all"), _envelope_inputs(True)),
    ])
for _part in TASK1.parts:
    _part.helpers = (watching_autodiff, operation_meter)


# ---------------------------------------------------------------------------------------------
# Task 2: the reverse-mode recursion through K iterations, by hand
# ---------------------------------------------------------------------------------------------

BUDGET_PER = 84  # elements written and multiply-adds allowed per iteration and entry of C (the model: about 21)
BUDGET_BASE = 4000


def recursion_probe(cases):
    import torch

    Meter = operation_meter()

    def run():
        answers = []
        for a, b, C, eps, K, budget in cases:
            kept = [t.clone() for t in (a, b, C)]
            meter, got = Meter(budget=budget, stop_on_complex=True), None
            with meter:
                got = sinkhorn_value_and_grad(a, b, C, eps, K)
            unchanged = all(torch.equal(k, t) for k, t in zip(kept, (a, b, C)))
            answers.append([None if meter.stopped else list(got) if type(got) in (tuple, list) else got,
                            meter.stopped, meter.complex, meter.work, unchanged])
        return answers

    return watching_autodiff(run)


def _unrolled(a, b, C, eps, K):
    """[V_K, grad_a, grad_b, grad_C]: torch.autograd through the grader's own K iterations."""
    leaves = [t.clone().requires_grad_(True) for t in (a, b, C)]
    la, lb, lC = leaves
    f = torch.zeros_like(la)
    for _ in range(K):
        g = eps * torch.log(lb) - eps * torch.logsumexp((f.unsqueeze(-1) - lC) / eps, dim=-2)
        f = eps * torch.log(la) - eps * torch.logsumexp((g.unsqueeze(-2) - lC) / eps, dim=-1)
    value = _value(f, g, la, lb, lC, eps)
    return [value.detach(), *torch.autograd.grad(value, leaves)]


def _recursion_check(which):
    def check(result, cases):
        answers = _no_autodiff(result, "sinkhorn_value_and_grad")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, stopped, complex_seen, work, unchanged), (a, b, C, eps, K, budget) in zip(answers, cases):
            n, m = C.shape
            words = f"C of shape {n}x{m}, eps = {eps:.3g}, K = {K}"
            if complex_seen:
                raise Wrong(f"sinkhorn_value_and_grad computed with complex numbers ({words}): the complex step is "
                            "not a derivation; write the recursion by hand")
            if stopped:
                raise Wrong(f"sinkhorn_value_and_grad ran past the grader's budget of work ({budget} elements "
                            f"written and multiply-adds, {words}), about four times what the forward and backward "
                            "passes need: finite differences are not a derivation; store the iterates and walk back")
            got = _triple(got, "sinkhorn_value_and_grad", 4)
            truth = _unrolled(a, b, C, eps, K)
            if which == "value":
                close(got[0], truth[0], rtol=1e-10, atol=1e-12, what=f"the value after exactly K iterations ({words})")
            if which == "C":
                close(got[3], truth[3], rtol=1e-10, atol=1e-12,
                      what=f"grad_C after exactly K iterations, not centered ({words})")
            if which == "ab":
                close(got[1], truth[1], rtol=1e-10, atol=1e-12,
                      what=f"grad_a after exactly K iterations, not centered ({words})")
                close(got[2], truth[2], rtol=1e-10, atol=1e-12,
                      what=f"grad_b after exactly K iterations, not centered ({words})")
            if not unchanged:
                raise Wrong("sinkhorn_value_and_grad changed its arguments in place")
    return check


def _recursion_inputs(rng):
    generator, cases = _gen(rng), []
    for K, low, high in ((rng.randint(1, 2), 0.08, 0.2), (rng.randint(5, 10), 0.05, 0.1),
                         (rng.randint(12, 20), 0.06, 0.1)):
        n, m = rng.sample(range(8, 13), 2)
        C = torch.rand(n, m, generator=generator, dtype=F64)
        budget = BUDGET_PER * K * n * m + BUDGET_BASE
        cases.append((_weights(generator, n), _weights(generator, m), C, round(rng.uniform(low, high), 4), K, budget))
    return {"cases": cases}


TASK2 = Task(
    restricted=Restricted(cells=["task2_recursion"], **WITHOUT),
    parts=[
        Part(1, "the value after exactly K iterations (g then f, from f = 0), K from 1 to 20, within the budget "
                "of work and without automatic differentiation",
             recursion_probe, _recursion_check("value"), _recursion_inputs),
        Part(2, "grad_C after exactly K iterations, equal to automatic differentiation through them (far from "
                "converged: not the plan), within the budget of work",
             recursion_probe, _recursion_check("C"), _recursion_inputs),
        Part(1.5, "grad_a and grad_b after exactly K iterations, not centered, equal to automatic differentiation "
                  "through them, within the budget of work",
             recursion_probe, _recursion_check("ab"), _recursion_inputs),
    ])
for _part in TASK2.parts:
    _part.helpers = (watching_autodiff, operation_meter)


# ---------------------------------------------------------------------------------------------
# Task 3: the Sinkhorn divergence and its gradient in the points
# ---------------------------------------------------------------------------------------------

BUDGET3_N, BUDGET3_ND = 60, 15  # work allowed per pair of points (nm + n^2 + m^2 pairs), and per pair and dimension
BUDGET3_BASE = 4000


def divergence_probe(cases):
    import torch

    Meter = operation_meter()

    def run():
        answers = []
        for x, y, eps, budget in cases:
            kept, calls, credit = [x.clone(), y.clone()], [0], [0]
            meter, got = Meter(budget=budget, stop_on_complex=True), None

            def solve(a, b, C, eps):
                # the grader's solver: its calls are counted, and its own work is not charged to the answer
                calls[0] += 1
                if not all(type(t) is torch.Tensor for t in (a, b, C)):
                    raise TypeError("solve(a, b, C, eps) takes three tensors and a number")
                eps = float(eps)
                allowed, before = meter.budget, meter.work
                meter.budget = float("inf")
                try:
                    return converged_potentials(a, b, C, eps)
                finally:
                    credit[0] += meter.work - before
                    meter.budget = allowed + (meter.work - before)

            # the set-up's converged_potentials, called by name, is the counted solver too
            missing = object()
            setup_solver = __student__.get("converged_potentials", missing)
            __student__["converged_potentials"] = solve
            try:
                with meter:
                    got = sinkhorn_divergence(x, y, eps, solve)
            finally:
                if setup_solver is missing:
                    __student__.pop("converged_potentials", None)
                else:
                    __student__["converged_potentials"] = setup_solver
            unchanged = torch.equal(kept[0], x) and torch.equal(kept[1], y)
            answers.append([None if meter.stopped else list(got) if type(got) in (tuple, list) else got, calls[0],
                            meter.stopped, meter.complex, meter.work - credit[0], unchanged])
        return answers

    return watching_autodiff(run)


def _divergence_truth(x, y, eps):
    """S and its gradient in x: the values from this module's potentials, the gradient by autograd of the
    envelope objective <C(x, y), P_xy> - 1/2 <C(x, x), P_xx> at the plans held fixed."""
    def cost(p, q):
        return ((p.unsqueeze(-2) - q.unsqueeze(-3)) ** 2).sum(-1)

    def solved(p, q):
        a = torch.full((p.shape[0],), 1 / p.shape[0], dtype=F64)
        b = torch.full((q.shape[0],), 1 / q.shape[0], dtype=F64)
        C = cost(p, q)
        f, g = converged_potentials(a, b, C, eps)
        return _value(f, g, a, b, C, eps), torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - C) / eps)

    (v_xy, P_xy), (v_xx, P_xx), (v_yy, _) = solved(x, y), solved(x, x), solved(y, y)
    leaf = x.clone().requires_grad_(True)
    objective = (cost(leaf, y) * P_xy).sum() - 0.5 * (cost(leaf, leaf) * P_xx).sum()
    return v_xy - (v_xx + v_yy) / 2, torch.autograd.grad(objective, leaf)[0]


def _divergence_check(which):
    def check(result, cases):
        answers = _no_autodiff(result, "sinkhorn_divergence")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, calls, stopped, complex_seen, work, unchanged), (x, y, eps, budget) in zip(answers, cases):
            words = f"clouds of {x.shape[0]} and {y.shape[0]} points in dimension {x.shape[1]}, eps = {eps:.3g}"
            if complex_seen:
                raise Wrong(f"sinkhorn_divergence computed with complex numbers ({words}): the complex step is not "
                            "a derivation; write the gradient by the chain rule through the cost")
            if stopped:
                raise Wrong(f"sinkhorn_divergence ran past the grader's budget of work ({budget} elements written and "
                            f"multiply-adds besides the work of solve, {words}), several times what the values and the "
                            "chain rule need: finite differences (an evaluation per coordinate of every point) are "
                            "not a derivation; write the gradient from the plans")
            if calls > 3:
                raise Wrong(f"sinkhorn_divergence called solve {calls} times ({words}): three problems need three "
                            "calls; the gradient comes from their plans, not from more Sinkhorn runs")
            got = _triple(got, "sinkhorn_divergence", 2)
            S, grad = _divergence_truth(x, y, eps)
            if which == "value":
                close(got[0], S, rtol=1e-10, atol=1e-12, what=f"S_eps(x, y) ({words})")
            else:
                close(got[1], grad, rtol=1e-9, atol=1e-11, what=f"the gradient of S_eps in x ({words})")
            if not unchanged:
                raise Wrong("sinkhorn_divergence changed its arguments in place")
    return check


def _divergence_inputs(rng):
    generator, cases = _gen(rng), []
    # large clouds in dimension 3 or 4 (where the budget tells finite differences from the chain rule), small
    # ones in dimension 1 or 2, and a cloud against itself in another order (S = 0, a zero gradient)
    for low, high, dims in ((44, 57, (3, 4)), (8, 25, (1, 2)), (20, 33, (2, 3))):
        d = rng.choice(dims)
        n, m = rng.sample(range(low, high), 2)
        x = torch.rand(n, d, generator=generator, dtype=F64)
        y = 0.5 * torch.rand(d, generator=generator, dtype=F64) + 0.5 * torch.rand(m, d, generator=generator, dtype=F64)
        if len(cases) == 2:
            m, y = n, x[torch.randperm(n, generator=generator)]
        pairs = n * m + n * n + m * m
        budget = (BUDGET3_N + BUDGET3_ND * d) * pairs + BUDGET3_BASE
        cases.append((x, y, round(d * rng.uniform(0.25, 0.5), 4), budget))
    return {"cases": cases}


TASK3 = Task(
    restricted=Restricted(cells=["task3_divergence"], **WITHOUT),
    parts=[
        Part(1, "S_eps(x, y) = OT(x, y) - (OT(x, x) + OT(y, y)) / 2 from the given solver, with uniform weights and "
                "the squared Euclidean cost; zero for a cloud against itself in another order; within the budget of "
                "work and without complex numbers",
             divergence_probe, _divergence_check("value"), _divergence_inputs),
        Part(2, "the gradient of S_eps in x by hand (the plan of each problem, the chain rule through the cost, "
                "x in both places of OT(x, x)), with at most three calls of the solver and within the budget of "
                "work (no finite differences)",
             divergence_probe, _divergence_check("grad"), _divergence_inputs),
    ])
for _part in TASK3.parts:
    _part.helpers = (watching_autodiff, operation_meter, converged_potentials)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3}
