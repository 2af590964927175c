"""The grader of assignment 15 (Wasserstein barycenters): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/15_barycenter/.

Every task is written with torch and graded in one Python without ad_lib (ad_lib.barycenter has the
barycenter and its hand-derived backward pass), NumPy, SciPy and POT: `ot.bregman.barycenter` and the book's
`barycenter`, `barycenter_iterates` and `barycenter_backward` cannot run there, under any name. The set-up is
TORCH_ONLY and ends with ONE_THREAD, so that the operation meter sees everything the answers compute.

Task 1 (the log-domain iterative Bregman projections, with their stopping rule, batched) is graded, like assignment
13's Sinkhorn, on costs s + alpha_i + c_ij + beta_j (c: squared distances of points in [0, 1]^d scaled to [0, 1],
zero on the diagonal; s / eps > 800; rows alpha SPREAD = 60 apart; beta SPREAD on one column j, 0 on the others: a
bin of the barycenter far from every bin of the histograms, where p_j underflows to 0; eps <= 0.05), where the Gibbs
kernel exp(-C / eps) is zero in float64, and so is a whole row of exp(-(C - min C) / eps) and a whole column of the
kernel of C minus its row minima: an iteration on the multipliers u, v divides by zero there, with either repair
(ad_lib's barycenter(domain="scaling") raises its FloatingPointError on every such problem: 468 problems, the inputs
of 40 students, before the far column; 40 of 40 after). s + alpha_i changes nothing in the log-domain iterates (f is
shifted by it, h, g and p are not), so the grader's reference runs on C minus its row minima, where the numbers are
of order one (beta_j does change the barycenter: a column shift adds <beta, p> to the objective). Its stopping-rule
part and its part on the batch's operations run at a moderate eps on costs in [0, 1], where the multipliers are
fine, so that a scaling-domain answer loses exactly the other parts. The batch's part runs a batch of BATCH = 16
problems, the first of them alone and the first two as a batch of two, each for the same max_iter (tol = 0: exactly
max_iter iterations), and counts the aten operators each dispatches: broadcast, the batch runs as many as one
problem; a loop over the problems 16 times; more than LOOP_RATIO = 4 times fails, and so does a call that runs fewer
than two operators an iteration. The batch of two is there for an answer that pads the one-problem call with
operations of no use (so that a loop over the batch runs fewer than 4 times its count): a loop over the problems
runs 8 times a batch of two's, however one problem alone is done. The hard problems (their costs near a 1-D grid)
are drawn again until the reference meets a residual of 1e-10 within FAST = 500 iterations (on the 468 problems of
40 students: 86 to 497 iterations, 151 in the median, before the far column; 88 to 240, 131 in the median, on 40
problems after), and every probe allows BUDGET = 1500.

Task 2 (the reverse-mode recursion through exactly L iterations, by hand): the probe runs the student's
barycenter_vjp and two calls of its pullback under watching_autodiff (a part whose run used torch's automatic
differentiation fails) and under grading.operation_meter with a budget of work, BUDGET2_PER = 120 elements
written and multiply-adds per iteration and entry of the K (n, n) kernels, plus BUDGET2_BASE; the model answer
uses 29 there (5 forward, 12 per pullback; measured when the grader was written), a quarter of the budget.
Finite differences need a forward pass (5 K n^2 per iteration) per entry of A and of the weights, nK + K of
them, one-sided (2 (nK + K) central): with n from 11 to 14 and K from 3 to 4 one-sided differences do 185 or
more, central ones 370 or more, and the complex step is stopped at its first complex tensor. L is 1 to 20 and eps
0.05 to 0.2 on costs in [0, 1].

Task 3 (barycentric coding by gradient descent through a softmax) is graded with the grader's own
barycenter_vjp (`_unrolled`: torch.autograd through its own L iterations) in the notebook's namespace in place of
the student's (restored after the probe), which records each call (the weights, the barycenter it returned, the
cotangents its pullback was called with): a mistake in task 2 costs task 2's points only, and a descent that does
not call barycenter_vjp and its pullback once per step is seen in the record.

Truths, all computed here, none with the student's code:
- task 1 by `_ibp`, the grader's log-domain iteration, run to a residual of REFERENCE_TOL = 1e-12; it is POT's
  ot.bregman.barycenter(method="sinkhorn_log") iteration (the same start g = 0, the same updates; POT writes
  log p = sum_k lambda_k h_k / eps, equal to ours since sum_k lambda_k g_k = 0 on the simplex; POT tests the
  standard deviation of the c_k every tenth iteration instead of the residual): checked when the grader was
  written, on the 468 hard problems of 40 students, against POT's sinkhorn_log run for the same number of
  iterations (stopThr=0) to 1.6e-13 and against ad_lib's barycenter(domain="log", tol=0) to 1.5e-13 (with the
  far column, on 40 problems: against POT's sinkhorn_log at convergence to 7.8e-13, against ad_lib's log domain
  after 77 iterations to 1.2e-13); POT's
  method="sinkhorn" (the multipliers, on the moderate problems only, where they do not underflow) agrees at
  convergence to 2.5e-13 with uniform weights only: its first step takes the unweighted geometric mean, so that
  sum_k lambda_k log v_k is not zero and it converges to another point (off by as much as 1.2e-2 with the grader's
  weights); and by
  closed forms that need no iteration: one histogram, K copies of one histogram, or weights on a vertex of the
  simplex give, after one iteration with a residual of zero, the blur sum_i a_i softmax_j(-C_ij / eps) of the
  histogram; a shift alpha_i of the rows of the cost changes nothing; the batch by each problem solved alone;
  the stopping rule by `_ibp`'s count and by the iterate of the iteration where the student's answer stopped;
- task 2 by torch.autograd through `_unrolled`'s L iterations, its gradient in the weights centered (the two
  ways of writing log p, with or without the g_k, agree on the simplex only, so only the centered gradient is
  defined; the gradient in A is the same for both and is compared as it is): checked when the grader was written,
  on the inputs of 40 students, against float64 central differences (step 1e-6) of POT's
  ot.bregman.barycenter(method="sinkhorn_log", numItermax=L, stopThr=0) in every entry of A and of the weights
  (A raw, the weights centered) to 3.2e-10, the differences' own error (POT's log-domain barycenter cannot be
  differentiated by torch.autograd: it writes into a view in place), and against ad_lib's barycenter with
  grad="manual" and grad="unrolled" (which center both gradients: compared centered) to 2e-15. The L iterations
  are far from converged: the gradient in A after L + 1 iterations differs from the one after L by 4.6e-7 or
  more there, against a tolerance of about 1e-12;
- task 3 by the same gradient descent run here with `_unrolled`.
"""

import math

import torch
from grading import ONE_THREAD, TORCH_ONLY, Part, Restricted, Task, Wrong, close, operation_meter, watching_autodiff

F64 = torch.float64

SETUP = TORCH_ONLY + ONE_THREAD  # the meters see only their own thread: no other may start
WITHOUT = {"setup": SETUP, "without": ["ad_lib", "numpy", "scipy", "ot"],
           "why": "every task is written with torch and graded in a Python without ad_lib, NumPy, SciPy and POT "
                  "(no library computes the barycenter or its gradient)"}

REFERENCE_TOL = 1e-12  # the residual of the reference runs
FAST = 500  # task 1's problems are drawn again until the reference meets 1e-10 within FAST iterations
BUDGET = 1500  # the max_iter of the probes of task 1 (a right answer needs FAST at most)
SPREAD = 60  # alpha_i of task 1's hard costs: a row of C - min C SPREAD above another, 1200 eps or more
BATCH = 16  # the problems of the batch whose torch operations are counted against one problem's
LOOP_RATIO = 4  # a batch of BATCH may run this many times one problem's operations (a loop runs BATCH times)


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _histogram(generator, n):
    h = torch.rand(n, generator=generator, dtype=F64) + 0.3
    return h / h.sum()


def _histograms(generator, n, K):
    """K positive histograms of n bins, as the columns of an (n, K) matrix."""
    return torch.stack([_histogram(generator, n) for _ in range(K)], dim=1)


def _weights(generator, K):
    """Barycentric weights on the simplex, far from uniform (ratios up to 6)."""
    w = 0.2 + torch.rand(K, generator=generator, dtype=F64)
    return w / w.sum()


def _cost(generator, rng, n):
    """Squared distances between n random points of [0, 1]^d (d = 1 or 2), scaled to [0, 1]: (n, n), zero diagonal."""
    x = torch.rand(n, rng.randint(1, 2), generator=generator, dtype=F64)
    C = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return C / C.max()


def _grid_cost(generator, n):
    """Squared distances between n points of [0, 1] near a regular grid (jittered by up to 15 % of its step),
    scaled to [0, 1]: (n, n), zero diagonal. The barycenters of random histograms converge fast there (at
    eps = 0.03 to 0.05, 73 to 640 iterations to a residual of 1e-10 on 200 problems, 140 in the median), where
    random points, with their near-ties, can need thousands (84 to 4151, 280 in the median)."""
    t = (torch.arange(n, dtype=F64) + 0.3 * (torch.rand(n, generator=generator, dtype=F64) - 0.5)) / (n - 1)
    C = (t[:, None] - t[None, :]) ** 2
    return C / C.max()


def _fast(A, C, weights, eps):
    """Whether the reference meets a residual of 1e-10 within FAST iterations on every problem of A and weights."""
    return _ibp(A, C - C.amin(-1, keepdim=True), weights, eps, 1e-10, FAST)[1] < FAST


def _ibp(A, C, weights, eps, tol, max_iter):
    """The grader's log-domain iterative Bregman projections: (p, iterations). A (..., n, K), weights (..., K),
    C (n, n); from g = 0; stopped at the first iteration whose residual sum_k lambda_k ||c_k - p||_1 (the largest
    over the batch) is at most tol (tol > 0), or after max_iter iterations."""
    rows = A.transpose(-1, -2)
    lam = weights.unsqueeze(-1)
    eps_log_a = eps * torch.log(rows)
    shape = torch.broadcast_shapes(rows.shape[:-2], weights.shape[:-1]) + rows.shape[-2:]
    g = torch.zeros(shape, dtype=F64)
    count = 0
    while count < max_iter:
        count += 1
        f = eps_log_a - eps * torch.logsumexp((g.unsqueeze(-2) - C) / eps, dim=-1)
        h = eps * torch.logsumexp((f.unsqueeze(-1) - C) / eps, dim=-2)
        log_c = (g + h) / eps
        log_p = (lam * log_c).sum(-2)
        error = (weights * (torch.exp(log_c) - torch.exp(log_p).unsqueeze(-2)).abs().sum(-1)).sum(-1)
        if tol > 0 and float(error.max()) <= tol:
            break
        g = eps * log_p.unsqueeze(-2) - h
    return torch.exp(log_p), count


def _reference(A, C, weights, eps):
    """The barycenter at a residual of REFERENCE_TOL, computed on C minus its row minima (which changes none of the
    iterates but f, and keeps the numbers of order one)."""
    p, count = _ibp(A, C - C.amin(-1, keepdim=True), weights, eps, REFERENCE_TOL, 20000)
    if count == 20000:
        raise RuntimeError("the grader's reference did not converge: change the grader's inputs")
    return p


def _blur(a, C, eps):
    """The closed form after one iteration for a single histogram a (n,): sum_i a_i softmax_j(-C_ij / eps)."""
    return a @ torch.softmax(-C / eps, dim=-1)


def _form(result, count, words):
    if type(result) not in (tuple, list) or len(result) != count:
        raise Wrong(f"{words} should return a tuple of {count} values")
    return result


# ---------------------------------------------------------------------------------------------
# Task 1: the barycenter by iterative Bregman projections, in the log domain
# ---------------------------------------------------------------------------------------------

def _outputs(got, shape, words):
    """The two outputs of barycenter_log, checked for form: (p, iterations)."""
    p, count = _form(got, 2, "barycenter_log")
    if type(p) is not torch.Tensor:
        raise Wrong(f"the barycenter should be a tensor ({words})")
    if tuple(p.shape) != tuple(shape):
        raise Wrong(f"the barycenter should have shape {tuple(shape)}, not {tuple(p.shape)} ({words})")
    if p.dtype != F64:
        raise Wrong(f"the barycenter should have the inputs' dtype float64, not {p.dtype} ({words})")
    if not bool(torch.isfinite(p).all()):
        raise Wrong(f"the barycenter holds NaN or infinite entries ({words})")
    if type(count) is not int:
        raise Wrong(f"the number of iterations should be an int ({words})")
    return p, count


def _shape(A, weights):
    return torch.broadcast_shapes(A.shape[:-2], weights.shape[:-1]) + (A.shape[-2],)


def barycenter_probe(cases):
    import torch

    answers = []
    for A, C, weights, eps, tol, max_iter, words in cases:
        kept = [t.clone() for t in (A, C, weights)]
        got = barycenter_log(A, C, weights, eps, tol=tol, max_iter=max_iter)
        answers.append([got, all(torch.equal(k, t) for k, t in zip(kept, (A, C, weights)))])
    return answers


def _check_against_reference(batched):
    def check(result, cases):
        if not isinstance(result, list) or len(result) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, unchanged), (A, C, weights, eps, tol, max_iter, words) in zip(result, cases):
            p, _ = _outputs(got, _shape(A, weights), words)
            if batched:
                batch = p.shape[:-1]
                flat_A = A.expand(*batch, *A.shape[-2:]).reshape(-1, *A.shape[-2:])
                flat_w = weights.expand(*batch, weights.shape[-1]).reshape(-1, weights.shape[-1])
                for index, (one_A, one_w) in enumerate(zip(flat_A, flat_w)):
                    close(p.reshape(-1, p.shape[-1])[index], _reference(one_A, C, one_w, eps), rtol=0, atol=1e-8,
                          what=f"problem {index} of the batch, against it solved alone ({words})")
            else:
                close(p, _reference(A, C, weights, eps), rtol=0, atol=1e-8, what=f"the barycenter ({words})")
            if unchanged is not True:
                raise Wrong("barycenter_log changed its arguments in place")
    return check


def _shift(generator, rng, n):
    """alpha_i in [0, SPREAD], 0 on one row and SPREAD on another: added to every entry of row i of a cost in
    [0, 1], it leaves the barycenter as it is, and that row of exp(-(C - min C) / eps) is zero in float64 for
    eps <= 0.05."""
    alpha = SPREAD * torch.rand(n, generator=generator, dtype=F64)
    low, high = rng.sample(range(n), 2)
    alpha[low], alpha[high] = 0.0, float(SPREAD)
    return alpha


def _hard_problem(generator, rng, n, K):
    """A problem whose Gibbs kernel underflows, even after subtracting the smallest cost or each row's smallest cost:
    s + alpha_i + c_ij + beta_j with c in [0, 1] (squared distances near a grid), s / eps > 800, rows of alpha SPREAD
    apart, and beta SPREAD on one column j, 0 on the others (a bin of the barycenter far from every bin of the
    histograms: its p_j underflows to 0): the kernel of C minus its row minima has a column of zeros, so that K^T u
    is zero there and v_j = p_j / (K^T u)_j is NaN (drawn again until the reference converges fast). Returns
    (A, C, weights, eps)."""
    while True:
        eps = round(rng.uniform(0.03, 0.05), 4)
        A, weights = _histograms(generator, n, K), _weights(generator, K)
        C = round(rng.uniform(40, 60), 3) + _shift(generator, rng, n)[:, None] + _grid_cost(generator, n)
        C[:, rng.randrange(n)] += SPREAD
        if _fast(A, C, weights, eps):
            return A, C, weights, eps


def _words(C, eps, K):
    n = C.shape[-1]
    return f"{K} histograms of {n} bins, eps = {eps:g}, a cost from {float(C.min()):.4g} to {float(C.max()):.4g}"


def _single_inputs(rng):
    generator, cases = _gen(rng), []
    for _ in range(3):
        n, K = rng.randint(4, 12), rng.randint(2, 4)
        A, C, weights, eps = _hard_problem(generator, rng, n, K)
        cases.append((A, C, weights, eps, rng.choice([1e-9, 1e-10]), BUDGET,
                      _words(C, eps, K) + f", with rows {SPREAD} apart"))
    return {"cases": cases}


def closed_probe(blurred, shifted, budget):
    answers = []
    for A, C, weights, eps, words in blurred:
        answers.append(barycenter_log(A, C, weights, eps, tol=1e-10, max_iter=budget))
    A, C, weights, eps, alpha = shifted
    answers.append([barycenter_log(A, C, weights, eps, tol=1e-10, max_iter=budget),
                    barycenter_log(A, C + alpha.unsqueeze(-1), weights, eps, tol=1e-10, max_iter=budget)])
    return answers


def check_closed(result, blurred, shifted, budget):
    if not isinstance(result, list) or len(result) != len(blurred) + 1:
        raise Wrong("the probe's result has the wrong form")
    for got, (A, C, weights, eps, words) in zip(result, blurred):
        p, _ = _outputs(got, (A.shape[0],), words)
        k = int(weights.argmax())  # the histogram that counts: the only one, all the same, or the vertex's
        close(p, _blur(A[:, k], C, eps), rtol=1e-9, atol=1e-15,
              what=f"the barycenter, against the blur sum_i a_i softmax_j(-C_ij / eps) of the histogram ({words})")
    A, C, weights, eps, alpha = shifted
    words = _words(C, eps, A.shape[1]) + f", and the same cost with its rows shifted by up to {SPREAD}"
    pair = result[-1]
    if not isinstance(pair, list) or len(pair) != 2:
        raise Wrong("the probe's result has the wrong form")
    p0, _ = _outputs(pair[0], (A.shape[0],), words)
    p1, _ = _outputs(pair[1], (A.shape[0],), words)
    close(p1, p0, rtol=0, atol=1e-9, what=f"the barycenter of C + alpha_i, against that of C ({words})")
    close(p0, _reference(A, C, weights, eps), rtol=0, atol=1e-8, what=f"the barycenter ({words})")


def _closed_inputs(rng):
    generator, blurred = _gen(rng), []
    n = rng.randint(4, 10)
    A, C, _, eps = _hard_problem(generator, rng, n, 1)
    blurred.append((A, C, torch.ones(1, dtype=F64), eps, f"one histogram of {n} bins, eps = {eps:g}"))
    n, K = rng.randint(4, 10), rng.randint(2, 4)
    A, C, weights, eps = _hard_problem(generator, rng, n, K)
    A = A[:, :1].expand(n, K).clone()
    weights[0] += 0.5  # the largest weight on the first column (all the columns are the same histogram)
    blurred.append((A, C, weights / weights.sum(), eps, f"{K} copies of one histogram of {n} bins, eps = {eps:g}"))
    n, K = rng.randint(4, 10), rng.randint(2, 4)
    A, C, _, eps = _hard_problem(generator, rng, n, K)
    vertex = torch.zeros(K, dtype=F64)
    vertex[rng.randrange(K)] = 1.0
    blurred.append((A, C, vertex, eps, f"{K} histograms of {n} bins, all the weight on one, eps = {eps:g}"))
    n, K = rng.randint(4, 10), rng.randint(2, 4)
    A, C, weights, eps = _hard_problem(generator, rng, n, K)
    shifted = (A, C, weights, eps, _shift(generator, rng, n))
    return {"blurred": blurred, "shifted": shifted, "budget": BUDGET}


def _batch_inputs(rng):
    generator, cases = _gen(rng), []
    batch, n, K = rng.randint(2, 4), rng.randint(4, 9), rng.randint(2, 4)
    while True:  # drawn again until every problem of the three batches converges fast
        A, C, _, eps = _hard_problem(generator, rng, n, K)
        stacked = torch.stack([A] + [_histograms(generator, n, K) for _ in range(batch - 1)])
        several = torch.stack([_weights(generator, K) for _ in range(batch)])
        if all(_fast(a, C, w, eps) for a, w in ((stacked, several[0]), (A, several), (stacked, several.flip(0)))):
            break
    words = _words(C, eps, K) + f", with rows {SPREAD} apart"
    cases.append((stacked, C, several[0], eps, 1e-9, BUDGET, f"A ({batch}, n, K) and weights (K,), {words}"))
    cases.append((A, C, several, eps, 1e-9, BUDGET, f"A (n, K) and weights ({batch}, K), {words}"))
    cases.append((stacked, C, several.flip(0), eps, 1e-9, BUDGET, f"A ({batch}, n, K) and weights ({batch}, K), {words}"))
    return {"cases": cases}


def vectorized_probe(A, C, weights, eps, iterations):
    """A batch of BATCH problems, its first problem alone and its first two as a batch of two, each metered (torch's
    operations counted), then the others alone; tol = 0: every call runs max_iter = iterations."""
    meter = operation_meter()
    with meter() as alone:
        first = barycenter_log(A[0], C, weights[0], eps, tol=0.0, max_iter=iterations)
    with meter() as pair:
        two = barycenter_log(A[:2], C, weights[:2], eps, tol=0.0, max_iter=iterations)
    with meter() as batched:
        together = barycenter_log(A, C, weights, eps, tol=0.0, max_iter=iterations)
    others = [barycenter_log(A[k], C, weights[k], eps, tol=0.0, max_iter=iterations) for k in range(1, A.shape[0])]
    return [together, [first] + others, alone.ops, batched.ops, two, pair.ops]


def check_vectorized(result, A, C, weights, eps, iterations):
    if not isinstance(result, list) or len(result) != 6 or not isinstance(result[1], list) \
            or len(result[1]) != A.shape[0]:
        raise Wrong("the probe's result has the wrong form")
    together, singles, alone, batched, two, pair = result
    words = (f"a batch of {A.shape[0]} problems of {A.shape[-1]} histograms of {A.shape[-2]} bins, eps = {eps:g}, "
             f"tol = 0, max_iter = {iterations}")
    p, count = _outputs(together, (A.shape[0], A.shape[1]), words)
    if count != iterations:
        raise Wrong(f"with tol = 0, barycenter_log should run exactly max_iter iterations ({words})")
    for k, single in enumerate(singles):
        one, _ = _outputs(single, (A.shape[1],), f"problem {k} alone")
        close(p[k], one, rtol=0, atol=1e-12, what=f"problem {k} of the batch, against your barycenter_log on it "
                                                  f"alone ({words})")
    close(p[0], _ibp(A[0], C, weights[0], eps, 0.0, iterations)[0], rtol=1e-9, atol=1e-15,
          what=f"the barycenter after max_iter iterations ({words})")
    p2, _ = _outputs(two, (2, A.shape[1]), f"the first two problems as a batch of two ({words})")
    close(p2, p[:2], rtol=0, atol=1e-12, what=f"the first two problems as a batch of two, against the batch ({words})")
    if type(alone) is not int or type(batched) is not int or type(pair) is not int:
        raise Wrong("the probe's result has the wrong form")
    if min(alone, batched, pair) < 2 * iterations:
        raise Wrong(f"barycenter_log ran fewer than two torch operations an iteration ({words}): compute with torch's "
                    "tensor operations, in this thread")
    if batched > LOOP_RATIO * alone:
        raise Wrong(f"the batch ran {batched / alone:.0f} times the torch operations of one of its problems alone "
                    f"({words}): a Python loop over the problems? Broadcasting does the whole batch in one set of "
                    "tensor operations")
    if batched > LOOP_RATIO * pair:  # (a loop runs BATCH / 2 times a batch of two's, however one problem is done)
        raise Wrong(f"the batch ran {batched / pair:.0f} times the torch operations of a batch of its first two "
                    f"problems ({words}): a Python loop over the problems? Broadcasting does the whole batch in one "
                    "set of tensor operations")


def _vectorized_inputs(rng):
    generator = _gen(rng)
    n, K = rng.randint(4, 9), rng.randint(2, 4)
    A = torch.stack([_histograms(generator, n, K) for _ in range(BATCH)])
    weights = torch.stack([_weights(generator, K) for _ in range(BATCH)])
    eps = round(rng.uniform(0.08, 0.2), 3)  # moderate: this part is about the batch only
    return {"A": A, "C": _cost(generator, rng, n), "weights": weights, "eps": eps, "iterations": rng.randint(6, 10)}


def stopping_probe(A, C, weights, eps, runs):
    return [barycenter_log(A, C, weights, eps, tol=tol, max_iter=max_iter) for tol, max_iter in runs]


def check_stopping(result, A, C, weights, eps, runs):
    if not isinstance(result, list) or len(result) != len(runs):
        raise Wrong("the probe's result has the wrong form")
    for got, (tol, max_iter) in zip(result, runs):
        words = f"{_words(C, eps, A.shape[1])}, tol = {tol:g}, max_iter = {max_iter}"
        p, count = _outputs(got, (A.shape[0],), words)
        _, want = _ibp(A, C, weights, eps, tol, max_iter)
        if want == max_iter:  # tol not reached (or tol = 0): exactly max_iter iterations
            if count != max_iter:
                raise Wrong(f"barycenter_log should stop after max_iter iterations ({words})" if tol > 0 else
                            f"with tol = 0, barycenter_log should run exactly max_iter iterations ({words})")
        elif abs(count - want) > 1:
            raise Wrong(f"barycenter_log should stop at the first iteration whose residual is at most tol ({words})")
        if not 1 <= count <= max_iter:
            raise Wrong(f"barycenter_log should count the iterations it ran, from 1 to max_iter ({words})")
        close(p, _ibp(A, C, weights, eps, 0.0, count)[0], rtol=1e-9, atol=1e-15,
              what=f"the barycenter, against the iterate of the iteration where it stopped ({words})")


def _stopping_inputs(rng):
    generator = _gen(rng)
    n, K = rng.randint(4, 10), rng.randint(2, 4)
    eps = round(rng.uniform(0.08, 0.2), 3)  # moderate: the multipliers do not underflow here
    runs = [(1e-9, BUDGET), (rng.choice([1e-3, 3e-4]), BUDGET), (0.0, rng.randint(2, 5)), (1e-14, rng.randint(1, 3))]
    while True:
        A, C, weights = _histograms(generator, n, K), _cost(generator, rng, n), _weights(generator, K)
        if _fast(A, C, weights, eps):
            return {"A": A, "C": C, "weights": weights, "eps": eps, "runs": runs}


TASK1 = Task(
    restricted=Restricted(cells=["task1_barycenter"], **WITHOUT),
    parts=[
        Part(1.5, "one problem at a small eps, on costs whose Gibbs kernel underflows in float64: the barycenter "
                  "against a log-domain reference", barycenter_probe, _check_against_reference(False),
             _single_inputs),
        Part(1, "closed forms: one histogram, copies of one histogram, all the weight on one histogram (the blur "
                "of the histogram by the kernel), a shift of the rows of the cost (the same barycenter)",
             closed_probe, check_closed, _closed_inputs),
        Part(1, "batched, with broadcasting: A (B, n, K) with weights (K,), A (n, K) with weights (B, K), both "
                "batched, each problem against it solved alone", barycenter_probe, _check_against_reference(True),
             _batch_inputs),
        Part(0.5, f"no Python loop over the problems of a batch: a batch of {BATCH} problems, against your "
                  "barycenter_log on each alone, runs about as many torch operations as one of them",
             vectorized_probe, check_vectorized, _vectorized_inputs, helpers=(operation_meter,)),
        Part(0.5, "the stopping rule at a moderate eps: the first iteration whose residual is at most tol, max_iter "
                  "iterations when tol is not reached, exactly max_iter when tol = 0",
             stopping_probe, check_stopping, _stopping_inputs),
    ])


# ---------------------------------------------------------------------------------------------
# Task 2: the reverse-mode recursion through L iterations, by hand
# ---------------------------------------------------------------------------------------------

BUDGET2_PER = 120  # elements written and multiply-adds allowed per iteration and entry of the K kernels (model: 29)
BUDGET2_BASE = 4000


def vjp_probe(cases):
    import torch

    Meter = operation_meter()

    def run():
        answers = []
        for A, C, weights, eps, L, first, second, budget in cases:
            kept = [t.clone() for t in (A, C, weights)]
            meter, got = Meter(budget=budget, stop_on_complex=True), None
            with meter:
                p, pullback = barycenter_vjp(A, C, weights, eps, L)
                one, two = pullback(first), pullback(second)
                got = [p, list(one) if type(one) in (tuple, list) else one,
                       list(two) if type(two) in (tuple, list) else two]
            unchanged = all(torch.equal(k, t) for k, t in zip(kept, (A, C, weights)))
            answers.append([None if meter.stopped else got, meter.stopped, meter.complex, meter.work, unchanged])
        return answers

    return watching_autodiff(run)


def _unrolled(A, C, weights, eps, L):
    """(p_L, pullback): torch.autograd through the grader's own L iterations; pullback(w) returns the gradients of
    <w, p_L> in A (as they are) and in the weights (centered)."""
    import torch

    with torch.enable_grad():
        leaves = [A.detach().clone().requires_grad_(True), weights.detach().clone().requires_grad_(True)]
        rows, lam = leaves[0].transpose(-1, -2), leaves[1].unsqueeze(-1)
        g = torch.zeros_like(rows)
        for step in range(1, L + 1):
            f = eps * torch.log(rows) - eps * torch.logsumexp((g.unsqueeze(-2) - C) / eps, dim=-1)
            h = eps * torch.logsumexp((f.unsqueeze(-1) - C) / eps, dim=-2)
            log_p = (lam * (g + h)).sum(-2) / eps
            if step < L:
                g = eps * log_p.unsqueeze(-2) - h
        p = torch.exp(log_p)

    def pullback(w):
        grad_A, grad_w = torch.autograd.grad(p, leaves, w, retain_graph=True)
        return grad_A, grad_w - grad_w.mean(-1, keepdim=True)

    return p.detach(), pullback


def _no_autodiff(result, name):
    answers, torch_ran, _ = result
    if torch_ran:
        raise Wrong(f"{name} ran torch's automatic differentiation: write the gradient by hand")
    return answers


def _vjp_check(which):
    def check(result, cases):
        answers = _no_autodiff(result, "barycenter_vjp or its pullback")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, stopped, complex_seen, work, unchanged), (A, C, weights, eps, L, first, second, budget) \
                in zip(answers, cases):
            n, K = A.shape
            words = f"{K} histograms of {n} bins, eps = {eps:.3g}, L = {L}"
            if complex_seen:
                raise Wrong(f"barycenter_vjp computed with complex numbers ({words}): the complex step is not a "
                            "derivation; write the recursion by hand")
            if stopped:
                raise Wrong(f"barycenter_vjp and two calls of its pullback ran past the grader's budget of work "
                            f"({budget} elements written and multiply-adds, {words}), about four times what the "
                            "forward and backward passes need: finite differences are not a derivation; keep the "
                            "iterates and walk back")
            p, one, two = _form(got, 3, "the probe")
            truth_p, pullback = _unrolled(A, C, weights, eps, L)
            if which == "value":
                close(p, truth_p, rtol=1e-10, atol=1e-13, what=f"the barycenter after exactly L iterations ({words})")
            for number, (mine, w) in enumerate(((one, first), (two, second)), start=1):
                grad_A, grad_w = _form(mine, 2, "the pullback")
                truth_A, truth_w = pullback(w)
                if which == "A":
                    close(grad_A, truth_A, rtol=1e-10, atol=1e-12,
                          what=f"grad_A after exactly L iterations, cotangent {number} of 2 ({words})")
                if which == "weights":
                    close(grad_w, truth_w, rtol=1e-10, atol=1e-12,
                          what=f"grad_weights, centered, after exactly L iterations, cotangent {number} of 2 ({words})")
            if not unchanged:
                raise Wrong("barycenter_vjp changed its arguments in place")
    return check


def _vjp_inputs(rng):
    generator, cases = _gen(rng), []
    for L, low, high in ((rng.randint(1, 2), 0.08, 0.2), (rng.randint(5, 10), 0.05, 0.1),
                         (rng.randint(12, 20), 0.06, 0.12)):
        n, K = rng.randint(11, 14), rng.randint(3, 4)
        first, second = torch.randn(n, generator=generator, dtype=F64), torch.randn(n, generator=generator, dtype=F64)
        budget = BUDGET2_PER * K * n * n * L + BUDGET2_BASE
        cases.append((_histograms(generator, n, K), _cost(generator, rng, n), _weights(generator, K),
                      round(rng.uniform(low, high), 4), L, first, second, budget))
    return {"cases": cases}


TASK2 = Task(
    restricted=Restricted(cells=["task2_vjp"], **WITHOUT),
    parts=[
        Part(1, "the barycenter after exactly L iterations (from g = 0), L from 1 to 20, within the budget of work "
                "and without automatic differentiation", vjp_probe, _vjp_check("value"), _vjp_inputs),
        Part(2, "grad_A, not centered, equal to automatic differentiation through the same L iterations (far from "
                "converged), for two cotangents with one pullback, within the budget of work",
             vjp_probe, _vjp_check("A"), _vjp_inputs),
        Part(1.5, "grad_weights, centered, equal to automatic differentiation through the same L iterations, for two "
                  "cotangents with one pullback, within the budget of work", vjp_probe, _vjp_check("weights"),
             _vjp_inputs),
    ])
for _part in TASK2.parts:
    _part.helpers = (watching_autodiff, operation_meter, _unrolled)


# ---------------------------------------------------------------------------------------------
# Task 3: barycentric coding, by gradient descent through a softmax
# ---------------------------------------------------------------------------------------------

def _with_recorder(run):
    """run() with the grader's `_unrolled` as the notebook's barycenter_vjp (and every name bound to the student's
    barycenter_vjp), recording each call: [weights, the barycenter returned, [cotangents of its pullback]]; the
    student's are put back afterwards. Returns [run's result, records]."""
    import torch

    namespace = __student__  # noqa: F821 (the probe's: the notebook's globals)
    missing = object()
    theirs = namespace.get("barycenter_vjp", missing)
    names = [k for k, v in list(namespace.items()) if v is theirs] if theirs is not missing else ["barycenter_vjp"]
    records = []

    def recorder(A, C, weights, eps, L):
        if not all(type(t) is torch.Tensor for t in (A, C, weights)):
            raise TypeError("barycenter_vjp(A, C, weights, eps, L) takes three tensors, a number and an int")
        p, pullback = _unrolled(A, C, weights, float(eps), int(L))
        record = [weights.detach().clone(), p.clone(), []]
        records.append(record)

        def recorded_pullback(w):
            record[2].append(w.detach().clone())
            return pullback(w)

        return p, recorded_pullback

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


def coding_probe(x, D, C, eps, L, steps, lr):
    return _with_recorder(lambda: barycentric_coding(x, D, C, eps, L, steps, lr))


def _descent(x, D, C, eps, L, steps, lr):
    """The grader's gradient descent on theta, weights softmax(theta): (final weights, [weights of each step])."""
    theta = torch.zeros(D.shape[1], dtype=F64)
    path = []
    for _ in range(steps):
        lam = torch.softmax(theta, 0)
        path.append(lam)
        p, pullback = _unrolled(D, C, lam, eps, L)
        _, grad = pullback(2 * (p - x))
        theta = theta - lr * lam * (grad - (lam * grad).sum())
    return torch.softmax(theta, 0), path


def _coding_check(which):
    def check(result, x, D, C, eps, L, steps, lr):
        if not isinstance(result, list) or len(result) != 2 or not isinstance(result[1], list):
            raise Wrong("the probe's result has the wrong form")
        got, records = result
        n, K = D.shape
        words = f"{K} atoms of {n} bins, eps = {eps:g}, L = {L}, {steps} step{'s' if steps > 1 else ''}, lr = {lr:g}"
        weights, losses = _form(got, 2, "barycentric_coding")
        if len(records) != steps:
            raise Wrong(f"barycentric_coding called barycenter_vjp {len(records)} times in {steps} steps ({words}): "
                        "one call per step, whose pullback gives the gradient")
        if which == "losses":
            if type(losses) is not list or len(losses) != steps or any(type(v) is not float for v in losses):
                raise Wrong(f"losses should be a list of {steps} Python floats, one a step ({words})")
            for s, (value, record) in enumerate(zip(losses, records)):
                if not math.isclose(value, float(((record[1] - x) ** 2).sum()), rel_tol=1e-10, abs_tol=1e-15):
                    raise Wrong(f"the loss of step {s} is not ||p - x||^2 at the barycenter of that step ({words})")
            return
        final, path = _descent(x, D, C, eps, L, steps, lr)
        for s, (record, want) in enumerate(zip(records, path)):
            if len(record[2]) != 1:
                raise Wrong(f"step {s} called the pullback {len(record[2])} times ({words}): once a step")
            close(record[2][0], 2 * (record[1] - x), rtol=1e-12, atol=1e-15,
                  what=f"the cotangent of step {s}, the gradient 2 (p - x) of the loss in p ({words})")
            close(record[0], want, rtol=1e-9, atol=1e-14,
                  what=f"the weights of step {s}, " + ("uniform at the start" if s == 0 else "along the descent")
                  + f" ({words})")
        close(weights, final, rtol=1e-9, atol=1e-14, what=f"the weights after {steps} steps ({words})")
    return check


def _coding_inputs(kind):
    def make(rng):
        generator = _gen(rng)
        n, K = rng.randint(6, 10), rng.randint(2, 4)
        D, C = _histograms(generator, n, K), _cost(generator, rng, n)
        x = _histogram(generator, n)
        steps = {"one": 1, "many": rng.randint(4, 7), "losses": rng.randint(3, 5)}[kind]
        return {"x": x, "D": D, "C": C, "eps": round(rng.uniform(0.05, 0.2), 3), "L": rng.randint(3, 8),
                "steps": steps, "lr": round(rng.uniform(5, 30), 2)}
    return make


TASK3 = Task(
    restricted=Restricted(cells=["task3_coding"], **WITHOUT),
    parts=[
        Part(1, "one step from uniform weights: the gradient in theta by the chain rule through the softmax, "
                "from one call of barycenter_vjp and one of its pullback, with the cotangent 2 (p - x)",
             coding_probe, _coding_check("descent"), _coding_inputs("one")),
        Part(0.5, "several steps: the weights of each step and after the last, along the gradient descent on theta",
             coding_probe, _coding_check("descent"), _coding_inputs("many")),
        Part(0.5, "the losses: ||p - x||^2 at the barycenter of each step, one Python float a step",
             coding_probe, _coding_check("losses"), _coding_inputs("losses")),
    ])
for _part in TASK3.parts:
    _part.helpers = (_unrolled, _with_recorder)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3}
