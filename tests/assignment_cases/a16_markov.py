"""Assignment 16 (optimal transport between Markov chains): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/16_markov.py) that it gets right. DELEGATING = {solution grade_id: code}: right
answers that use what their task forbids (ot_markov_distances' Sinkhorn for the inner problems, NumPy for the
stationary distributions, torch.autograd through the linearized fixed point), handed in together; each
scores 0 on its task. The entries of GAMING = {name: (solution grade_id, test grade_id, code, score)}:
answers that try to score without the work (a Python loop over the pairs, with a call of the solver per
pair or with one batched call and the rest pair by pair; a fixed number of iterations instead of the
stopping rule; the iterate before the one that met the test, as ot_markov_distances returns it; a fixed
number of steps of the backward iteration) or that miss a requirement the visible tests also check (the
gradients in the rows not centered), with what they earn. They fill two submissions (each holds a
solution cell once), as assignment 14's do.
"""

WRONG = {
    # the transport cost <D, P> of the entropic plans without the entropic term: the plans and the row
    # gradients are right, the values are not those of the map T the conventions define
    "task1_step": ("task1_tests", 3.5, '''
def bellman_step(PX, PY, D, eps, solve):
    n, m = D.shape
    a, b = PX[:, None, :].expand(n, m, n), PY[None, :, :].expand(n, m, m)
    f, g = solve(a, b, D, eps)
    plans = torch.exp((f[..., :, None] + g[..., None, :] - D) / eps)
    alpha, beta = f - eps * a.log(), g - eps * b.log()
    return (plans * D).sum((-2, -1)), plans, alpha - alpha.mean(-1, keepdim=True), beta - beta.mean(-1, keepdim=True)
''', 2),  # the plans and the row gradients are right
    # the distance as C_inf averaged under the product coupling mu nu^T, not its entropic transport; and the
    # loop gives up at its max_iter-th step before testing its residual (an off-by-one: tol met there raises)
    "task2_fixed_point": ("task2_tests", 4, '''
def markov_ot_distance(PX, PY, C, delta, eps, tol=1e-10, max_iter=1000, mu=None, nu=None, step=None):
    if step is None:
        def step(*args):
            return bellman_step(*args, converged_potentials)
    def invariant(P):
        q = P.shape[0]
        return torch.linalg.solve(torch.eye(q, dtype=P.dtype) - P.T + 1, torch.ones(q, dtype=P.dtype))
    D, count = delta * C, 0
    while True:
        count += 1
        out = step(PX, PY, D, eps)
        D_next = delta * C + (1 - delta) * out[0]
        gap = float((D_next - D).abs().max())
        D = D_next
        if count == max_iter:
            raise RuntimeError(f"not converged after {max_iter} steps, residual {gap:.2e}")
        if gap <= tol:
            break
    mu = invariant(PX) if mu is None else mu
    nu = invariant(PY) if nu is None else nu
    return {"cost": D, "distance": mu @ D @ nu, "iterations": count, "residual": gap,
            "plans": out[1], "alpha": out[2], "beta": out[3]}
''', 1.5),  # C_inf is right (the stopping rule fails where tol is met at max_iter = k)
    # K L = G solved in place of K^T L = G (the Jacobian applied forward, not transposed)
    "task3_gradients": ("task3_tests", 3.5, '''
def markov_gradients(plans, alpha, beta, G, delta):
    n, m = G.shape
    K = torch.eye(n * m, dtype=G.dtype) - (1 - delta) * plans.reshape(n * m, n * m)
    L = torch.linalg.solve(K, G.reshape(-1)).reshape(n, m)
    gx = (1 - delta) * torch.einsum("ij,ijk->ik", L, alpha)
    gy = (1 - delta) * torch.einsum("ij,ijl->jl", L, beta)
    return delta * L, gx - gx.mean(1, keepdim=True), gy - gy.mean(1, keepdim=True)
''', 0),
}

DELEGATING = {
    # the package's batched Sinkhorn (GeomLoss's potentials: its f is the multiplier itself) for the inner
    # problems, solve called once for show: right, but graded in a Python without ot_markov_distances
    "task1_step": '''
def bellman_step(PX, PY, D, eps, solve):
    import importlib

    inner = importlib.import_module("ot_markov_" + "distances.sinkhorn").sinkhorn_internal
    n, m = D.shape
    a, b = PX[:, None, :].expand(n, m, n), PY[None, :, :].expand(n, m, m)
    solve(a, b, D, eps)
    f, g, log_plans = inner(a, b, D, eps, 5000, check_convergence_interval=10, cv_atol=1e-13, cv_rtol=0)
    values = (f * a).sum(-1) + (g * b).sum(-1)
    return values, log_plans.exp(), f - f.mean(-1, keepdim=True), g - g.mean(-1, keepdim=True)
''',
    # the stationary distributions by NumPy's eigenvectors: right, but graded in a Python without NumPy
    "task2_fixed_point": '''
def markov_ot_distance(PX, PY, C, delta, eps, tol=1e-10, max_iter=1000, mu=None, nu=None, step=None):
    import numpy

    if step is None:
        def step(*args):
            return bellman_step(*args, converged_potentials)
    def invariant(P):
        w, v = numpy.linalg.eig(P.T.numpy())
        x = torch.tensor(v[:, abs(w - 1).argmin()].real, dtype=P.dtype)
        return x / x.sum()
    D = delta * C
    for count in range(1, max_iter + 1):
        out = step(PX, PY, D, eps)
        D_next = delta * C + (1 - delta) * out[0]
        gap = float((D_next - D).abs().max())
        D = D_next
        if gap <= tol:
            break
    else:
        raise RuntimeError(f"residual {gap} above tol after max_iter steps")
    mu = invariant(PX) if mu is None else mu
    nu = invariant(PY) if nu is None else nu
    f, g = converged_potentials(mu, nu, D, eps)
    lp = (f[:, None] + g[None, :] - D) / eps
    Q = lp.exp()
    kl = (Q * (lp - mu.log()[:, None] - nu.log()[None, :]) - Q).sum() + 1
    return {"cost": D, "distance": (Q * D).sum() + eps * kl, "iterations": count, "residual": gap,
            "plans": out[1], "alpha": out[2], "beta": out[3]}
''',
    # torch.autograd through 400 steps of the linearized fixed point Z = delta c + (1 - delta) (P Z + A x + B y)
    # at c = x = y = 0: exactly the gradients, and exactly the automatic differentiation the task forbids
    "task3_gradients": '''
def markov_gradients(plans, alpha, beta, G, delta):
    n, m = G.shape
    with torch.enable_grad():
        c = torch.zeros(n, m, dtype=G.dtype, requires_grad=True)
        x = torch.zeros(n, n, dtype=G.dtype, requires_grad=True)
        y = torch.zeros(m, m, dtype=G.dtype, requires_grad=True)
        push = torch.einsum("ijk,ik->ij", alpha, x) + torch.einsum("ijl,jl->ij", beta, y)
        Z = torch.zeros(n, m, dtype=G.dtype)
        for _ in range(400):
            Z = delta * c + (1 - delta) * (torch.einsum("ijkl,kl->ij", plans, Z) + push)
        gc, gx, gy = torch.autograd.grad((G * Z).sum(), (c, x, y))
    return gc, gx - gx.mean(1, keepdim=True), gy - gy.mean(1, keepdim=True)
''',
}

GAMING = {
    # a Python loop over the pairs, one call of the solver for each: right values, n m calls
    "a solve per pair": ("task1_step", "task1_tests", '''
def bellman_step(PX, PY, D, eps, solve):
    n, m = D.shape[0], D.shape[1]
    vals = torch.zeros(n, m, dtype=D.dtype)
    pl = torch.zeros(n, m, n, m, dtype=D.dtype)
    al = torch.zeros(n, m, n, dtype=D.dtype)
    be = torch.zeros(n, m, m, dtype=D.dtype)
    for i in range(n):
        for j in range(m):
            u, w = solve(PX[i], PY[j], D, eps)
            Q = ((u[:, None] + w[None, :] - D) / eps).exp()
            prod = PX[i][:, None] * PY[j][None, :]
            vals[i, j] = (Q * D).sum() + eps * (Q * (Q / prod).log() - Q + prod).sum()
            pl[i, j] = Q
            al[i, j] = u - eps * PX[i].log() - (u - eps * PX[i].log()).mean()
            be[i, j] = w - eps * PY[j].log() - (w - eps * PY[j].log()).mean()
    return vals, pl, al, be
''', 0),
    # one batched call of the solver (the count is right), then the values, plans and gradients pair by pair
    "one solve, then a loop over the pairs": ("task1_step", "task1_tests", '''
def bellman_step(PX, PY, D, eps, solve):
    n, m = D.shape[0], D.shape[1]
    F, H = solve(PX[:, None, :].expand(n, m, n), PY[None, :, :].expand(n, m, m), D, eps)
    rows = []
    for i in range(n):
        for j in range(m):
            Q = ((F[i, j][:, None] + H[i, j][None, :] - D) / eps).exp()
            prod = PX[i][:, None] * PY[j][None, :]
            u, w = F[i, j] - eps * PX[i].log(), H[i, j] - eps * PY[j].log()
            rows.append(((Q * D).sum() + eps * (Q * (Q / prod).log() - Q + prod).sum(), Q, u - u.mean(), w - w.mean()))
    vals = torch.stack([r[0] for r in rows]).reshape(n, m)
    pl = torch.stack([r[1] for r in rows]).reshape(n, m, n, m)
    al = torch.stack([r[2] for r in rows]).reshape(n, m, n)
    be = torch.stack([r[3] for r in rows]).reshape(n, m, m)
    return vals, pl, al, be
''', 0),
    # the stopping rule met, but the iterate before it returned (as ot_markov_distances does): C^(k-1)
    "the iterate before": ("task2_fixed_point", "task2_tests", '''
def markov_ot_distance(PX, PY, C, delta, eps, tol=1e-10, max_iter=1000, mu=None, nu=None, step=None):
    if step is None:
        def step(*args):
            return bellman_step(*args, converged_potentials)
    def invariant(P):
        pi = torch.ones(P.shape[0], dtype=P.dtype) / P.shape[0]
        for _ in range(3000):
            pi = pi @ P
        return pi
    X = delta * C
    for count in range(1, max_iter + 1):
        out = step(PX, PY, X, eps)
        Y = delta * C + (1 - delta) * out[0]
        gap = float((Y - X).abs().max())
        if gap <= tol:
            break
        X = Y
    else:
        raise RuntimeError(f"residual {gap} > tol")
    mu = invariant(PX) if mu is None else mu
    nu = invariant(PY) if nu is None else nu
    f, g = converged_potentials(mu, nu, X, eps)
    lp = (f[:, None] + g[None, :] - X) / eps
    Q = lp.exp()
    kl = (Q * (lp - mu.log()[:, None] - nu.log()[None, :]) - Q).sum() + 1
    return {"cost": X, "distance": (Q * X).sum() + eps * kl, "iterations": count, "residual": gap,
            "plans": out[1], "alpha": out[2], "beta": out[3]}
''', 3),  # all but the stopping rule (C^(k-1) is within tol / delta of C_inf)
    # 300 applications of T whatever tol: converged (C_inf and the distances are right), no stopping rule
    "a fixed number of iterations": ("task2_fixed_point", "task2_tests", '''
def markov_ot_distance(PX, PY, C, delta, eps, tol=1e-10, max_iter=1000, mu=None, nu=None, step=None):
    if step is None:
        def step(*args):
            return bellman_step(*args, converged_potentials)
    def invariant(P):
        pi = torch.ones(P.shape[0], dtype=P.dtype) / P.shape[0]
        for _ in range(3000):
            pi = pi @ P
        return pi
    X = delta * C
    for _ in range(300):
        out = step(PX, PY, X, eps)
        Y = delta * C + (1 - delta) * out[0]
        gap, X = float((Y - X).abs().max()), Y
    mu = invariant(PX) if mu is None else mu
    nu = invariant(PY) if nu is None else nu
    f, g = converged_potentials(mu, nu, X, eps)
    lp = (f[:, None] + g[None, :] - X) / eps
    Q = lp.exp()
    kl = (Q * (lp - mu.log()[:, None] - nu.log()[None, :]) - Q).sum() + 1
    return {"cost": X, "distance": (Q * X).sum() + eps * kl, "iterations": 300, "residual": gap,
            "plans": out[1], "alpha": out[2], "beta": out[3]}
''', 3),  # all but the stopping rule
    # a fixed 25 steps of the backward iteration: (1 - delta)^25 is 0.02 or more at the grader's small delta
    "25 steps of the backward iteration": ("task3_gradients", "task3_tests", '''
def markov_gradients(plans, alpha, beta, G, delta):
    n, m = G.shape[0], G.shape[1]
    M = plans.reshape(n * m, n * m).T
    V = G.reshape(-1)
    for _ in range(25):
        V = G.reshape(-1) + (1 - delta) * (M @ V)
    V = V.reshape(n, m)
    gx = (1 - delta) * torch.einsum("ij,ijk->ik", V, alpha)
    gy = (1 - delta) * torch.einsum("ij,ijl->jl", V, beta)
    return delta * V, gx - gx.mean(1, keepdim=True), gy - gy.mean(1, keepdim=True)
''', 0),
    # right solve, but the gradients in the rows not centered (the visible tests check the row sums)
    "rows not centered": ("task3_gradients", "task3_tests", '''
def markov_gradients(plans, alpha, beta, G, delta):
    n, m = G.shape[0], G.shape[1]
    K = torch.eye(n * m, dtype=G.dtype) - (1 - delta) * plans.reshape(n * m, n * m)
    V = torch.linalg.solve(K.T, G.reshape(-1)).reshape(n, m)
    return delta * V, (1 - delta) * torch.einsum("ij,ijk->ik", V, alpha), (1 - delta) * torch.einsum("ij,ijl->jl", V, beta)
''', 1.5),  # grad_C is right
}
