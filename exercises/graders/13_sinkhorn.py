"""The grader of assignment 13 (optimal transport and Sinkhorn): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/13_sinkhorn/.

Every task is written with torch and graded in one Python without ad_lib (ad_lib.sinkhorn has these
functions), NumPy, SciPy and POT: ot.sinkhorn, scipy.special.rel_entr and the book's sinkhorn,
entropic_value, dual_value and sinkhorn_eps_scaling cannot run there, under any name (their folders are
hidden, and NumPy, which POT and SciPy need, is absent). No meter is needed to keep a library from doing the
work: torch itself has no Sinkhorn and no entropic objective, so whatever torch computes there is the
student's own assembly. One part of task 2 meters torch's operators (grading.operation_meter, a
TorchDispatchMode) to see a Python loop over the problems of a batch; ONE_THREAD keeps the answers in the
thread it meters.

Task 2 is graded on costs s + c_ij + alpha_i + beta_j (c in [0, 1], s / eps > 800, rows alpha SPREAD = 60
apart, eps <= 0.05), where the Gibbs kernel exp(-C / eps) is zero in float64, and so is a whole row of
exp(-(C - min C) / eps): an iteration on the multipliers u, v returns NaN there, even after subtracting the
smallest cost (the separable part leaves the plan as it is, and Sinkhorn's rate about as it is). Its
stopping-rule part and its part on the batch's operations run at a moderate eps, where the multipliers are
fine, so that a scaling-domain answer loses exactly the other parts. The batch's part runs a batch of
BATCH = 16 problems and the first of them alone, each for the same max_iter (a tol that is not met), and
counts the aten operators each dispatches: broadcast, the batch runs about as many as one problem (0.98 to
1.5 times, with the error's maximum taken in a Python loop); a loop over the problems 16 to 19 times (with
the per-problem indexing); more than LOOP_RATIO = 4 times fails, and so does a call that runs fewer than
two operators an iteration (computing in Python numbers, or in another thread, which the meter does not see).
The problems of tasks 2 and 3 are drawn again until Sinkhorn meets a marginal error of 1e-10 within FAST = 1000
iterations (a few in a thousand need more, one in 1000 more than 5000), so that a right answer always
converges within the budget its probe gives it.

Task 3 is graded with the grader's own log-domain Sinkhorn (`_sinkhorn`) in the notebook's namespace in place
of the student's `log_sinkhorn` (restored after the probe), which records each call (eps, tol, max_iter, the
starting potential) and its result: a mistake in task 2 costs task 2's points only, and a schedule that is
not run stage by stage, stages started cold, or stages invented, are seen in the record.

Truths, all computed here, none with the student's formula:
- task 1 by sums over the entries in Python (math.fsum, math.log, with 0 log 0 = 0), on plans built to have
  the marginals exactly (the north-west corner rule, with its zeros; a b^T) or not (positive matrices of
  another mass);
- task 2 by `_sinkhorn` run to a marginal error of 1e-12 on C - min C (it is POT's
  ot.sinkhorn(method="sinkhorn_log") iteration: the same start f = 0, g then f; checked against POT when the
  grader was written, on the single problems of 40 students: plans to 4e-13, f_i + g_j to 7e-12, with
  f = eps log_u and g = eps log_v), and by closed forms that need no
  iteration: a separable cost alpha_i + beta_j (the plan a b^T), a 1 x 1 problem, a single row or column
  (the plan b^T or a), a constant added to the cost (the same plan, f + g shifted by it), the rows of the
  plan (a, to rounding) and its form exp((f_i + g_j - C_ij) / eps) in the returned potentials; the
  stopping rule by `_sinkhorn`'s count and by k iterations written out; the batch's part by the student's own
  log_sinkhorn on each of its problems alone (the same max_iter), and the operators counted;
- task 3 by the schedule computed here and the record of `_sinkhorn`'s calls.
"""

import math

import torch
from grading import ONE_THREAD, TORCH_ONLY, Part, Restricted, Task, Wrong, close, operation_meter

F64 = torch.float64

SETUP = TORCH_ONLY + ONE_THREAD  # the meter of task 2's batch sees only its own thread: no other may start
WITHOUT = {"setup": SETUP, "without": ["ad_lib", "numpy", "scipy", "ot"],
           "why": "every task is written with torch and graded in a Python without ad_lib, NumPy, SciPy and POT "
                  "(no library computes the plans or the values)"}

REFERENCE_TOL = 1e-12  # the marginal error of the reference runs
FAST = 1000  # the problems of tasks 2 and 3 are drawn again until Sinkhorn meets tol = 1e-10 within FAST iterations
BUDGET = 3000  # the max_iter of the probes of task 2 (a right answer needs FAST at most)
SPREAD = 60  # alpha_i + beta_j of task 2's costs: a row of C - min C at least SPREAD - 1 above, 1180 eps or more
BATCH = 16  # the problems of the batch whose torch operations are counted against one problem's
LOOP_RATIO = 4  # a batch of BATCH may run this many times one problem's operations (a loop runs BATCH times)


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _histogram(generator, n):
    h = torch.rand(n, generator=generator, dtype=F64) + 0.3
    return h / h.sum()


def _cost(generator, n, m, rng):
    """Squared distances between random points of the plane, scaled to [0, 1]."""
    d = rng.randint(1, 3)
    x, y = torch.rand(n, d, generator=generator, dtype=F64), torch.rand(m, d, generator=generator, dtype=F64)
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return C / C.max()


def _sinkhorn(a, b, C, eps, tol=1e-9, max_iter=1000, f_init=None):
    """The grader's log-domain Sinkhorn (sent to the kernel for task 3): from f = 0 (or f_init), g then f,
    stopped when the largest ||P^T 1 - b||_1 is at most tol, or after max_iter iterations."""
    import torch

    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2]) + (C.shape[-2],)
    f = torch.zeros(shape, dtype=C.dtype) if f_init is None else f_init.expand(shape).clone()
    count = 0
    while count < max_iter:
        count += 1
        g = eps * torch.log(b) - eps * torch.logsumexp((f[..., :, None] - C) / eps, dim=-2)
        f = eps * torch.log(a) - eps * torch.logsumexp((g[..., None, :] - C) / eps, dim=-1)
        plan = torch.exp((f[..., :, None] + g[..., None, :] - C) / eps)
        if float((plan.sum(-2) - b).abs().sum(-1).max()) <= tol:
            break
    return plan, f, g, count


def _reference(a, b, C, eps):
    """(plan, f, g, iterations) at a marginal error of REFERENCE_TOL: run on C - min C, where the rounding of
    exp((f_i + g_j - C_ij) / eps) is that of numbers of order one, and f shifted back by min C (f_i + g_j is
    what the checks compare: a pair of potentials is defined up to (f + c, g - c))."""
    low = C.amin(dim=(-2, -1))
    plan, f, g, count = _sinkhorn(a, b, C - low[..., None, None], eps, tol=REFERENCE_TOL, max_iter=20000)
    if count == 20000:
        raise RuntimeError("the grader's reference did not converge: change the grader's inputs")
    return plan, f + low[..., None], g, count


def _north_west(a, b):
    """The north-west corner plan of a and b: exact marginals, at most n + m - 1 positive entries."""
    a, b = a.tolist(), b.tolist()
    plan = [[0.0] * len(b) for _ in a]
    i = j = 0
    while i < len(a) and j < len(b):
        mass = min(a[i], b[j])
        plan[i][j] = mass
        a[i] -= mass
        b[j] -= mass
        if a[i] <= b[j]:
            i += 1
        else:
            j += 1
    return torch.tensor(plan, dtype=F64)


def _form(result, count, words):
    if type(result) not in (tuple, list) or len(result) != count:
        raise Wrong(f"{words} should return a tuple of {count} values")
    return result


# ---------------------------------------------------------------------------------------------
# Task 1: the entropic objective and its dual
# ---------------------------------------------------------------------------------------------

def _objective_truth(P, a, b, C, eps):
    """<C, P> + eps KL(P | a b^T), the generalized KL, entry by entry; a batch entry by entry too."""
    if P.dim() > 2:
        return torch.stack([_objective_truth(*(t[k] for t in (P, a, b, C)), eps) for k in range(P.shape[0])])
    terms = []
    for i, ai in enumerate(a.tolist()):
        for j, bj in enumerate(b.tolist()):
            p, q = float(P[i, j]), ai * bj
            terms += [float(C[i, j]) * p, eps * ((p * math.log(p / q) if p > 0 else 0.0) - p + q)]
    return torch.tensor(math.fsum(terms), dtype=F64)


def _dual_truth(f, g, a, b, C, eps):
    if f.dim() > 1:
        return torch.stack([_dual_truth(*(t[k] for t in (f, g, a, b, C)), eps) for k in range(f.shape[0])])
    terms = [eps]
    for i, ai in enumerate(a.tolist()):
        terms += [ai * float(f[i]), -eps * ai * math.log(ai)]
    for j, bj in enumerate(b.tolist()):
        terms += [bj * float(g[j]), -eps * bj * math.log(bj)]
    for i in range(len(a)):
        for j in range(len(b)):
            terms.append(-eps * math.exp((float(f[i]) + float(g[j]) - float(C[i, j])) / eps))
    return torch.tensor(math.fsum(terms), dtype=F64)


def objective_probe(cases):
    import torch

    answers = []
    for P, a, b, C, eps, words in cases:
        kept = [t.clone() for t in (P, a, b, C)]
        got = entropic_value(P, a, b, C, eps)
        answers.append([got, all(torch.equal(k, t) for k, t in zip(kept, (P, a, b, C)))])
    return answers


def check_objective(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, unchanged), (P, a, b, C, eps, words) in zip(result, cases):
        close(got, _objective_truth(P, a, b, C, eps), rtol=1e-10, atol=1e-12, what=f"the objective ({words})")
        if unchanged is not True:
            raise Wrong("entropic_value changed its arguments in place")


def _objective_inputs(kind):
    def make(rng):
        generator, cases = _gen(rng), []
        if kind == "marginals":
            for _ in range(2):  # the north-west corner plan: exact marginals, zeros (0 log 0 = 0)
                n, m = rng.randint(3, 8), rng.randint(3, 8)
                a, b = _histogram(generator, n), _histogram(generator, m)
                cases.append((_north_west(a, b), a, b, _cost(generator, n, m, rng), round(rng.uniform(0.05, 1), 3),
                              f"a north-west corner plan of {n} x {m}, with zeros"))
            n, m = rng.randint(3, 8), rng.randint(3, 8)
            a, b = _histogram(generator, n), _histogram(generator, m)
            eps = round(rng.uniform(0.05, 0.3), 3)
            C = _cost(generator, n, m, rng)
            cases.append((_reference(a, b, C, eps)[0], a, b, C, eps, f"an entropic plan of {n} x {m}"))
            cases.append((torch.outer(a, b), a, b, C, eps, "the independent coupling a b^T"))
        else:
            for scale in (rng.uniform(0.4, 0.8), rng.uniform(1.3, 2.5)):
                n, m = rng.randint(3, 8), rng.randint(3, 8)
                a, b = _histogram(generator, n), _histogram(generator, m)
                P = torch.rand(n, m, generator=generator, dtype=F64)
                P[torch.rand(n, m, generator=generator, dtype=F64) < 0.3] = 0.0
                cases.append((scale * P / P.sum(), a, b, _cost(generator, n, m, rng), round(rng.uniform(0.05, 1), 3),
                              f"a nonnegative {n} x {m} matrix of total mass {scale:.3g}, with zeros"))
            batch, n, m = rng.randint(2, 4), rng.randint(3, 6), rng.randint(3, 6)
            a = torch.stack([_histogram(generator, n) for _ in range(batch)])
            b = torch.stack([_histogram(generator, m) for _ in range(batch)])
            P = torch.stack([_north_west(a[k], b[k]) * (1 + 0.5 * k) for k in range(batch)])
            C = torch.stack([_cost(generator, n, m, rng) for _ in range(batch)])
            cases.append((P, a, b, C, round(rng.uniform(0.05, 1), 3), f"a batch of {batch} plans of {n} x {m}"))
        return {"cases": cases}
    return make


def dual_probe(cases):
    import torch

    answers = []
    for f, g, a, b, C, eps, words in cases:
        kept = [t.clone() for t in (f, g, a, b, C)]
        got = dual_value(f, g, a, b, C, eps)
        answers.append([got, all(torch.equal(k, t) for k, t in zip(kept, (f, g, a, b, C)))])
    return answers


def check_dual(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, unchanged), (f, g, a, b, C, eps, words) in zip(result, cases):
        close(got, _dual_truth(f, g, a, b, C, eps), rtol=1e-10, atol=1e-12, what=f"the dual ({words})")
        if unchanged is not True:
            raise Wrong("dual_value changed its arguments in place")


def _dual_inputs(rng):
    generator, cases = _gen(rng), []
    n, m = rng.randint(3, 8), rng.randint(3, 8)
    a, b, C = _histogram(generator, n), _histogram(generator, m), _cost(generator, n, m, rng)
    eps = round(rng.uniform(0.05, 0.3), 3)
    _, f, g, _ = _reference(a, b, C, eps)
    cases.append((f, g, a, b, C, eps, f"Sinkhorn's potentials of a {n} x {m} problem"))
    cases.append((f + eps * torch.randn(n, generator=generator, dtype=F64), g - 0.5 * eps, a, b, C, eps,
                  f"other potentials of a {n} x {m} problem"))
    alpha, beta = torch.randn(n, generator=generator, dtype=F64), torch.randn(m, generator=generator, dtype=F64)
    cases.append((alpha + eps * torch.log(a), beta + eps * torch.log(b), a, b, alpha[:, None] + beta[None, :], eps,
                  "a separable cost and the potentials of its plan a b^T"))
    batch = rng.randint(2, 4)
    a = torch.stack([_histogram(generator, n) for _ in range(batch)])
    b = torch.stack([_histogram(generator, m) for _ in range(batch)])
    C = torch.stack([_cost(generator, n, m, rng) for _ in range(batch)])
    f = 0.1 * torch.randn(batch, n, generator=generator, dtype=F64)
    g = 0.1 * torch.randn(batch, m, generator=generator, dtype=F64)
    cases.append((f, g, a, b, C, eps, f"a batch of {batch} problems of {n} x {m}"))
    return {"cases": cases}


TASK1 = Task(
    restricted=Restricted(cells=["task1_values"], **WITHOUT),
    parts=[
        Part(1, "the objective <C, P> + eps KL(P | a b^T) of plans with the marginals a and b: north-west corner "
                "plans (with zeros: 0 log 0 = 0), an entropic plan, a b^T (KL = 0)",
             objective_probe, check_objective, _objective_inputs("marginals")),
        Part(0.5, "the objective of nonnegative matrices of another mass (the generalized KL, - P + Q), and of a "
                  "batch of plans", objective_probe, check_objective, _objective_inputs("any")),
        Part(1, "the dual D(f, g): at Sinkhorn's potentials, at other potentials, for a separable cost, on a batch",
             dual_probe, check_dual, _dual_inputs),
    ])


# ---------------------------------------------------------------------------------------------
# Task 2: Sinkhorn in the log domain
# ---------------------------------------------------------------------------------------------

def sinkhorn_probe(cases):
    import torch

    answers = []
    for a, b, C, eps, tol, max_iter, words in cases:
        kept = [t.clone() for t in (a, b, C)]
        got = log_sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter)
        answers.append([got, all(torch.equal(k, t) for k, t in zip(kept, (a, b, C)))])
    return answers


def _outputs(got, a, b, C, words):
    """The four outputs of log_sinkhorn, checked for form: (P, f, g, iterations)."""
    P, f, g, count = _form(got, 4, "log_sinkhorn")
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    n, m = C.shape[-2:]
    for name, value, shape in (("the plan", P, (*batch, n, m)), ("f", f, (*batch, n)), ("g", g, (*batch, m))):
        if type(value) is not torch.Tensor:
            raise Wrong(f"{name} should be a tensor ({words})")
        if tuple(value.shape) != tuple(shape):
            raise Wrong(f"{name} should have shape {tuple(shape)}, not {tuple(value.shape)} ({words})")
        if value.dtype != F64:
            raise Wrong(f"{name} should have the inputs' dtype float64, not {value.dtype} ({words})")
        if not bool(torch.isfinite(value).all()):
            raise Wrong(f"{name} holds NaN or infinite entries ({words})")
    if type(count) is not int:
        raise Wrong(f"the number of iterations should be an int ({words})")
    return P, f, g, count


def _plan_checks(P, f, g, a, b, C, eps, tol, words):
    """What a plan of the log domain satisfies, whatever the problem: its form in f and g, its rows, its columns
    (within tol; not checked when tol is None, a run stopped by max_iter)."""
    form = torch.exp((f[..., :, None] + g[..., None, :] - C) / eps)
    close(P, form, rtol=1e-9, atol=1e-300, what=f"the plan, against exp((f_i + g_j - C_ij) / eps) ({words})")
    close(P.sum(-1), a.expand(P.shape[:-1]), rtol=1e-11, atol=1e-14, what=f"the sum of each row of the plan ({words})")
    if tol is not None and float((P.sum(-2) - b).abs().sum(-1).max()) > tol * (1 + 1e-6) + 1e-15:
        raise Wrong(f"the columns of the plan miss b by more than tol ({words})")


def check_sinkhorn(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, unchanged), (a, b, C, eps, tol, max_iter, words) in zip(result, cases):
        P, f, g, _ = _outputs(got, a, b, C, words)
        _plan_checks(P, f, g, a, b, C, eps, tol, words)
        plan, f_ref, g_ref, _ = _reference(a, b, C, eps)
        close(P, plan, rtol=0, atol=1e-7, what=f"the plan ({words})")
        close(f[..., :, None] + g[..., None, :], f_ref[..., :, None] + g_ref[..., None, :], rtol=0, atol=1e-7,
              what=f"the sums f_i + g_j of the potentials ({words})")
        if unchanged is not True:
            raise Wrong("log_sinkhorn changed its arguments in place")


def _fast(a, b, C, eps):
    """Whether Sinkhorn meets tol = 1e-10 on this problem (or batch) within FAST iterations."""
    low = C.amin(dim=(-2, -1))[..., None, None]
    return _sinkhorn(a, b, C - low, eps, tol=1e-10, max_iter=FAST)[3] < FAST


def _spread(generator, rng, n, m):
    """alpha_i + beta_j in [0, 2 SPREAD], with alpha 0 on one row and SPREAD on another (n >= 2): added to a cost
    in [0, 1], it leaves the plan as it is, and that row of exp(-(C - min C) / eps) is zero in float64 for
    eps <= 0.05, so that subtracting the smallest cost does not save an iteration on the multipliers."""
    alpha = SPREAD * torch.rand(n, generator=generator, dtype=F64)
    beta = SPREAD * torch.rand(m, generator=generator, dtype=F64)
    low, high = rng.sample(range(n), 2)
    alpha[low], alpha[high] = 0.0, float(SPREAD)
    return alpha[:, None] + beta[None, :]


def _hard_problem(generator, rng, n, m):
    """A problem whose Gibbs kernel underflows, even after subtracting the smallest cost: s + c_ij + alpha_i + beta_j
    with c in [0, 1], s / eps > 800 and rows of alpha SPREAD apart (drawn again until Sinkhorn converges fast: a
    few problems in a thousand need more than FAST iterations). Returns (a, b, C, eps, s)."""
    while True:
        eps = round(rng.uniform(0.03, 0.05), 4)
        shift = round(rng.uniform(40, 60), 3)
        a, b = _histogram(generator, n), _histogram(generator, m)
        C = shift + _cost(generator, n, m, rng) + _spread(generator, rng, n, m)
        if _fast(a, b, C, eps):
            return a, b, C, eps, shift


def _single_inputs(rng):
    generator, cases = _gen(rng), []
    for _ in range(3):
        n, m = rng.randint(3, 12), rng.randint(3, 12)
        a, b, C, eps, shift = _hard_problem(generator, rng, n, m)
        tol = rng.choice([1e-9, 1e-10])
        cases.append((a, b, C, eps, tol, BUDGET, f"{n} x {m}, eps = {eps:g}, a cost from {float(C.min()):.4g} to "
                                                 f"{float(C.max()):.4g}, with rows {SPREAD} apart"))
    return {"cases": cases}


def closed_probe(separable, single, shifted, budget):
    import torch

    answers = []
    for a, b, C, eps, words in separable + single:
        answers.append(log_sinkhorn(a, b, C, eps, tol=1e-10, max_iter=budget))
    a, b, C, eps, shift = shifted
    answers.append([log_sinkhorn(a, b, C, eps, tol=1e-10, max_iter=budget),
                    log_sinkhorn(a, b, C + shift, eps, tol=1e-10, max_iter=budget)])
    return answers


def check_closed(result, separable, single, shifted, budget):
    if not isinstance(result, list) or len(result) != len(separable) + len(single) + 1:
        raise Wrong("the probe's result has the wrong form")
    for got, (a, b, C, eps, words) in zip(result, separable + single):
        P, f, g, _ = _outputs(got, a, b, C, words)
        _plan_checks(P, f, g, a, b, C, eps, 1e-10, words)
        close(P, torch.outer(a, b), rtol=1e-9, atol=1e-300, what=f"the plan ({words})")
    a, b, C, eps, shift = shifted
    words = f"{C.shape[0]} x {C.shape[1]}, eps = {eps:g}, C and C + {shift:g}"
    pair = result[-1]
    if not isinstance(pair, list) or len(pair) != 2:
        raise Wrong("the probe's result has the wrong form")
    P0, f0, g0, _ = _outputs(pair[0], a, b, C, words)
    P1, f1, g1, _ = _outputs(pair[1], a, b, C + shift, words)
    close(P1, P0, rtol=0, atol=1e-7, what=f"the plan of C + s, against the plan of C ({words})")
    close(f1[:, None] + g1[None, :], f0[:, None] + g0[None, :] + shift, rtol=0, atol=1e-7,
          what=f"f_i + g_j for C + s, against f_i + g_j + s for C ({words})")


def _closed_inputs(rng):
    generator, separable, single = _gen(rng), [], []
    for _ in range(2):  # C_ij = alpha_i + beta_j, of a spread of 1000 eps or more: the plan a b^T
        n, m = rng.randint(2, 9), rng.randint(2, 9)
        eps = round(rng.uniform(0.02, 0.05), 4)
        alpha = 60 * torch.rand(n, generator=generator, dtype=F64)
        beta = 60 * torch.rand(m, generator=generator, dtype=F64)
        low, high = rng.sample(range(n), 2)
        alpha[low], alpha[high] = 0.0, 60.0  # row `high` of exp(-(C - min C) / eps) is zero in float64
        separable.append((_histogram(generator, n), _histogram(generator, m), alpha[:, None] + beta[None, :], eps,
                          f"a separable cost alpha_i + beta_j of {n} x {m}, eps = {eps:g}"))
    eps = round(rng.uniform(0.02, 0.05), 4)
    one = torch.ones(1, dtype=F64)
    single.append((one, one.clone(), torch.full((1, 1), rng.uniform(20, 80), dtype=F64), eps, "a 1 x 1 problem"))
    m = rng.randint(2, 8)
    single.append((one.clone(), _histogram(generator, m), 50 + _cost(generator, 1, m, rng), eps, f"a 1 x {m} problem"))
    n = rng.randint(2, 8)
    single.append((_histogram(generator, n), one.clone(), 50 + _cost(generator, n, 1, rng), eps, f"a {n} x 1 problem"))
    n, m = rng.randint(3, 10), rng.randint(3, 10)
    a, b, C, eps, _ = _hard_problem(generator, rng, n, m)
    shifted = (a, b, C, eps, round(rng.uniform(5, 30), 3))
    return {"separable": separable, "single": single, "shifted": shifted, "budget": BUDGET}


def _batch_inputs(rng):
    while True:  # drawn again until every problem converges fast
        made = _batch_draw(rng)
        if all(_fast(a, b, C, eps) for a, b, C, eps, _, _, _ in made["cases"]):
            return made


def _batch_draw(rng):
    generator, cases = _gen(rng), []
    batch, n, m = rng.randint(2, 4), rng.randint(3, 8), rng.randint(3, 8)
    eps, shift = round(rng.uniform(0.03, 0.05), 4), round(rng.uniform(40, 60), 3)

    def histograms(count, size):
        return torch.stack([_histogram(generator, size) for _ in range(count)])

    def costs(*shape):
        return shift + torch.stack([_cost(generator, n, m, rng) + _spread(generator, rng, n, m)
                                    for _ in range(math.prod(shape))]).reshape(*shape, n, m)

    words = f"{n} x {m}, eps = {eps:g}, costs from {shift:g} with rows {SPREAD} apart"
    cases.append((histograms(batch, n), histograms(batch, m), costs(batch), eps, 1e-9, BUDGET,
                  f"a batch of {batch}: a ({batch}, n), b ({batch}, m), C ({batch}, n, m), {words}"))
    cases.append((histograms(batch, n), _histogram(generator, m), costs(1)[0], eps, 1e-9, BUDGET,
                  f"a ({batch}, n), b (m,) and one shared C (n, m), {words}"))
    cases.append((_histogram(generator, n), histograms(batch, m), costs(batch), eps, 1e-9, BUDGET,
                  f"a (n,), b ({batch}, m), C ({batch}, n, m), {words}"))
    cases.append((_histogram(generator, n), _histogram(generator, m), costs(2, 2), eps, 1e-9, BUDGET,
                  f"two batch dimensions: C (2, 2, n, m), a (n,), b (m,), {words}"))
    return {"cases": cases}


def check_batch(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, unchanged), (a, b, C, eps, tol, max_iter, words) in zip(result, cases):
        P, f, g, _ = _outputs(got, a, b, C, words)
        _plan_checks(P, f, g, a, b, C, eps, tol, words)
        batch = P.shape[:-2]
        flat = [t.expand(*batch, *t.shape[-k:]).reshape(-1, *t.shape[-k:]) for t, k in ((a, 1), (b, 1), (C, 2))]
        for index, (one_a, one_b, one_C) in enumerate(zip(*flat)):
            plan, _, _, _ = _reference(one_a, one_b, one_C, eps)
            close(P.reshape(-1, *P.shape[-2:])[index], plan, rtol=0, atol=1e-7,
                  what=f"problem {index} of the batch, against it solved alone ({words})")
        if unchanged is not True:
            raise Wrong("log_sinkhorn changed its arguments in place")


def vectorized_probe(a, b, C, eps, iterations):
    """A batch of BATCH problems and its first problem alone, each metered (torch's operations counted), then the
    others alone; tol = 1e-14 is not met within `iterations`, so that every call runs max_iter = iterations."""
    meter = operation_meter()
    with meter() as alone:
        first = log_sinkhorn(a[0], b[0], C[0], eps, tol=1e-14, max_iter=iterations)
    with meter() as batched:
        together = log_sinkhorn(a, b, C, eps, tol=1e-14, max_iter=iterations)
    others = [log_sinkhorn(a[k], b[k], C[k], eps, tol=1e-14, max_iter=iterations) for k in range(1, a.shape[0])]
    return [together, [first] + others, alone.ops, batched.ops]


def check_vectorized(result, a, b, C, eps, iterations):
    if not isinstance(result, list) or len(result) != 4 or not isinstance(result[1], list) \
            or len(result[1]) != a.shape[0]:
        raise Wrong("the probe's result has the wrong form")
    together, singles, alone, batched = result
    words = f"a batch of {a.shape[0]} problems of {C.shape[-2]} x {C.shape[-1]}, eps = {eps:g}, max_iter = {iterations}"
    P, f, g, _ = _outputs(together, a, b, C, words)
    _plan_checks(P, f, g, a, b, C, eps, None, words)
    for k, single in enumerate(singles):
        one, _, _, _ = _outputs(single, a[k], b[k], C[k], f"problem {k} alone")
        close(P[k], one, rtol=0, atol=1e-10, what=f"problem {k} of the batch, against your log_sinkhorn on it alone "
                                                  f"({words})")
    if type(alone) is not int or type(batched) is not int:
        raise Wrong("the probe's result has the wrong form")
    if min(alone, batched) < 2 * iterations:
        raise Wrong(f"log_sinkhorn ran fewer than two torch operations an iteration ({words}): compute with torch's "
                    "tensor operations, in this thread")
    if batched > LOOP_RATIO * alone:
        raise Wrong(f"the batch ran {batched / alone:.0f} times the torch operations of one of its problems alone "
                    f"({words}): a Python loop over the problems? Broadcasting does the whole batch in one set of "
                    "tensor operations")


def _vectorized_inputs(rng):
    """A batch at a moderate eps (this part is about the batch only), drawn again until its first problem, run
    alone, is still far from tol = 1e-14 after max_iter iterations (a few problems in a hundred meet it in 10):
    the batch and the problem alone then run max_iter iterations each, and their operations compare."""
    generator = _gen(rng)
    while True:
        n, m, iterations = rng.randint(3, 8), rng.randint(3, 8), rng.randint(6, 10)
        eps = round(rng.uniform(0.05, 0.15), 3)
        a = torch.stack([_histogram(generator, n) for _ in range(BATCH)])
        b = torch.stack([_histogram(generator, m) for _ in range(BATCH)])
        C = torch.stack([_cost(generator, n, m, rng) for _ in range(BATCH)])
        P, _, _, _ = _sinkhorn(a[0], b[0], C[0], eps, tol=0.0, max_iter=iterations)
        if float((P.sum(-2) - b[0]).abs().sum()) > 1e-9:
            return {"a": a, "b": b, "C": C, "eps": eps, "iterations": iterations}


def stopping_probe(a, b, C, eps, runs):
    answers = []
    for tol, max_iter, start in runs:
        answers.append(log_sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter, f_init=start))
    return answers


def check_stopping(result, a, b, C, eps, runs):
    if not isinstance(result, list) or len(result) != len(runs):
        raise Wrong("the probe's result has the wrong form")
    for got, (tol, max_iter, start) in zip(result, runs):
        words = f"{C.shape[0]} x {C.shape[1]}, eps = {eps:g}, tol = {tol:g}, max_iter = {max_iter}"
        words += ", from f = 0" if start is None else ", from a given f_init"
        P, f, g, count = _outputs(got, a, b, C, words)
        plan, _, _, want = _sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter, f_init=start)
        if want == max_iter:  # stopped by max_iter: exactly that many iterations, from f = 0, g then f
            if count != max_iter:
                raise Wrong(f"log_sinkhorn should stop after max_iter iterations ({words})")
            close(P, plan, rtol=1e-9, atol=1e-15, what=f"the plan after max_iter iterations ({words})")
        elif abs(count - want) > 1:
            raise Wrong(f"log_sinkhorn should stop at the first iteration whose marginal error is at most tol "
                        f"({words})")
        else:
            _plan_checks(P, f, g, a, b, C, eps, tol, words)


def _stopping_inputs(rng):
    generator = _gen(rng)
    n, m = rng.randint(4, 10), rng.randint(4, 10)
    eps = round(rng.uniform(0.08, 0.2), 3)  # moderate: the multipliers do not underflow here
    a, b, C = _histogram(generator, n), _histogram(generator, m), _cost(generator, n, m, rng)
    _, near, _, _ = _sinkhorn(a, b, C, eps, tol=1e-4, max_iter=5000)  # a warm start: f after a rough solve
    runs = [(1e-8, 5000, None), (rng.choice([1e-2, 3e-3]), 5000, None), (1e-14, rng.randint(2, 5), None),
            (1e-14, 1, None), (1e-8, 5000, near), (1e-14, rng.randint(2, 4), near)]
    return {"a": a, "b": b, "C": C, "eps": eps, "runs": runs}


TASK2 = Task(
    restricted=Restricted(cells=["task2_sinkhorn"], **WITHOUT),
    parts=[
        Part(1.5, "one problem at a small eps, on costs whose Gibbs kernel underflows in float64: the plan and "
                  "f_i + g_j against a log-domain reference, the plan's rows, columns and its form "
                  "exp((f_i + g_j - C_ij) / eps)", sinkhorn_probe, check_sinkhorn, _single_inputs),
        Part(1, "closed forms: separable costs alpha_i + beta_j (the plan a b^T), a 1 x 1 problem, one row, one "
                "column, a constant added to the cost (the same plan, f + g shifted)",
             closed_probe, check_closed, _closed_inputs),
        Part(1, "batched, with broadcasting: a batch of problems, histograms against a shared cost, two batch "
                "dimensions, each problem against it solved alone", sinkhorn_probe, check_batch, _batch_inputs),
        Part(0.5, f"no Python loop over the problems of a batch: a batch of {BATCH} problems, against your "
                  "log_sinkhorn on each alone, runs about as many torch operations as one of them",
             vectorized_probe, check_vectorized, _vectorized_inputs, helpers=(operation_meter,)),
        Part(0.5, "the stopping rule at a moderate eps: the first iteration whose marginal error is at most tol, "
                  "and max_iter iterations exactly when tol is not reached, from f = 0 and from a given f_init",
             stopping_probe, check_stopping,
             _stopping_inputs),
    ])


# ---------------------------------------------------------------------------------------------
# Task 3: eps-scaling
# ---------------------------------------------------------------------------------------------

def _with_recorder(run):
    """run(records) with a recording _sinkhorn as the notebook's log_sinkhorn (and every name bound to the
    student's log_sinkhorn); the student's are put back afterwards. Returns [run's result, records]."""
    import torch

    namespace = __student__  # noqa: F821 (the probe's: the notebook's globals)
    missing = object()
    theirs = namespace.get("log_sinkhorn", missing)
    names = [k for k, v in list(namespace.items()) if v is theirs] if theirs is not missing else ["log_sinkhorn"]
    records, outputs = [], []

    def recorder(a, b, C, eps, tol=1e-9, max_iter=1000, f_init=None):
        if f_init is None:
            start = "none"
        elif outputs and type(f_init) is torch.Tensor and torch.equal(f_init, outputs[-1]):
            start = "previous"
        elif not outputs and type(f_init) is torch.Tensor and not bool(f_init.any()):
            start = "none"
        else:
            start = "other"
        got = _sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter, f_init=f_init)
        outputs.append(got[1])
        records.append([float(eps), float(tol), int(max_iter), start, list(got)])
        return got

    for name in names:
        namespace[name] = recorder
    try:
        result = run()
    finally:
        for name in names:
            if theirs is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = theirs
    return [result, records]


def scaling_probe(cases):
    answers = []
    for a, b, C, eps, eps_start, decay, tol, stage_tol, max_iter, words in cases:
        answers.append(_with_recorder(lambda: eps_scaling(a, b, C, eps, eps_start, decay=decay, tol=tol,
                                                          stage_tol=stage_tol, max_iter=max_iter)))
    return answers


def _schedule(eps, eps_start, decay):
    schedule, current = [], eps_start
    while current > eps:
        schedule.append(current)
        current = current * decay
    return schedule + [eps]


def _records(entry, words):
    if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], list):
        raise Wrong("the probe's result has the wrong form")
    got, records = entry
    if not records:
        raise Wrong(f"eps_scaling did not call log_sinkhorn ({words})")
    return got, records


def _scaling_check(kind):
    def check(result, cases):
        if not isinstance(result, list) or len(result) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for entry, (a, b, C, eps, eps_start, decay, tol, stage_tol, max_iter, words) in zip(result, cases):
            got, records = _records(entry, words)
            schedule = _schedule(eps, eps_start, decay)
            if kind == "schedule":
                if len(records) != len(schedule):
                    raise Wrong(f"eps_scaling ran {len(records)} stage{'s' if len(records) != 1 else ''}; the "
                                f"schedule has {len(schedule)} ({words})")
                for k, (record, want) in enumerate(zip(records, schedule)):
                    if not math.isclose(record[0], want, rel_tol=1e-12, abs_tol=0):
                        raise Wrong(f"stage {k} of eps_scaling ran at the wrong eps ({words})")
            elif kind == "starts":
                if len(schedule) > 1 and len(records) < 2:
                    raise Wrong(f"eps_scaling ran one stage, where the schedule has {len(schedule)} ({words})")
                for k, record in enumerate(records):
                    last = k == len(records) - 1
                    if record[3] != ("none" if k == 0 else "previous"):
                        raise Wrong(f"stage {k} of eps_scaling should start from "
                                    + ("f = 0" if k == 0 else "the f that the stage before returned") + f" ({words})")
                    if record[1] != (tol if last else stage_tol):
                        raise Wrong(f"stage {k} of eps_scaling should stop at " + ("tol" if last else "stage_tol")
                                    + f" ({words})")
                    if record[2] != max_iter:
                        raise Wrong(f"stage {k} of eps_scaling should have max_iter as its budget ({words})")
            else:
                P, f, g, stages = _form(got, 4, "eps_scaling")
                last = records[-1][4]
                for name, mine, theirs in (("the plan", P, last[0]), ("f", f, last[1]), ("g", g, last[2])):
                    close(mine, theirs, rtol=0, atol=0, what=f"{name}, against the last stage's ({words})")
                if type(stages) is not list or len(stages) != len(records):
                    raise Wrong(f"stages should be a list with one pair (eps_k, iterations_k) per stage run "
                                f"({words})")
                for k, (pair, record) in enumerate(zip(stages, records)):
                    if type(pair) not in (tuple, list) or len(pair) != 2 or type(pair[0]) is not float \
                            or type(pair[1]) is not int:
                        raise Wrong(f"stage {k}: a pair (eps_k, iterations_k) of a float and an int ({words})")
                    if pair[0] != record[0] or pair[1] != record[4][3]:
                        raise Wrong(f"stage {k}: the pair (eps_k, iterations_k) is not that of the stage run "
                                    f"({words})")
                plan, _, _, _ = _reference(a, b, C, eps)
                close(P, plan, rtol=0, atol=1e-6, what=f"the plan, against Sinkhorn run directly at eps ({words})")
    return check


def _scaling_inputs(rng):
    generator, cases = _gen(rng), []
    settings = [("a random schedule", rng.uniform(3, 30), round(rng.uniform(0.3, 0.75), 3)),
                ("eps_start = eps: one stage", 1, 0.5),
                ("eps_start = 2^k eps, decay 0.5: the schedule ends on eps itself", 2 ** rng.randint(2, 5), 0.5)]
    for words, ratio, decay in settings:
        n, m = rng.randint(3, 10), rng.randint(3, 10)
        eps = round(rng.uniform(0.02, 0.06), 4)
        a, b, C = _histogram(generator, n), _histogram(generator, m), _cost(generator, n, m, rng)
        while not _fast(a, b, C, eps):
            a, b, C = _histogram(generator, n), _histogram(generator, m), _cost(generator, n, m, rng)
        tol, stage_tol = rng.choice([1e-8, 1e-9, 1e-10]), rng.choice([1e-2, 1e-3, 1e-4])
        cases.append((a, b, C, eps, eps * ratio, decay, tol, stage_tol, rng.randint(2000, 4000),
                      f"{n} x {m}, eps = {eps:g}, {words}"))
    return {"cases": cases}


TASK3 = Task(
    restricted=Restricted(cells=["task3_eps_scaling"], **WITHOUT),
    parts=[
        Part(1.5, "the schedule: eps_start multiplied by decay while above eps, then eps itself (random schedules, "
                  "one stage, a schedule that ends on eps)", scaling_probe, _scaling_check("schedule"),
             _scaling_inputs),
        Part(1.5, "the stages: the first from f = 0, each later one from the f of the stage before, stage_tol for "
                  "the intermediate stages and tol for the last, max_iter for each", scaling_probe,
             _scaling_check("starts"), _scaling_inputs),
        Part(1, "what it returns: the last stage's plan and potentials, and the list of (eps_k, iterations_k) of "
                "the stages run", scaling_probe, _scaling_check("returns"), _scaling_inputs),
    ])
for _part in TASK3.parts:
    _part.helpers = (_sinkhorn, _with_recorder)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3}
