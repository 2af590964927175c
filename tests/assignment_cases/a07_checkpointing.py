"""Assignment 7 (recurrent nets, checkpointing, reversible leapfrog): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/07_checkpointing.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids, handed in together; each scores 0 on its task.
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
    # undoes the two half-steps in the order of the step, not in the reverse order
    "task3_leapfrog": ("task3_tests", 3, '''
def leapfrog_step(F, G, r, s, tau):
    r_next = r + tau * F(s)
    s_next = s + tau * G(r_next)
    return r_next, s_next


def leapfrog_inverse(F, G, r_next, s_next, tau):
    r = r_next - tau * F(s_next)
    s = s_next - tau * G(r)
    return r, s
''', 1.5),  # the step and the count of evaluations are right; the inverse is not
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
