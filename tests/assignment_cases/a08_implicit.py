"""Assignment 8 (implicit differentiation): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/08_implicit.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids (ad_lib.implicit), handed in together; each scores 0
on its task. GAMING = {name: (solution grade_id, test grade_id, code, score)}: answers that try to
score without the work the task asks for, with what they earn.
"""

WRONG = {
    # counts the steps after the first application, one fewer than the applications of h
    "task1_fixed_point": ("task1_tests", 2, '''
def fixed_point(h, x0, tol=1e-10, max_iter=1000):
    previous, latest = x0, h(x0)
    iterations = 0
    while float(torch.linalg.norm(latest - previous)) > tol:
        iterations += 1
        if iterations >= max_iter:
            raise RuntimeError("not converged")
        previous, latest = latest, h(latest)
    return latest, iterations
''', 1.5),  # the point and the error are right; the count is one short
    # the one-step gradient: w = g, as if the Jacobian in x were zero
    "task2_implicit_gradient": ("task2_tests", 3, '''
def implicit_gradient(h, x_star, theta, g):
    params = theta.detach().clone().requires_grad_(True)
    image = h(x_star.detach(), params)
    return torch.autograd.grad(image, params, grad_outputs=g)[0].detach()
''', 0),  # wrong on every map whose Jacobian in x is not zero
    # a sign lost: (A^T A + lam I) dx/dlam = + x*
    "task3_ridge": ("task3_tests", 2, '''
def ridge_derivative(A, b, lam):
    gram = A.T @ A + lam * torch.eye(A.shape[1], dtype=A.dtype)
    solution = torch.linalg.solve(gram, A.T @ b)
    return solution, torch.linalg.solve(gram, solution)
''', 0.5),  # x_star is right
    # the gradient in A transposed, x r^T instead of r x^T (and reshaped to the shape of A)
    "task4_envelope": ("task4_tests", 2, '''
def ridge_value_gradients(A, b, lam, x_star):
    r = A @ x_star - b
    total = 0.5 * float(r.dot(r)) + 0.5 * lam * float(x_star.dot(x_star))
    return {"value": total, "lam": 0.5 * float(x_star.dot(x_star)), "b": b - A @ x_star,
            "A": torch.outer(x_star, r).reshape(A.shape)}
''', 1.5),  # the value and the derivatives in lam and b are right
}

DELEGATING = {
    # ad_lib.implicit's fixed-point solver, imported under another name: graded in a Python without ad_lib
    "task1_fixed_point": '''
def fixed_point(h, x0, tol=1e-10, max_iter=1000):
    import importlib

    solver = importlib.import_module("ad_" + "lib.implicit")
    return solver.fixed_point(h, x0, tol=tol, max_iter=max_iter)
''',
    "task2_implicit_gradient": '''
def implicit_gradient(h, x_star, theta, g):
    import importlib

    library = importlib.import_module("ad_" + "lib.implicit")
    return library.implicit_vjp(h, x_star, theta, g)
''',
}

GAMING = {
    # unrolls from x*, then finds the grader's count of h's applications in h's closure and sets it back
    "counter reset": ("task2_implicit_gradient", "task2_tests", '''
def implicit_gradient(h, x_star, theta, g):
    count = None
    for box in h.__closure__ or ():
        if isinstance(box.cell_contents, list) and box.cell_contents and isinstance(box.cell_contents[0], int):
            count = box.cell_contents
    leaf = theta.detach().clone().requires_grad_(True)
    state = x_star.detach()
    for _ in range(300):
        state = h(state, leaf)
    if count is not None:
        count[0] = 1
    return torch.autograd.grad(state, leaf, grad_outputs=g)[0].detach()
''', 0),
    # unrolls 300 applications of h from x* with autograd: the truncated Neumann series, right to rounding,
    # but it stores every iterate; the grader counts the applications of h
    "unrolled iterations": ("task2_implicit_gradient", "task2_tests", '''
def implicit_gradient(h, x_star, theta, g):
    leaf = theta.detach().clone().requires_grad_(True)
    state = x_star.detach()
    for _ in range(300):
        state = h(state, leaf)
    (grad,) = torch.autograd.grad(state, leaf, grad_outputs=g)
    return grad.detach()
''', 0),
    # dx*/dlam by torch.autograd through the solve: right, but not by hand
    "autograd through the solve": ("task3_ridge", "task3_tests", '''
def ridge_derivative(A, b, lam):
    weight = torch.tensor(float(lam), dtype=A.dtype, requires_grad=True)
    sol = torch.linalg.solve(A.T @ A + weight * torch.eye(A.shape[1], dtype=A.dtype), A.T @ b)
    rows = [torch.autograd.grad(sol[i], weight, retain_graph=True)[0] for i in range(sol.numel())]
    return sol.detach(), torch.stack(rows)
''', 0.5),
    # central differences in lambda: three solves; to about 1e-10
    "central differences": ("task3_ridge", "task3_tests", '''
def ridge_derivative(A, b, lam, step=1e-5):
    def at(value):
        return torch.linalg.solve(A.T @ A + value * torch.eye(A.shape[1], dtype=A.dtype), A.T @ b)

    return at(lam), (at(lam + step) - at(lam - step)) / (2 * step)
''', 0.5),
    # solves the problem again and differentiates the optimal value through the solve: right at the exact
    # minimizer, but it ignores the point given (and lets autograd do the work)
    "solve again": ("task4_envelope", "task4_tests", '''
def ridge_value_gradients(A, b, lam, x_star):
    A_, b_ = A.clone().requires_grad_(True), b.clone().requires_grad_(True)
    lam_ = torch.tensor(float(lam), dtype=A.dtype, requires_grad=True)
    best = torch.linalg.solve(A_.T @ A_ + lam_ * torch.eye(A.shape[1], dtype=A.dtype), A_.T @ b_)
    f = 0.5 * ((A_ @ best - b_) ** 2).sum() + 0.5 * lam_ * (best**2).sum()
    dA, db, dlam = torch.autograd.grad(f, [A_, b_, lam_])
    return {"value": f.item(), "lam": dlam.item(), "b": db, "A": dA}
''', 0),
    # applies h max_iter times and always raises: the error part alone, for no solver
    "always raises": ("task1_fixed_point", "task1_tests", '''
def fixed_point(h, x0, tol=1e-10, max_iter=1000):
    for _ in range(max_iter):
        x0 = h(x0)
    raise RuntimeError("no fixed point within max_iter applications of h")
''', 0),
}
