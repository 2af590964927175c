"""Assignment 11 (optimizers and normalization): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/11_optim.py) that it gets right. DELEGATING = {solution grade_id: code}: right
answers that use what their task forbids (torch.optim, ad_lib.optim, torch's batch norm under
another name, ad_lib.normalization), handed in together; each scores 0 on its task. GAMING =
{name: (solution grade_id, test grade_id, code, score)}: answers that try to score without the work
(an optimizer class found without importing torch.optim, NumPy, automatic differentiation for the
backward pass, dropout that does nothing, torch's batch-norm backward in another thread), with what they
earn. Each GAMING answer that needs a
task's cell already taken adds a submission (about 7 s of grading): the complex step and finite
differences for task 4, and a layer norm of the transpose, were tried outside the suite (each scores
0 on task 4: complex numbers, 14000 operations or more, aten.native_layer_norm).
"""

WRONG = {
    # Nesterov's step with the roles of the gradient and the buffer swapped: b + mu g instead of g + mu b
    # (the same at the first step, where b = g)
    "task1_momentum": ("task1_tests", 2.5, '''
def momentum_step(param, grad, buf, lr, momentum, nesterov=False):
    buf = grad.clone() if buf is None else buf * momentum + grad
    if nesterov:
        return param - lr * (buf + momentum * grad), buf
    return param - lr * buf, buf
''', 1.5),  # the first step and heavy-ball momentum are right
    # the paper's "efficient" form: lr sqrt(1 - b2^t) / (1 - b1^t) times m / (sqrt(v) + eps), which puts
    # eps at another scale than torch.optim.Adam
    "task2_adam": ("task2_tests", 2.5, '''
def adam_step(param, grad, m, v, t, lr, betas, eps):
    decay1, decay2 = betas
    m = decay1 * m + (1 - decay1) * grad
    v = decay2 * v + (1 - decay2) * grad**2
    alpha = lr * math.sqrt(1 - decay2**t) / (1 - decay1**t)
    return param - alpha * m / (v.sqrt() + eps), m, v
''', 2),  # the moments and the bias correction are right; eps matters only on gradients of its size
    # the velocity is right, but Nesterov's theta is taken to be PyTorch's parameters (no look-ahead shift)
    "task3_to_slides": ("task3_tests", 1.5, '''
def to_slides(param, buf, lr, momentum, nesterov=False):
    return param.clone(), buf * lr
''', 0.5),  # heavy-ball momentum is right
    # the gradient through x_hat only: sigma treated as a constant (the variance's path dropped)
    "task4_batch_norm_backward": ("task4_tests", 3, '''
def batch_norm_backward(x, weight, grad_out, eps):
    axes = tuple(d for d in range(x.dim()) if d != 1)
    per_channel = (1, -1) + (1,) * (x.dim() - 2)
    mu = x.mean(dim=axes, keepdim=True)
    sigma = ((x - mu) ** 2).mean(dim=axes, keepdim=True).add(eps).sqrt()
    normalized = (x - mu) / sigma
    dy = grad_out * weight.view(per_channel)
    return (dy - dy.mean(dim=axes, keepdim=True)) / sigma, (grad_out * normalized).sum(dim=axes), grad_out.sum(dim=axes)
''', 1),  # grad_weight and grad_bias are right
    # a mask drawn the other way round (keep where the number is < 1 - p): right in law, not the one asked
    "task5_dropout": ("task5_tests", 1.5, '''
def dropout(x, p, training, generator):
    if not training:
        return x.clone()
    if p == 1:
        return torch.zeros_like(x)
    kept = torch.rand(x.shape, generator=generator, dtype=x.dtype) < 1 - p
    return x * kept / (1 - p)
''', 0.5),  # evaluation mode and the mask's properties are right
}

DELEGATING = {
    # torch.optim.SGD itself: graded in a Python without torch.optim
    "task1_momentum": '''
def momentum_step(param, grad, buf, lr, momentum, nesterov=False):
    import importlib

    optim = importlib.import_module("torch." + "optim")
    leaf = param.detach().clone().requires_grad_(True)
    sgd = optim.SGD([leaf], lr=lr, momentum=momentum, nesterov=nesterov)
    if buf is not None:
        sgd.state[leaf]["momentum_buffer"] = buf.clone()
    leaf.grad = grad.clone()
    sgd.step()
    return leaf.detach().clone(), sgd.state[leaf]["momentum_buffer"].clone()
''',
    # ad_lib's Adam, imported under another name: graded in a Python without ad_lib
    "task2_adam": '''
def adam_step(param, grad, m, v, t, lr, betas, eps):
    import importlib

    library = importlib.import_module("ad_" + "lib.optim")
    leaf = param.detach().clone().requires_grad_(True)
    adam = library.Adam([leaf], lr=lr, betas=betas, eps=eps)
    adam.state[leaf].update(step=torch.tensor(float(t - 1)), exp_avg=m.clone(), exp_avg_sq=v.clone())
    leaf.grad = grad.clone()
    adam.step()
    return leaf.detach().clone(), adam.state[leaf]["exp_avg"].clone(), adam.state[leaf]["exp_avg_sq"].clone()
''',
    # torch's own batch-norm backward kernel, called through torch.ops: the operation meter sees it
    "task4_batch_norm_backward": '''
def batch_norm_backward(x, weight, grad_out, eps):
    axes = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=axes)
    invstd = 1 / (x.var(dim=axes, unbiased=False) + eps).sqrt()
    kernel = getattr(torch.ops.aten, "native_batch_" + "norm_backward")
    return tuple(kernel(grad_out, x, weight, None, None, mean, invstd, True, eps, [True, True, True]))
''',
    # ad_lib's dropout: graded in a Python without ad_lib
    "task5_dropout": '''
def dropout(x, p, training, generator):
    import importlib

    return importlib.import_module("ad_" + "lib.normalization").dropout(x, p, training=training, generator=generator)
''',
}

GAMING = {
    # torch.optim.SGD found among the subclasses of the Optimizer that torch.profiler still exports
    "SGD without importing it": ("task1_momentum", "task1_tests", '''
def momentum_step(param, grad, buf, lr, momentum, nesterov=False):
    found = {cls.__name__: cls for cls in torch.profiler.Optimizer.__subclasses__()}
    leaf = param.detach().clone().requires_grad_(True)
    opt = found["SGD"]([leaf], lr=lr, momentum=momentum, nesterov=nesterov)
    if buf is not None:
        opt.state[leaf]["momentum_buffer"] = buf.clone()
    leaf.grad = grad.clone()
    opt.step()
    return leaf.detach().clone(), opt.state[leaf]["momentum_buffer"].clone()
''', 0),
    # Adam in NumPy, outside the operation meter's view: graded in a Python without NumPy
    "NumPy Adam": ("task2_adam", "task2_tests", '''
def adam_step(param, grad, m, v, t, lr, betas, eps):
    import numpy as np

    first = betas[0] * m.numpy() + (1 - betas[0]) * grad.numpy()
    second = betas[1] * v.numpy() + (1 - betas[1]) * np.square(grad.numpy())
    update = lr * first / (1 - betas[0] ** t) / (np.sqrt(second / (1 - betas[1] ** t)) + eps)
    return torch.from_numpy(param.numpy() - update), torch.from_numpy(first), torch.from_numpy(second)
''', 0),
    # the backward pass by torch.autograd through a forward pass written by hand
    "autograd backward": ("task4_batch_norm_backward", "task4_tests", '''
def batch_norm_backward(x, weight, grad_out, eps):
    axes = [0] + list(range(2, x.dim()))
    inputs = [x.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)]
    bias = torch.zeros_like(weight, requires_grad=True)
    centred = inputs[0] - inputs[0].mean(dim=axes, keepdim=True)
    spread = (centred.pow(2).mean(dim=axes, keepdim=True) + eps).rsqrt()
    view = [1, -1] + [1] * (x.dim() - 2)
    out = centred * spread * inputs[1].view(view) + bias.view(view)
    return tuple(torch.autograd.grad(out, inputs + [bias], grad_outputs=grad_out))
''', 0),
    # torch's own batch-norm backward, run in a second thread, out of sight of the operation meter (a
    # dispatch mode holds for the thread it was entered in): no thread starts there, and the kernel raises
    "threaded native backward": ("task4_batch_norm_backward", "task4_tests", '''
from threading import Thread


def batch_norm_backward(x, weight, grad_out, eps):
    box = {}

    def work():
        axes = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=axes)
        inverse = (x.var(dim=axes, unbiased=False) + eps).rsqrt()
        box["grads"] = torch.ops.aten.native_batch_norm_backward(grad_out, x, weight, None, None, mean, inverse,
                                                                  True, eps, [True, True, True])

    helper = Thread(target=work)
    helper.start()
    helper.join()
    return tuple(box["grads"])
''', 0),
    # dropout that does nothing: right in evaluation mode only
    "identity dropout": ("task5_dropout", "task5_tests", '''
def dropout(x, p, training, generator):
    return x.clone()
''', 0),
}
