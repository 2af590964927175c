"""Assignment 14 (differentiating Sinkhorn): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/14_sinkhorn_gradients.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids (the book's ad_lib.sinkhorn_gradients under another name,
torch.autograd through the iterations, torch.func on the envelope objective), handed in together; each
scores 0 on its task. The entries of GAMING = {name: (solution grade_id, test grade_id, code, score)}:
answers that try to score without the work, with what they earn: torch.func.grad of the dual objective;
the complex step through the set-up's solver, batched over every entry of a, b and C (task 1); central
differences of the K iterations batched over every entry; the converged plan in place of the recursion
(task 2); central differences of the values at the three plans held fixed (quadratic in x, so exact, and
three calls of solve); the complex step of S through the set-up's converged_potentials, called by name
(task 3). The complex steps and the differences at the fixed plans had full marks before tasks 1 and 3 had
a budget of work. They fill two submissions (each holds a solution cell once), as assignment 12's do; two
earlier entries made way for them (gradients in a and b not centered, which the visible tests check too
and the hidden ones compare entry by entry with centered truths; finite differences of S re-solving
through solve, which task 3's budget now stops as it stops the differences at the fixed plans).
"""

WRONG = {
    # POT's envelope gradient: f and g centered, without the -eps log a and -eps log b of the multipliers
    "task1_envelope": ("task1_tests", 3.5, '''
def envelope_gradients(f, g, a, b, C, eps):
    P = torch.exp((f[..., :, None] + g[..., None, :] - C) / eps)
    return f - f.mean(-1, keepdim=True), g - g.mean(-1, keepdim=True), P
''', 1),  # grad_C is right
    # the forward pass right, but the backward walk stops one iteration early (k = K, ..., 2)
    "task2_recursion": ("task2_tests", 4.5, '''
def sinkhorn_value_and_grad(a, b, C, eps, K):
    F, G = [torch.zeros_like(a)], []
    for _ in range(K):
        G.append(eps * torch.log(b) - eps * torch.logsumexp((F[-1][:, None] - C) / eps, dim=0))
        F.append(eps * torch.log(a) - eps * torch.logsumexp((G[-1][None, :] - C) / eps, dim=1))
    P = torch.exp((F[-1][:, None] + G[-1][None, :] - C) / eps)
    phi = (F[-1] - eps * torch.log(a))[:, None] + (G[-1] - eps * torch.log(b))[None, :] - eps
    value = (P * phi).sum() + eps * a.sum() * b.sum()
    bf, bg, bC = P.sum(1) + (P * phi).sum(1) / eps, P.sum(0) + (P * phi).sum(0) / eps, -P * phi / eps
    ba, bb = eps * (b.sum() - P.sum(1) / a), eps * (a.sum() - P.sum(0) / b)
    for k in range(K, 1, -1):
        s = bf / a
        Pk = torch.exp((F[k][:, None] + G[k - 1][None, :] - C) / eps)
        bg, bC, ba = bg - Pk.T @ s, bC + s[:, None] * Pk, ba + eps * s
        t = bg / b
        Qk = torch.exp((F[k - 1][:, None] + G[k - 1][None, :] - C) / eps)
        bf, bC, bb = -(Qk @ t), bC + Qk * t[None, :], bb + eps * t
        bg = 0 * bg
    return value, ba, bb, bC
''', 1),  # the value is right
    # OT(x, x)'s gradient with x as the sources only: half of it (the targets' half forgotten)
    "task3_divergence": ("task3_tests", 3, '''
def sinkhorn_divergence(x, y, eps, solve):
    def ot(p, q):
        C = torch.cdist(p, q) ** 2
        u = torch.ones(p.shape[0], dtype=p.dtype) / p.shape[0]
        w = torch.ones(q.shape[0], dtype=q.dtype) / q.shape[0]
        f, g = solve(u, w, C, eps)
        P = torch.exp((f[:, None] + g[None, :] - C) / eps)
        return (C * P).sum() + eps * (P * (torch.log(P) - torch.log(u[:, None] * w[None, :]))).sum(), P
    vxy, Pxy = ot(x, y)
    vxx, Pxx = ot(x, x)
    vyy, _ = ot(y, y)
    gxy = 2 * (Pxy.sum(1, keepdim=True) * x - Pxy @ y)
    gxx = 2 * (Pxx.sum(1, keepdim=True) * x - Pxx @ x)
    return vxy - 0.5 * (vxx + vyy), gxy - 0.5 * gxx
''', 1),  # the value is right
}

DELEGATING = {
    # the book's centering and plan, imported under another name: right, but graded in a Python without ad_lib
    "task1_envelope": '''
def envelope_gradients(f, g, a, b, C, eps):
    import importlib

    book = importlib.import_module("ad_" + "lib.sinkhorn_gradients")
    plan = importlib.import_module("ad_" + "lib.sinkhorn").plan_from_potentials(f, g, C, eps)
    return book.centered(f - eps * a.log()), book.centered(g - eps * b.log()), plan
''',
    # torch.autograd through the same K iterations: exactly right, and exactly what the task forbids
    "task2_recursion": '''
def sinkhorn_value_and_grad(a, b, C, eps, K):
    with torch.enable_grad():
        a, b, C = (t.detach().clone().requires_grad_(True) for t in (a, b, C))
        f = torch.zeros_like(a)
        for _ in range(K):
            g = eps * b.log() - eps * torch.logsumexp((f.unsqueeze(1) - C) / eps, 0)
            f = eps * a.log() - eps * torch.logsumexp((g.unsqueeze(0) - C) / eps, 1)
        P = torch.exp((f.unsqueeze(1) + g.unsqueeze(0) - C) / eps)
        v = (C * P).sum() + eps * (P * ((f.unsqueeze(1) + g.unsqueeze(0) - C) / eps
                                        - a.log().unsqueeze(1) - b.log().unsqueeze(0)) - P).sum() + eps * a.sum() * b.sum()
        grads = torch.autograd.grad(v, (a, b, C))
    return (v.detach(), *grads)
''',
    # torch.func.grad of the envelope objective at the fixed plans: right, but automatic differentiation
    "task3_divergence": '''
def sinkhorn_divergence(x, y, eps, solve):
    def pieces(p, q):
        sq = torch.cdist(p, q) ** 2
        wp = torch.full((len(p),), 1.0 / len(p), dtype=p.dtype)
        wq = torch.full((len(q),), 1.0 / len(q), dtype=q.dtype)
        f, g = solve(wp, wq, sq, eps)
        pl = ((f.unsqueeze(1) + g.unsqueeze(0) - sq) / eps).exp()
        return (sq * pl).sum() + eps * (pl * (pl / wp.unsqueeze(1) / wq.unsqueeze(0)).log() - pl).sum() + eps, pl
    (u, Pu), (v, Pv), (w, _) = pieces(x, y), pieces(x, x), pieces(y, y)
    objective = lambda z: (torch.cdist(z, y) ** 2 * Pu).sum() - 0.5 * (torch.cdist(z, z) ** 2 * Pv).sum()
    return u - (v + w) / 2, torch.func.grad(objective)(x)
''',
}

GAMING = {
    # torch.func.grad of the dual objective at the fixed multipliers: Danskin by automatic differentiation
    "torch.func on the dual": ("task1_envelope", "task1_tests", '''
def envelope_gradients(f, g, a, b, C, eps):
    al, be = f - eps * a.log(), g - eps * b.log()
    def dual(w, z, K):
        e = torch.expm1((al.unsqueeze(-1) + be.unsqueeze(-2) - K) / eps)
        return (al * w).sum() + (be * z).sum() - eps * (w.unsqueeze(-1) * z.unsqueeze(-2) * e).sum()
    ga, gb, gC = torch.func.grad(dual, argnums=(0, 1, 2))(a, b, C)
    return ga - ga.mean(-1, keepdim=True), gb - gb.mean(-1, keepdim=True), gC
''', 0),
    # the complex step through the set-up's solver, every entry of a, b and C perturbed at once in one batch of
    # problems: right to rounding (full marks before task 1 had a meter), but a Sinkhorn run per entry, past
    # the budget of work, and complex
    "complex step through the solver": ("task1_envelope", "task1_tests", '''
def envelope_gradients(f, g, a, b, C, eps):
    lead, n, m = C.shape[:-2], C.shape[-2], C.shape[-1]
    N = n + m + n * m
    h = 1e-30
    E = torch.eye(N, dtype=C.dtype)
    A = a.unsqueeze(-2) + 1j * h * E[:, :n]
    B = b.unsqueeze(-2) + 1j * h * E[:, n:n + m]
    M = C.unsqueeze(-3) + 1j * h * E[:, n + m:].reshape(N, n, m)
    F, G = converged_potentials(A, B, M, eps)
    plans = torch.exp((F.unsqueeze(-1) + G.unsqueeze(-2) - M) / eps)
    lagr = (F - eps * torch.log(A)).unsqueeze(-1) + (G - eps * torch.log(B)).unsqueeze(-2) - eps
    V = (plans * lagr).sum((-2, -1)) + eps * A.sum(-1) * B.sum(-1)
    d = V.imag / h
    ga, gb, gC = d[..., :n], d[..., n:n + m], d[..., n + m:].reshape(*lead, n, m)
    return ga - ga.mean(-1, keepdim=True), gb - gb.mean(-1, keepdim=True), gC
''', 0),
    # central differences of the K iterations, all perturbations of C, a and b at once in one batch
    # (complex step and autograd avoided): right to about 1e-10, but far past the budget of work
    "batched finite differences": ("task2_recursion", "task2_tests", '''
def sinkhorn_value_and_grad(a, b, C, eps, K):
    def V(A, B, M):
        f = torch.zeros_like(A)
        for it in range(K):
            g = eps * B.log() - eps * torch.logsumexp((f.unsqueeze(-1) - M) / eps, -2)
            f = eps * A.log() - eps * torch.logsumexp((g.unsqueeze(-2) - M) / eps, -1)
        lp = (f.unsqueeze(-1) + g.unsqueeze(-2) - M) / eps
        P = lp.exp()
        kl = P * (lp - A.log().unsqueeze(-1) - B.log().unsqueeze(-2)) - P
        return (M * P).sum((-1, -2)) + eps * kl.sum((-1, -2)) + eps * A.sum(-1) * B.sum(-1)
    rows, cols = C.shape
    h = 1e-6
    dC = h * torch.eye(rows * cols, dtype=C.dtype).reshape(-1, rows, cols)
    gC = (V(a, b, C + dC) - V(a, b, C - dC)).reshape(rows, cols) / (2 * h)
    da, db = h * torch.eye(rows, dtype=a.dtype), h * torch.eye(cols, dtype=b.dtype)
    ga = (V(a + da, b, C) - V(a - da, b, C)) / (2 * h)
    gb = (V(a, b + db, C) - V(a, b - db, C)) / (2 * h)
    return V(a, b, C), ga, gb, gC
''', 0),
    # the envelope formula at the K-th iterates (their plan and multipliers) in place of the recursion: exact
    # only at convergence, and the grader's K iterations are far from it; the value is right
    "the envelope instead of the recursion": ("task2_recursion", "task2_tests", '''
def sinkhorn_value_and_grad(a, b, C, eps, K):
    f = 0 * a
    for step in range(K):
        g = eps * torch.log(b) - eps * torch.logsumexp((f[:, None] - C) / eps, dim=0)
        f = eps * torch.log(a) - eps * torch.logsumexp((g[None, :] - C) / eps, dim=1)
    PK = torch.exp((f[:, None] + g[None, :] - C) / eps)
    value = (C * PK).sum() + eps * (PK * (torch.log(PK / a[:, None] / b[None, :])) - PK).sum() + eps * a.sum() * b.sum()
    return value, f - eps * torch.log(a), g - eps * torch.log(b), PK
''', 1),  # the value is right
    # the three plans from solve, then central differences in x of <C(x), P> + eps KL(P | a b^T) at the plans
    # held fixed: quadratic in x, so exact up to rounding, with three calls of solve (full marks before task 3
    # had a meter); 2 n d evaluations of an n x m objective, far past the budget of work
    "finite differences at the fixed plans": ("task3_divergence", "task3_tests", '''
def sinkhorn_divergence(x, y, eps, solve):
    def parts(p, q):
        sq = torch.cdist(p, q) ** 2
        wp = torch.ones(len(p), dtype=p.dtype) / len(p)
        wq = torch.ones(len(q), dtype=q.dtype) / len(q)
        f, g = solve(wp, wq, sq, eps)
        pl = ((f.unsqueeze(1) + g.unsqueeze(0) - sq) / eps).exp()
        return wp, wq, pl
    def objective(p, q, wp, wq, pl):
        sq = torch.cdist(p, q) ** 2
        return (sq * pl).sum() + eps * (pl * (pl / wp.unsqueeze(1) / wq.unsqueeze(0)).log() - pl).sum() + eps
    fixed = {"xy": parts(x, y), "xx": parts(x, x), "yy": parts(y, y)}
    def S(z):
        return (objective(z, y, *fixed["xy"]) - 0.5 * objective(z, z, *fixed["xx"])
                - 0.5 * objective(y, y, *fixed["yy"]))
    grad = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for k in range(x.shape[1]):
            e = torch.zeros_like(x)
            e[i, k] = 1e-3
            grad[i, k] = (S(x + e) - S(x - e)) / 2e-3
    return S(x), grad
''', 0),
    # the complex step of S through the set-up's converged_potentials, called by name (not solve, whose calls
    # are counted), re-solving the three problems for every coordinate: right to rounding, and full marks
    # before task 3 had a meter; stopped at its first complex tensor
    "complex step through the set-up's solver": ("task3_divergence", "task3_tests", '''
def sinkhorn_divergence(x, y, eps, solve):
    def OT(p, q):
        sq = ((p.unsqueeze(1) - q.unsqueeze(0)) ** 2).sum(-1)
        wp = torch.ones(len(p), dtype=torch.float64) / len(p)
        wq = torch.ones(len(q), dtype=torch.float64) / len(q)
        f, g = converged_potentials(wp + 0j, wq + 0j, sq, eps)
        pl = torch.exp((f.unsqueeze(1) + g.unsqueeze(0) - sq) / eps)
        lagr = (f - eps * torch.log(wp)).unsqueeze(1) + (g - eps * torch.log(wq)).unsqueeze(0) - eps
        return (pl * lagr).sum() + eps
    def S(z):
        return OT(z, y) - (OT(z, z) + OT(y + 0j, y + 0j)) / 2
    grad = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for k in range(x.shape[1]):
            e = torch.zeros(x.shape, dtype=torch.complex128)
            e[i, k] = 1e-30j
            grad[i, k] = S(x + e).imag / 1e-30
    return S(x + 0j).real, grad
''', 0),
}
