"""The grader of assignment 6 (feed-forward architectures and the adjoint-state method): hidden checks.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/06_feedforward/.

Tasks 1 to 3 are written with torch, by hand: they run in a second sandbox without ad_lib (one
kernel for the three), so ad_lib.feedforward (mlp_backward, resnet_forward, resnet_backward), under
any name or as a copy of its file, cannot be used there. While the back-propagations of tasks 1 and
3 run, the probes watch torch's automatic differentiation (its reverse-mode engine, which
backward, torch.autograd.grad and torch.func's grad, vjp and jacrev go through, and its forward
mode, which torch.func's jvp and jacfwd enter): an answer that lets it compute the gradient scores
nothing. The truths are computed here, with torch.autograd on the grader's own forward pass.
"""

import torch
from grading import Part, Restricted, Task, Wrong, close, verdict_check, watching_autodiff

F64 = torch.float64

BY_HAND = {"setup": "import math\nimport torch\nF64 = torch.float64", "without": ["ad_lib"],
           "why": "tasks 1 to 3 are written by hand with torch: they are graded in a Python without ad_lib"}


def _check_watched(result, task):
    if result[1]:
        raise Wrong(f"{task} ran torch's automatic differentiation: write the back-propagation yourself")


def _many(count, word):
    return f"{count} {word}" + ("s" if count > 1 else "")


def _tensor(generator, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=generator, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Task 1: back-propagation through a tanh MLP, batched, by hand (eqs. (5)-(6) of the notes)
# ---------------------------------------------------------------------------------------------

def _mlp_truth(x0, thetas, z):
    x = x0.clone().requires_grad_(True)
    ws = [w.clone().requires_grad_(True) for w in thetas]
    out = x
    for w in ws:
        out = torch.tanh(out @ w.T)
    grads = torch.autograd.grad((out * z).sum(), [x] + ws)
    return out.detach(), grads[0], list(grads[1:])


def mlp_runs(networks):
    def run():
        results = []
        for x0, thetas, z in networks:
            before = [x0.clone()] + [w.clone() for w in thetas]
            got = mlp_backprop(x0, list(thetas), z)
            kept = all(torch.equal(a, b) for a, b in zip(before, [x0] + list(thetas)))
            if type(got) in (tuple, list) and len(got) == 3:
                got = [got[0], got[1], list(got[2]) if type(got[2]) in (tuple, list) else got[2]]
            results.append([list(got) if type(got) in (tuple, list) else got, kept])
        return results

    return watching_autodiff(run)


def _mlp_check(what):
    def check(result, networks):
        _check_watched(result, "mlp_backprop")
        runs = result[0] if type(result) is list and len(result) == 3 else None
        if type(runs) is not list or len(runs) != len(networks):
            raise Wrong("the probe's result has the wrong form")
        for (got, kept), (x0, thetas, z) in zip(runs, networks):
            if type(got) is not list or len(got) != 3:
                raise Wrong("mlp_backprop should return a triple (x_t, grad_x0, grad_thetas)")
            x_t, grad_x0, grad_thetas = _mlp_truth(x0, thetas, z)
            t, batch = len(thetas), x0.shape[0]
            if what == "output":
                close(got[0], x_t, rtol=1e-10, atol=1e-12,
                      what=f"x_t for a batch of {batch} through {_many(t, 'layer')}")
                if not kept:
                    raise Wrong("mlp_backprop changed x0 or the weights it was given")
            elif what == "input":
                close(got[1], grad_x0, rtol=1e-10, atol=1e-12,
                      what=f"grad_x0 (one row per example) for a batch of {batch} through {_many(t, 'layer')}")
            else:
                if type(got[2]) is not list or len(got[2]) != t:
                    raise Wrong(f"grad_thetas should be a list of {t} matrices for {t} layers")
                for k, (g, e) in enumerate(zip(got[2], grad_thetas)):
                    close(g, e, rtol=1e-10, atol=1e-12,
                          what=f"the gradient of theta_{k} (summed over the batch of {batch}) "
                               f"through {_many(t, 'layer')}")
    return check


def _networks(rng):
    networks = []
    for t in (1, rng.randint(2, 3), rng.randint(3, 5)):
        generator = torch.Generator().manual_seed(rng.randrange(2**31))
        widths, batch = [rng.randint(2, 6) for _ in range(t + 1)], rng.randint(2, 5)
        thetas = [_tensor(generator, widths[k], widths[k - 1], scale=1.5 / widths[k - 1] ** 0.5)
                  for k in range(1, t + 1)]
        networks.append((_tensor(generator, batch, widths[0]), thetas, _tensor(generator, batch, widths[-1])))
    return {"networks": networks}


TASK1 = Task(
    restricted=Restricted(cells=["task1_mlp_backprop"], **BY_HAND),
    parts=[
        Part(0.5, "x_t, the output of the MLP for a batch, with x0 and the weights left as they were", mlp_runs,
             _mlp_check("output"), _networks),
        Part(1, "grad_x0, the gradient with respect to the inputs, one row per example, with no automatic "
                "differentiation", mlp_runs, _mlp_check("input"), _networks),
        Part(1.5, "grad_thetas, the gradient of each weight matrix, summed over the batch, with no automatic "
                  "differentiation", mlp_runs, _mlp_check("weights"), _networks),
    ])


# ---------------------------------------------------------------------------------------------
# Tasks 2 and 3: the residual network x_k = x_(k-1) + tau u(x_(k-1), theta_(k-1), k tau), with
# u(x, theta, t) = tanh(x theta^T + t), forward (explicit Euler) and its discrete adjoint
# ---------------------------------------------------------------------------------------------

def _resnet_states(x0, thetas, tau):
    xs = [x0]
    for k in range(1, thetas.shape[0] + 1):
        xs.append(xs[-1] + tau * torch.tanh(xs[-1] @ thetas[k - 1].T + k * tau))
    return torch.stack(xs)


def states(cases):
    results = []
    for x0, thetas, tau in cases:
        before = x0.clone()
        got = resnet_forward(x0, thetas, tau)
        results.append([got, bool(torch.equal(x0, before))])
    return results


def _check_states(result, cases):
    if type(result) is not list or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    return result


def check_states(result, cases):
    for (got, _), (x0, thetas, tau) in zip(_check_states(result, cases), cases):
        close(got, _resnet_states(x0, thetas, tau), rtol=1e-10, atol=1e-12,
              what=f"the states x_0, ..., x_K of a residual network of K = {_many(thetas.shape[0], 'step')} "
                   f"(tau = {tau:g})")


def check_state_form(result, cases):
    for (got, kept), (x0, thetas, tau) in zip(_check_states(result, cases), cases):
        shape = (thetas.shape[0] + 1,) + tuple(x0.shape)
        if type(got) is not torch.Tensor or tuple(got.shape) != shape:
            raise Wrong(f"resnet_forward should return a tensor of shape (K + 1, batch, n), here {shape}")
        close(got[0], x0, rtol=0, atol=0, what="the first state, x_0")
        if not kept:
            raise Wrong("resnet_forward changed x0 in place")


def _resnets(rng, steps):
    cases = []
    for K in steps:
        generator = torch.Generator().manual_seed(rng.randrange(2**31))
        n, batch = rng.randint(2, 5), rng.randint(2, 4)
        tau = round(rng.uniform(0.6, 1.4) / K, 4)
        cases.append((_tensor(generator, batch, n), _tensor(generator, K, n, n, scale=1.2 / n ** 0.5), tau))
    return cases


TASK2 = Task(
    restricted=Restricted(cells=["task2_resnet_forward"], **BY_HAND),
    parts=[
        Part(1.5, "the states x_0, ..., x_K of the explicit Euler steps (with the time k tau), for K = 1 to 40",
             states, check_states, lambda rng: {"cases": _resnets(rng, (1, rng.randint(3, 6), rng.randint(20, 40)))}),
        Part(0.5, "the result is a tensor of shape (K + 1, batch, n) that starts with x_0, and x0 is left as it was",
             states, check_state_form, lambda rng: {"cases": _resnets(rng, (1, rng.randint(2, 8)))}),
    ])


def _resnet_truth(x0, thetas, tau, z):
    x = x0.clone().requires_grad_(True)
    w = thetas.clone().requires_grad_(True)
    out = _resnet_states(x, w, tau)[-1]
    return torch.autograd.grad((out * z).sum(), [x, w])


def adjoint_runs(cases):
    def run():
        results = []
        for x0, thetas, tau, z in cases:
            before = [x0.clone(), thetas.clone(), z.clone()]
            got = resnet_gradients(x0, thetas, tau, z)
            kept = all(torch.equal(a, b) for a, b in zip(before, [x0, thetas, z]))
            results.append([list(got) if type(got) in (tuple, list) else got, kept])
        return results

    return watching_autodiff(run)


def _adjoint_check(index):
    def check(result, cases):
        _check_watched(result, "resnet_gradients")
        runs = result[0] if type(result) is list and len(result) == 3 else None
        if type(runs) is not list or len(runs) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, kept), (x0, thetas, tau, z) in zip(runs, cases):
            if type(got) is not list or len(got) != 2:
                raise Wrong("resnet_gradients should return a pair (grad_x0, grad_thetas)")
            expected = _resnet_truth(x0, thetas, tau, z)[index]
            K = thetas.shape[0]
            what = (f"grad_x0 (the adjoint z_0) of a residual network of K = {_many(K, 'step')}" if index == 0 else
                    f"grad_thetas (shape (K, n, n)) of a residual network of K = {_many(K, 'step')}")
            close(got[index], expected, rtol=1e-9, atol=1e-12, what=what + f" (tau = {tau:g})")
            if not kept:
                raise Wrong("resnet_gradients changed its inputs")
    return check


def _adjoint_cases(rng):
    cases = []
    for x0, thetas, tau in _resnets(rng, (1, rng.randint(3, 6), rng.randint(15, 30))):
        generator = torch.Generator().manual_seed(rng.randrange(2**31))
        cases.append((x0, thetas, tau, _tensor(generator, *x0.shape)))
    return {"cases": cases}


TASK3 = Task(
    restricted=Restricted(cells=["task2_resnet_forward", "task3_resnet_gradients"], **BY_HAND),
    parts=[
        Part(1.5, "grad_x0: the adjoint z_0, back-propagated by hand through K = 1 to 30 steps, with no automatic "
                  "differentiation", adjoint_runs, _adjoint_check(0), _adjoint_cases),
        Part(1.5, "grad_thetas: the gradient of every theta_(k-1), by hand, with no automatic differentiation",
             adjoint_runs, _adjoint_check(1), _adjoint_cases),
    ])

for _part in TASK1.parts + TASK3.parts:
    _part.helpers = (watching_autodiff,)


# ---------------------------------------------------------------------------------------------
# Task 4: verdicts, one part per case
# ---------------------------------------------------------------------------------------------

def verdicts():
    return adjoint_verdicts()


_VERDICTS = {
    "a": ("linear", ("constant", "linear", "quadratic"), "the memory of back-propagation through the stored steps"),
    "b": ("constant", ("constant", "linear", "quadratic"), "the memory of the adjoint method"),
    "c": ("zero", ("zero", "finite", "infinite"), "the limit of the gradient of theta_(k-1)"),
    "d": ("finite", ("zero", "finite", "infinite"), "the limit of (1/tau) times the gradient of theta_(k-1)"),
    "e": ("backward", ("forward", "backward"), "the direction in time of the adjoint equation"),
}

TASK4 = Task(parts=[Part(0.4, f"verdict ({key}): {words}", verdicts, verdict_check(key, answer, choices))
                    for key, (answer, choices, words) in _VERDICTS.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4}
