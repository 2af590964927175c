"""Assignment 1 (finite differences): wrong-but-plausible answers, and the pipeline's special students.

Used by tests/test_assignment_pipeline.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/01_finite_differences.py) that it gets right. DELEGATING holds right answers
that call what the rules forbid; HANGS, KILLS_KERNEL and KILLS_KERNEL_TWICE the pipeline's
students who hang or kill their kernel.
"""

WRONG = {
    # f(x) evaluated again for every entry: the right quotients, with 2p evaluations instead of p + 1
    "task1_forward_gradient": ("task1_tests", 3, '''
def forward_gradient(f, x, h=1e-7):
    flat = x.reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        moved = flat.clone()
        moved[i] += h
        grad[i] = (f(moved.reshape(x.shape)) - f(x)) / h
    return grad.reshape(x.shape)
''', 2),  # only the count of evaluations is wrong
    # the right quotients, returned flat: right for a vector, wrong in shape for a matrix
    "task2_central_gradient": ("task2_tests", 2, '''
def central_gradient(f, x, h=1e-5):
    flat = x.reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        grad[i] = (f(plus.reshape(x.shape)) - f(minus.reshape(x.shape))) / (2 * h)
    return grad
''', 1.5),  # the quotients and the count are right (on vectors); other shapes are not
    # the predicted step without the factor 2 and without f and f''
    "task3_best_step": ("task3_tests", 3, '''
def median_relative_error(f, df, points, h):
    quotient = (f(points + h) - f(points)) / h
    return float(((quotient - df(points)).abs() / df(points).abs()).median())


def best_step(f, df, points, steps):
    errors = [median_relative_error(f, df, points, h) for h in steps]
    return steps[errors.index(min(errors))]


def predicted_best_step(eps, f_value, second_derivative):
    return math.sqrt(eps)
''', 2),  # the measured parts are right
    # the complex step, returned as a tensor rather than a Python float
    "task4_complex_step": ("task4_tests", 2, '''
def complex_step_derivative(f, x, h=1e-20):
    z = torch.tensor(complex(x, h), dtype=torch.complex128)
    return f(z).imag / h
''', 1),  # the complex step itself is right
    # counts right, but f_counted forgets to return what f returns
    "task5_count": ("task5_tests", 2, '''
def count_evaluations(method, f, x):
    calls = 0

    def f_counted(v):
        nonlocal calls
        calls += 1
        f(v)

    method(f_counted, x)
    return calls
''', 1),  # the counts are right
    "task6_verdicts": ("task6_tests", 2, '''
def complex_step_verdicts():
    return {"a": True, "b": True, "c": True, "d": True}
''', 1),  # (b) and (c) are right
}

HANGS = '''
def count_evaluations(method, f, x):
    while True:  # an endless loop
        pass
'''
KILLS_KERNEL = '''
def complex_step_derivative(f, x, h=1e-20):
    import os
    os._exit(1)  # the kernel dies
'''
KILLS_KERNEL_TWICE = {
    "task4_complex_step": KILLS_KERNEL,
    "task6_verdicts": '''
def complex_step_verdicts():
    import os
    os._exit(1)
''',
}
# Right answers that call ad_lib, which tasks 1, 4 and 5 forbid: they run, for the grader, in a
# Python without ad_lib, where neither the import nor another name for it works.
DELEGATING = {
    "task1_forward_gradient": '''
def forward_gradient(f, x, h=1e-7):
    from ad_lib.finite_diff import forward_difference
    return forward_difference(f, x, h)
''',
    "task4_complex_step": '''
def complex_step_derivative(f, x, h=1e-20):
    import ad_lib.finite_diff as differences
    return float(differences.complex_step(f, torch.tensor([x], dtype=torch.float64), h)[0])
''',
    "task5_count": '''
def count_evaluations(method, f, x):
    from ad_lib.finite_diff import EvaluationCounter as Tally
    counted = Tally(f)
    method(counted, x)
    return counted.calls
''',
}
