"""Assignment 4 (reverse mode): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code)}.
"""

WRONG = {
    # assigns the adjoint instead of adding to it: right when x has one child, wrong otherwise
    "task1_value_sin": ("task1_tests", 2, '''
def value_sin(a):
    out = Value(math.sin(a.data), (a,), "sin")

    def _backward():
        a.grad = math.cos(a.data) * out.grad

    out._backward = _backward
    return out
'''),
    # forgets the minus sign of d(a/b)/db
    "task2_value_div": ("task2_tests", 2, '''
def value_div(a, b):
    out = Value(a.data / b.data, (a, b), "/")

    def _backward():
        a.grad += out.grad / b.data
        b.grad += a.data / b.data**2 * out.grad

    out._backward = _backward
    return out
'''),
    # forgets the second child of x (the product f = x b)
    "task3_hand_backprop": ("task3_tests", 3, '''
def hand_backprop(x, y):
    a = x * y
    b = math.exp(a)
    f = x * b
    b_bar = x
    a_bar = b_bar * b
    return {"f": f, "b_bar": b_bar, "a_bar": a_bar, "x_bar": a_bar * y, "y_bar": a_bar * x}
'''),
    # sums the squared errors instead of averaging them: a step n times too large
    "task4_fit": ("task4_tests", 3, '''
def fit(features, targets, theta0, lr=0.5, steps=200):
    from ad_lib.reverse import grad

    gradient = grad(lambda theta: ops.sum((theta @ features - targets) ** 2))
    theta = theta0.clone()
    for _ in range(steps):
        theta = theta - lr * gradient(theta)
    return theta
'''),
    # "reverse mode is always better"
    "task5_verdicts": ("task5_tests", 2, '''
def mode_verdicts():
    return {"a": "reverse", "b": "reverse", "c": "reverse", "d": "reverse", "e": "reverse"}
'''),
}
