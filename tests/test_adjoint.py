"""odeint and odeint_adjoint of chapter 6 (ad_lib.adjoint) against closed forms, torchdiffeq's fixed-step solvers
(odeint and odeint_adjoint), torch.autograd, gradcheck in float64, and the bytes saved for backward."""

import math

import pytest
import torch
import torchdiffeq
from torch import nn

from ad_lib.adjoint import METHODS, augmented_dynamics, odeint, odeint_adjoint, steps_per_interval

F64 = torch.float64
# ad_lib's method -> torchdiffeq's method with the same Butcher tableau (torchdiffeq's "rk4" is Kutta's 3/8 rule)
SAME_AS_TORCHDIFFEQ = {"euler": "euler", "midpoint": "midpoint", "rk4_38": "rk4"}


class Field(nn.Module):
    """func(t, y) = tanh(W y + b) cos(t) - y / 2, a time-dependent field with two parameters."""

    def __init__(self, n=3, seed=0, device="cpu"):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter((torch.randn(n, n, dtype=F64, generator=g) / math.sqrt(n)).to(device))
        self.b = nn.Parameter(torch.randn(n, dtype=F64, generator=g).to(device))

    def forward(self, t, y):
        return torch.tanh(y @ self.W.T + self.b) * torch.cos(t) - y / 2


class Linear(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, y):
        return y @ self.A.T


def setup(device, batch=(), seed=0):
    func = Field(seed=seed, device=device)
    g = torch.Generator().manual_seed(seed + 1)
    y0 = torch.randn(*batch, 3, dtype=F64, generator=g).to(device).requires_grad_(True)
    t = torch.tensor([0.0, 0.5, 0.75, 1.5], dtype=F64, device=device)
    weights = torch.randn(len(t), *batch, 3, dtype=F64, generator=g).to(device)  # the loss sum(weights * ys)
    return func, y0, t, weights


def gradients(solver, func, y0, t, weights, **kwargs):
    ys = solver(func, y0, t, **kwargs)
    return ys.detach(), torch.autograd.grad((weights * ys).sum(), (y0, *func.parameters()))


# ------------------------------------------------------------------ the solutions


@pytest.mark.parametrize("method", sorted(METHODS))
def test_order_of_each_method_on_a_linear_ode(device, method):
    g = torch.Generator().manual_seed(0)
    A = (torch.randn(4, 4, dtype=F64, generator=g) / 2).to(device)
    y0 = torch.randn(4, dtype=F64, generator=g).to(device)
    t = torch.tensor([0.0, 1.0], dtype=F64, device=device)
    exact = torch.linalg.matrix_exp(A) @ y0
    errors = [(odeint(lambda s, y: A @ y, y0, t, method=method, options=dict(step_size=h))[-1] - exact).norm().item()
              for h in (1 / 8, 1 / 16, 1 / 32)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(p - METHODS[method].order) < 0.3 for p in orders), (errors, orders)


@pytest.mark.parametrize("method", sorted(SAME_AS_TORCHDIFFEQ))
@pytest.mark.parametrize("batch", [(), (2,)])
def test_odeint_matches_torchdiffeq(device, method, batch):
    func, y0, t, _ = setup(device, batch)
    for options in (dict(step_size=1 / 16), None):
        mine = odeint(func, y0, t, method=method, options=options)
        theirs = torchdiffeq.odeint(func, y0, t, method=SAME_AS_TORCHDIFFEQ[method], options=options)
        assert mine.shape == (len(t), *y0.shape)
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_classical_rk4_and_torchdiffeqs_rk4_are_two_fourth_order_methods(device):
    # torchdiffeq's "rk4" is Kutta's 3/8 rule: on a non-linear ODE it differs from the classical method by O(h^4),
    # and both converge to the exact solution at order 4; neither is wrong. ad_lib's "rk4_38" is torchdiffeq's "rk4"
    # (tested above). (On a linear ODE y' = A y the two give the same step, the Taylor polynomial of exp(hA).)
    y0 = torch.tensor([0.25, 0.5, 1.0], dtype=F64, device=device)
    t = torch.tensor([0.0, 1.0], dtype=F64, device=device)
    riccati = lambda s, y: -(y**2)  # noqa: E731  y(t) = y0 / (1 + y0 t)
    exact = y0 / (1 + y0)
    gaps, errors_classical, errors_38 = [], [], []
    for h in (1 / 32, 1 / 64, 1 / 128):
        classical = odeint(riccati, y0, t, method="rk4", options=dict(step_size=h))[-1]
        theirs = torchdiffeq.odeint(riccati, y0, t, method="rk4", options=dict(step_size=h))[-1]
        gaps.append((classical - theirs).norm().item())
        errors_classical.append((classical - exact).norm().item())
        errors_38.append((theirs - exact).norm().item())
    assert gaps[-1] > 1e-12  # not the same method
    for errors in (gaps, errors_classical, errors_38):
        assert all(3.7 < math.log2(a / b) < 4.4 for a, b in zip(errors, errors[1:])), errors


def test_steps_per_interval():
    t = torch.tensor([0.0, 0.25, 1.0, 1.1], dtype=F64)
    assert steps_per_interval(t) == [1, 1, 1]
    assert steps_per_interval(t, dict(step_size=0.025)) == [10, 30, 4]  # 0.25 / 0.025 is 10.000000000000002
    assert steps_per_interval(t, dict(step_size=10.0)) == [1, 1, 1]
    assert steps_per_interval(t, dict(step_size=torch.tensor(0.25))) == [1, 3, 1]


def test_steps_per_interval_in_float32():
    # the quotients come from t in its own dtype, with a float32-sized tolerance: (0.2f - 0.1f) / 0.01 is 10.0000001
    assert steps_per_interval(torch.linspace(0, 1, 11), dict(step_size=0.01)) == [10] * 10
    assert steps_per_interval(torch.tensor([0.0, 0.1, 0.3, 0.7]), dict(step_size=0.1)) == [1, 2, 4]
    assert steps_per_interval(torch.tensor([0.0, 0.25, 1.0, 1.1]), dict(step_size=0.025)) == [10, 30, 4]
    assert steps_per_interval(torch.tensor([0.0, 1.0]), dict(step_size=0.3)) == [4]  # not a divisor: ceil
    assert steps_per_interval(torch.linspace(0, 1, 11, dtype=F64), dict(step_size=torch.tensor(0.01))) == [10] * 10


@pytest.mark.parametrize("method", sorted(SAME_AS_TORCHDIFFEQ))
def test_odeint_matches_torchdiffeq_in_float32(device, method):
    func, y0, _, _ = setup(device)
    func = func.float()
    y0 = y0.detach().float()
    t = torch.linspace(0, 1, 11, device=device)  # float32, as torch's default dtype
    calls = {"mine": 0, "theirs": 0}

    def counting(who):
        def f(s, y):
            calls[who] += 1
            return func(s, y)
        return f

    mine = odeint(counting("mine"), y0, t, method=method, options=dict(step_size=0.01))
    theirs = torchdiffeq.odeint(counting("theirs"), y0, t, method=SAME_AS_TORCHDIFFEQ[method], options=dict(step_size=0.01))
    assert mine.dtype == torch.float32
    assert calls["mine"] == calls["theirs"] == 100 * len(METHODS[method].weights)  # 100 steps, as torchdiffeq takes
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_absurd_step_sizes_are_refused():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for step in (1e-300, 1e-9, 5e-324):
        with pytest.raises(ValueError, match=r"options\['step_size'\]"):
            steps_per_interval(t, dict(step_size=step))
    with pytest.raises(ValueError, match=r"options\['step_size'\]"):
        odeint(lambda s, y: -y, torch.ones(1, dtype=F64), t, options=dict(step_size=1e-300))
    assert steps_per_interval(t, dict(step_size=1e-8)) == [10**8]  # 10^8 steps in all is still allowed


def test_rtol_and_atol_are_accepted_and_ignored_as_by_torchdiffeq(device):
    func, y0, t, _ = setup(device)
    options = dict(step_size=0.125)
    plain = odeint(func, y0, t, method="rk4_38", options=options)
    torch.testing.assert_close(odeint(func, y0, t, rtol=1e-3, atol=1e-4, method="rk4_38", options=options), plain,
                               rtol=0, atol=0)
    theirs = torchdiffeq.odeint(func, y0, t, rtol=1e-3, atol=1e-4, method="rk4", options=options)
    torch.testing.assert_close(plain, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(odeint_adjoint(func, y0, t, rtol=1e-3, atol=torch.tensor(1e-4), method="rk4_38",
                                              options=options), plain, rtol=0, atol=0)
    with pytest.raises(TypeError, match="rtol"):
        odeint(func, y0, t, rtol="tight")


def test_output_times_are_grid_points_without_interpolation(device):
    # a step size that does not divide the intervals: each interval gets ceil(length / h) equal steps
    func, y0, t, _ = setup(device)
    uneven = odeint(func, y0, t, method="rk4", options=dict(step_size=0.3))
    pieces = [y0]
    for i, n in enumerate([2, 1, 3]):
        piece = torch.linspace(t[i].item(), t[i + 1].item(), n + 1, dtype=F64, device=device)
        pieces.append(odeint(func, pieces[-1], piece, method="rk4")[-1])
    torch.testing.assert_close(uneven, torch.stack(pieces), rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------ the gradients


@pytest.mark.parametrize("method", sorted(SAME_AS_TORCHDIFFEQ))
@pytest.mark.parametrize("batch", [(), (2,)])
def test_odeint_adjoint_matches_torchdiffeqs_adjoint(device, method, batch):
    func, y0, t, weights = setup(device, batch)
    options = dict(step_size=1 / 16)
    ys, mine = gradients(odeint_adjoint, func, y0, t, weights, method=method, options=options)
    ys_theirs, theirs = gradients(torchdiffeq.odeint_adjoint, func, y0, t, weights,
                                  method=SAME_AS_TORCHDIFFEQ[method], options=options)
    torch.testing.assert_close(ys, ys_theirs, rtol=1e-12, atol=1e-12)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_odeint_adjoint_has_odeints_values(device, method):
    func, y0, t, _ = setup(device, (2,))
    torch.testing.assert_close(odeint_adjoint(func, y0, t, method=method, options=dict(step_size=0.1)),
                               odeint(func, y0, t, method=method, options=dict(step_size=0.1)), rtol=0, atol=0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_adjoint_gradients_converge_to_odeints_at_the_methods_order(device, method):
    func, y0, t, weights = setup(device, seed=2)
    order = METHODS[method].order
    steps = (1 / 8, 1 / 16, 1 / 32) if order < 4 else (1 / 2, 1 / 4, 1 / 8)
    differences = []
    for h in steps:
        _, through = gradients(odeint, func, y0, t, weights, method=method, options=dict(step_size=h))
        _, adjoint = gradients(odeint_adjoint, func, y0, t, weights, method=method, options=dict(step_size=h))
        differences.append(max((a - b).abs().max().item() for a, b in zip(through, adjoint)))
    orders = [math.log2(a / b) for a, b in zip(differences, differences[1:])]
    assert all(abs(p - order) < 0.4 for p in orders), (differences, orders)


def test_adjoint_gradients_converge_to_the_exact_gradient(device):
    # y' = A y: y(1) = expm(A) y0, and the gradient of sum(w * y(1)) with respect to y0 is expm(A)^T w
    g = torch.Generator().manual_seed(3)
    A = (torch.randn(3, 3, dtype=F64, generator=g) / 2).to(device)
    y0 = torch.randn(3, dtype=F64, generator=g).to(device).requires_grad_(True)
    w = torch.randn(3, dtype=F64, generator=g).to(device)
    t = torch.tensor([0.0, 1.0], dtype=F64, device=device)
    func = Linear(A.clone())
    (expected_y0, expected_A) = torch.autograd.grad((torch.linalg.matrix_exp(func.A) @ y0 * w).sum(), (y0, func.A))
    errors = []
    for h in (1 / 4, 1 / 8, 1 / 16):
        ys = odeint_adjoint(func, y0, t, method="rk4", options=dict(step_size=h))
        got_y0, got_A = torch.autograd.grad((ys[-1] * w).sum(), (y0, func.A))
        errors.append((got_A - expected_A).abs().max().item())
        torch.testing.assert_close(got_y0, expected_y0, rtol=10 * h**4, atol=10 * h**4)
    assert all(3.5 < math.log2(a / b) < 4.5 for a, b in zip(errors, errors[1:])), errors


def test_for_a_linear_ode_the_adjoint_y0_gradient_is_exact_for_the_scheme(device):
    # y' = A y, a step is y -> R(hA) y; the adjoint a' = -A^T a stepped backward is a -> R(hA)^T a:
    # the transpose of the forward scheme, so the gradient with respect to y0 passes gradcheck at any step
    g = torch.Generator().manual_seed(4)
    A = (torch.randn(3, 3, dtype=F64, generator=g) / 2).to(device)
    y0 = torch.randn(3, dtype=F64, generator=g).to(device).requires_grad_(True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64, device=device)
    for method in sorted(METHODS):
        assert torch.autograd.gradcheck(
            lambda y: odeint_adjoint(lambda s, x: x @ A.T, y, t, method=method, options=dict(step_size=0.2),
                                     adjoint_params=()), (y0,))


def test_gradcheck_of_odeint_through_autograd(device):
    func, y0, t, _ = setup(device)
    assert torch.autograd.gradcheck(lambda y, W, b: odeint(lambda s, x: torch.tanh(x @ W.T + b) - x, y, t),
                                    (y0, func.W, func.b))


def test_explicit_adjoint_params_for_a_closure_and_parameters_without_grad(device):
    func, y0, t, weights = setup(device)
    W, b = func.W, func.b
    closure = lambda s, y: func(s, y)  # noqa: E731  (not a module: its parameters must be named)
    ys = odeint_adjoint(closure, y0, t, adjoint_params=(W,), options=dict(step_size=0.25))
    g_y0, g_W = torch.autograd.grad((weights * ys).sum(), (y0, W))
    _, expected = gradients(odeint_adjoint, func, y0, t, weights, options=dict(step_size=0.25))
    torch.testing.assert_close(g_y0, expected[0], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(g_W, expected[1], rtol=1e-14, atol=1e-14)
    b.requires_grad_(False)  # a frozen parameter is left out, as in torchdiffeq
    ys = odeint_adjoint(func, y0, t, options=dict(step_size=0.25))
    torch.testing.assert_close(torch.autograd.grad((weights * ys).sum(), W)[0], expected[1], rtol=1e-14, atol=1e-14)


def test_a_parameter_listed_twice_gets_its_gradient_once(device):
    func, y0, t, weights = setup(device)
    options = dict(step_size=0.25)
    closure = lambda s, y: func(s, y)  # noqa: E731
    once = torch.autograd.grad((weights * odeint_adjoint(closure, y0, t, options=options,
                                                         adjoint_params=(func.W, func.b))).sum(), (y0, func.W, func.b))
    ys = odeint_adjoint(closure, y0, t, options=options, adjoint_params=(func.W, func.b, func.W, func.b, func.W))
    assert len(ys.grad_fn.next_functions) == 4  # the tensor inputs y0, t, and W and b once each: no duplicates
    twice = torch.autograd.grad((weights * ys).sum(), (y0, func.W, func.b))
    for a, b in zip(twice, once):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    through = torch.autograd.grad((weights * odeint(func, y0, t, options=options)).sum(), (func.W,))[0]
    assert (twice[1] - through).abs().max() < 0.01 * through.abs().max()  # once, not twice: O(h^4) from odeint's


def test_augmented_dynamics_are_the_vjps(device):
    func, y0, t, _ = setup(device)
    y, a = y0.detach(), torch.randn(3, dtype=F64, device=device)
    s = torch.tensor(0.3, dtype=F64, device=device)
    dy, da, dW, db = augmented_dynamics(func, (func.W, func.b))(s, (y, a, torch.zeros_like(func.W), torch.zeros_like(func.b)))
    _, vjp_fn = torch.func.vjp(lambda yy, W, b: torch.func.functional_call(func, {"W": W, "b": b}, (s, yy)),
                               y, func.W.detach(), func.b.detach())
    for mine, theirs in zip((da, dW, db), vjp_fn(a)):
        torch.testing.assert_close(mine, -theirs, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(dy, func(s, y).detach())


# ------------------------------------------------------------------ memory


def saved_bytes(run):
    """Bytes of the tensors that autograd saves for backward while `run()` records its graph (each storage once)."""
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), tensor.storage_offset(), tuple(tensor.shape))] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    return sum(seen.values()), out


def test_the_adjoint_saves_the_same_bytes_at_any_number_of_steps_and_odeint_linearly_more(device):
    func, y0, t, weights = setup(device)
    counts = [8, 16, 32, 64]
    adjoint, through = [], []
    for n in counts:
        options = dict(step_size=1.5 / n)
        adjoint.append(saved_bytes(lambda: odeint_adjoint(func, y0, t, options=options))[0])
        through.append(saved_bytes(lambda: odeint(func, y0, t, options=options))[0])
    params = sum(p.numel() for p in func.parameters()) * 8
    assert adjoint == [len(t) * 8 + len(t) * 3 * 8 + params] * len(counts)  # t, the outputs, the parameters
    increments = [(b - a) / (m - n) for a, b, n, m in zip(through, through[1:], counts, counts[1:])]
    assert max(increments) - min(increments) <= 0.05 * max(increments)  # the same bytes per added step: linear
    assert through[-1] > 20 * adjoint[-1]


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs():
    func, y0, t, _ = setup("cpu")
    with pytest.raises(ValueError, match="strictly increasing"):
        odeint(func, y0, t.flip(0))
    with pytest.raises(ValueError, match="strictly increasing"):
        odeint_adjoint(func, y0, torch.tensor([0.0, 1.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="1-D tensor of at least two"):
        odeint(func, y0, t[:1])
    with pytest.raises(ValueError, match="1-D tensor"):
        odeint(func, y0, t.reshape(2, 2))
    with pytest.raises(TypeError, match="t must be a floating-point"):
        odeint(func, y0, torch.arange(3))
    with pytest.raises(TypeError, match="t must be a 1-D tensor"):
        odeint(func, y0, [0.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        odeint(func, y0, torch.tensor([0.0, float("inf")], dtype=F64))
    with pytest.raises(ValueError, match="unknown method 'dopri5'"):
        odeint(func, y0, t, method="dopri5")
    with pytest.raises(ValueError, match="unknown method"):
        odeint_adjoint(func, y0, t, method=None)
    with pytest.raises(ValueError, match="unknown option"):
        odeint(func, y0, t, options=dict(step_size=0.1, rtol=1e-3))
    with pytest.raises(TypeError, match="options must be a dict"):
        odeint(func, y0, t, options=0.1)
    for step in (0.0, -0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="step_size"):
            odeint(func, y0, t, options=dict(step_size=step))
    with pytest.raises(TypeError, match="y0 must be a tensor"):
        odeint(func, [1.0, 2.0, 3.0], t)
    with pytest.raises(TypeError, match="y0 must be a floating-point"):
        odeint(func, torch.ones(3, dtype=torch.int64), t)
    with pytest.raises(ValueError, match=r"shaped like y0, \(3,\), got \(2,\)"):
        odeint(lambda s, y: y[:2], y0, t)
    with pytest.raises(ValueError, match="shaped like y0"):
        odeint_adjoint(lambda s, y: 1.0, y0, t, adjoint_params=())
    with pytest.raises(TypeError, match="func must be a callable"):
        odeint(None, y0, t)
    with pytest.raises(ValueError, match="t requires grad"):
        odeint_adjoint(func, y0, t.clone().requires_grad_(True))
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint_adjoint(lambda s, y: -y, y0, t)
    with pytest.raises(TypeError, match="adjoint_params must be a sequence"):
        odeint_adjoint(func, y0, t, adjoint_params=func.W)
    with pytest.raises(FloatingPointError, match="not finite"):  # y' = y^2, y(0) = 1 blows up at t = 1
        odeint(lambda s, y: y**2, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
               options=dict(step_size=0.01))
    with pytest.raises(FloatingPointError, match="the adjoint is not finite"):
        y1 = torch.ones(1, dtype=F64, requires_grad=True)  # y' = 10 y: the adjoint grows by e^10 and overflows
        ys = odeint_adjoint(lambda s, y: 10 * y, y1, torch.tensor([0.0, 1.0], dtype=F64), adjoint_params=())
        (1e305 * ys[-1]).sum().backward()


@pytest.mark.parametrize("solver", [odeint, odeint_adjoint])
def test_float32_and_a_scalar_state_keep_their_dtype_and_shape(device, solver):
    y0 = torch.tensor(1.0, dtype=torch.float32, device=device, requires_grad=True)  # a 0-d state
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, device=device)  # t is cast to y0's dtype
    ys = solver(lambda s, y: -y, y0, t, options=dict(step_size=0.125), **({} if solver is odeint else {"adjoint_params": ()}))
    assert ys.dtype == torch.float32 and ys.shape == (3,) and ys.device.type == torch.device(device).type
    torch.testing.assert_close(ys, torch.exp(-t.float()), rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(ys[-1], y0)
    torch.testing.assert_close(g, torch.exp(torch.tensor(-1.0, device=device)), rtol=1e-5, atol=1e-6)


def test_odeint_adjoint_records_one_node_and_no_steps(device):
    func, y0, t, _ = setup(device)
    ys = odeint_adjoint(func, y0, t, options=dict(step_size=0.01))
    assert type(ys.grad_fn).__name__ == "_AdjointODEBackward"
    assert all(type(f).__name__ in ("AccumulateGrad",) or f is None for f, _ in ys.grad_fn.next_functions)
