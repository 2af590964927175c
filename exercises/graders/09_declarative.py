"""The grader of assignment 9 (deep declarative networks): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/09_declarative/.

Every task is written with torch and graded in a Python without ad_lib, POT and NumPy (one
sandbox and kernel for the four), so that ad_lib.declarative and ot.sinkhorn, under any name or as a
copy of their files, cannot do the work, and no array is built outside the size meter's view. Tasks 1, 2 and 4 run while the probe watches torch's
automatic differentiation (watching_autodiff): a kappa, or a backward pass, that autograd computed
scores nothing. The probes of tasks 2 and 4 also record the largest tensor that any torch operation
of the student's code creates (grading.operation_meter, a TorchDispatchMode), on a size where the
naive constructions are far over the allowance: the n matrices of size m x m of robust pooling
(n m^2 elements against an allowance of 3 (n m + m^2)), the constraint matrix A or the Hessian H
of optimal transport ((m+n-1) m n or (m n)^2 against 2 ((m+n)^2 + m n)).

Truths, all computed here: task 1 by torch.autograd of the penalties phi; task 2 by the implicit
function theorem on the optimality condition, whose Jacobians torch.func takes (not eq. (10)), at
a minimizer the grader finds by Newton's method; task 3 by the grader's own Sinkhorn iterations to
convergence; task 4 by torch.autograd through 500 unrolled Sinkhorn iterations on small problems,
and on the large one by eq. (3) with dense matrices and another constraint removed (the last).
"""

import torch
from grading import ONE_THREAD, Part, Restricted, Task, Wrong, close, operation_meter, watching_autodiff

F64 = torch.float64

# NumPy is absent too, so that no (n, m, m) tensor or constraint matrix can be built outside the size
# meter's view: with None in sys.modules, `import numpy` raises ModuleNotFoundError (torch then runs
# without it, and find_spec says it is absent); the package's folder is hidden as well, so deleting that
# entry brings nothing back.
NO_NUMPY = """import sys

sys.modules["numpy"] = None  # absent: this assignment is written with torch
import math
import torch
F64 = torch.float64
"""
WITHOUT = {"setup": NO_NUMPY + ONE_THREAD, "without": ["ad_lib", "ot", "numpy"],
           "why": "every task is written with torch and graded in a Python without ad_lib, POT and NumPy "
                  "(no ad_lib.declarative, no ot.sinkhorn, no array outside torch)"}


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


# ---------------------------------------------------------------------------------------------
# Task 1: kappa_1 and kappa_2 of four penalties, by hand
# ---------------------------------------------------------------------------------------------

def _phi(name, z, a):
    if name == "quadratic":
        return z * z / 2
    if name == "pseudo-huber":
        return a * a * (torch.sqrt(1 + (z / a) ** 2) - 1)
    if name == "welsch":
        return 1 - torch.exp(-z * z / (2 * a * a))
    return torch.where(z <= a, z * z / 2, a * z - a * a / 2)


def _kappa_truth(name, z, a):
    leaf = z.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(_phi(name, leaf, a).sum(), leaf, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), leaf)
    k1 = first.detach() / z
    return k1, (second - k1) / (z * z)


def kappa_probe(name, cases):
    def run():
        return [list(kappa(name, z.clone(), a)) for z, a in cases]

    return watching_autodiff(run)


def _kappa_check(result, name, cases):
    answers, torch_ran, _ = result
    if torch_ran:
        raise Wrong("kappa ran torch's automatic differentiation: derive kappa_1 and kappa_2 by hand")
    if not isinstance(answers, list) or len(answers) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for got, (z, a) in zip(answers, cases):
        if len(got) != 2:
            raise Wrong("kappa should return a pair (k1, k2)")
        k1, k2 = _kappa_truth(name, z, a)
        close(got[0], k1, rtol=1e-9, atol=1e-14, what=f"kappa_1 of the {name} penalty")
        close(got[1], k2, rtol=1e-9, atol=1e-14, what=f"kappa_2 of the {name} penalty")


def _kappa_inputs(name):
    def make(rng):
        generator, cases = _gen(rng), []
        for shape in ((rng.randint(3, 9),), (rng.randint(1, 3), rng.randint(2, 5))):
            a = round(rng.uniform(0.3, 2.5), 4)
            z = a * (0.05 + 3 * torch.rand(*shape, generator=generator, dtype=F64))
            if name == "huber":  # on both sides of alpha, never at the kink
                z = torch.where((z - a).abs() < 0.02 * a, z + 0.05 * a, z)
            cases.append((z, a))
        return {"name": name, "cases": cases}
    return make


TASK1 = Task(
    restricted=Restricted(cells=["task1_kappa"], **WITHOUT),
    parts=[Part(points, f"kappa_1 and kappa_2 of the {name} penalty, by hand", kappa_probe, _kappa_check,
                _kappa_inputs(name))
           for name, points in (("quadratic", 0.5), ("pseudo-huber", 1), ("welsch", 1), ("huber", 0.5))])
for _part in TASK1.parts:
    _part.helpers = (watching_autodiff,)


# ---------------------------------------------------------------------------------------------
# Task 2: the backward pass of robust vector pooling, eq. (10), in O(nm + m^2) memory
# ---------------------------------------------------------------------------------------------

def pooling_probe(kind, alpha, problems):
    import torch

    def quadratic(z):
        return torch.ones_like(z), torch.zeros_like(z)

    def pseudo_huber(z):
        q = 1 + (z / alpha) ** 2
        return q.rsqrt(), -q.rsqrt() ** 3 / alpha**2

    meter = operation_meter()

    def run():
        answers = []
        for x, y, v in problems:
            sizes = meter()
            with sizes:
                got = pooling_backward(x.clone(), y.clone(), v.clone(), quadratic if kind == "quadratic" else pseudo_huber)
            # the quadratic penalty's answer is v / n whatever x is: the same points with another kappa
            other = pooling_backward(x.clone(), y.clone(), v.clone(), pseudo_huber) if kind == "quadratic" else None
            answers.append([got, sizes.largest, other])
        return answers

    return watching_autodiff(run)


def _pooled(x, alpha):
    """The pseudo-Huber pooling of the columns of x: Newton's method from the mean, with the gradient
    sum_i k1_i (y - x_i) and the (positive definite) Hessian of the convex objective, each step halved
    until the objective decreases. (The checks hold at any y: eq. (10) is -v^T H^{-1} B at the y given.)"""
    def objective(y):
        return float((alpha * alpha * (torch.sqrt(1 + ((y.unsqueeze(1) - x) ** 2).sum(dim=0) / alpha**2) - 1)).sum())

    m = x.shape[0]
    y = x.mean(dim=1)
    for _ in range(100):
        d = y.unsqueeze(1) - x
        q = 1 + (d * d).sum(dim=0) / alpha**2
        k1, k2 = q.rsqrt(), -q.rsqrt() ** 3 / alpha**2
        slope = (k1 * d).sum(dim=1)
        if float(slope.abs().max()) < 1e-14:
            break
        step = torch.linalg.solve(k1.sum() * torch.eye(m, dtype=F64) + (d * k2) @ d.T, slope)
        before, scale = objective(y), 1.0
        trial = y - step
        d = trial.unsqueeze(1) - x
        if float(((1 + (d * d).sum(dim=0) / alpha**2).rsqrt() * d).sum(dim=1).abs().max()) < float(slope.abs().max()):
            y = trial  # close to the minimizer the objective's rounding hides progress: the gradient shows it
            continue
        while scale > 1e-6 and not objective(y - scale * step) <= before:
            scale /= 2
        if scale <= 1e-6:
            break
        y = y - scale * step
    return y


def _pooling_truth(kind, alpha, x, y, v):
    """D_x J = -v^T H^{-1} B, with H and B the Jacobians of the objective's gradient in y and x."""
    def objective(y, x):
        distances = torch.sqrt(((y.unsqueeze(1) - x) ** 2).sum(dim=0))
        if kind == "quadratic":
            return (distances**2 / 2).sum()
        return (alpha * alpha * (torch.sqrt(1 + (distances / alpha) ** 2) - 1)).sum()

    H, B = torch.func.jacrev(torch.func.grad(objective, argnums=0), argnums=(0, 1))(y, x)
    m, n = x.shape
    return -(B.reshape(m, m * n).T @ torch.linalg.solve(H.T, v)).reshape(m, n)


def _pooling_check(words, memory):
    def check(result, kind, alpha, problems):
        answers, torch_ran, _ = result
        if torch_ran:
            raise Wrong("pooling_backward ran torch's automatic differentiation: write eq. (10) by hand")
        if not isinstance(answers, list) or len(answers) != len(problems):
            raise Wrong("the probe's result has the wrong form")
        for (got, largest, other), (x, y, v) in zip(answers, problems):
            m, n = x.shape
            close(got, _pooling_truth(kind, alpha, x, y, v), rtol=1e-8, atol=1e-11,
                  what=f"the gradient in x ({m} x {n}) for {words}")
            if kind == "quadratic" and (type(other) is not torch.Tensor or tuple(other.shape) != (m, n)
                                        or torch.allclose(other, got, rtol=1e-6, atol=1e-9)):
                raise Wrong("with the pseudo-Huber kappa on the same points the gradient should differ from "
                            "v / n: compute it from the kappa given")
            if memory and largest > 3 * (n * m + m * m):
                raise Wrong(f"pooling_backward created a tensor of {largest} elements for m = {m}, n = {n}, where "
                            f"the left-to-right order needs about n m + m^2 = {n * m + m * m} (the grader allows "
                            "three times that): take the inner products w^T (y - x_i) first, and form H as one "
                            "matrix product")
    return check


def _pooling_inputs(kind, sizes):
    def make(rng):
        generator, problems = _gen(rng), []
        alpha = round(rng.uniform(0.4, 2.0), 4)
        for m, n in sizes(rng):
            x = torch.randn(m, n, generator=generator, dtype=F64)
            x[:, : max(1, n // 10)] += 4.0  # a few outliers
            y = x.mean(dim=1) if kind == "quadratic" else _pooled(x, alpha)
            problems.append((x, y, torch.randn(m, generator=generator, dtype=F64)))
        return {"kind": kind, "alpha": alpha, "problems": problems}
    return make


TASK2 = Task(
    restricted=Restricted(cells=["task2_pooling_backward"], **WITHOUT),
    parts=[
        Part(1.5, "the gradient in x of pseudo-Huber pooling at its minimizer, against the implicit function "
                  "theorem applied by the grader", pooling_probe, _pooling_check("pseudo-Huber pooling", False),
             _pooling_inputs("pseudo-huber", lambda rng: [(rng.randint(1, 5), rng.randint(2, 9)) for _ in range(3)])),
        Part(0.5, "the quadratic penalty (kappa_2 = 0): y is the mean, and every column of the gradient is v / n "
                  "(and follows the kappa given: the pseudo-Huber one on the same points gives another)",
             pooling_probe, _pooling_check("the quadratic penalty", False),
             _pooling_inputs("quadratic", lambda rng: [(rng.randint(1, 5), rng.randint(2, 9)) for _ in range(2)])),
        Part(1, "in O(nm + m^2) memory: a larger problem (n in the hundreds, m in the tens) without an (n, m, m) "
                "tensor", pooling_probe, _pooling_check("a larger pseudo-Huber pooling", True),
             _pooling_inputs("pseudo-huber", lambda rng: [(rng.randint(20, 30), rng.randint(250, 400))])),
    ])
for _part in TASK2.parts:
    _part.helpers = (watching_autodiff, operation_meter)


# ---------------------------------------------------------------------------------------------
# Task 3: the entropic plan by Sinkhorn's algorithm
# ---------------------------------------------------------------------------------------------

def _plan(M, r, c, gamma, rounds=20000):
    """The grader's Sinkhorn: to machine precision on the marginals."""
    kernel = torch.exp(-gamma * M)
    right = torch.ones_like(c)
    for _ in range(rounds):
        left = r / (kernel @ right)
        right = c / (kernel.T @ left)
        plan = left[:, None] * kernel * right[None, :]
        if float((plan.sum(1) - r).abs().max()) < 1e-15 and float((plan.sum(0) - c).abs().max()) < 1e-15:
            break
    return plan


def _marginals(rng, generator, m, n):
    r = 0.2 + torch.rand(m, generator=generator, dtype=F64)
    c = 0.2 + torch.rand(n, generator=generator, dtype=F64)
    return r / r.sum(), c / c.sum()


def _ot_inputs(rng, sizes):
    generator, problems = _gen(rng), []
    for m, n in sizes:
        r, c = _marginals(rng, generator, m, n)
        problems.append((torch.rand(m, n, generator=generator, dtype=F64), r, c, round(rng.uniform(0.5, 4.0), 3)))
    return problems


def _centred(X):
    """X less its row and column means (plus the mean): what a 1^T + 1 b^T cannot change."""
    return X - X.mean(dim=1, keepdim=True) - X.mean(dim=0, keepdim=True) + X.mean()


def plan_probe(problems):
    return [sinkhorn(M.clone(), r.clone(), c.clone(), gamma, tol=1e-12) for M, r, c, gamma in problems]


def _plan_check(what):
    def check(result, problems):
        if not isinstance(result, list) or len(result) != len(problems):
            raise Wrong("the probe's result has the wrong form")
        for got, (M, r, c, gamma) in zip(result, problems):
            m, n = M.shape
            if type(got) is not torch.Tensor or tuple(got.shape) != (m, n):
                raise Wrong(f"sinkhorn should return a tensor of shape ({m}, {n})")
            if what == "marginals":
                if not (bool((got.sum(dim=1) - r).abs().max() <= 1e-10) and bool((got.sum(dim=0) - c).abs().max() <= 1e-10)):
                    raise Wrong(f"the plan's row and column sums are not r and c to the tolerance ({m} x {n})")
                if not bool((got > 0).all()):
                    raise Wrong("an entropic plan has only positive entries")
                # diag(u) exp(-s M) diag(v) for some s > 0: log P = a 1^T + 1 b^T - s M
                logs, costs = _centred(torch.log(got)), _centred(M)
                s = -float((logs * costs).sum() / (costs * costs).sum())
                if not (s > 1e-2 and float(torch.linalg.norm(logs + s * costs)) <= 1e-6 * s * float(torch.linalg.norm(costs))):
                    raise Wrong(f"the plan ({m} x {n}) is not of Sinkhorn's form diag(u) exp(-s M) diag(v) for any "
                                "s > 0: scale the rows and columns of the Gibbs kernel")
            else:
                close(got, _plan(M, r, c, gamma), rtol=1e-8, atol=1e-12,
                      what=f"the entropic plan for a {m} x {n} cost matrix and gamma = {gamma}")
    return check


TASK3 = Task(
    restricted=Restricted(cells=["task3_sinkhorn"], **WITHOUT),
    parts=[
        Part(0.5, "the plan's row and column sums are r and c, and it has Sinkhorn's form diag(u) exp(-s M) diag(v) "
                  "for some s > 0", plan_probe, _plan_check("marginals"),
             lambda rng: {"problems": _ot_inputs(rng, [(rng.randint(2, 7), rng.randint(2, 7)) for _ in range(3)])}),
        Part(1.5, "the plan is the entropic one, diag(u) exp(-gamma M) diag(v) (the grader's Sinkhorn)", plan_probe,
             _plan_check("plan"),
             lambda rng: {"problems": _ot_inputs(rng, [(rng.randint(2, 7), rng.randint(2, 7)) for _ in range(3)])}),
    ])


# ---------------------------------------------------------------------------------------------
# Task 4: the plan's backward pass in the cost matrix, from the plan alone
# ---------------------------------------------------------------------------------------------

def transport_probe(problems):
    meter = operation_meter()

    def run():
        answers = []
        for P, r, c, gamma, V, _ in problems:  # the cost matrix stays unused: the plan alone
            sizes = meter()
            with sizes:
                got = sinkhorn_backward(P.clone(), r.clone(), c.clone(), gamma, V.clone())
            answers.append([got, sizes.largest])
        return answers

    return watching_autodiff(run)


def _unrolled(M, r, c, gamma, V, rounds=500):
    """The reference of the small problems: torch.autograd through `rounds` Sinkhorn iterations."""
    leaf = M.clone().requires_grad_(True)
    kernel = torch.exp(-gamma * leaf)
    right = torch.ones_like(c)
    for _ in range(rounds):
        left = r / (kernel @ right)
        right = c / (kernel.T @ left)
    (gradient,) = torch.autograd.grad(((left[:, None] * kernel * right[None, :]) * V).sum(), leaf)
    return gradient


def _dense(P, r, c, gamma, V):
    """The reference of the large problem: eq. (3) with dense H^{-1} and A, the last column constraint removed."""
    m, n = P.shape
    rows = torch.kron(torch.eye(m, dtype=F64), torch.ones(1, n, dtype=F64))  # P 1 = r
    columns = torch.kron(torch.ones(1, m, dtype=F64), torch.eye(n, dtype=F64))[: n - 1]  # P^T 1 = c, one fewer
    A = torch.cat([rows, columns])
    h_inv = gamma * P.reshape(-1)
    projected = A.T @ torch.linalg.solve((A * h_inv) @ A.T, A @ (h_inv * V.reshape(-1)))
    return (h_inv * (projected - V.reshape(-1))).reshape(m, n)


def _transport_check(words, reference, memory=False, flat=False):
    def check(result, problems):
        answers, torch_ran, _ = result
        if torch_ran:
            raise Wrong("sinkhorn_backward ran torch's automatic differentiation: write the implicit gradient by hand")
        if not isinstance(answers, list) or len(answers) != len(problems):
            raise Wrong("the probe's result has the wrong form")
        if flat:  # problems in pairs: the same plan with V, then with V + a 1^T + 1 b^T
            for (got, _), (shifted, _), (P, r, c, gamma, V, M) in zip(answers[::2], answers[1::2], problems[::2]):
                m, n = P.shape
                want = _dense(P, r, c, gamma, V)
                if type(got) is not torch.Tensor or tuple(got.shape) != (m, n) or got.dtype != F64:
                    raise Wrong(f"the gradient in M should be a float64 tensor of shape ({m}, {n})")
                scale = float((got * want).sum() / (want * want).sum())
                if not (scale > 1e-2 and float(torch.linalg.norm(got - scale * want)) <= 1e-6 * scale * float(torch.linalg.norm(want))):
                    raise Wrong(f"the gradient in M ({m} x {n}) is not even a positive multiple of the right one")
                close(shifted, got, rtol=0, atol=1e-10 * (1 + float(got.abs().max())),
                      what=f"the gradient after adding to V a loss that depends only on the marginals ({m} x {n})")
            return
        for (got, largest), (P, r, c, gamma, V, M) in zip(answers, problems):
            m, n = P.shape
            want = reference(M, r, c, gamma, V) if reference is _unrolled else reference(P, r, c, gamma, V)
            close(got, want, rtol=1e-7, atol=1e-10, what=f"the gradient in M for {words} ({m} x {n})")
            allowance = 2 * ((m + n) ** 2 + m * n)
            if memory and largest > allowance:
                raise Wrong(f"sinkhorn_backward created a tensor of {largest} elements for a {m} x {n} plan, over the "
                            f"allowance of {allowance}: never form A or H, use row and column sums")
    return check


def _transport_inputs(kind):
    def make(rng):
        generator = _gen(rng)
        if kind == "large":
            sizes = [(rng.randint(30, 40), rng.randint(35, 50))]
        else:
            sizes = [(rng.randint(2, 6), rng.randint(2, 6)) for _ in range(3)]
        problems = []
        for M, r, c, gamma in _ot_inputs(rng, sizes):
            m, n = M.shape
            V, P = torch.randn(m, n, generator=generator, dtype=F64), _plan(M, r, c, gamma)
            problems.append((P, r, c, gamma, V, M))
            if kind == "flat":  # the same plan again, with a loss that also depends on the marginals
                shift = torch.randn(m, 1, generator=generator, dtype=F64) + torch.randn(1, n, generator=generator, dtype=F64)
                problems.append((P, r, c, gamma, V + shift, M))
        return {"problems": problems}
    return make


TASK4 = Task(
    restricted=Restricted(cells=["task4_sinkhorn_backward"], **WITHOUT),
    parts=[
        Part(1.5, "the gradient in M, against torch.autograd through 500 unrolled Sinkhorn iterations", transport_probe,
             _transport_check("a small problem", _unrolled), _transport_inputs("small")),
        Part(0.5, "adding to V a loss that depends only on the marginals, a 1^T + 1 b^T, leaves the gradient "
                  "unchanged (and the gradient is right up to a positive factor)", transport_probe,
             _transport_check("", None, flat=True), _transport_inputs("flat")),
        Part(1, "a plan of about 35 x 40, within 2 ((m+n)^2 + mn) elements of memory, against eq. (3) with dense "
                "matrices", transport_probe, _transport_check("a large problem", _dense, memory=True),
             _transport_inputs("large")),
    ])
for _part in TASK4.parts:
    _part.helpers = (watching_autodiff, operation_meter)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4}
