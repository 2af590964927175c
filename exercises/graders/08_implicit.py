"""The grader of assignment 8 (implicit differentiation): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/08_implicit/.

Every task is written with torch and graded in a Python without ad_lib (one sandbox and kernel for
the four), so that ad_lib.implicit, under any name or as a copy of its file, cannot solve or
differentiate the fixed points. Task 1 (a fixed point by iteration) is checked against the
grader's own solve, its count against the grader's own run of the stopping rule, on maps the probe
wraps to count their applications. Task 2 (the implicit gradient) receives the fixed point only,
never the iterations, and the probe counts the applications of h: more than two (unrolling the
iterations, from x* or elsewhere, through autograd) scores nothing; the truth is the grader's
Jacobians (torch.autograd.functional.jacobian at its own x*) and a linear solve. Tasks 3 and 4 run
while the probe watches torch's automatic differentiation (watching_autodiff); task 3's probe also
meters the torch operations (grading.operation_meter, a TorchDispatchMode): a complex tensor (the
complex step) or more than two linear solves or factorizations (finite differences in lambda need
three) score nothing on the derivative, whose truth is the grader's closed form. Task 4 is handed
perturbed minimizers (relative error about 1e-6): the envelope formulas must be evaluated at the
point given, so that solving the problem again (and differentiating through the solve) does not
pass; its truth is torch.autograd of the energy at that fixed point, run here. A route outside
torch (numpy) is not metered.
"""

import torch
from grading import ONE_THREAD, Part, Restricted, Task, Wrong, close, operation_meter, watching_autodiff

F64 = torch.float64

WITH_TORCH = {"setup": "import math\nimport torch\nF64 = torch.float64\n" + ONE_THREAD, "without": ["ad_lib"],
              "why": "every task is written with torch and graded in a Python without ad_lib (no ad_lib.implicit)"}


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _contraction(generator, n, factor):
    """A random n-by-n matrix whose spectral norm is `factor`."""
    M = torch.randn(n, n, generator=generator, dtype=F64)
    return factor * M / torch.linalg.matrix_norm(M, ord=2)


# ---------------------------------------------------------------------------------------------
# Task 1: a fixed point by iteration, with a stopping rule on the step
# ---------------------------------------------------------------------------------------------

def _linear_map(A, b):
    return lambda x: A @ x + b


def _tanh_map(W, c):
    return lambda x: 0.5 * torch.tanh(W @ x) + c


def solve_probe(problems):
    import torch

    answers = []
    for kind, M, v, start, tol in problems:
        applied = [0]
        inner = (lambda x: M @ x + v) if kind == "linear" else (lambda x: 0.5 * torch.tanh(M @ x) + v)

        def counted(x, inner=inner):
            applied[0] += 1
            return inner(x)

        point, how_many = fixed_point(counted, start.clone(), tol=tol, max_iter=5000)
        answers.append([point, how_many, applied[0]])
    return answers


def _grader_run(kind, M, v, start, tol):
    """The grader's own run of the stopping rule: (the fixed point to machine precision, the count)."""
    step_map = _linear_map(M, v) if kind == "linear" else _tanh_map(M, v)
    current, stopped_at = start, None
    for k in range(1, 5001):
        following = step_map(current)
        if stopped_at is None and float(torch.linalg.norm(following - current)) <= tol:
            stopped_at = k
        current = following
        if stopped_at is not None and k > stopped_at + 400:
            break
    if kind == "linear":
        current = torch.linalg.solve(torch.eye(M.shape[0], dtype=F64) - M, v)
    return current, stopped_at


def _solve_check(what):
    def check(result, problems):
        if not isinstance(result, list) or len(result) != len(problems):
            raise Wrong("the probe's result has the wrong form")
        for got, (kind, M, v, start, tol) in zip(result, problems):
            if not isinstance(got, list) or len(got) != 3:
                raise Wrong("fixed_point should return a pair (x, count)")
            point, how_many, applied = got
            truth, stopped_at = _grader_run(kind, M, v, start, tol)
            if what == "point":
                if type(point) is not torch.Tensor or tuple(point.shape) != tuple(start.shape):
                    raise Wrong("x should be a tensor of the shape of x0")
                # a contraction by rho <= 0.8 stops within rho tol / (1 - rho) <= 4 tol of its fixed point
                if not float(torch.linalg.norm(point.double() - truth)) <= 4.5 * tol + 1e-14:
                    raise Wrong(f"the point returned is not within the tolerance of the fixed point of a {kind} "
                                "contraction")
            else:
                if type(how_many) is not int:
                    raise Wrong("count should be a Python int")
                if how_many != applied:
                    raise Wrong("count should be the number of applications of h, and h applied that many times")
                if how_many != stopped_at:
                    raise Wrong(f"the count differs from the first k at which the step ||x_(k+1) - x_k|| falls to "
                                f"tol (a {kind} contraction)")
    return check


def _solve_inputs(rng):
    generator, problems = _gen(rng), []
    for kind in ("linear", "tanh", rng.choice(["linear", "tanh"])):
        n = rng.randint(2, 6)
        M = _contraction(generator, n, rng.uniform(0.2, 0.8) if kind == "linear" else rng.uniform(0.3, 1.0))
        v, start = torch.randn(n, generator=generator, dtype=F64), torch.randn(n, generator=generator, dtype=F64)
        problems.append((kind, M, v, start, 10 ** -rng.uniform(7, 12)))
    return {"problems": problems}


def diverges_probe(c, max_iter):
    import torch

    applied = [0]

    def flip(x):
        applied[0] += 1
        return c - x

    try:
        fixed_point(flip, torch.zeros_like(c), tol=1e-10, max_iter=max_iter)
    except NotImplementedError:
        return ["other", "NotImplementedError"]
    except RuntimeError:
        # the same function on a contraction (x -> (x + c) / 2) returns: it does not always raise
        try:
            fixed_point(lambda x: (x + c) / 2, torch.zeros_like(c), tol=1e-10, max_iter=1000)
        except Exception as error:  # noqa: BLE001 (its name is the answer)
            return ["always", type(error).__name__]
        return ["raised", applied[0]]
    except Exception as error:  # noqa: BLE001 (its name is the answer)
        return ["other", type(error).__name__]
    return ["returned", applied[0]]


def check_diverges(result, c, max_iter):
    if not isinstance(result, list) or len(result) != 2:
        raise Wrong("the probe's result has the wrong form")
    if result[0] == "always":
        raise Wrong("fixed_point raised on a contraction too (x -> (x + c) / 2): raise only when max_iter "
                    "applications do not reach the tolerance")
    if result[0] != "raised":
        raise Wrong("a map that does not converge within max_iter applications should raise a RuntimeError")
    if result[1] != max_iter:
        raise Wrong("the RuntimeError should come after exactly max_iter applications of h")


TASK1 = Task(
    restricted=Restricted(cells=["task1_fixed_point"], **WITH_TORCH),
    parts=[
        Part(1, "the point: within the tolerance of the fixed point of linear and nonlinear contractions",
             solve_probe, _solve_check("point"), _solve_inputs),
        Part(0.5, "the count: the number of applications of h, the first k at which the step falls to tol",
             solve_probe, _solve_check("count"), _solve_inputs),
        Part(0.5, "a map that never converges (x -> c - x): a RuntimeError after max_iter applications of h (and "
                  "none on a contraction)",
             diverges_probe, check_diverges,
             lambda rng: {"c": torch.randn(rng.randint(2, 5), generator=_gen(rng), dtype=F64) + 3,
                          "max_iter": rng.randint(5, 60)}),
    ])


# ---------------------------------------------------------------------------------------------
# Task 2: the implicit gradient, from one application of h
# ---------------------------------------------------------------------------------------------

def gradient_probe(kind, M, N, d, theta, x_star, g):
    import torch

    applied = [0]

    def h(x, t):
        applied[0] += 1
        if kind == "linear":
            return M @ x + N @ t
        if kind == "tanh":
            return 0.6 * torch.tanh(M @ x + N @ t + d)
        return 0.5 * torch.tanh(t @ x) + d  # a matrix parameter t

    kept = [x_star.clone(), theta.clone(), g.clone()]
    got = implicit_gradient(h, x_star, theta, g)
    unchanged = all(torch.equal(a, b) for a, b in zip(kept, (x_star, theta, g)))
    wants_grad = bool(getattr(got, "requires_grad", False))
    return [got.detach() if type(got) is torch.Tensor else got, applied[0], unchanged, wants_grad]


def _grader_map(kind, M, N, d):
    if kind == "linear":
        return lambda x, t: M @ x + N @ t
    if kind == "tanh":
        return lambda x, t: 0.6 * torch.tanh(M @ x + N @ t + d)
    return lambda x, t: 0.5 * torch.tanh(t @ x) + d


def _implicit_truth(kind, M, N, d, theta, x_star, g):
    step_map = _grader_map(kind, M, N, d)
    jx, jt = torch.autograd.functional.jacobian(step_map, (x_star, theta))
    n = x_star.shape[0]
    w = torch.linalg.solve((torch.eye(n, dtype=F64) - jx).T, g)
    return (jt.reshape(n, -1).T @ w).reshape(theta.shape)


def _gradient_check(words):
    def check(result, kind, M, N, d, theta, x_star, g):
        if not isinstance(result, list) or len(result) != 4:
            raise Wrong("the probe's result has the wrong form")
        got, applied, unchanged, wants_grad = result
        if applied > 2:
            raise Wrong(f"implicit_gradient applied h {applied} times: differentiate one application of h (the "
                        "grader allows two), not the iterations")
        close(got, _implicit_truth(kind, M, N, d, theta, x_star, g), rtol=1e-8, atol=1e-10,
              what=f"the implicit gradient for {words}")
        if wants_grad:
            raise Wrong("the gradient returned should not require gradients (detach it)")
        if not unchanged:
            raise Wrong("implicit_gradient changed x_star, theta or g in place")
    return check


def _gradient_inputs(kind):
    def make(rng):
        generator = _gen(rng)
        n, p = rng.randint(2, 6), rng.randint(1, 5)
        factor = rng.uniform(0.3, 0.85)
        if kind == "matrix":
            M, N = torch.zeros(0, dtype=F64), torch.zeros(0, dtype=F64)
            theta = _contraction(generator, n, rng.uniform(0.5, 1.0))
        else:
            M = _contraction(generator, n, factor if kind == "linear" else 1.0)
            N = torch.randn(n, p, generator=generator, dtype=F64)
            theta = torch.randn(p, generator=generator, dtype=F64)
        d = torch.randn(n, generator=generator, dtype=F64)
        step_map = _grader_map(kind, M, N, d)
        if kind == "linear":
            x_star = torch.linalg.solve(torch.eye(n, dtype=F64) - M, N @ theta)
        else:
            x_star = torch.zeros(n, dtype=F64)
            for _ in range(600):  # a contraction by 0.6 at most: converged to rounding
                x_star = step_map(x_star, theta)
        return {"kind": kind, "M": M, "N": N, "d": d, "theta": theta, "x_star": x_star,
                "g": torch.randn(n, generator=generator, dtype=F64)}
    return make


TASK2 = Task(
    restricted=Restricted(cells=["task2_implicit_gradient"], **WITH_TORCH),
    parts=[
        Part(1.5, "a linear map h(x, theta) = M x + N theta, against (I - M)^(-T) solved by the grader; h applied "
                  "at most twice, inputs unchanged", gradient_probe, _gradient_check("a linear map"),
             _gradient_inputs("linear")),
        Part(1, "a nonlinear contraction h(x, theta) = 0.6 tanh(M x + N theta + d), against the grader's Jacobians "
                "at x*", gradient_probe, _gradient_check("a nonlinear map"), _gradient_inputs("tanh")),
        Part(0.5, "a matrix parameter, h(x, W) = 0.5 tanh(W x) + d: the gradient has the shape of W",
             gradient_probe, _gradient_check("a matrix parameter"), _gradient_inputs("matrix")),
    ])


# ---------------------------------------------------------------------------------------------
# Task 3: ridge regression's solution and its derivative in lambda, by hand
# ---------------------------------------------------------------------------------------------

def ridge_probe(problems):
    meter = operation_meter()

    def run():
        answers = []
        for A, b, lam in problems:
            watch = meter(watch="solve_ex|inv_ex|cholesky_ex|lstsq|pinv|lu_factor|linalg_lu|eigh|linalg_qr|svd|"
                                "linalg_eig|cholesky_inverse|geqrf|linalg_ldl")  # solves and factorizations
            with watch:
                got = ridge_derivative(A.clone(), b.clone(), lam)
            answers.append([list(got) if type(got) in (tuple, list) else got, watch.hits, watch.complex])
        return answers

    return watching_autodiff(run)


def _ridge_truth(A, b, lam):
    K = A.T @ A + lam * torch.eye(A.shape[1], dtype=F64)
    solution = torch.linalg.solve(K, A.T @ b)
    return solution, -torch.linalg.solve(K, solution)


def _ridge_check(what):
    def check(result, problems):
        answers, torch_ran, _ = result
        if not isinstance(answers, list) or len(answers) != len(problems):
            raise Wrong("the probe's result has the wrong form")
        for (got, solves, complex_seen), (A, b, lam) in zip(answers, problems):
            if type(got) is not list or len(got) != 2:
                raise Wrong("ridge_derivative should return a pair (x_star, dx_dlam)")
            solution, derivative = _ridge_truth(A, b, lam)
            if what == "solution":
                close(got[0], solution, rtol=1e-11, atol=1e-13, what="x_star")
                continue
            if torch_ran:
                raise Wrong("ridge_derivative ran torch's automatic differentiation: use the implicit function "
                            "theorem, by hand")
            if complex_seen:
                raise Wrong("ridge_derivative computed with complex numbers (the complex step): use the implicit "
                            "function theorem, by hand")
            if solves > 2:
                raise Wrong(f"ridge_derivative ran {solves} linear solves or factorizations, where two suffice "
                            "(finite differences in lambda need more): use the implicit function theorem")
            close(got[1], derivative, rtol=1e-11, atol=1e-13, what="dx*/dlam")
    return check


def _ridge_inputs(rng):
    generator, problems = _gen(rng), []
    for _ in range(3):
        p, n = rng.randint(2, 9), rng.randint(2, 6)
        problems.append((torch.randn(p, n, generator=generator, dtype=F64),
                         torch.randn(p, generator=generator, dtype=F64), round(rng.uniform(0.2, 2.0), 4)))
    return {"problems": problems}


TASK3 = Task(
    restricted=Restricted(cells=["task3_ridge"], **WITH_TORCH),
    parts=[
        Part(0.5, "x_star, the ridge solution (A^T A + lambda I)^(-1) A^T b", ridge_probe, _ridge_check("solution"),
             _ridge_inputs),
        Part(1.5, "dx*/dlam from the implicit function theorem: no automatic differentiation, no complex numbers, "
                  "at most two solves", ridge_probe, _ridge_check("derivative"), _ridge_inputs),
    ])
for _part in TASK3.parts:
    _part.helpers = (watching_autodiff, operation_meter)


# ---------------------------------------------------------------------------------------------
# Task 4: the envelope theorem, at the (approximate) minimizer given
# ---------------------------------------------------------------------------------------------

def envelope_probe(problems):
    def run():
        return [ridge_value_gradients(A.clone(), b.clone(), lam, x.clone()) for A, b, lam, x in problems]

    return watching_autodiff(run)


def _partials(A, b, lam, x):
    """The energy at the fixed point x and its partial derivatives in (A, b, lambda), by torch.autograd."""
    leaves = [A.clone().requires_grad_(True), b.clone().requires_grad_(True),
              torch.tensor(lam, dtype=F64, requires_grad=True)]
    energy = 0.5 * torch.sum((leaves[0] @ x - leaves[1]) ** 2) + 0.5 * leaves[2] * torch.sum(x * x)
    d_A, d_b, d_lam = torch.autograd.grad(energy, leaves)
    return {"value": energy.item(), "A": d_A, "b": d_b, "lam": d_lam.item()}


def _envelope_check(key, words):
    def check(result, problems):
        answers, torch_ran, _ = result
        if torch_ran:
            raise Wrong("ridge_value_gradients ran torch's automatic differentiation: write the partial "
                        "derivatives by hand")
        if not isinstance(answers, list) or len(answers) != len(problems):
            raise Wrong("the probe's result has the wrong form")
        for got, (A, b, lam, x) in zip(answers, problems):
            if type(got) is not dict or key not in got:
                raise Wrong(f"ridge_value_gradients should return a dict with the key {key!r}")
            want = _partials(A, b, lam, x)[key]
            if key in ("value", "lam") and type(got[key]) is not float:
                raise Wrong(f"{words} should be a Python float")
            close(got[key], want, rtol=1e-10, atol=1e-12,
                  what=f"{words} at the approximate minimizer given (evaluate there; do not solve again)")
    return check


def _envelope_inputs(rng):
    generator, problems = _gen(rng), []
    for _ in range(3):
        p, n = rng.randint(3, 9), rng.randint(2, 5)
        A, b = torch.randn(p, n, generator=generator, dtype=F64), torch.randn(p, generator=generator, dtype=F64)
        lam = round(rng.uniform(0.1, 2.0), 4)
        minimizer = torch.linalg.solve(A.T @ A + lam * torch.eye(n, dtype=F64), A.T @ b)
        # what an iterative solver stopped at: a relative error of about 1e-6
        noise = torch.randn(n, generator=generator, dtype=F64)
        problems.append((A, b, lam, minimizer + 1e-6 * float(torch.linalg.norm(minimizer)) * noise))
    return {"problems": problems}


TASK4 = Task(
    restricted=Restricted(cells=["task4_envelope"], **WITH_TORCH),
    parts=[Part(0.5, f"{words}, by hand, at the point given", envelope_probe, _envelope_check(key, words),
                _envelope_inputs)
           for key, words in (("value", "the energy"), ("lam", "the derivative in lambda"),
                              ("b", "the gradient in b"), ("A", "the gradient in A"))])
for _part in TASK4.parts:
    _part.helpers = (watching_autodiff,)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4}
