"""Assignment 15 (Wasserstein barycenters): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/15_barycenter.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids (the book's ad_lib.barycenter under another name,
torch.autograd through the iterations), handed in together; each scores 0 on its task. The entries of
GAMING = {name: (solution grade_id, test grade_id, code, score)}: answers that try to score without the
work (a fixed number of iterations instead of the stopping rule, a Python loop over the problems of a
batch, one with its one-problem call padded to hide it, central differences of the L iterations batched over
every entry, torch.func.vjp, a descent through autograd of its own instead of the given barycenter_vjp), with
what they earn. They fill two
submissions (each holds a solution cell once), as assignment 14's do.
"""

WRONG = {
    # the iteration on the multipliers u, v with the kernel of C minus each row's minimum (the usual repair of
    # exp(-C / eps) underflowing, stronger than subtracting min C, whose kernel has rows of zeros on the
    # grader's costs): the same iterates where that kernel is representable, NaN where a whole column of it
    # underflows (one column of the hard costs 60 above the others, eps <= 0.05)
    "task1_barycenter": ("task1_tests", 4.5, '''
def barycenter_log(A, C, weights, eps, tol=1e-9, max_iter=1000):
    Kern = (-(C - C.min(dim=1, keepdim=True).values) / eps).exp()
    shape = torch.broadcast_shapes(A.shape[:-2], weights.shape[:-1]) + A.shape[-2:]
    V = torch.ones(shape, dtype=A.dtype)
    for it in range(1, max_iter + 1):
        U = A / (Kern @ V)
        KtU = Kern.transpose(0, 1) @ U
        c = V * KtU
        p = torch.exp((torch.log(c) * weights.unsqueeze(-2)).sum(-1))
        err = (weights * (c - p.unsqueeze(-1)).abs().sum(-2)).sum(-1)
        if (tol > 0 and err.max() <= tol) or it == max_iter:
            break
        V = p.unsqueeze(-1) / KtU
    return p, it
''', 1),  # the batch without a loop, and the stopping rule, both graded at a moderate eps, are right
    # the backward pass forgets that log p_l holds g_{l-1} directly (only the path through h_l and f_l):
    # grad_A comes out right all the same (the two ways of writing log p agree on the simplex), grad_weights not
    "task2_vjp": ("task2_tests", 4.5, '''
def barycenter_vjp(A, C, weights, eps, L):
    R = A.T
    G, Rs, H = [torch.zeros_like(R)], [], []
    for l in range(L):
        r = -eps * torch.logsumexp((G[-1][:, None, :] - C) / eps, dim=2)
        h = eps * torch.logsumexp(((eps * torch.log(R) + r)[:, :, None] - C) / eps, dim=1)
        Rs.append(r)
        H.append(h)
        ell = (weights[:, None] * (G[-1] + h)).sum(0) / eps
        G.append(eps * ell[None, :] - h)
    p = torch.exp(ell)

    def pullback(w):
        ba, bl, bg = torch.zeros_like(R), torch.zeros_like(weights), torch.zeros_like(R)
        for l in reversed(range(L)):
            be = eps * bg.sum(0) + (w * p if l == L - 1 else 0)
            bl = bl + ((G[l] + H[l]) / eps * be).sum(1)
            bh = weights[:, None] * be / eps - bg
            Q = torch.exp(((eps * torch.log(R) + Rs[l])[:, :, None] - C - H[l][:, None, :]) / eps)
            bf = (Q * bh[:, None, :]).sum(2)
            ba = ba + eps * bf / R
            P = torch.exp((G[l][:, None, :] - C + Rs[l][:, :, None]) / eps)
            bg = -(P * bf[:, :, None]).sum(1)
        return ba.T, bl - bl.mean()

    return p, pullback
''', 3),  # the barycenter and grad_A are right
    # exponentiated gradient: theta moved along the gradient in the weights, without the softmax's Jacobian
    "task3_coding": ("task3_tests", 2, '''
def barycentric_coding(x, D, C, eps, L, steps, lr):
    theta = torch.zeros(D.shape[1], dtype=D.dtype)
    losses = []
    for s in range(steps):
        lam = torch.softmax(theta, 0)
        p, pullback = barycenter_vjp(D, C, lam, eps, L)
        losses.append(float(((p - x) ** 2).sum()))
        theta = theta - lr * pullback(2 * (p - x))[1]
    return torch.softmax(theta, 0), losses
''', 0.5),  # the losses are right
}

DELEGATING = {
    # the book's barycenter, imported under another name: right, but graded in a Python without ad_lib
    "task1_barycenter": '''
def barycenter_log(A, C, weights, eps, tol=1e-9, max_iter=1000):
    import importlib

    book = importlib.import_module("ad_" + "lib.barycenter")
    result = book.barycenter(A, C, weights, eps, max_iter=max_iter, tol=tol, on_failure="ignore")
    return result.barycenter, result.iterations
''',
    # torch.autograd through the same L iterations: exactly right, and exactly what the task forbids
    "task2_vjp": '''
def barycenter_vjp(A, C, weights, eps, L):
    with torch.autograd.set_grad_enabled(True):
        A0, w0 = A.detach().clone().requires_grad_(True), weights.detach().clone().requires_grad_(True)
        V = torch.zeros_like(A0)
        for _ in range(L):
            F = eps * A0.log() - eps * torch.logsumexp((V.T[:, None, :] - C) / eps, -1).T
            Hh = eps * torch.logsumexp((F.T[:, :, None] - C) / eps, 1).T
            logbar = ((V + Hh) * w0).sum(1) / eps
            V = eps * logbar[:, None] - Hh
        bary = logbar.exp()

    def pullback(w):
        dA, dw = torch.autograd.grad(bary, (A0, w0), w, retain_graph=True)
        return dA, dw - dw.mean()

    return bary.detach(), pullback
''',
    # the book's barycenter and its backward pass through autograd, in place of the given barycenter_vjp
    "task3_coding": '''
def barycentric_coding(x, D, C, eps, L, steps, lr):
    import importlib

    book = importlib.import_module("ad_" + "lib.barycenter")
    theta = torch.zeros(D.shape[1], dtype=D.dtype, requires_grad=True)
    losses = []
    for s in range(steps):
        p = book.barycenter(D, C, torch.softmax(theta, 0), eps, max_iter=L, tol=0).barycenter
        loss = ((p - x) ** 2).sum()
        losses.append(float(loss.detach()))
        (grad,) = torch.autograd.grad(loss, theta)
        theta = (theta - lr * grad).detach().requires_grad_(True)
    return torch.softmax(theta, 0).detach(), losses
''',
}

GAMING = {
    # max_iter iterations every time, whatever tol (no stopping rule), and a loop over the problems of a batch whose
    # one-problem call is padded with additions of no use, so that the batch runs fewer than 4 times the operations
    # of one problem alone (it passed the batch's part before the grader compared the batch with a batch of two)
    "a fixed number of iterations, and a padded loop": ("task1_barycenter", "task1_tests", '''
def barycenter_log(A, C, weights, eps, tol=1e-9, max_iter=1000):
    def sweeps(Ab, wb):
        G = torch.zeros(Ab.shape[1], Ab.shape[0], dtype=Ab.dtype)
        for sweep in range(max_iter):
            F = eps * Ab.T.log() - eps * torch.logsumexp((G[:, None, :] - C) / eps, 2)
            Hh = eps * torch.logsumexp((F[:, :, None] - C) / eps, 1)
            logbar = (wb[:, None] * (G + Hh)).sum(0) / eps
            G = eps * logbar - Hh
        return logbar.exp()
    if A.dim() == 3 or weights.dim() == 2:
        size = torch.broadcast_shapes(A.shape[:-2], weights.shape[:-1])
        As = A.expand(*size, *A.shape[-2:]).reshape(-1, *A.shape[-2:])
        ws = weights.expand(*size, weights.shape[-1]).reshape(-1, weights.shape[-1])
        return torch.stack([sweeps(As[b], ws[b]) for b in range(As.shape[0])]).reshape(*size, -1), max_iter
    filler = torch.zeros(())
    for _ in range(100 * max_iter):
        filler = filler + 0.0
    return sweeps(A, weights), max_iter
''', 3.5),  # everything but the stopping rule and the batch's part
    # right, one problem at a time: a Python loop over the problems of a batch
    "a loop over the batch": ("task1_barycenter", "task1_tests", '''
def barycenter_log(A, C, weights, eps, tol=1e-9, max_iter=1000):
    if A.dim() > 2 or weights.dim() > 1:
        size = torch.broadcast_shapes(A.shape[:-2], weights.shape[:-1])
        As = A.expand(*size, *A.shape[-2:]).reshape(-1, *A.shape[-2:])
        ws = weights.expand(*size, weights.shape[-1]).reshape(-1, weights.shape[-1])
        runs = [barycenter_log(As[b], C, ws[b], eps, tol, max_iter) for b in range(As.shape[0])]
        return torch.stack([r[0] for r in runs]).reshape(*size, -1), max(r[1] for r in runs)
    G = torch.zeros(A.shape[1], A.shape[0], dtype=A.dtype)
    for it in range(1, max_iter + 1):
        F = eps * A.T.log() - eps * torch.logsumexp((G[:, None, :] - C) / eps, 2)
        Hh = eps * torch.logsumexp((F[:, :, None] - C) / eps, 1)
        logc = (G + Hh) / eps
        logbar = (weights[:, None] * logc).sum(0)
        gap = (weights * (logc.exp() - logbar.exp()).abs().sum(1)).sum()
        if (tol > 0 and gap <= tol) or it == max_iter:
            break
        G = eps * logbar - Hh
    return logbar.exp(), it
''', 4),  # everything but the batch's part
    # central differences of <w, p_L>, every perturbation of A and of the weights in one batch (no autograd,
    # no complex numbers): right to about 1e-9 at best, and far past the budget of work
    "batched finite differences": ("task2_vjp", "task2_tests", '''
def barycenter_vjp(A, C, weights, eps, L):
    def bary(Ab, wb):
        V = torch.zeros(Ab.shape[0], Ab.shape[2], Ab.shape[1], dtype=Ab.dtype)
        for _ in range(L):
            F = eps * Ab.transpose(1, 2).log() - eps * torch.logsumexp((V[..., None, :] - C) / eps, -1)
            Hh = eps * torch.logsumexp((F[..., :, None] - C) / eps, -2)
            logbar = (wb[..., :, None] * (V + Hh)).sum(-2) / eps
            V = eps * logbar[..., None, :] - Hh
        return logbar.exp()
    bins, hists = A.shape
    step = 1e-6
    E = step * torch.eye(bins * hists, dtype=A.dtype).reshape(-1, bins, hists)
    many = weights.expand(bins * hists, hists)
    J_A = (bary(A + E, many) - bary(A - E, many)) / (2 * step)
    Ew = step * torch.eye(hists, dtype=A.dtype)
    same = A.expand(hists, bins, hists)
    J_w = (bary(same, weights + Ew) - bary(same, weights - Ew)) / (2 * step)

    def vjp_fn(cot):
        gw = J_w @ cot
        return (J_A @ cot).reshape(bins, hists), gw - gw.mean()

    return bary(A[None], weights[None])[0], vjp_fn
''', 0),
    # torch.func.vjp of the L iterations: the pullback is automatic differentiation
    "torch.func.vjp": ("task2_vjp", "task2_tests", '''
def barycenter_vjp(A, C, weights, eps, L):
    def bary(Ain, win):
        V = torch.zeros(Ain.shape[1], Ain.shape[0], dtype=Ain.dtype)
        for _ in range(L):
            F = eps * Ain.T.log() - eps * torch.logsumexp((V.unsqueeze(1) - C) / eps, 2)
            Hh = eps * torch.logsumexp((F.unsqueeze(2) - C) / eps, 1)
            logbar = (win.unsqueeze(1) * (V + Hh)).sum(0) / eps
            V = eps * logbar - Hh
        return logbar.exp()
    p, back = torch.func.vjp(bary, A, weights)

    def vjp_fn(cot):
        dA, dw = back(cot)
        return dA, dw - dw.mean()

    return p, vjp_fn
''', 0),
    # the descent right, through autograd of its own L iterations, without the given barycenter_vjp
    "a descent of its own": ("task3_coding", "task3_tests", '''
def barycentric_coding(x, D, C, eps, L, steps, lr):
    theta = torch.zeros(D.shape[1], dtype=D.dtype, requires_grad=True)
    losses = []
    for s in range(steps):
        lw = torch.softmax(theta, 0)
        V = torch.zeros(D.shape[1], D.shape[0], dtype=D.dtype)
        for _ in range(L):
            F = eps * D.T.log() - eps * torch.logsumexp((V.unsqueeze(1) - C) / eps, 2)
            Hh = eps * torch.logsumexp((F.unsqueeze(2) - C) / eps, 1)
            logbar = (lw.unsqueeze(1) * (V + Hh)).sum(0) / eps
            V = eps * logbar - Hh
        loss = ((logbar.exp() - x) ** 2).sum()
        losses.append(float(loss.detach()))
        (grad,) = torch.autograd.grad(loss, theta)
        theta = (theta - lr * grad).detach().requires_grad_(True)
    return torch.softmax(theta, 0).detach(), losses
''', 0),
}
