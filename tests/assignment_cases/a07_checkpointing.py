"""Assignment 7 (recurrent nets, checkpointing, reversible leapfrog): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/07_checkpointing.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids, handed in together; each scores 0 on its task.
GAMING = {name: (solution grade_id, test grade_id, code, score)}: answers that tried to score without
the work (review 7), with what they earn now; tests/test_assignments.py hands them in, packed into
as few submissions as hold each answer cell once, the other tasks answered right. (A revolve_cost
without the check of snapshots loops forever on revolve_cost(5, 0): the grader's probe stops it after
2 seconds and says why, but the visible tests of the notebook would wait for the cell's timeout, a
minute of the test suite, so it is not handed in here.)
"""

WRONG = {
    # forgets that the loss itself depends on W1 (the weight penalty): the recursion is right
    "task1_bptt": ("task1_tests", 3, '''
def bptt_by_hand(x0, W1, W2, y, lam, steps):
    states = [x0]
    for _ in range(steps):
        x = states[-1]
        states.append(x + W2.T @ torch.tanh(W1 @ x))
    residual = states[-1] - y
    loss = 0.5 * float((residual**2).sum()) + 0.5 * lam * float((W1**2).sum())
    z = residual
    grad_W1 = torch.zeros_like(W1)
    grad_W2 = torch.zeros_like(W2)
    for k in range(steps, 0, -1):
        x = states[k - 1]
        u = torch.tanh(W1 @ x)
        grad_W2 = grad_W2 + torch.outer(u, z)
        g = (1 - u**2) * (W2 @ z)
        grad_W1 = grad_W1 + torch.outer(g, x)
        z = z + W1.T @ g
    return {"loss": loss, "grad_x0": z, "grad_W1": grad_W1, "grad_W2": grad_W2}
''', 2),  # the loss and the gradients in x0 and W2 are right; the gradient in W1 misses lam W1
    # takes the binomial coefficient C(s + r, s) of the condition for the subtracted term
    "task2_revolve_cost": ("task2_tests", 3, '''
def revolve_cost(steps, snapshots):
    if snapshots < 1:
        raise ValueError("snapshots must be at least 1")
    if steps <= 1:
        return 0
    r = 0
    while math.comb(snapshots + r, snapshots) < steps:
        r += 1
    return r * steps - math.comb(snapshots + r, snapshots)
''', 0.5),  # only the edge cases (0 and 1 step, the ValueError) are right
    # undoes the two half-steps in the order of the step, not in the reverse order; and the step keeps,
    # in a default argument, what it was called with, keyed by what it returned, which the inverse gives
    # back when it sees a state the step produced: the visible round trip passes. (The grader inverts
    # states it stepped itself, which the student's step never saw.)
    "task3_leapfrog": ("task3_tests", 3, '''
def leapfrog_step(F, G, r, s, tau, _seen={}):
    r_next = r + tau * F(s)
    s_next = s + tau * G(r_next)
    _seen[(tuple(r_next.tolist()), tuple(s_next.tolist()), tau)] = (r.clone(), s.clone())
    return r_next, s_next


def leapfrog_inverse(F, G, r_next, s_next, tau):
    r = r_next - tau * F(s_next)
    s = s_next - tau * G(r)
    seen = leapfrog_step.__defaults__[0]
    return seen.get((tuple(r_next.tolist()), tuple(s_next.tolist()), tau), (r, s))
''', 1.5),  # the step and the count of evaluations are right; the inverse is not (2.5 when the round trip
    # inverted the student's own steps)
    # "reversible is always best": it stores nothing
    "task4_verdicts": ("task4_tests", 2, '''
def memory_verdicts():
    return {"a": "reversible", "b": "reversible", "c": "reversible", "d": "reversible", "e": True}
''', 0.4),  # only (c) is right
}

DELEGATING = {
    # the right gradients, from torch.autograd: the grader watches torch's gradient engine
    "task1_bptt": '''
def bptt_by_hand(x0, W1, W2, y, lam, steps):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x0, W1, W2)]
    x = leaves[0]
    for _ in range(steps):
        x = x + leaves[2].T @ torch.tanh(leaves[1] @ x)
    f = 0.5 * ((x - y) ** 2).sum() + 0.5 * lam * (leaves[1] ** 2).sum()
    grads = torch.autograd.grad(f, leaves, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
    return {"loss": f.item(), "grad_x0": grads[0], "grad_W1": grads[1], "grad_W2": grads[2]}
''',
    # ad_lib.checkpointing's revolve_cost, imported under another name: task 2 is graded in a Python
    # without ad_lib, where the import fails
    "task2_revolve_cost": '''
def revolve_cost(steps, snapshots):
    import importlib

    return importlib.import_module("ad_" + "lib.checkpointing").revolve_cost(steps, snapshots)
''',
    # ad_lib.reversible's step and inverse, wrapped: task 3 is graded in a Python without ad_lib
    "task3_leapfrog": '''
def leapfrog_step(F, G, r, s, tau):
    import importlib

    library = importlib.import_module("ad_" + "lib.reversible")
    return library.leapfrog_step(lambda t, x: F(x), lambda t, x: G(x), r, s, tau)


def leapfrog_inverse(F, G, r_next, s_next, tau):
    import importlib

    library = importlib.import_module("ad_" + "lib.reversible")
    return library.leapfrog_inverse(lambda t, x: F(x), lambda t, x: G(x), r_next, s_next, tau)
''',
}

_FORWARD = '''
def bptt_by_hand(x0, W1, W2, y, lam, steps):
    def f(x0, W1, W2):
        x = x0
        for _ in range(steps):
            x = x + torch.tanh(W1 @ x) @ W2  # W2^T tanh(W1 x), written otherwise
        return 0.5 * ((x - y) ** 2).sum() + 0.5 * lam * (W1 ** 2).sum()
'''

GAMING = {
    # the complex step, one input at a time, in complex128: no automatic differentiation, exact to
    # rounding (3 before the probe watched for complex tensors)
    "complex step": ("task1_bptt", "task1_tests", _FORWARD + '''
    def grad_of(i, T, h=1e-30):
        out = torch.zeros(T.numel(), dtype=torch.float64)
        for j in range(T.numel()):
            args = [x0.to(torch.complex128), W1.to(torch.complex128), W2.to(torch.complex128)]
            e = torch.zeros(T.numel(), dtype=torch.complex128)
            e[j] = 1j * h
            args[i] = args[i] + e.view(T.shape)
            out[j] = f(*args).imag / h
        return out.view(T.shape)

    return {"loss": float(f(x0, W1, W2)), "grad_x0": grad_of(0, x0), "grad_W1": grad_of(1, W1),
            "grad_W2": grad_of(2, W2)}
''', 0),
    # central differences of fourth order (Richardson), one input at a time: about 1e-11, close enough on
    # most parts (2 to 2.5 before the probe measured the work: 100 to 500 evaluations of the loss)
    "finite differences": ("task1_bptt", "task1_tests", _FORWARD + '''
    def grad_of(i, T, h=1e-5):
        out = torch.zeros(T.numel(), dtype=torch.float64)
        for j in range(T.numel()):
            def at(d):
                args = [x0.clone(), W1.clone(), W2.clone()]
                args[i].view(-1)[j] += d
                return float(f(*args))
            out[j] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
        return out.view(T.shape)

    return {"loss": float(f(x0, W1, W2)), "grad_x0": grad_of(0, x0), "grad_W1": grad_of(1, W1),
            "grad_W2": grad_of(2, W2)}
''', 0),
    # a wrong inverse (it subtracts both fields at the given state) behind a memo of the step's calls
    # (2.5 before the round trip inverted states the grader stepped)
    "memo of the step": ("task3_leapfrog", "task3_tests", '''
def leapfrog_step(F, G, r, s, tau, _seen={}):
    r_next = r + tau * F(s)
    s_next = s + tau * G(r_next)
    _seen[(tuple(r_next.tolist()), tuple(s_next.tolist()), tau)] = (r.clone(), s.clone())
    return r_next, s_next


def leapfrog_inverse(F, G, r_next, s_next, tau):
    back = r_next - tau * F(s_next), s_next - tau * G(r_next)
    seen = leapfrog_step.__defaults__[0]
    return seen.get((tuple(r_next.tolist()), tuple(s_next.tolist()), tau), back)
''', 1.5),
}
