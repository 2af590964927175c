"""Assignment 9 (deep declarative networks): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/09_declarative.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids (ad_lib.declarative, POT), handed in together; each
scores 0 on its task. GAMING = {name: (solution grade_id, test grade_id, code, score)}: answers that
try to score without the work (torch.autograd doing what the task asks by hand, a trivial answer that
satisfies one property, NumPy outside the size meter), with what they earn.
"""

WRONG = {
    # kappa_2 divided by z once instead of z^2
    "task1_kappa": ("task1_tests", 3, '''
def kappa(penalty, z, alpha):
    if penalty == "quadratic":
        return torch.ones_like(z), torch.zeros_like(z)
    if penalty == "pseudo-huber":
        first = 1 / torch.sqrt(1 + (z / alpha) ** 2)
        second = first**3
    elif penalty == "welsch":
        first = torch.exp(-0.5 * (z / alpha) ** 2) / alpha**2
        second = first * (1 - (z / alpha) ** 2)
    else:
        first = torch.where(z <= alpha, torch.ones_like(z), alpha / z)
        second = torch.where(z <= alpha, torch.ones_like(z), torch.zeros_like(z))
    return first, (second - first) / z
''', 0.5),  # the quadratic penalty is right (its kappa_2 is zero anyway)
    # drops the kappa_2 term of eq. (10) (but solves with the right H)
    "task2_pooling_backward": ("task2_tests", 3, '''
def pooling_backward(x, y, v, kappa):
    diffs = y[:, None] - x
    k1, k2 = kappa(diffs.norm(dim=0))
    hessian = torch.diag(k1.sum().expand(x.shape[0])) + (k2 * diffs) @ diffs.T
    return k1[None, :] * torch.linalg.solve(hessian, v)[:, None]
''', 0.5),  # right for the quadratic penalty only
    # takes gamma as a temperature, K = exp(-M / gamma): Sinkhorn still matches the marginals
    "task3_sinkhorn": ("task3_tests", 2, '''
def sinkhorn(M, r, c, gamma, tol=1e-12, max_iter=100000):
    gibbs = torch.exp(-M / gamma)
    b = torch.ones_like(c)
    for _ in range(max_iter):
        a = r / (gibbs @ b)
        b = c / (gibbs.T @ a)
        plan = a[:, None] * gibbs * b[None, :]
        if (plan.sum(1) - r).abs().max() <= tol and (plan.sum(0) - c).abs().max() <= tol:
            return plan
    raise RuntimeError("Sinkhorn did not converge")
''', 0.5),  # the marginals are right; the plan is that of another regularization
    # right values, but forms the constraint matrix A, (m + n - 1) x m n, and solves with it
    "task4_sinkhorn_backward": ("task4_tests", 3, '''
def sinkhorn_backward(P, r, c, gamma, V):
    m, n = P.shape
    rows = torch.kron(torch.eye(m, dtype=P.dtype), torch.ones(1, n, dtype=P.dtype))[1:]
    cols = torch.kron(torch.ones(1, m, dtype=P.dtype), torch.eye(n, dtype=P.dtype))
    A = torch.cat([rows, cols])
    weights = gamma * P.reshape(-1)
    lam = torch.linalg.solve((A * weights) @ A.T, A @ (weights * V.reshape(-1)))
    return (weights * (A.T @ lam - V.reshape(-1))).reshape(m, n)
''', 2),  # the small problems and the flat loss are right; the large one is over the memory allowance
}

DELEGATING = {
    # ad_lib.declarative's penalties, under another name: graded in a Python without ad_lib
    "task1_kappa": '''
def kappa(penalty, z, alpha):
    import importlib

    library = importlib.import_module("ad_" + "lib.declarative")
    return library.kappa(penalty, z, alpha)
''',
    # POT's Sinkhorn (its regularization is 1 / gamma): graded in a Python without POT
    "task3_sinkhorn": '''
def sinkhorn(M, r, c, gamma, tol=1e-12, max_iter=100000):
    import importlib

    pot = importlib.import_module("o" + "t")
    plan = pot.sinkhorn(r.numpy(), c.numpy(), M.numpy(), 1 / gamma, stopThr=tol, numItermax=max_iter)
    return torch.as_tensor(plan)
''',
}

GAMING = {
    # autograd on an engine of its own, put in the place of the one the grader watches, then put back
    "fresh engine": ("task1_kappa", "task1_tests", '''
from torch.autograd.variable import Variable as _V


def kappa(penalty, z, alpha):
    own = torch._C._ImperativeEngine()
    def phi(t):
        if penalty == "quadratic":
            return t * t / 2
        if penalty == "pseudo-huber":
            return alpha * alpha * ((1 + (t / alpha) ** 2).sqrt() - 1)
        if penalty == "welsch":
            return 1 - (-(t * t) / (2 * alpha * alpha)).exp()
        return torch.where(t <= alpha, t * t / 2, alpha * t - alpha * alpha / 2)
    kept, _V._execution_engine = _V._execution_engine, own
    try:
        s = z.detach().clone().requires_grad_(True)
        first, = torch.autograd.grad(phi(s).sum(), s, create_graph=True)
        second, = torch.autograd.grad(first.sum(), s)
    finally:
        _V._execution_engine = kept
    kap1 = first.detach() / z
    return kap1, (second - kap1) / z.square()
''', 0),
    # the naive (n, m, m) tensor, built where the grader's size meter cannot see it
    "meters switched off": ("task2_pooling_backward", "task2_tests", '''
from torch.utils._python_dispatch import _disable_current_modes


def pooling_backward(x, y, v, kappa):
    with _disable_current_modes():
        dims, count = x.shape
        d = y[:, None] - x
        c1, c2 = kappa(d.norm(dim=0))
        per_point = c1[:, None, None] * torch.eye(dims, dtype=x.dtype) + c2[:, None, None] * torch.einsum("in,jn->nij", d, d)
        jac = torch.linalg.solve(per_point.sum(0), per_point.permute(1, 0, 2).reshape(dims, -1)).reshape(dims, count, dims)
        return torch.einsum("i,inj->jn", v, jac).clone()
''', 0),
    # kappa by torch.autograd of phi, twice: right, but not derived
    "autograd kappa": ("task1_kappa", "task1_tests", '''
def kappa(penalty, z, alpha):
    def phi(t):
        if penalty == "quadratic":
            return 0.5 * t**2
        if penalty == "pseudo-huber":
            return alpha**2 * (torch.sqrt(1 + (t / alpha) ** 2) - 1)
        if penalty == "welsch":
            return 1 - torch.exp(-(t**2) / (2 * alpha**2))
        return torch.where(t <= alpha, 0.5 * t**2, alpha * (t - 0.5 * alpha))

    t = z.detach().clone().requires_grad_(True)
    (d1,) = torch.autograd.grad(phi(t).sum(), t, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), t)
    k1 = d1.detach() / z
    return k1, (d2 - k1) / z**2
''', 0),
    # w by hand, then D_x J from a vector-Jacobian product of the optimality condition by autograd
    "autograd pooling": ("task2_pooling_backward", "task2_tests", '''
def pooling_backward(x, y, v, kappa):
    diffs = y[:, None] - x
    k1, k2 = kappa(diffs.norm(dim=0))
    w = torch.linalg.solve(torch.eye(x.shape[0], dtype=x.dtype) * k1.sum() + (k2 * diffs) @ diffs.T, v)
    points = x.clone().requires_grad_(True)
    condition = (kappa((y[:, None] - points).norm(dim=0))[0] * (y[:, None] - points)).sum(dim=1)
    return -torch.autograd.grad(condition, points, grad_outputs=w)[0]
''', 0),
    # recovers a cost matrix from the plan (M = -log P / gamma has the same plan) and unrolls Sinkhorn
    # through torch.autograd
    "unrolled Sinkhorn": ("task4_sinkhorn_backward", "task4_tests", '''
def sinkhorn_backward(P, r, c, gamma, V):
    cost = (-torch.log(P) / gamma).requires_grad_(True)
    gibbs = torch.exp(-gamma * cost)
    b = torch.ones_like(c)
    for _ in range(2000):
        a = r / (gibbs @ b)
        b = c / (gibbs.T @ a)
    return torch.autograd.grad(((a[:, None] * gibbs * b[None, :]) * V).sum(), cost)[0]
''', 0),
    # the product coupling r c^T: right marginals, no Sinkhorn (not of the form diag(u) exp(-s M) diag(v))
    "product coupling": ("task3_sinkhorn", "task3_tests", '''
def sinkhorn(M, r, c, gamma, tol=1e-12, max_iter=100000):
    return r[:, None] * c[None, :]
''', 0),
    # the naive backward pass, the (n, m, m) tensor built in NumPy, outside the size meter's view:
    # graded in a Python without NumPy
    "NumPy pooling": ("task2_pooling_backward", "task2_tests", '''
def pooling_backward(x, y, v, kappa):
    import numpy as np

    X, Y, W = x.numpy(), y.numpy(), v.numpy()
    d = Y[:, None] - X
    k1, k2 = (k.numpy() for k in kappa(torch.from_numpy(np.linalg.norm(d, axis=0))))
    m, n = X.shape
    blocks = k1[:, None, None] * np.eye(m)[None] + k2[:, None, None] * np.einsum("in,jn->nij", d, d)
    D = np.linalg.solve(blocks.sum(0), blocks.transpose(1, 0, 2).reshape(m, -1)).reshape(m, n, m)
    return torch.from_numpy(np.einsum("i,inj->jn", W, D).copy())
''', 0),
    # a zero gradient: what a loss that depends only on the marginals has, and nothing else
    "zero gradient": ("task4_sinkhorn_backward", "task4_tests", '''
def sinkhorn_backward(P, r, c, gamma, V):
    return torch.zeros_like(P)
''', 0),
    # kappa_1 by the complex step, kappa_2 by central differences of it: not derived, and not accurate
    "complex step": ("task1_kappa", "task1_tests", '''
def kappa(penalty, z, alpha):
    def phi(t):
        if penalty == "quadratic":
            return t * t / 2
        if penalty == "pseudo-huber":
            return alpha**2 * (torch.sqrt(1 + (t / alpha) ** 2) - 1)
        if penalty == "welsch":
            return 1 - torch.exp(-t * t / (2 * alpha**2))
        return torch.where(t.real <= alpha, t * t / 2, alpha * (t - alpha / 2))

    def slope(t):
        return phi(t.to(torch.complex128) + 1e-20j).imag / 1e-20

    k1 = slope(z) / z
    second = (slope(z + 1e-4) - slope(z - 1e-4)) / 2e-4
    return k1, (second - k1) / z**2
''', 0),
}
