"""The grader of assignment 1 (finite differences): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/01_finite_differences/.

Tasks 1, 2, 4 and 5 are written by hand: they run in a second sandbox without ad_lib (one kernel
for the four, after the set-up below), so ad_lib.finite_diff and its EvaluationCounter, under any
name or as a copy of its file, cannot be used there. What torch offers instead cannot pass either:
tasks 1 and 2 are compared with the difference quotients at large steps (0.05 to 0.2), where they
differ from the exact derivative that torch.autograd or torch.func would return; task 4's functions
record where they are evaluated (the complex point x + ih, in complex128), and the complex step is
checked where it is not the derivative (at a large step, and on two functions that are not
holomorphic), which no automatic differentiation, real or complex, returns.
"""

import math

import torch
from grading import Part, Restricted, Task, Wrong, close, verdict_check

F64 = torch.float64

BY_HAND = {"setup": "import math\nimport torch\nF64 = torch.float64", "without": ["ad_lib"],
           "why": "tasks 1, 2, 4 and 5 are written by hand: they are graded in a Python without ad_lib"}


def _by_hand(cell: str) -> Restricted:
    return Restricted(cells=[cell], **BY_HAND)


def _tensor(rng, shape, low, high, dtype=F64):
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    return (low + (high - low) * torch.rand(shape, generator=generator, dtype=F64)).to(dtype)


# ---------------------------------------------------------------------------------------------
# Tasks 1 and 2: difference quotients of functions of a tensor of any shape
# ---------------------------------------------------------------------------------------------

def gradients(method, cases):  # sent with _family
    import torch

    function = __student__.get(method)
    if function is None:
        raise NameError(method)
    results = []
    for kind, a, x, h in cases:
        calls = [0]

        def f(X, kind=kind, a=a, calls=calls):
            calls[0] += 1
            return _family(kind, a, X)

        before = x.clone()
        G = function(f, x, h=h)
        results.append([G, calls[0], bool(torch.equal(x, before))])
    return results


def _family(kind, a, X):
    import torch

    flat = X.reshape(-1)
    if kind == "exp":
        return torch.exp(a * X).sum() + flat[0] * flat[-1]
    if kind == "lse":
        return torch.logsumexp(a * flat, 0)
    return (torch.sin(a * X) * X).sum()


def _quotients(method, kind, a, x, h):
    """The forward or central quotients along each entry of x, in float64."""
    flat = x.to(F64).reshape(-1)
    at = lambda point: _family(kind, a, point.reshape(x.shape))  # noqa: E731
    fx = at(flat)
    out = torch.empty_like(flat)
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = h
        if method == "forward_gradient":
            out[i] = (at(flat + step) - fx) / h
        else:
            out[i] = (at(flat + step) - at(flat - step)) / (2 * h)
    return out.reshape(x.shape)


def _results(result, cases):
    if type(result) is not list or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    return zip(result, cases)


def _quotients_check(what, evaluations=False, unchanged=False):
    def check(result, method, cases):
        for (G, calls, same), (kind, a, x, h) in _results(result, cases):
            expected = _quotients(method, kind, a, x, h).to(x.dtype)
            tolerance = 1e-9 if x.dtype == F64 else 1e-3
            close(G, expected, rtol=tolerance, atol=tolerance, what=f"the gradient of {what}")
            p = x.numel()
            if evaluations and method == "forward_gradient" and calls != p + 1:
                raise Wrong(f"forward differences need p + 1 evaluations of f for the p = {p} entries of x; "
                            f"yours made {calls}")
            if evaluations and method == "central_gradient" and calls != 2 * p:
                raise Wrong(f"central differences need 2p evaluations of f for the p = {p} entries of x; "
                            f"yours made {calls}")
            if unchanged and not same:
                raise Wrong("x was changed: compute the gradient without changing the tensor you are given")
    return check


def _case(rng, kind, shape, h, dtype=F64, a=(0.8, 1.6)):
    return (kind, round(rng.uniform(*a), 3), _tensor(rng, shape, -1.2, 1.2, dtype), h)


def _shape(rng, dims):
    return tuple(rng.randint(2, 3) for _ in range(dims))


def _kinds(rng):
    kinds = ["exp", "lse", "sin"]
    rng.shuffle(kinds)
    return kinds


def _gradient_inputs(method, make):
    return lambda rng: {"method": method, "cases": make(rng)}


TASK1 = Task(restricted=_by_hand("task1_forward_gradient"), parts=[
    Part(1, "the forward quotients (not the exact derivative) of functions of a matrix x at large steps "
            "(0.05 and 0.1), shaped like x, in its dtype", gradients, _quotients_check("a matrix x"),
         _gradient_inputs("forward_gradient", lambda rng: [_case(rng, "exp", _shape(rng, 2), rng.choice([0.1, 0.05])),
                                                           _case(rng, _kinds(rng)[0], _shape(rng, 2), 0.1)])),
    Part(1, "exactly p + 1 evaluations of f (counted by the grader), with the right quotients", gradients,
         _quotients_check("a matrix x", evaluations=True),
         _gradient_inputs("forward_gradient", lambda rng: [_case(rng, _kinds(rng)[0], (rng.randint(2, 4), 3), 0.1)])),
    Part(0.5, "a float32 x: the quotients in float32", gradients, _quotients_check("a float32 x"),
         _gradient_inputs("forward_gradient", lambda rng: [_case(rng, "exp", (rng.randint(3, 5),), 0.1, torch.float32,
                                                                 a=(1.3, 1.7))])),
    Part(0.5, "a 3-d x, which is left unchanged", gradients, _quotients_check("a 3-d x", unchanged=True),
         _gradient_inputs("forward_gradient", lambda rng: [_case(rng, _kinds(rng)[0], _shape(rng, 3), 0.1)])),
])

TASK2 = Task(restricted=_by_hand("task2_central_gradient"), parts=[
    Part(1, "the central quotients (not the exact derivative) of functions of a vector at large steps (0.1 and 0.2)",
         gradients, _quotients_check("a vector x"),
         _gradient_inputs("central_gradient", lambda rng: [_case(rng, kind, (rng.randint(3, 6),), h) for kind, h in
                                                           zip(_kinds(rng), (0.1, 0.2))])),
    Part(0.5, "exactly 2p evaluations of f (counted by the grader), with the right quotients", gradients,
         _quotients_check("a vector x", evaluations=True),
         _gradient_inputs("central_gradient", lambda rng: [_case(rng, _kinds(rng)[0], (rng.randint(3, 7),), 0.1)])),
    Part(0.5, "any shape and dtype (a matrix, a 3-d x, a float32 vector): the gradient shaped like x, in its dtype, "
              "and x left unchanged", gradients, _quotients_check("x of another shape or dtype", unchanged=True),
         _gradient_inputs("central_gradient", lambda rng: [
             _case(rng, _kinds(rng)[0], _shape(rng, 2), 0.1), _case(rng, _kinds(rng)[0], _shape(rng, 3), 0.1),
             _case(rng, "exp", (rng.randint(3, 5),), 0.2, torch.float32, a=(1.3, 1.7))])),
])

for _part in TASK1.parts + TASK2.parts:
    _part.helpers = (_family,)  # the probe, in the student's kernel, evaluates the functions the grader uses


# ---------------------------------------------------------------------------------------------
# Task 3: the median error, the best step of a list, the predicted best step
# ---------------------------------------------------------------------------------------------

def forward_errors(medians, bests):
    import torch

    table = {"exp": (torch.exp, torch.exp), "sin": (torch.sin, torch.cos), "log": (torch.log, torch.reciprocal),
             "sqrt": (torch.sqrt, lambda p: 0.5 / torch.sqrt(p)), "tanh": (torch.tanh, lambda p: 1 - torch.tanh(p) ** 2)}
    errors = []
    for name, points, h, threshold in medians:
        f, df = table[name]
        if threshold is not None:  # the "exact" derivative far off at the points below the threshold
            df = lambda p, df=df, t=threshold: torch.where(p < t, 1000 * df(p), df(p))  # noqa: E731
        errors.append(median_relative_error(f, df, points, h))
    steps = [best_step(table[name][0], table[name][1], points, candidates) for name, points, candidates in bests]
    return [errors, steps]


_TABLE = {"exp": (torch.exp, torch.exp, (-1.0, 1.5)), "sin": (torch.sin, torch.cos, (0.1, 1.3)),
          "log": (torch.log, torch.reciprocal, (0.5, 3.0)),
          "sqrt": (torch.sqrt, lambda p: 0.5 / torch.sqrt(p), (0.5, 3.0)),
          "tanh": (torch.tanh, lambda p: 1 - torch.tanh(p) ** 2, (-1.0, 1.0))}


def _median_error(name, points, h, threshold=None):
    f, df, _ = _TABLE[name]
    exact = df(points)
    if threshold is not None:
        exact = torch.where(points < threshold, 1000 * exact, exact)
    quotient = (f(points + h) - f(points)) / h
    return float(((quotient - exact).abs() / exact.abs()).median())


def _points(rng, name, n, dtype):
    low, high = _TABLE[name][2]
    return _tensor(rng, (n,), low, high, dtype).sort().values


def _median_inputs(rng):
    names = list(_TABLE)
    rng.shuffle(names)
    n = lambda: 2 * rng.randint(20, 40) + 1  # noqa: E731  an odd number of points: one median
    cases = [(names[0], _points(rng, names[0], n(), F64), rng.choice([1e-3, 1e-4, 1e-5]), None),
             (names[1], _points(rng, names[1], n(), F64), rng.choice([1e-2, 1e-3]), None),
             (names[2], _points(rng, names[2], n(), torch.float32), rng.choice([1e-1, 3e-2]), None),
             # float32 at a step where its rounding dominates: computed in float64, the error would be far smaller
             (names[3], _points(rng, names[3], n(), torch.float32), rng.choice([1e-5, 3e-6]), None)]
    points = _points(rng, names[4], 21, F64)
    cases.append((names[4], points, 1e-4, float(points[2] + points[3]) / 2))  # 3 of 21 points far off
    return {"medians": cases, "bests": []}


def check_medians(result, medians, bests):
    errors = result[0]
    if type(errors) is not list or len(errors) != len(medians):
        raise Wrong("the probe's result has the wrong form")
    for got, (name, points, h, threshold) in zip(errors, medians):
        if type(got) is not float:
            raise Wrong("median_relative_error should return a Python float")
        expected = _median_error(name, points, h, threshold)
        if points.dtype == torch.float32 and h < 1e-3:  # rounding dominates: equal up to its noise
            if not (math.isfinite(got) and expected / 2 < got < expected * 2):
                raise Wrong("the median relative error in float32 at a small step is wrong (compute the quotient "
                            "in the dtype of the points)")
            continue
        rtol = 5e-2 if points.dtype == torch.float32 else 1e-6
        if threshold is not None and not math.isclose(got, expected, rel_tol=rtol):
            raise Wrong("the error should be the median over the points, which a few points far off do not move "
                        "(not the mean)")
        close(got, expected, rtol=rtol, atol=0, what=f"the median relative error of {name} "
                                                     f"in {str(points.dtype).split('.')[-1]}")


def _best_inputs(rng):
    names = rng.sample(list(_TABLE), 3)
    cases = []
    for name, dtype, exponents in zip(names, (F64, F64, torch.float32), (range(1, 15), range(1, 15), range(1, 8))):
        steps = [10.0 ** -k for k in rng.sample(list(exponents), min(8, len(exponents) - 1))]
        rng.shuffle(steps)
        cases.append((name, _points(rng, name, 2 * rng.randint(25, 50) + 1, dtype), steps))
    return {"medians": [], "bests": cases}


def check_bests(result, medians, bests):
    steps = result[1]
    if type(steps) is not list or len(steps) != len(bests):
        raise Wrong("the probe's result has the wrong form")
    for got, (name, points, candidates) in zip(steps, bests):
        if type(got) is not float or got not in candidates:
            raise Wrong("best_step should return one of the steps of the list")
        errors = {h: _median_error(name, points, h) for h in candidates}
        # the smallest median error, up to the noise of rounding (another order of the operations)
        if errors[got] > 1.25 * min(errors.values()):
            raise Wrong(f"the step returned for {name} in {str(points.dtype).split('.')[-1]} does not have the "
                        "smallest median relative error of the list")


def predictions(cases):
    return [predicted_best_step(eps, f_value, second) for eps, f_value, second in cases]


def _prediction_inputs(rng):
    cases = []
    for eps, signs in zip((2.0**-52, 2.0**-23, 1e-10, 1e-12), ((1, 1), (-1, 1), (1, -1), (-1, -1))):
        f_value = signs[0] * round(rng.uniform(0.2, 20.0), 3)
        second = signs[1] * round(rng.uniform(0.05, 10.0), 3)
        cases.append((eps, f_value, second))
    rng.shuffle(cases)
    return {"cases": cases}


def check_predictions(result, cases):
    if type(result) is not list or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for got, (eps, f_value, second) in zip(result, cases):
        what = "the predicted step" + (" when f or f'' is negative" if f_value < 0 or second < 0 else "")
        close(got, 2 * math.sqrt(eps * abs(f_value) / abs(second)), rtol=1e-12, atol=0, what=what)


TASK3 = Task(parts=[
    Part(1, "median_relative_error: the median (not the mean) of the forward quotient's relative error over the "
            "points, computed in their dtype (float32 and float64), as a Python float, for several functions and "
            "steps", forward_errors, check_medians, _median_inputs),
    Part(1, "best_step: the step of a list with the smallest median error, for several functions, points and lists",
         forward_errors, check_bests, _best_inputs),
    Part(1, "predicted_best_step: the step that minimizes the bound, for several eps, f and f'', negative ones "
            "included", predictions, check_predictions, _prediction_inputs),
])


# ---------------------------------------------------------------------------------------------
# Task 4: the complex step. The functions record where they are evaluated.
# ---------------------------------------------------------------------------------------------

def complex_steps(cases):
    import torch

    functions = {"squire_trapp": lambda z: torch.exp(z) / torch.sqrt(torch.sin(z) ** 3 + torch.cos(z) ** 3),
                 "conj": lambda z: z * z.conj(), "abs": lambda z: z * z.abs()}
    results = []
    for name, x, h in cases:
        seen = []

        def f(z, function=functions[name], seen=seen):
            try:
                if isinstance(z, torch.Tensor):
                    point = complex(z.detach().reshape(-1)[0]) if z.is_complex() and z.numel() == 1 else None
                    seen.append([str(z.dtype), None if point is None else point.real, None if point is None else point.imag])
                else:
                    seen.append([type(z).__name__[:40], None, None])
            except Exception:
                seen.append(["unreadable", None, None])
            return function(z)

        results.append([complex_step_derivative(f, x, h), seen])
    return results


def _squire_trapp_derivative(x):
    t = torch.tensor(x, dtype=F64, requires_grad=True)
    (torch.exp(t) / torch.sqrt(torch.sin(t) ** 3 + torch.cos(t) ** 3)).backward()
    return float(t.grad)


def _at_complex_point(seen, x, h):
    if type(seen) is not list or not seen:
        raise Wrong("f was not evaluated")
    for dtype, real, imag in seen:
        if dtype != "torch.complex128" or real is None:
            raise Wrong("f should be evaluated at the complex point x + ih, a complex128 tensor (it was evaluated at "
                        + ("a real point" if dtype.startswith("torch.float") else "something else") + ")")
        if not (math.isclose(real, x, rel_tol=1e-12, abs_tol=1e-300) and math.isclose(imag, h, rel_tol=1e-12)):
            raise Wrong("f should be evaluated at the complex point x + ih")


def _complex_step(name, x, h):
    """Im f(x + ih) / h, computed in complex128."""
    z = torch.tensor(complex(x, h), dtype=torch.complex128)
    functions = {"squire_trapp": lambda z: torch.exp(z) / torch.sqrt(torch.sin(z) ** 3 + torch.cos(z) ** 3),
                 "conj": lambda z: z * z.conj(), "abs": lambda z: z * z.abs()}
    return float(functions[name](z).imag) / h


def check_exact(result, cases):
    for (value, seen), (name, x, h) in _results(result, cases):
        _at_complex_point(seen, x, h)
        if type(value) is not float:
            raise Wrong("complex_step_derivative should return a Python float")
        if h > 1e-3:  # a large step: the complex step is not the derivative there, and automatic differentiation
            close(value, _complex_step(name, x, h), rtol=1e-12, atol=0, what=f"the complex step at h = {h:g}")
        else:
            close(value, _squire_trapp_derivative(x), rtol=1e-13, atol=0,
                  what=f"the derivative at the step h = {h:g} (exact to about machine precision)")


def check_complex_step(result, cases):
    for (value, seen), (name, x, h) in _results(result, cases):
        _at_complex_point(seen, x, h)
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            value = float(value.reshape(-1)[0])  # the form is the other part's business
        close(value, _complex_step(name, x, h), rtol=1e-12, atol=1e-12,
              what="the complex step of a function that is not holomorphic (where it is not the derivative)")


def _exact_inputs(rng):
    return {"cases": [("squire_trapp", round(rng.uniform(0.0, 1.5), 4), h)
                      for h in (1e-8, 1e-20, 1e-200, rng.choice([0.1, 0.2, 0.3]))]}


def _complex_step_inputs(rng):
    return {"cases": [(name, round(rng.uniform(0.3, 1.2), 4), rng.choice([1e-6, 1e-20])) for name in ("conj", "abs")]}


TASK4 = Task(restricted=_by_hand("task4_complex_step"), parts=[
    Part(1, "a holomorphic function at several x: exact to about machine precision for steps down to 1e-200, "
            "Im f(x + ih) / h itself at a large step, as a Python float", complex_steps, check_exact, _exact_inputs),
    Part(1, "the complex step itself: f evaluated at x + ih in complex128, and Im f(x + ih) / h returned even "
            "for functions that are not holomorphic", complex_steps, check_complex_step, _complex_step_inputs),
])


# ---------------------------------------------------------------------------------------------
# Task 5: counting evaluations, with methods of the grader's
# ---------------------------------------------------------------------------------------------

def counts(k, m, x):
    def never(f, v):
        return None

    def k_times(f, v):
        for _ in range(k):
            f(v)

    def nested(f, v):  # what f returns is not used: only the count matters here
        def inner(w):
            f(w)
            f(2 * w)

        return [inner(v) for _ in range(m)]

    square = lambda v: (v**2).sum()  # noqa: E731
    return [count_evaluations(method, square, x) for method in (never, k_times, nested)]


def check_counts(result, k, m, x):
    if type(result) is not list or len(result) != 3 or any(type(r) is not int for r in result):
        raise Wrong("count_evaluations should return an int")
    for got, expected, words in zip(result, (0, k, 2 * m), ("that never calls f", "that calls f in a loop",
                                                           "that calls f from a function of its own")):
        if got != expected:
            raise Wrong(f"the count is wrong for a method {words}")


def behaves(c, x):
    import torch

    received, returned, called, got = [], [], [], []

    def f(v):
        received.append(v)
        out = c * (v**2).sum()
        returned.append(out)
        return out

    def method(g, v):
        called.append(v)
        got.extend([g(v), g(2 * v)])

    count_evaluations(method, f, x)
    same_results = len(got) == len(returned) == 2 and all(type(a) is type(b) and torch.equal(a, b)
                                                          for a, b in zip(got, returned))
    same_arguments = len(received) == 2 and torch.equal(received[0], x) and torch.equal(received[1], 2 * x)
    return [len(called), bool(len(called) == 1 and torch.equal(called[0], x)), bool(same_arguments),
            bool(same_results)]


def check_behaves(result, c, x):
    if type(result) is not list or len(result) != 4:
        raise Wrong("the probe's result has the wrong form")
    calls, with_x, same_arguments, same_results = result
    if calls != 1:
        raise Wrong("count_evaluations should call method exactly once")
    if not with_x:
        raise Wrong("count_evaluations should call method with x")
    if not same_arguments:
        raise Wrong("f_counted should pass its argument to f unchanged")
    if not same_results:
        raise Wrong("f_counted should return what f returns")


TASK5 = Task(restricted=_by_hand("task5_count"), parts=[
    Part(1, "the number of evaluations, for methods that call f never, in a loop, or from a function of their own",
         counts, check_counts, lambda rng: {"k": rng.randint(2, 9), "m": rng.randint(2, 6),
                                            "x": _tensor(rng, (rng.randint(2, 6),), -1.0, 1.0)}),
    Part(1, "f_counted behaves like f (the same arguments, the same results), and method is called once, with x",
         behaves, check_behaves, lambda rng: {"c": round(rng.uniform(0.5, 3.0), 3),
                                              "x": _tensor(rng, (rng.randint(2, 6),), -1.0, 1.0)}),
])


# ---------------------------------------------------------------------------------------------
# Task 6: verdicts, one part each
# ---------------------------------------------------------------------------------------------

def verdicts():
    return complex_step_verdicts()


_VERDICTS = {"a": False, "b": True, "c": True, "d": False}
_FUNCTIONS = {"a": "x squared written with conj", "b": "log(1 + exp(x)) written with log1p",
              "c": "|x| written with where", "d": "x |x| written with abs"}

TASK6 = Task(parts=[Part(0.5, f"verdict ({key}): {_FUNCTIONS[key]}", verdicts, verdict_check(key, value, (True, False)))
                    for key, value in _VERDICTS.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4, "task5_tests": TASK5,
         "task6_tests": TASK6}
