"""The optimizers of chapter 11 (ad_lib.optim) against torch.optim: the same trajectory, to 1e-12 in
float64, over 200 steps of a non-quadratic problem with two parameter groups, for several settings of
each; the slides' forms of momentum and Adagrad against PyTorch's; state_dict round trips; bad input."""

import copy
import inspect
import math

import pytest
import torch

from ad_lib import optim

F64 = torch.float64
STEPS = 200

SETTINGS = {  # name: hyper-parameter settings (the second group of each run overrides lr and weight decay)
    "SGD": [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, momentum=0.9),
            dict(lr=1e-2, momentum=0.9, dampening=0.3, weight_decay=0.05),
            dict(lr=1e-2, momentum=0.8, nesterov=True, weight_decay=0.1)],
    "Adagrad": [dict(lr=0.1), dict(lr=0.1, lr_decay=0.01, weight_decay=0.1),
                dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-6)],
    "RMSprop": [dict(), dict(lr=1e-2, alpha=0.9, weight_decay=0.1), dict(lr=1e-2, centered=True),
                dict(lr=1e-3, momentum=0.9, centered=True, weight_decay=0.05, eps=1e-6)],
    "Adam": [dict(), dict(lr=1e-2, betas=(0.8, 0.99)), dict(lr=1e-2, weight_decay=0.1),
             dict(lr=1e-2, amsgrad=True, weight_decay=0.05, eps=1e-6)],
    "AdamW": [dict(), dict(lr=1e-2, weight_decay=0.5), dict(lr=1e-2, amsgrad=True, betas=(0.5, 0.9))],
}
CASES = [pytest.param(name, s, id=f"{name}-{i}") for name, settings in SETTINGS.items() for i, s in enumerate(settings)]


def problem(device, seed=0):
    """Two parameter tensors and a non-quadratic loss (tanh, a quartic, log1p)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(6, 4, generator=g, dtype=F64).to(device)
    params = [torch.randn(4, generator=g, dtype=F64).to(device).requires_grad_(),
              torch.randn(2, 3, generator=g, dtype=F64).to(device).requires_grad_()]

    def loss():
        u, w = params
        r = torch.tanh(A @ u) - w.reshape(-1)
        return r.square().sum() + 0.1 * u.pow(4).sum() + torch.log1p(w.square()).sum()
    return params, loss


def trajectory(make, settings, device, steps=STEPS, seed=0):
    params, loss = problem(device, seed)
    groups = [{"params": [params[0]]}, {"params": [params[1]], "lr": settings.get("lr", 1e-2) / 2,
                                        "weight_decay": 0.02}]
    opt = make(groups, **settings)
    path = []
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
        path.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
    return torch.stack(path), opt


@pytest.mark.parametrize("name, settings", CASES)
def test_the_trajectory_is_torch_optims(name, settings, device):
    ours, _ = trajectory(getattr(optim, name), settings, device)
    for foreach in (True, False):
        theirs, _ = trajectory(lambda p, **k: getattr(torch.optim, name)(p, foreach=foreach, **k), settings, device)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-12), (foreach, (ours - theirs).abs().max())
    assert (ours[-1] - ours[0]).abs().max() > 1e-3  # it moved


@pytest.mark.parametrize("name", SETTINGS)
def test_constructor_arguments_and_defaults_are_torch_optims(name):
    ours = inspect.signature(getattr(optim, name).__init__).parameters
    theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters
    # the same names, in the same order, of the same kinds (positional or keyword-only), with the same defaults
    assert [(a, p.kind, p.default) for a, p in ours.items()] == \
        [(a, p.kind, p.default) for a, p in theirs.items()]
    assert issubclass(getattr(optim, name), torch.optim.Optimizer)


def test_sgd_default_lr_is_torchs():
    assert inspect.signature(optim.SGD).parameters["lr"].default == 1e-3


def test_the_step_calls_no_step_of_torch_optim(monkeypatch):
    for name in SETTINGS:
        monkeypatch.setattr(getattr(torch.optim, name), "step", lambda *a, **k: pytest.fail("torch.optim's step called"))
    for name, settings in SETTINGS.items():
        trajectory(getattr(optim, name), settings[-1], "cpu", steps=3)


def run(opt, params, loss, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("source", ["ours", "torch.optim"])
@pytest.mark.parametrize("name", SETTINGS)
def test_state_dict_round_trip_continues_the_same_trajectory(name, source):
    """Ten steps, the state saved and loaded into a fresh optimizer (ours), ten more: the same as twenty."""
    settings = SETTINGS[name][-1]
    params, loss = problem("cpu")
    first = (getattr(optim, name) if source == "ours" else getattr(torch.optim, name))(params, **settings)
    middle = run(first, params, loss, 10)
    saved = copy.deepcopy(first.state_dict())  # its tensors are the live buffers
    end = run(first, params, loss, 10)
    params2, loss2 = problem("cpu")
    with torch.no_grad():
        for p, q in zip(params2, middle):
            p.copy_(q)
    second = getattr(optim, name)(params2, **settings)
    second.load_state_dict(saved)
    assert all(torch.allclose(p, q, rtol=0, atol=1e-14) for p, q in zip(run(second, params2, loss2, 10), end))
    second.zero_grad()
    assert all(p.grad is None for p in params2)


def test_closure_is_called_and_its_loss_returned():
    params, loss = problem("cpu")
    opt = optim.Adam(params, lr=1e-2)

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value
    first = opt.step(closure)
    assert torch.is_tensor(first) and opt.step(closure) < first


def test_parameters_without_gradient_are_left_alone():
    a = torch.ones(3, dtype=F64, requires_grad=True)
    b = torch.ones(3, dtype=F64, requires_grad=True)
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    (a * a).sum().backward()
    opt.step()
    assert torch.equal(b, torch.ones(3, dtype=F64)) and b not in opt.state
    assert torch.allclose(a, torch.full((3,), 0.8, dtype=F64))


def test_nesterov_does_not_change_the_gradient():
    a = torch.ones(3, dtype=F64, requires_grad=True)
    opt = optim.SGD([a], lr=0.1, momentum=0.9, nesterov=True)
    (a * a).sum().backward()
    opt.step()
    opt.step()
    assert torch.equal(a.grad, torch.full((3,), 2.0, dtype=F64))


# -- the slides' forms ------------------------------------------------------------------------------

def test_slides_momentum_is_pytorchs_with_v_equal_lr_times_b():
    """v <- gamma v + eta g, x <- x - v (slides) and b <- mu b + g, x <- x - lr b (torch): v = lr b."""
    params, loss = problem("cpu")
    x = params[0].detach().clone().requires_grad_()
    others = params[1].detach()
    eta, gamma = 0.02, 0.9
    v = torch.zeros_like(x)
    ours, _ = trajectory(lambda p, **k: optim.SGD(p[0]["params"], **k), dict(lr=eta, momentum=gamma), "cpu", steps=50)
    for t in range(50):
        params[0].data.copy_(x.detach())
        params[1].data.copy_(others)
        g, = torch.autograd.grad(loss(), params[0])
        v = gamma * v + eta * g
        x = (x - v).detach()
        assert torch.allclose(x, ours[t, :4], rtol=0, atol=1e-12)


def test_slides_nesterov_is_pytorchs_in_the_look_ahead_variable():
    """Slides: v <- gamma v + eta g(x - gamma v), x <- x - v.  With y = x - gamma v, y follows torch's nesterov."""
    A = torch.tensor([[1.0, 0.3], [0.3, 0.2]], dtype=F64)

    def grad(x):
        return A @ x + torch.sin(x)
    eta, gamma = 0.1, 0.8
    x, v = torch.tensor([1.0, -2.0], dtype=F64), torch.zeros(2, dtype=F64)
    y = x.clone().requires_grad_()
    opt = optim.SGD([y], lr=eta, momentum=gamma, nesterov=True)
    for _ in range(100):
        v = gamma * v + eta * grad(x - gamma * v)
        x = x - v
        y.grad = grad(y.detach())
        opt.step()
        assert torch.allclose(y.detach(), x - gamma * v, rtol=0, atol=1e-12)


def test_adagrad_eps_inside_or_outside_the_root_differs_only_for_tiny_accumulators():
    g = torch.tensor([1e-6, 1e-3, 1.0], dtype=F64)
    eps = 1e-10
    G = g * g
    inside, outside = g / torch.sqrt(G + eps), g / (torch.sqrt(G) + eps)
    relative = (inside - outside).abs() / outside
    assert relative[-1] < 1e-9 and relative[1] < 1e-3 and relative[0] > 0.1


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, word", [
    ("SGD", dict(lr=-1.0), "lr"), ("Adam", dict(lr=-1e-3), "lr"), ("SGD", dict(momentum=-0.1), "momentum"),
    ("SGD", dict(nesterov=True), "nesterov"), ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    ("Adam", dict(betas=(1.0, 0.9)), "betas[0]"), ("AdamW", dict(betas=(0.9, -0.1)), "betas[1]"),
    ("Adam", dict(betas=0.9), "betas"), ("Adam", dict(eps=-1e-8), "eps"), ("RMSprop", dict(eps=-1.0), "eps"),
    ("Adagrad", dict(eps=-1.0), "eps"), ("RMSprop", dict(momentum=-1.0), "momentum"),
    ("RMSprop", dict(alpha=1.5), "alpha"), ("Adagrad", dict(lr_decay=-1.0), "lr_decay"),
    ("SGD", dict(weight_decay=-1.0), "weight_decay"), ("SGD", dict(lr="fast"), "lr"),
    ("Adam", dict(amsgrad="yes"), "amsgrad"),
])
def test_bad_hyper_parameters_are_named(name, kwargs, word):
    with pytest.raises((ValueError, TypeError), match=word.replace("[", r"\[").replace("]", r"\]")):
        getattr(optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)


def test_bad_hyper_parameters_in_an_added_group_are_named():
    opt = optim.Adam([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": -1.0})


def test_sparse_gradients_are_refused():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(TypeError, match="sparse"):
        optim.SGD([p], lr=0.1).step()


def test_adam_bias_correction_makes_the_first_step_lr_times_sign():
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    p.grad = torch.tensor([1e-4, -2.0, 50.0], dtype=F64)
    optim.Adam([p], lr=0.1, eps=0).step()
    assert torch.allclose(p.detach(), -0.1 * torch.sign(p.grad), rtol=0, atol=1e-15)
    assert math.isclose(p.detach().abs().max().item(), 0.1)


# -- review (rev11): torch.optim's keyword switches, state_dicts from torch with them, mixed gradients --

@pytest.mark.parametrize("name, settings", [(n, s[-1]) for n, s in SETTINGS.items()])
def test_maximize_is_torch_optims_ascent(name, settings):
    ours, _ = trajectory(lambda p, **k: getattr(optim, name)(p, maximize=True, **k), settings, "cpu", steps=30)
    theirs, _ = trajectory(lambda p, **k: getattr(torch.optim, name)(p, maximize=True, **k), settings, "cpu",
                           steps=30)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12), (ours - theirs).abs().max()


@pytest.mark.parametrize("name", SETTINGS)
def test_a_torch_state_dict_with_maximize_is_honoured_not_ignored(name):
    """Before the review, a loaded torch group with maximize=True was silently stepped downhill."""
    settings = dict(SETTINGS[name][-1], maximize=True)
    params, loss = problem("cpu")
    first = getattr(torch.optim, name)(params, **settings)
    run(first, params, loss, 5)
    saved = copy.deepcopy(first.state_dict())
    middle = [p.detach().clone() for p in params]
    end = run(first, params, loss, 5)
    params2, loss2 = problem("cpu")
    with torch.no_grad():
        for p, q in zip(params2, middle):
            p.copy_(q)
    second = getattr(optim, name)(params2, **SETTINGS[name][-1])  # maximize=False here, True in saved
    second.load_state_dict(saved)
    assert second.param_groups[0]["maximize"] is True
    assert all(isinstance(s.get("step", 0), int) for s in second.state.values())
    assert all(torch.allclose(p, q, rtol=0, atol=1e-13) for p, q in zip(run(second, params2, loss2, 5), end))


@pytest.mark.parametrize("name, flag", [("SGD", "differentiable"), ("Adam", "capturable"), ("AdamW", "fused"),
                                        ("RMSprop", "capturable"), ("Adagrad", "fused"), ("Adam", "differentiable")])
def test_implementation_switches_we_do_not_have_are_refused_by_name(name, flag):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=flag):
        getattr(optim, name)([p], **{flag: True})
    getattr(optim, name)([p], foreach=False)  # foreach changes only torch's implementation: accepted
    opt = getattr(optim, name)([p])
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][0][flag] = True  # nor slipped in through a state_dict
    with pytest.raises(ValueError, match=flag):
        opt.load_state_dict(state)


def test_adam_decoupled_weight_decay_is_adamw():
    settings = dict(lr=1e-2, weight_decay=0.3)
    ours, _ = trajectory(lambda p, **k: optim.Adam(p, decoupled_weight_decay=True, **k), settings, "cpu", steps=30)
    theirs, _ = trajectory(torch.optim.AdamW, settings, "cpu", steps=30)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, settings", CASES)
def test_parameters_whose_gradient_is_sometimes_none_follow_torch(name, settings):
    """Three tensors, the third without a gradient every other step (its step count lags), and a group
    added after two steps, with a tensor learning rate."""
    trajectories = []
    for make in (getattr(optim, name), getattr(torch.optim, name)):
        g = torch.Generator().manual_seed(5)
        a, b, c = (torch.randn(3, generator=g, dtype=F64).requires_grad_() for _ in range(3))
        opt = make([a, b], **settings)
        for t in range(40):
            if t == 2:
                opt.add_param_group({"params": [c], "lr": torch.tensor(settings.get("lr", 1e-2) / 3, dtype=F64)})
            opt.zero_grad()
            used = [a, b, c] if t % 2 else [a, b]
            sum(((p.square().sum() - 1) ** 2 + torch.sin(3 * p).sum()) for p in used).backward()
            opt.step()
        trajectories.append(torch.cat([a, b, c]).detach())
    assert torch.allclose(*trajectories, rtol=0, atol=1e-12), (trajectories[0] - trajectories[1]).abs().max()


def test_complex_parameters_are_refused():
    p = torch.zeros(2, dtype=torch.complex128, requires_grad=True)
    p.grad = torch.ones_like(p)
    for name in SETTINGS:
        with pytest.raises(TypeError, match="real"):
            getattr(optim, name)([p]).step()
