"""Assignment 1 (finite differences): wrong-but-plausible answers, and the pipeline's special students.

Used by tests/test_assignment_pipeline.py. Every assignment has a module like this one,
named after it, with WRONG: {solution grade_id: (test grade_id, points, code)}, and
may have DELEGATING: {solution grade_id: a right answer that calls what the task forbids}.
"""

# Wrong but plausible answers, one per task: the solution cell's grade_id, the points of
# the task's test cell, and the code a student might hand in.
WRONG = {
    "task1_forward_gradient": ("task1_tests", 3, '''
def forward_gradient(f, x, h=1e-7):
    fx = f(x)
    flat = x.reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        moved = flat.clone()
        moved[i] += h
        grad[i] = (f(moved.reshape(x.shape)) - fx) / (2 * h)
    return grad.reshape(x.shape)
'''),
    "task2_central_gradient": ("task2_tests", 2, '''
def central_gradient(f, x, h=1e-5):
    flat = x.reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        plus = flat.clone()
        plus[i] += h
        grad[i] = (f(plus.reshape(x.shape)) - f(x)) / h
    return grad.reshape(x.shape)
'''),
    "task3_best_step": ("task3_tests", 3, '''
def median_relative_error(f, df, points, h):
    quotient = (f(points + h) - f(points)) / h
    return float(((quotient - df(points)).abs() / df(points).abs()).median())


def best_step(f, df, points, steps):
    errors = [median_relative_error(f, df, points, h) for h in steps]
    return steps[errors.index(min(errors))]


def predicted_best_step(eps, f_value, second_derivative):
    return math.sqrt(eps)
'''),
    "task4_complex_step": ("task4_tests", 2, '''
def complex_step_derivative(f, x, h=1e-20):
    h = max(h, 1e-8)
    return float((f(torch.tensor(x + h, dtype=torch.float64)) - f(torch.tensor(x, dtype=torch.float64))) / h)
'''),
    "task5_count": ("task5_tests", 2, '''
def count_evaluations(method, f, x):
    return x.numel() + 1
'''),
    "task6_verdicts": ("task6_tests", 2, '''
def complex_step_verdicts():
    return {"a": True, "b": True, "c": True, "d": True}
'''),
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
# Right answers that delegate to ad_lib, which the task forbids: a hidden check catches them.
DELEGATING = {
    "task1_forward_gradient": '''
def forward_gradient(f, x, h=1e-7):
    from ad_lib.finite_diff import forward_difference
    return forward_difference(f, x, h)
''',
}


