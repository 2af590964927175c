"""Assignment 13 (optimal transport and Sinkhorn): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/13_sinkhorn.py) that it gets right. DELEGATING = {solution grade_id: code}: right
answers that call what their task forbids (the book's ad_lib.sinkhorn, POT's ot.sinkhorn, under another
name), handed in together; each scores 0 on its task. GAMING = {name: (solution grade_id, test grade_id,
code, score)}: answers that try to score without the work (SciPy's relative entropy, a Python loop over
the problems of a batch, a fixed number of iterations instead of the stopping rule, one run at eps with
stages made up), with what they earn. They fill two submissions (each holds a solution cell once), as
assignment 12's do.
"""

WRONG = {
    # POT's objective <C, P> + eps sum P log P: the same minimizer as the entropic problem, another value
    # (it lacks eps (<a, log a> + <b, log b>) on U(a, b), and the generalized divergence's - P + Q)
    "task1_values": ("task1_tests", 2.5, '''
def entropic_value(P, a, b, C, eps):
    return (P * C).sum((-2, -1)) + eps * torch.xlogy(P, P).sum((-2, -1))


def dual_value(f, g, a, b, C, eps):
    first = (a * f).sum(-1) + (b * g).sum(-1)
    entropy = (a * a.log()).sum(-1) + (b * b.log()).sum(-1)
    gibbs = ((f[..., :, None] + g[..., None, :] - C) / eps).exp().sum((-2, -1))
    return first - eps * entropy - eps * gibbs + eps
''', 1),  # the dual is right
    # Sinkhorn on the multipliers u = exp(f / eps), v = exp(g / eps), with the Gibbs kernel of C - min C (the
    # usual first repair of K = exp(-C / eps) underflowing where C / eps > 745): the same iterates where that
    # kernel is representable, NaN where a whole row of it underflows (rows of the cost 60 apart, eps <= 0.05)
    "task2_sinkhorn": ("task2_tests", 4.5, '''
def log_sinkhorn(a, b, C, eps, tol=1e-9, max_iter=1000, f_init=None):
    low = C.amin(dim=(-2, -1), keepdim=True)  # the smallest cost: exp(-(C - low) / eps) has entries 1
    K = torch.exp(-(C - low) / eps)
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    if f_init is None:
        u = torch.ones(*shape, C.shape[-2], dtype=C.dtype)
    else:
        u = torch.exp((f_init - low.squeeze(-1)) / eps)
    for count in range(1, max_iter + 1):
        v = b / (K.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)
        u = a / (K @ v.unsqueeze(-1)).squeeze(-1)
        P = u.unsqueeze(-1) * K * v.unsqueeze(-2)
        if (P.sum(-2) - b).abs().sum(-1).max() <= tol:
            break
    return P, eps * torch.log(u) + low.squeeze(-1), eps * torch.log(v), count
''', 1),  # the batch without a loop, and the stopping rule, both graded at a moderate eps, are right
    # every stage started cold, from f = 0: the right schedule, tolerances and result, no warm start
    "task3_eps_scaling": ("task3_tests", 4, '''
def eps_scaling(a, b, C, eps, eps_start, decay=0.5, tol=1e-9, stage_tol=1e-3, max_iter=1000):
    levels = [eps_start]
    while levels[-1] * decay > eps:
        levels.append(levels[-1] * decay)
    if levels[-1] > eps:
        levels.append(eps)
    stages = []
    for k, level in enumerate(levels):
        stop = tol if k + 1 == len(levels) else stage_tol
        P, f, g, count = log_sinkhorn(a, b, C, level, tol=stop, max_iter=max_iter, f_init=None)
        stages.append((level, count))
    return P, f, g, stages
''', 2.5),  # the schedule and what it returns are right
}

DELEGATING = {
    # the book's objective and dual, imported under another name: graded in a Python without ad_lib
    "task1_values": '''
def entropic_value(P, a, b, C, eps):
    import importlib

    return importlib.import_module("ad_" + "lib.sinkhorn").entropic_value(P, a, b, C, eps)


def dual_value(f, g, a, b, C, eps):
    import importlib

    return importlib.import_module("ad_" + "lib.sinkhorn").dual_value(f, g, a, b, C, eps)
''',
    # POT's log-domain Sinkhorn (the same iteration, the same start), and where POT cannot be imported the
    # book's: graded in a Python without POT and without ad_lib
    "task2_sinkhorn": '''
def log_sinkhorn(a, b, C, eps, tol=1e-9, max_iter=1000, f_init=None):
    import importlib

    try:
        pot = importlib.import_module("o" + "t")
    except ImportError:
        run = importlib.import_module("ad_" + "lib.sinkhorn").sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter,
                                                                     f_init=f_init, on_failure="ignore")
        return run.plan, run.f, run.g, run.iterations
    P, log = pot.sinkhorn(a, b, C, eps, method="sinkhorn_log", log=True, stopThr=tol, numItermax=max_iter)
    return P, eps * log["log_u"], eps * log["log_v"], int(log["niter"])
''',
    # the book's eps-scaling: no ad_lib there
    "task3_eps_scaling": '''
def eps_scaling(a, b, C, eps, eps_start, decay=0.5, tol=1e-9, stage_tol=1e-3, max_iter=1000):
    import importlib

    book = importlib.import_module("ad_" + "lib.sinkhorn")
    run = book.sinkhorn_eps_scaling(a, b, C, eps, eps_start=eps_start, decay=decay, tol=tol, stage_tol=stage_tol,
                                    max_iter=max_iter)
    return run.plan, run.f, run.g, [(float(e), int(k)) for e, k in run.stages]
''',
}

GAMING = {
    # SciPy's rel_entr (x log(x / y) - x + y, the generalized KL) and NumPy for the dual: neither is there
    "SciPy's relative entropy": ("task1_values", "task1_tests", '''
def entropic_value(P, a, b, C, eps):
    from scipy.special import rel_entr

    outer = a.numpy()[..., :, None] * b.numpy()[..., None, :]
    return (P * C).sum((-2, -1)) + eps * torch.from_numpy(rel_entr(P.numpy(), outer).sum(axis=(-2, -1)))


def dual_value(f, g, a, b, C, eps):
    import numpy

    fn, gn, an, bn, cn = (t.numpy() for t in (f, g, a, b, C))
    mass = numpy.exp((fn[..., :, None] + gn[..., None, :] - cn) / eps).sum(axis=(-2, -1))
    value = (an * (fn - eps * numpy.log(an))).sum(-1) + (bn * (gn - eps * numpy.log(bn))).sum(-1) - eps * mass + eps
    return torch.from_numpy(numpy.asarray(value))
''', 0),
    # a right log-domain iteration for one problem, and a batch solved one problem at a time in a Python loop
    # (each with its own stopping rule, then stacked): right values, but about 16 times the torch operations of
    # one problem for a batch of 16 (the book's Sinkhorn, imported under another name, is in DELEGATING)
    "a loop over the batch": ("task2_sinkhorn", "task2_tests", '''
def log_sinkhorn(a, b, C, eps, tol=1e-9, max_iter=1000, f_init=None):
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    n, m = C.shape[-2], C.shape[-1]
    if len(lead) > 0:
        every_a, every_b = a.expand(*lead, n).reshape(-1, n), b.expand(*lead, m).reshape(-1, m)
        every_C = C.expand(*lead, n, m).reshape(-1, n, m)
        starts = [None] * len(every_C) if f_init is None else list(f_init.expand(*lead, n).reshape(-1, n))
        solved = [log_sinkhorn(every_a[k], every_b[k], every_C[k], eps, tol, max_iter, starts[k])
                  for k in range(len(every_C))]
        plans, fs, gs, runs = zip(*solved)
        return (torch.stack(plans).reshape(*lead, n, m), torch.stack(fs).reshape(*lead, n),
                torch.stack(gs).reshape(*lead, m), max(runs))
    f = torch.zeros(n, dtype=C.dtype) if f_init is None else f_init
    for run in range(1, max_iter + 1):
        g = eps * b.log() - eps * ((f[:, None] - C) / eps).logsumexp(0)
        f = eps * a.log() - eps * ((g[None, :] - C) / eps).logsumexp(1)
        plan = ((f[:, None] + g[None, :] - C) / eps).exp()
        if float((plan.sum(0) - b).abs().sum()) <= tol:
            break
    return plan, f, g, run
''', 4),  # all but the part that counts the operations of a batch
    # a right log-domain iteration run a fixed 1500 times, whatever tol and max_iter say: converged on every
    # problem of the grader (drawn to converge within 1000), but not the stopping rule
    "a fixed number of iterations": ("task2_sinkhorn", "task2_tests", '''
def log_sinkhorn(a, b, C, eps, tol=1e-9, max_iter=1000, f_init=None):
    rows, cols = C.shape[-2:]
    full = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    f = torch.zeros(*full, rows, dtype=C.dtype) if f_init is None else f_init
    for _ in range(1500):
        g = eps * b.log() - eps * ((f.unsqueeze(-1) - C) / eps).logsumexp(-2)
        f = eps * a.log() - eps * ((g.unsqueeze(-2) - C) / eps).logsumexp(-1)
    return ((f.unsqueeze(-1) + g.unsqueeze(-2) - C) / eps).exp(), f, g, 1500
''', 4),  # all but the stopping rule
    # one run at eps, and a list of stages made up from the schedule: the recorder sees a single stage
    "one run, stages made up": ("task3_eps_scaling", "task3_tests", '''
def eps_scaling(a, b, C, eps, eps_start, decay=0.5, tol=1e-9, stage_tol=1e-3, max_iter=1000):
    P, f, g, count = log_sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter)
    made_up, level = [], eps_start
    while level > eps:
        made_up.append((level, 1))
        level *= decay
    return P, f, g, made_up + [(eps, count)]
''', 0),
}
