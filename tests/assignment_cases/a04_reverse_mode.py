"""Assignment 4 (reverse mode): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/04_reverse_mode.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids, handed in together; each scores 0 on its task.
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
''', 0.5),  # the node is right; its rule assigns, and x with several children gets a wrong gradient
    # forgets the minus sign of d(a/b)/db
    "task2_value_div": ("task2_tests", 2, '''
def value_div(a, b):
    out = Value(a.data / b.data, (a, b), "/")

    def _backward():
        a.grad += out.grad / b.data
        b.grad += a.data / b.data**2 * out.grad

    out._backward = _backward
    return out
''', 0.5),  # the node is right; its rule and the gradients through it are not
    # forgets the second child of x (the product f = x b)
    "task3_hand_backprop": ("task3_tests", 3, '''
def hand_backprop(x, y):
    a = x * y
    b = math.exp(a)
    f = x * b
    b_bar = x
    a_bar = b_bar * b
    return {"f": f, "b_bar": b_bar, "a_bar": a_bar, "x_bar": a_bar * y, "y_bar": a_bar * x}
''', 2),  # f and the adjoints of b, a and y are right; only x_bar is wrong
    # sums the squared errors instead of averaging them: a step n times too large
    "task4_fit": ("task4_tests", 3, '''
def fit(features, targets, theta0, lr=0.5, steps=200):
    from ad_lib.reverse import grad

    gradient = grad(lambda theta: ops.sum((theta @ features - targets) ** 2))
    theta = theta0.clone()
    for _ in range(steps):
        theta = theta - lr * gradient(theta)
    return theta
''', 2),  # the descent follows grad's gradient and keeps theta0; the loss is not the mean
    # "reverse mode is always better"
    "task5_verdicts": ("task5_tests", 2, '''
def mode_verdicts():
    return {"a": "reverse", "b": "reverse", "c": "reverse", "d": "reverse", "e": "reverse"}
''', 1.2),  # three of the five verdicts (a, c, e) are right
}

DELEGATING = {
    # the scalar engine does the back-propagation, imported under another name: task 3 is graded
    # in a Python without ad_lib, where the import fails
    "task3_hand_backprop": '''
def hand_backprop(x, y):
    import importlib

    engine = importlib.import_module("ad_" + "lib.reverse")
    X, Y = engine.Value(x), engine.Value(y)
    A = X * Y
    B = A.exp()
    F = X * B
    F.backward()
    return {"f": F.data, "b_bar": B.grad, "a_bar": A.grad, "x_bar": X.grad, "y_bar": Y.grad}
''',
    # the right descent with torch.autograd's gradient instead of ad_lib.reverse.grad: it follows the
    # true gradient, not the one the instrumented ad_lib.reverse.grad returns, and hands it no loss
    "task4_fit": '''
def fit(features, targets, theta0, lr=0.5, steps=200):
    theta = theta0.clone()
    for _ in range(steps):
        t = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(((t @ features - targets) ** 2).mean(), t)
        theta = theta - lr * g
    return theta
''',
}
