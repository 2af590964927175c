"""The perceptron and residual networks of chapter 6 (ad_lib.feedforward) against torch.autograd, the tape of
chapter 4 (ad_lib.reverse), gradcheck in float64, torchdiffeq's solution of the limit ODE, and hypothesis."""

import math

import pytest
import torch
import torchdiffeq
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib import ops
from ad_lib.adjoint import odeint
from ad_lib.feedforward import (IDENTITY, MLP, RELU, SIGMOID, SOFTPLUS, TANH, Activation, MLPCache, activation, mlp,
                                mlp_backward, mlp_forward, parameter_gradient_density, resnet, resnet_backward,
                                resnet_forward)
from ad_lib.reverse import grad

F64 = torch.float64
TORCH_RHO = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
             "softplus": torch.nn.functional.softplus, "identity": lambda a: a}


def weights(widths, device, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n_out, n_in, dtype=F64, generator=g) / math.sqrt(n_in)).to(device).requires_grad_(requires_grad)
            for n_in, n_out in zip(widths[:-1], widths[1:])]


def reference_mlp(x, thetas, rho):
    for theta in thetas:
        x = rho(x @ theta.T)
    return x


# ------------------------------------------------------------------ the perceptron


@pytest.mark.parametrize("name", sorted(TORCH_RHO))
@pytest.mark.parametrize("batch", [(), (7,), (2, 3)])
def test_hand_backward_matches_torch_autograd(device, name, batch):
    widths = [5, 8, 6, 3]
    thetas = weights(widths, device, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(*batch, widths[0], dtype=F64, generator=g).to(device).requires_grad_(True)
    target = torch.randn(*batch, widths[-1], dtype=F64, generator=g).to(device)

    out, cache = mlp_forward(x0, thetas, name)
    grad_output = 2 * (out - target)  # the loss ||x_t - target||^2
    grad_x0, grads = mlp_backward(cache, thetas, grad_output)

    reference = reference_mlp(x0, thetas, TORCH_RHO[name])
    torch.testing.assert_close(out, reference.detach(), rtol=1e-14, atol=1e-14)
    expected = torch.autograd.grad(((reference - target) ** 2).sum(), [x0, *thetas])
    torch.testing.assert_close(grad_x0, expected[0], rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(grads, expected[1:]):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_the_cache_keeps_two_tensors_per_layer_and_the_slopes_are_w_k(device):
    widths = [4, 6, 2]
    thetas = weights(widths, device)
    x0 = torch.randn(3, 4, dtype=F64, device=device)
    out, cache = mlp_forward(x0, thetas, TANH)
    assert isinstance(cache, MLPCache) and len(cache.inputs) == len(cache.slopes) == 2
    torch.testing.assert_close(cache.inputs[0], x0)
    a1 = x0 @ thetas[0].T
    torch.testing.assert_close(cache.slopes[0], 1 - torch.tanh(a1) ** 2)
    torch.testing.assert_close(cache.inputs[1], torch.tanh(a1))
    assert not out.requires_grad  # the forward pass records no graph


def test_hand_backward_matches_the_tape_of_chapter_4(device):
    widths = [6, 5, 5, 1]
    thetas = weights(widths, device, seed=3)
    x0 = torch.randn(10, 6, dtype=F64, device=device)

    def loss_on_the_tape(x, *ths):  # the same perceptron, written with ad_lib.ops
        for theta in ths:
            x = ops.tanh(ops.matmul(x, ops.transpose(theta, 0, 1)))
        return ops.sum(x * x)

    expected = grad(loss_on_the_tape, argnums=tuple(range(4)))(x0, *thetas)
    out, cache = mlp_forward(x0, thetas, "tanh")
    grad_x0, grads = mlp_backward(cache, thetas, 2 * out)
    for mine, theirs in zip([grad_x0, *grads], expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rho", ["tanh", "sigmoid", "softplus", "identity"])
def test_gradcheck_of_the_autograd_function(device, rho):
    thetas = weights([3, 4, 2], device, requires_grad=True)
    x0 = torch.randn(5, 3, dtype=F64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *ths: mlp(x, ths, rho), (x0, *thetas))


def test_relu_uses_the_derivative_torch_uses_at_zero(device):
    x0 = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=F64, device=device, requires_grad=True)
    theta = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64, device=device, requires_grad=True)  # a zero pre-activation
    mine = torch.autograd.grad(mlp(x0, [theta], RELU).sum(), (x0, theta))
    theirs = torch.autograd.grad(torch.relu(x0 @ theta.T).sum(), (x0, theta))
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b)


def test_a_custom_activation_with_its_derivative(device):
    sine = Activation(torch.sin, torch.cos, "sin")
    thetas = weights([4, 4, 4], device, requires_grad=True)
    x0 = torch.randn(6, 4, dtype=F64, device=device, requires_grad=True)
    mine = torch.autograd.grad(mlp(x0, thetas, sine).pow(2).sum(), [x0, *thetas])
    theirs = torch.autograd.grad(reference_mlp(x0, thetas, torch.sin).pow(2).sum(), [x0, *thetas])
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_module_trains_like_its_torch_twin(device):
    g = torch.Generator().manual_seed(0)
    net = MLP([3, 16, 1], rho="tanh", generator=g, dtype=F64).to(device)
    twin = [p.detach().clone().requires_grad_(True) for p in net.thetas]
    X = torch.randn(32, 3, dtype=F64, generator=g).to(device)
    Y = X[:, :1] * X[:, 1:2]
    opt, opt_twin = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(twin, lr=0.1)
    for _ in range(20):
        for o, model in ((opt, net), (opt_twin, None)):
            o.zero_grad()
            out = model(X) if model is not None else reference_mlp(X, twin, torch.tanh)
            ((out - Y) ** 2).mean().backward()
            o.step()
    for p, q in zip(net.thetas, twin):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert "widths=[3, 16, 1]" in repr(net)


@settings(max_examples=30, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=6), batch=st.integers(1, 4),
       rho=st.sampled_from(["tanh", "sigmoid", "softplus"]), seed=st.integers(0, 10_000))
def test_property_hand_backward_is_autograd_for_any_widths(widths, batch, rho, seed):
    thetas = weights(widths, "cpu", seed=seed, requires_grad=True)
    x0 = torch.randn(batch, widths[0], dtype=F64, generator=torch.Generator().manual_seed(seed + 1), requires_grad=True)
    cotangent = torch.randn(batch, widths[-1], dtype=F64, generator=torch.Generator().manual_seed(seed + 2))
    out, cache = mlp_forward(x0, thetas, rho)
    mine = mlp_backward(cache, thetas, cotangent)
    theirs = torch.autograd.grad(reference_mlp(x0, thetas, TORCH_RHO[rho]), [x0, *thetas], cotangent)
    for a, b in zip([mine[0], *mine[1]], theirs):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_mlp_bad_inputs():
    thetas = weights([3, 4, 2], "cpu")
    x0 = torch.randn(3, dtype=F64)
    with pytest.raises(TypeError, match="x0 must be a tensor"):
        mlp_forward([1.0, 2.0, 3.0], thetas)
    with pytest.raises(TypeError, match="floating-point"):
        mlp_forward(torch.ones(3, dtype=torch.int64), thetas)
    with pytest.raises(ValueError, match="0-d"):
        mlp_forward(torch.tensor(1.0, dtype=F64), thetas)
    with pytest.raises(ValueError, match=r"thetas\[0\].*3 columns"):
        mlp_forward(x0, weights([5, 4], "cpu"))
    with pytest.raises(ValueError, match=r"thetas\[1\].*4 columns"):
        mlp_forward(x0, [thetas[0], torch.randn(2, 5, dtype=F64)])
    with pytest.raises(ValueError, match=r"thetas\[0\] must be a matrix"):
        mlp_forward(x0, [torch.randn(4, 3, 1, dtype=F64)])
    with pytest.raises(ValueError, match="must match"):
        mlp_forward(x0, [t.float() for t in thetas])
    with pytest.raises(ValueError, match="empty"):
        mlp_forward(x0, [])
    with pytest.raises(TypeError, match="sequence"):
        mlp_forward(x0, thetas[0])
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        mlp_forward(x0, thetas, "swish")
    with pytest.raises(TypeError, match="rho must be"):
        activation(torch.tanh)
    out, cache = mlp_forward(x0, thetas)
    with pytest.raises(ValueError, match=r"grad_output must be shaped like the output x_t, \(2,\)"):
        mlp_backward(cache, thetas, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="grad_output is torch.float32 on cpu but the output x_t is torch.float64"):
        mlp_backward(cache, thetas, torch.ones(2))
    with pytest.raises(ValueError, match="2 layers"):
        mlp_backward(cache, thetas[:1], torch.ones(2, dtype=F64))
    with pytest.raises(TypeError, match="MLPCache"):
        mlp_backward((cache.inputs, cache.slopes), thetas, torch.ones(2, dtype=F64))
    for widths in ([3], [3, 0, 2], [3, 2.5], "32", [3, True]):
        with pytest.raises((ValueError, TypeError), match="widths"):
            MLP(widths)
    with pytest.raises(TypeError, match="generator"):
        MLP([2, 3], generator=0)


def test_named_activations_have_the_right_derivatives():
    a = torch.linspace(-3, 3, 13, dtype=F64).requires_grad_(True)
    for rho in (TANH, SIGMOID, SOFTPLUS, IDENTITY, RELU):
        (slope,) = torch.autograd.grad(rho.function(a).sum(), a)
        torch.testing.assert_close(rho.derivative(a.detach()), slope, rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------ residual networks


def field(x, theta, t):
    """u(x, theta, t) = tanh(theta x) (1 + t / 2): x of shape (..., n), theta (n, n)."""
    return torch.tanh(x @ theta.T) * (1 + t / 2)


def test_resnet_forward_is_the_euler_loop(device):
    thetas = weights([4] * 6, device)
    x0 = torch.randn(3, 4, dtype=F64, device=device)
    tau = 0.1
    xs = resnet_forward(field, x0, thetas, tau)
    x = x0
    for k, theta in enumerate(thetas, start=1):
        x = x + tau * field(x, theta, k * tau)
        torch.testing.assert_close(xs[k], x, rtol=0, atol=0)
    assert len(xs) == len(thetas) + 1


def test_resnet_is_odeint_euler_for_an_autonomous_field(device):
    theta = weights([3, 3], device)[0]
    x0 = torch.randn(3, dtype=F64, device=device)
    K, T = 16, 1.0
    xs = resnet_forward(lambda x, th, t: torch.tanh(x @ th.T), x0, [theta] * K, T / K)
    ys = odeint(lambda t, y: torch.tanh(y @ theta.T), x0, torch.linspace(0, T, K + 1, dtype=F64, device=device),
                method="euler")
    torch.testing.assert_close(torch.stack(xs), ys, rtol=1e-15, atol=1e-15)


def test_discrete_adjoint_matches_autograd_through_the_steps(device):
    K, tau = 7, 0.15
    thetas = weights([4] * (K + 1), device, seed=5, requires_grad=True)
    x0 = torch.randn(2, 4, dtype=F64, device=device, requires_grad=True)
    xs = resnet_forward(field, x0, thetas, tau)
    grad_x0, grads = resnet_backward(field, xs, thetas, tau, 2 * xs[-1])
    x = x0
    for k, theta in enumerate(thetas, start=1):
        x = x + tau * field(x, theta, k * tau)
    expected = torch.autograd.grad((x**2).sum(), [x0, *thetas])
    for mine, theirs in zip([grad_x0, *grads], expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_gradcheck_of_the_residual_function(device):
    thetas = weights([3] * 5, device, requires_grad=True)
    x0 = torch.randn(2, 3, dtype=F64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *ths: resnet(field, x, ths, 0.2), (x0, *thetas))
    stacked = torch.stack([t.detach() for t in thetas]).requires_grad_(True)
    (g,) = torch.autograd.grad(resnet(field, x0, stacked, 0.2).sum(), stacked)  # thetas as one (K, n, n) tensor
    expected = torch.autograd.grad(resnet(field, x0, thetas, 0.2).sum(), thetas)
    torch.testing.assert_close(g, torch.stack(expected))


def continuous_gradient_density(A, B, x0, T, grid):
    """g(t) = [d_theta u(x(t), theta(t), t)]^T z(t) for theta(t) = A + t B, by torchdiffeq's rk4 on a fine grid.

    The loss is ||x(T)||^2 / 2, so z(T) = x(T); z(t) solves z' = -[d_x u]^T z backward in time.
    """
    theta = lambda t: A + t * B  # noqa: E731
    fine = dict(step_size=1 / 2048)
    forward = lambda t, x: field(x, theta(t), t)  # noqa: E731
    xs = torchdiffeq.odeint(forward, x0, grid, method="rk4", options=fine)

    def backward(s, state):  # s = T - t, state = (x, z): integrate from T down to 0
        x, z = state
        t = T - s
        _, vjp_fn = torch.func.vjp(lambda xx: field(xx, theta(t), t), x)
        return -field(x, theta(t), t), vjp_fn(z)[0]

    flipped = (T - grid).flip(0)
    _, zs = torchdiffeq.odeint(backward, (xs[-1], xs[-1]), flipped, method="rk4", options=fine)
    zs = zs.flip(0)
    densities = []
    for t, x, z in zip(grid, xs, zs):
        _, vjp_fn = torch.func.vjp(lambda th: field(x, th, t), theta(t))
        densities.append(vjp_fn(z)[0])
    return torch.stack(densities)


def test_the_normalized_parameter_gradient_converges_at_order_one(device):
    n, T = 3, 1.0
    g = torch.Generator().manual_seed(2)
    A, B = (torch.randn(n, n, dtype=F64, generator=g).to(device) for _ in range(2))
    x0 = torch.randn(n, dtype=F64, generator=g).to(device)
    errors, Ks = [], [8, 16, 32, 64]
    grid = torch.linspace(0, T, 9, dtype=F64, device=device)  # t = 1/8, ..., 1: a grid point of every K
    reference = continuous_gradient_density(A, B, x0, T, grid)[1:]
    for K in Ks:
        tau = T / K
        thetas = [A + k * tau * B for k in range(1, K + 1)]  # theta_{k-1} = theta(k tau)
        xs = resnet_forward(field, x0, thetas, tau)
        _, grads = resnet_backward(field, xs, thetas, tau, xs[-1])
        density = parameter_gradient_density(grads, tau)  # (K, n, n)
        errors.append((density[K // 8 - 1 :: K // 8] - reference).abs().max().item())
        # the raw gradients vanish with tau; divided by tau they do not
        assert grads[0].abs().max() < 2 * tau * reference.abs().max()
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(0.85 < p < 1.15 for p in orders), (errors, orders)


def test_resnet_bad_inputs():
    thetas = weights([3, 3, 3], "cpu")
    x0 = torch.randn(3, dtype=F64)
    with pytest.raises(TypeError, match="u must be a callable"):
        resnet_forward(None, x0, thetas, 0.1)
    for tau in (0, -0.1, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="tau must be a positive real"):
            resnet_forward(field, x0, thetas, tau)
    with pytest.raises(ValueError, match="at layer 1 it returned"):
        resnet_forward(lambda x, th, t: x[:2], x0, thetas, 0.1)
    with pytest.raises(ValueError, match="empty"):
        resnet_forward(field, x0, [], 0.1)
    with pytest.raises(TypeError, match=r"thetas\[1\] must be a tensor"):
        resnet_forward(field, x0, [thetas[0], 1.0], 0.1)
    xs = resnet_forward(field, x0, thetas, 0.1)
    with pytest.raises(ValueError, match="K \\+ 1 = 3 states"):
        resnet_backward(field, xs[:2], thetas, 0.1, xs[-1])
    with pytest.raises(ValueError, match="grad_output must be shaped like x_K"):
        resnet_backward(field, xs, thetas, 0.1, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="grad_output is torch.float32"):
        resnet_backward(field, xs, thetas, 0.1, xs[-1].float())
    with pytest.raises(ValueError, match="xs is empty.*resnet_forward"):
        resnet_backward(field, [], thetas, 0.1, xs[-1])
    with pytest.raises(TypeError, match="xs must be the list .* returned by resnet_forward, got Tensor"):
        resnet_backward(field, torch.stack(xs), thetas, 0.1, xs[-1])
    with pytest.raises(TypeError, match=r"xs\[1\] must be a tensor"):
        resnet_backward(field, [xs[0], None, xs[2]], thetas, 0.1, xs[-1])
    with pytest.raises(ValueError, match="tau"):
        parameter_gradient_density([torch.ones(2)], 0.0)
    with pytest.raises(TypeError, match="grads"):
        parameter_gradient_density([], 0.1)


class ModuleField(torch.nn.Module):
    """u(x, theta, t) = tanh(x M^T) theta (1 + t / 2), with a parameter M that resnet cannot reach."""

    def __init__(self, n=3):
        super().__init__()
        self.M = torch.nn.Parameter(torch.eye(n, dtype=F64))

    def forward(self, x, theta, t):
        return torch.tanh(x @ self.M.T) * theta * (1 + t / 2)


def test_resnet_refuses_a_module_u_whose_parameters_require_grad():
    u = ModuleField()
    x0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    thetas = torch.randn(4, 3, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match=r"u is an nn.Module whose parameters \['M'\] require grad.*thetas"):
        resnet(u, x0, thetas, 0.1)
    u.M.requires_grad_(False)  # frozen: a constant, and resnet is then differentiable as usual
    (g,) = torch.autograd.grad(resnet(u, x0, thetas, 0.1).sum(), thetas)
    x = x0
    for k, theta in enumerate(thetas.unbind(0), start=1):
        x = x + 0.1 * u(x, theta, k * 0.1)
    torch.testing.assert_close(g, torch.autograd.grad(x.sum(), thetas)[0], rtol=1e-12, atol=1e-12)


def test_a_parameter_list_is_a_sequence_of_weights(device):
    net = MLP([3, 5, 2], rho="softplus", generator=torch.Generator().manual_seed(3), dtype=F64, device=device)
    x0 = torch.randn(4, 3, dtype=F64, device=device)
    out, _ = mlp_forward(x0, net.thetas, SOFTPLUS)
    torch.testing.assert_close(out, net(x0).detach())
    assert net.thetas[0].device.type == torch.device(device).type and net.thetas[0].shape == (5, 3)
