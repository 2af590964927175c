"""Assignment 4 (reverse mode): wrong-but-plausible answers, one per task, and right answers that delegate.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/04_reverse_mode.py) that it gets right. DELEGATING: right answers that use
what their task forbids.
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
''', 0.5),  # one node with the right parent: only the accumulation is wrong
    # forgets the minus sign of d(a/b)/db
    "task2_value_div": ("task2_tests", 2, '''
def value_div(a, b):
    out = Value(a.data / b.data, (a, b), "/")

    def _backward():
        a.grad += out.grad / b.data
        b.grad += a.data / b.data**2 * out.grad

    out._backward = _backward
    return out
''', 0.5),  # one node with the right parents
    # forgets the second child of x (the product f = x b)
    "task3_hand_backprop": ("task3_tests", 3, '''
def hand_backprop(x, y):
    a = x * y
    b = math.exp(a)
    f = x * b
    b_bar = x
    a_bar = b_bar * b
    return {"f": f, "b_bar": b_bar, "a_bar": a_bar, "x_bar": a_bar * y, "y_bar": a_bar * x}
''', 2),  # every adjoint but x's
    # sums the squared errors instead of averaging them: a step n times too large
    "task4_fit": ("task4_tests", 3, '''
def fit(features, targets, theta0, lr=0.5, steps=200):
    from ad_lib.reverse import grad

    gradient = grad(lambda theta: ops.sum((theta @ features - targets) ** 2))
    theta = theta0.clone()
    for _ in range(steps):
        theta = theta - lr * gradient(theta)
    return theta
''', 1.5),  # the descent is right, the loss is not the mean
    # "reverse mode is always better"
    "task5_verdicts": ("task5_tests", 2, '''
def mode_verdicts():
    return {"a": "reverse", "b": "reverse", "c": "reverse", "d": "reverse", "e": "reverse"}
''', 1.2),  # three of the five verdicts are right
}


DELEGATING = {
    # the adjoints by torch.autograd: graded in a Python without torch, it cannot run
    "task3_hand_backprop": '''
def hand_backprop(x, y):
    import torch as t

    tx = t.tensor(x, dtype=t.float64, requires_grad=True)
    ty = t.tensor(y, dtype=t.float64, requires_grad=True)
    a = tx * ty
    a.retain_grad()
    b = t.exp(a)
    b.retain_grad()
    f = tx * b
    f.backward()
    return {"f": f.item(), "b_bar": b.grad.item(), "a_bar": a.grad.item(), "x_bar": tx.grad.item(), "y_bar": ty.grad.item()}
''',
    # the gradient by torch.func instead of ad_lib.reverse.grad
    "task4_fit": '''
def fit(features, targets, theta0, lr=0.5, steps=200):
    from torch.func import grad

    gradient = grad(lambda theta: ((theta @ features - targets) ** 2).mean())
    theta = theta0.clone()
    for _ in range(steps):
        theta = theta - lr * gradient(theta)
    return theta
''',
}
