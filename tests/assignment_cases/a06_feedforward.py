"""Assignment 6 (feed-forward architectures and the adjoint-state method): wrong-but-plausible answers.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/06_feedforward.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids, handed in together; each scores 0 on its task.
"""

WRONG = {
    # averages the weights' gradients over the batch instead of summing them
    "task1_mlp_backprop": ("task1_tests", 3, '''
def mlp_backprop(x0, thetas, z):
    xs, slopes = [x0], []
    for theta in thetas:
        out = torch.tanh(xs[-1] @ theta.T)
        slopes.append(1 - out**2)
        xs.append(out)
    grads = []
    for k in range(len(thetas), 0, -1):
        s = slopes[k - 1] * z
        grads.insert(0, s.T @ xs[k - 1] / x0.shape[0])
        z = s @ thetas[k - 1]
    return xs[-1], z, grads
''', 1.5),  # x_t and the inputs' gradient are right; the weights' gradients are the batch's mean
    # evaluates u at the start of the step, (k - 1) tau, instead of k tau
    "task2_resnet_forward": ("task2_tests", 2, '''
def resnet_forward(x0, thetas, tau):
    xs = [x0]
    for k in range(thetas.shape[0]):
        xs.append(xs[-1] + tau * torch.tanh(xs[-1] @ thetas[k].T + k * tau))
    return torch.stack(xs)
''', 0.5),  # the form is right (shape, x_0 first, x0 kept); the states are not
    # forgets the factor tau of the parameters' gradients (returns the density (1/tau) grad)
    "task3_resnet_gradients": ("task3_tests", 3, '''
def resnet_gradients(x0, thetas, tau, z):
    xs = [x0]
    for k in range(1, thetas.shape[0] + 1):
        xs.append(xs[-1] + tau * torch.tanh(xs[-1] @ thetas[k - 1].T + k * tau))
    grads = torch.zeros_like(thetas)
    for k in range(thetas.shape[0], 0, -1):
        s = (1 - torch.tanh(xs[k - 1] @ thetas[k - 1].T + k * tau) ** 2) * z
        grads[k - 1] = s.T @ xs[k - 1]
        z = z + tau * (s @ thetas[k - 1])
    return z, grads
''', 1.5),  # grad_x0 is right; the parameters' gradients are 1/tau times too large
    # "the adjoint method also stores the steps" and "the gradient of a step has a finite limit"
    "task4_verdicts": ("task4_tests", 2, '''
def adjoint_verdicts():
    return {"a": "linear", "b": "linear", "c": "finite", "d": "finite", "e": "backward"}
''', 1.2),  # three of the five verdicts (a, d, e) are right
}

DELEGATING = {
    # ad_lib.feedforward's back-propagation by hand (no autograd: only its absence stops it)
    "task1_mlp_backprop": '''
def mlp_backprop(x0, thetas, z):
    import importlib

    library = importlib.import_module("ad_" + "lib.feedforward")
    x_t, cache = library.mlp_forward(x0, thetas, "tanh")
    grad_x0, grad_thetas = library.mlp_backward(cache, thetas, z)
    return x_t, grad_x0, list(grad_thetas)
''',
    # ad_lib.feedforward's Euler steps, with the same vector field
    "task2_resnet_forward": '''
def resnet_forward(x0, thetas, tau):
    from ad_lib.feedforward import resnet_forward as euler

    return torch.stack(euler(lambda x, theta, t: torch.tanh(x @ theta.T + t), x0, thetas, tau))
''',
    # right, with torch.autograd through the steps: the grader sees the autograd engine run
    "task3_resnet_gradients": '''
def resnet_gradients(x0, thetas, tau, z):
    x, w = x0.clone().requires_grad_(True), thetas.clone().requires_grad_(True)
    state = x
    for k in range(1, thetas.shape[0] + 1):
        state = state + tau * torch.tanh(state @ w[k - 1].T + k * tau)
    grad_x0, grad_thetas = torch.autograd.grad((state * z).sum(), [x, w])
    return grad_x0, grad_thetas
''',
}
